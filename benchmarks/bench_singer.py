"""Benchmark: construct and fully verify the Singer set for every prime power q <= --max-q.

Prints, per q, the construction time (field tables, primitive cubic, logarithms, normal
form) and the verification time (all k(k-1) differences checked at once), then the totals.
Wall-clock seconds are what the targets are about; the CPU seconds of this process are printed
too, because on a shared machine other processes inflate wall-clock times.
Targets on the 2-core development machine: whole sweep to q = 4096 under 60 s, and
q = 4096 (v = 16,781,313) construct + verify under 5 s.

    python benchmarks/bench_singer.py                # every prime power q <= 4096
    python benchmarks/bench_singer.py --max-q 512 --quiet
"""

from __future__ import annotations

import argparse
import sys
import time

from cqs_design import is_prime_power
from cqs_design.singer import SINGER_MAX_Q
from cqs_design.singer.construction import _singer_difference_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-q", type=int, default=4096, help="largest q (default 4096)")
    parser.add_argument("--min-q", type=int, default=2, help="smallest q (default 2)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    if not 2 <= args.min_q <= args.max_q <= SINGER_MAX_Q:
        parser.error(f"need 2 <= --min-q <= --max-q <= {SINGER_MAX_Q}")

    qs = [q for q in range(args.min_q, args.max_q + 1) if is_prime_power(q)]
    total_build = total_verify = 0.0
    cpu0 = time.process_time()
    slowest = (0.0, 0)
    if not args.quiet:
        print(f"{'q':>6} {'v':>11} {'k':>6} {'construct s':>12} {'verify s':>9} {'total s':>8}")
    for q in qs:
        _singer_difference_set.cache_clear()  # time the real work, not the cache
        t0 = time.perf_counter()
        ds = _singer_difference_set(q)
        t1 = time.perf_counter()
        ds.verify()
        t2 = time.perf_counter()
        build, verify = t1 - t0, t2 - t1
        total_build += build
        total_verify += verify
        slowest = max(slowest, (build + verify, q))
        if not args.quiet:
            print(f"{q:>6} {ds.v:>11,} {ds.k:>6} {build:>12.4f} {verify:>9.4f} "
                  f"{build + verify:>8.4f}")
    _singer_difference_set.cache_clear()
    total = total_build + total_verify
    cpu = time.process_time() - cpu0
    print(f"{len(qs)} prime powers q in [{args.min_q}, {args.max_q}]: construct {total_build:.2f} s"
          f" + verify {total_verify:.2f} s = total {total:.2f} s wall ({cpu:.2f} s CPU); "
          f"slowest q = {slowest[1]} ({slowest[0]:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
