"""Benchmark: make_plan + validate for seq_len = 10^9 (issue targets: q=31 < 10 s, q=127 < 60 s).

Run: ``python benchmarks/bench_plans.py [--q 31 127] [--seq-len 1000000000] [--causal]``.
Prints the Singer construction time separately (it is cached per process), then the time of
``make_plan`` and of ``Plan.validate`` and the number of rectangles.
"""

from __future__ import annotations

import argparse
import resource
import time

from cqs_design.plans import _singer, make_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--q", type=int, nargs="+", default=[31, 127])
    parser.add_argument("--seq-len", type=int, default=10**9)
    parser.add_argument("--causal", action="store_true")
    args = parser.parse_args()
    targets = {31: 10.0, 127: 60.0}
    for q in args.q:
        t0 = time.perf_counter()
        design = _singer(q)
        t_design = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan = make_plan(args.seq_len, design=design, causal=args.causal)
        t_make = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan.validate()
        t_val = time.perf_counter() - t0
        total = t_make + t_val
        target = targets.get(q)
        verdict = "" if target is None else f" (target < {target:.0f} s: "
        verdict += "" if target is None else ("met)" if total < target else "MISSED)")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"q={q:4d} v={design.v:6d} seq_len={args.seq_len} causal={args.causal}: "
              f"{plan.num_rectangles:,} rectangles; singer {t_design:.2f} s (cached after); "
              f"make_plan {t_make:.2f} s + validate {t_val:.2f} s = {total:.2f} s{verdict}; "
              f"peak RSS {rss:.1f} GiB", flush=True)
        del plan


if __name__ == "__main__":
    main()
