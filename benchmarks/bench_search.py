"""Benchmark cqs_design.search / existence: print measured times side by side.

Targets (2-core CPU): every translation class for v = 91 in < 10 s; order 10 (v = 111)
nonexistence in < 1 s with the multiplier theorem; existence table for n <= 1000 in < 60 s.
Runs without the multiplier theorem are capped (``--cap`` seconds) and print ``timeout > Xs``.

    python benchmarks/bench_search.py [--cap 30]
"""

from __future__ import annotations

import argparse
import time

from cqs_design.plane_existence import existence_table
from cqs_design.search import search_difference_sets


def _run(v: int, k: int, mult: bool, cap: float) -> str:
    res = search_difference_sets(v, k, use_multiplier_theorem=mult, time_limit=cap)
    st = res.stats
    if not st.complete:
        return f"timeout > {cap:g}s ({st.nodes} nodes)"
    return f"{st.seconds:8.3f} s  {len(res.sets):3d} sets  {st.nodes:>9} nodes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=float, default=30.0, help="time limit per search (s)")
    ap.add_argument("--max-order", type=int, default=1000)
    a = ap.parse_args()
    print("All translation classes of cyclic (v, k, 1) difference sets")
    print(f"{'v':>5} {'k':>3} | {'backtracking':<42} | {'multiplier orbits':<42}")
    for n in (2, 3, 4, 5, 7, 8, 9):
        v, k = n * n + n + 1, n + 1
        print(f"{v:>5} {k:>3} | {_run(v, k, False, a.cap):<42} | {_run(v, k, True, a.cap):<42}")
    print("\nNonexistence proofs (orders not excluded by Bruck-Ryser-Chowla)")
    print(f"{'n':>3} {'v':>5} | {'backtracking':<42} | {'multiplier orbits':<42}")
    for n in (10, 12, 15, 18, 20):
        v, k = n * n + n + 1, n + 1
        print(f"{n:>3} {v:>5} | {_run(v, k, False, a.cap):<42} | {_run(v, k, True, a.cap):<42}")
    t = time.perf_counter()
    recs = existence_table(a.max_order, verify_singer=100)
    dt = time.perf_counter() - t
    counts = {s: sum(r.status == s for r in recs) for s in ("exists", "impossible", "open")}
    print(f"\nexistence_table({a.max_order}) (searches n <= 20, Singer sets verified):"
          f" {dt:.2f} s  {counts}")
    t = time.perf_counter()
    existence_table(a.max_order, verify_singer=True)
    print(f"existence_table({a.max_order}, verify_singer=True) (every Singer set built and "
          f"verified): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
