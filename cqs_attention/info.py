"""``python -m cqs_attention.info``: the kernels registered here and whether they can run.

For each kernel and each device/dtype here, prints "ok" or the reasons it cannot run; also
kernel modules that failed to import.
"""

from __future__ import annotations

import sys

import torch

from cqs_attention.kernels import available_kernels, import_failures, kernel_reasons

__all__ = ["describe", "host_memory_available", "main"]


def host_memory_available(path: str = "/proc/meminfo") -> int | None:
    """Bytes of host memory available (``MemAvailable`` of ``/proc/meminfo``), or None where
    the file does not exist (not Linux).

    >>> n = host_memory_available()
    >>> n is None or n > 0
    True
    """
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def describe(head_dim: int = 128) -> str:
    """A text table of kernels x (device, dtype) with the reasons a kernel cannot run.

    >>> "reference" in describe()
    True
    """
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda", torch.cuda.current_device()))
    lines = [f"torch {torch.__version__}; CUDA available: {torch.cuda.is_available()}"]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name()} (capability "
                     f"{torch.cuda.get_device_capability()})")
    lines.append("kernels in dispatch order: " + ", ".join(k.name for k in available_kernels()))
    for dev in devices:
        for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
            reasons = kernel_reasons(device=dev, dtype=dtype, head_dim=head_dim, mask=None,
                                     gqa=False, needs_grad=True)
            lines.append(f"{dev} {str(dtype).replace('torch.', '')} head_dim={head_dim}:")
            for name, why in reasons.items():
                lines.append(f"  {name:<16} {'ok' if not why else '; '.join(why)}")
    for mod, err in import_failures().items():
        lines.append(f"failed to import {mod}: {err}")
    return "\n".join(lines)


def main() -> int:
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
