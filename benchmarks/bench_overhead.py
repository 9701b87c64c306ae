"""Per-call overhead of :func:`cqs_attention.attention` on the CPU (the fast path of a call
that runs as one kernel call).

Run from the repository root::

    python benchmarks/bench_overhead.py                 # tiny calls and L = 16K
    python benchmarks/bench_overhead.py --json out.json

For each case the script times ``attention(q, k, v, causal=True)`` and the kernel the engine
calls for it (``select_kernel(...).fwd`` with the causal mask, and ``.bwd`` for the backward),
interleaved, and prints the best of ``--repeat`` rounds of each (the minimum is the number least
disturbed by other work on a shared machine): ``overhead = attention - kernel``. The tiny call
(``L = 64``, ``D = 16``) is almost all overhead; at ``L = 16K`` the overhead is a fraction of the
kernel's time. Single-threaded (``torch.set_num_threads(1)``) unless ``--threads`` says
otherwise, so two runs compare on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any


def _best(fn: Callable[[], Any], repeat: int, inner: int) -> float:
    """The fastest of ``repeat`` rounds of ``inner`` calls, in seconds per call."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def measure(length: int, *, head_dim: int = 16, backward: bool = False, repeat: int = 7,
            inner: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Seconds per call of ``attention`` and of its kernel alone, for one causal call of
    ``B = H = 1`` float32 rows of ``length`` tokens (forward, or forward and backward)."""
    import torch

    from cqs_attention import attention
    from cqs_attention.kernels import select_kernel
    from cqs_attention.kernels.base import BlockMask

    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 1, length, head_dim, generator=g) for _ in range(3))
    scale = 1.0 / math.sqrt(head_dim)
    mask = BlockMask(causal_offset=0)
    kernel = select_kernel("auto", device=torch.device("cpu"), dtype=q.dtype,
                           head_dim=head_dim, mask=mask, gqa=False, needs_grad=backward)
    inner = inner if inner is not None else max(1, int(2e6 // (length * length)) or 1)
    if backward:
        qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
        dout = torch.randn(q.shape, generator=g)

        def api() -> None:
            attention(qg, kg, vg, causal=True).backward(dout)

        def direct() -> None:
            out, lse = kernel.fwd(q, k, v, scale=scale, mask=mask)
            kernel.bwd(dout, q, k, v, out, lse, scale=scale, mask=mask)
    else:
        def api() -> None:
            with torch.no_grad():
                attention(q, k, v, causal=True)

        def direct() -> None:
            kernel.fwd(q, k, v, scale=scale, mask=mask)

    api()  # warm-up: the first call plans, later ones take the fast path
    direct()
    t_api = t_kernel = math.inf
    for _ in range(repeat):  # interleaved, so both see the same load
        t_api = min(t_api, _best(api, 1, inner))
        t_kernel = min(t_kernel, _best(direct, 1, inner))
    return {"L": length, "D": head_dim, "backward": backward, "kernel": kernel.name,
            "attention_s": t_api, "kernel_s": t_kernel, "overhead_s": t_api - t_kernel}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 16384])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-backward", action="store_true",
                        help="time the forward only")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for length in args.lengths:
        for backward in (False,) if args.no_backward else (False, True):
            r = measure(length, backward=backward, repeat=args.repeat)
            rows.append(r)
            print(f"L={length:>6} {'fwd+bwd' if backward else 'fwd    '} "
                  f"attention {r['attention_s'] * 1e6:10.1f} us   "
                  f"kernel ({r['kernel']}) {r['kernel_s'] * 1e6:10.1f} us   "
                  f"overhead {r['overhead_s'] * 1e6:8.1f} us", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
