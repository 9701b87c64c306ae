"""``python -m cqs_attention.info``: the kernels registered here and whether they can run.

For each kernel and each device/dtype here, prints "ok" or the reasons it cannot run; also
kernel modules that failed to import. ``--head-dim N`` asks about another head size;
``--help`` describes the options. Exit codes: 0 ok, 2 bad usage (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    import torch

    from cqs_attention.kernels import available_kernels, import_failures, kernel_reasons

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--head-dim must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--head-dim must be >= 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] = ()) -> int:
    """Print :func:`describe`; returns the exit code (0 ok, 2 bad usage or no torch).

    ``argv`` are the options (none by default; ``python -m cqs_attention.info`` passes the
    command line's).

    >>> main(["--head-dim", "64"])  # doctest: +ELLIPSIS
    torch ...
    0
    """
    parser = _Parser(
        prog="python -m cqs_attention.info",
        description="List the attention kernels registered here and, for each device and "
                    "dtype, whether each can run (ok) or why not.",
    )
    parser.add_argument("--head-dim", type=_positive_int, default=128,
                        help="head dimension to ask about (default 128)")
    from cqs_attention.cli import TORCH_MISSING, _version, torch_available

    parser.add_argument("--version", action="version", version=f"cqs_attention {_version()}")
    args = parser.parse_args(list(argv))  # --help and --version work without torch
    if not torch_available():
        print(f"{parser.prog}: {TORCH_MISSING}", file=sys.stderr)
        return 2
    print(describe(args.head_dim))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
