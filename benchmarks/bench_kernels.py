"""Throughput of each monolithic GPU kernel (forward and backward), through our wrappers.

Run on the GPU machine::

    python benchmarks/bench_kernels.py --lengths 16384 65536 --json out.json

bf16, batch 1, 16 heads, head dim 128 by default. TFLOP/s counts 4·B·H·L²·D for the forward
(halved for causal) and 2.5x that for the backward; each number is the median of
``triton.testing.do_bench`` (CUDA events) after a warm-up. Every kernel's forward is first
checked against a float64 reference on a short sequence so that no wrong kernel gets timed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time


def tflops(b: int, h: int, lq: int, lk: int, d: int, causal: bool, ms: float,
           *, backward: bool = False) -> float:
    """TFLOP/s of an attention pass that took ``ms`` milliseconds."""
    flop = 4.0 * b * h * lq * lk * d * (0.5 if causal else 1.0) * (2.5 if backward else 1.0)
    return flop / (ms * 1e-3) / 1e12


def _bench(fn, warmup_ms: float = 100, rep_ms: float = 400) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms,
                                         return_mode="median"))


def _check(kernel, dtype) -> float:
    """Relative error of the kernel's causal forward vs float64 on a short random input."""
    import torch

    from cqs_attention.kernels.base import BlockMask

    dev = torch.device("cuda")
    q, k, v = (torch.randn(1, 4, 512, 128, device=dev).to(dtype) for _ in range(3))
    out, _ = kernel.fwd(q, k, v, scale=128 ** -0.5, mask=BlockMask(causal_offset=0))
    s = (q.double() @ k.double().transpose(-1, -2)) * 128 ** -0.5
    s = s.masked_fill(torch.ones(512, 512, dtype=torch.bool, device=dev).triu(1), float("-inf"))
    ref = torch.softmax(s, -1) @ v.double()
    return ((out.double() - ref).norm() / ref.norm()).item()


def run(lengths: list[int], kernel_names: list[str], *, heads: int = 16, head_dim: int = 128,
        backward: bool = True, progress: bool = True) -> list[dict]:
    """Measure every available kernel in ``kernel_names`` at each length, full and causal."""
    import torch

    from cqs_attention.kernels import available_kernels
    from cqs_attention.kernels.base import BlockMask

    dev = torch.device("cuda")
    dtype = torch.bfloat16
    records: list[dict] = []
    kernels = [k for k in available_kernels() if k.name in kernel_names]
    for kernel in kernels:
        why = kernel.not_supported(device=dev, dtype=dtype, head_dim=head_dim, mask=None,
                                   gqa=False, needs_grad=backward)
        if why:
            records.append({"kernel": kernel.name, "skipped": "; ".join(why)})
            continue
        try:
            err = _check(kernel, dtype)
        except Exception as exc:
            records.append({"kernel": kernel.name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        for L in lengths:
            for causal in (False, True):
                rec = {"kernel": kernel.name, "L": L, "causal": causal, "B": 1, "H": heads,
                       "D": head_dim, "dtype": "bfloat16", "check_rel_err": err}
                try:
                    torch.cuda.empty_cache()
                    q, k, v, dout = (torch.randn(1, heads, L, head_dim, device=dev, dtype=dtype)
                                     for _ in range(4))
                    mask = BlockMask(causal_offset=0) if causal else None
                    scale = 1 / math.sqrt(head_dim)
                    t0 = time.perf_counter()
                    out, lse = kernel.fwd(q, k, v, scale=scale, mask=mask)
                    torch.cuda.synchronize()
                    rec["first_call_s"] = time.perf_counter() - t0
                    torch.cuda.reset_peak_memory_stats()
                    ms = _bench(lambda: kernel.fwd(q, k, v, scale=scale, mask=mask))  # noqa: B023
                    rec["fwd_ms"] = ms
                    rec["fwd_tflops"] = tflops(1, heads, L, L, head_dim, causal, ms)
                    rec["fwd_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                    if backward:
                        kernel.bwd(dout, q, k, v, out, lse, scale=scale, mask=mask)
                        ms = _bench(lambda: kernel.bwd(dout, q, k, v, out, lse,  # noqa: B023
                                                       scale=scale, mask=mask))  # noqa: B023
                        rec["bwd_ms"] = ms
                        rec["bwd_tflops"] = tflops(1, heads, L, L, head_dim, causal, ms,
                                                   backward=True)
                except Exception as exc:
                    rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
                records.append(rec)
                if progress:
                    print(json.dumps(rec), flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[16384, 65536])
    p.add_argument("--kernels", nargs="+",
                   default=["fa4", "fa3", "fa2", "cudnn", "sdpa_flash", "flex", "efficient"])
    p.add_argument("--no-backward", action="store_true")
    p.add_argument("--json", help="write the records here")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_kernels: needs a CUDA device", file=sys.stderr)
        return 2
    records = run(args.lengths, args.kernels, backward=not args.no_backward)
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "records": records}, fh, indent=1)
    print(f"{'kernel':<11} {'L':>7} {'causal':>6} {'fwd TF/s':>9} {'bwd TF/s':>9}")
    for r in records:
        if "fwd_tflops" in r:
            print(f"{r['kernel']:<11} {r['L']:>7} {r['causal']!s:>6} {r['fwd_tflops']:9.1f} "
                  f"{r.get('bwd_tflops', float('nan')):9.1f}")
        else:
            print(r.get("kernel"), r.get("L", ""), r.get("skipped") or r.get("error"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
