"""Benchmark: Singer construct + verify past q = 8192, time and peak memory, one process per run.

Each measurement runs in a fresh Python process so that peak memory is its own: the
``tracemalloc`` peak (numpy arrays included) of the construction and of the verification, and
the process's peak resident set size (``ru_maxrss``, which includes the interpreter, numpy and
sympy, about 100 MB).  Routes:

* ``default`` -- :func:`cqs_design.singer_difference_set` as shipped (the O(sqrt v) trace route
  for q > 8192, the older routes below it);
* ``old`` -- the route used up to q = 8192 (whole sequence below v = 2^15, else baby-step
  giant-step with q^1.5 baby steps, O(v^0.75) memory);
* ``trace`` -- the new O(sqrt v) route forced at q <= 8192, to compare with ``old``.

Verification is :meth:`DifferenceSet.verify`: one byte per residue below v = 2^27, windows of
2^20 residues (O(k) memory) from there on.  Wall-clock times depend on the load of the
machine; the load average at the start is recorded.

    python benchmarks/bench_singer_large.py            # writes benchmarks/results/singer_large.json
    python benchmarks/bench_singer_large.py --q 8209 --routes default --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "singer_large.json"

CHILD = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
from cqs_design.difference_sets import DifferenceSet
from cqs_design.singer import construction as S
from cqs_design.singer.cubic import cubic_of, field_of
q, route = int(sys.argv[1]), sys.argv[2]
v = q * q + q + 1
field_of(q); cubic_of(q)  # field tables and the cubic: timed separately
tracemalloc.start()
t0 = time.perf_counter()
if route == "default":
    d = S._singer_difference_set(q)
else:
    if route == "trace":
        from cqs_design.singer.trace import singer_exponents_trace as f
    elif v < S._BSGS_MIN_V:
        f = S._singer_exponents_sequence
    else:
        f = S._singer_exponents_bsgs
    e = f(q)
    x = DifferenceSet._unchecked(v, e)
    d = min(x.normalized(), x._multiply(-1).normalized(), key=lambda y: y.elements)
t1 = time.perf_counter()
build_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.reset_peak()
d.verify()
t2 = time.perf_counter()
verify_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"q": q, "route": route, "v": v, "k": d.k, "construct_s": round(t1 - t0, 3),
                  "verify_s": round(t2 - t1, 3), "construct_peak_mb": round(build_peak / 2**20, 1),
                  "verify_peak_mb": round(verify_peak / 2**20, 1),
                  "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "first_elements": list(d.elements[:4])}))
"""


def measure(q: int, route: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(q), route], capture_output=True,
                          text=True, check=True, env=env)
    res = json.loads(proc.stdout)
    res["process_s"] = round(time.perf_counter() - start, 3)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--q", type=int, nargs="*",
                    default=[1024, 4096, 8192, 8209, 16384, 32749, 65536])
    ap.add_argument("--routes", nargs="*", default=["default", "old", "trace"])
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    runs = []
    load = os.getloadavg()
    for q in a.q:
        for route in a.routes:
            if (route == "default") != (q > 8192):
                continue  # up to 8192 default is old; past it default is the trace route
            res = measure(q, route)
            runs.append(res)
            print(json.dumps(res), flush=True)
    doc = {
        "description": __doc__.splitlines()[0],
        "generated_by": "benchmarks/bench_singer_large.py",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in load],
                    "note": "2-core CPU box shared with other jobs; wall-clock seconds"},
        "runs": runs,
    }
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
