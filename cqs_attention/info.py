"""``python -m cqs_attention.info``: the kernels registered here and whether they can run.

For each kernel and each device/dtype here, prints "ok" or the reasons it cannot run; also
kernel modules that failed to import. ``--head-dim N`` asks about another head size;
``--help`` describes the options. Exit codes: 0 ok, 2 bad usage (one line on stderr).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from cqs_attention import __version__
from cqs_design.cli.options import EXIT_USAGE, UsageParser, int_at_least

__all__ = ["TORCH_MISSING", "describe", "host_memory_available", "main", "torch_available"]

#: The one-line reason a command that needs torch gives where it is missing.
TORCH_MISSING = ("needs torch: pip install 'cqs[attention]' (on a machine without a GPU, the "
                 "CPU build first: see README.md)")


def torch_available() -> bool:
    """Whether ``import torch`` can work here, found without importing it (fast).

    >>> torch_available()
    True
    """
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


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


def main(argv: Sequence[str] = ()) -> int:
    """Print :func:`describe`; returns the exit code (0 ok, 2 bad usage or no torch).

    ``argv`` are the options (none by default; ``python -m cqs_attention.info`` passes the
    command line's).

    >>> main(["--head-dim", "64"])  # doctest: +ELLIPSIS
    torch ...
    0
    """
    parser = UsageParser(
        prog="python -m cqs_attention.info",
        description="List the attention kernels registered here and, for each device and "
                    "dtype, whether each can run (ok) or why not.",
    )
    parser.add_argument("--head-dim", type=int_at_least(1), default=128,
                        help="head dimension to ask about (default 128)")
    parser.add_argument("--version", action="version", version=f"cqs_attention {__version__}")
    args = parser.parse_args(list(argv))  # --help and --version work without torch
    if not torch_available():
        print(f"{parser.prog}: {TORCH_MISSING}", file=sys.stderr)
        return EXIT_USAGE
    print(describe(args.head_dim))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
