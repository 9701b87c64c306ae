"""Benchmark: ``existence_table(max_order)`` with its defaults, time and memory.

Runs :func:`cqs_design.plane_existence.iter_existence_table` (what ``cqs-design table``
streams) and, with ``--list``, :func:`existence_table` (every record kept).  Records the
wall-clock and CPU seconds, the peak resident set size and the count of each status.
Defaults: multiplier search up to order 315, Singer sets built and verified up to order 1024,
rows past that ``computed = False`` (past the construction limit 65536: "not constructed
here").

    python benchmarks/bench_existence.py                      # max order 10^6
    python benchmarks/bench_existence.py --max-order 10000 --out /tmp/e.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cqs_design.plane_existence import (  # noqa: E402
    DEFAULT_SEARCH_MAX_ORDER,
    DEFAULT_TABLE_VERIFY_SINGER,
    existence_table,
    iter_existence_table,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-order", type=int, default=10**6)
    ap.add_argument("--list", action="store_true", help="keep every record (existence_table)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "existence_table.json")
    a = ap.parse_args(argv)
    load = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    counts: collections.Counter[str] = collections.Counter()
    computed = 0
    records = (existence_table(a.max_order) if a.list else iter_existence_table(a.max_order))
    for r in records:
        counts[f"{r.status} ({r.method})"] += 1
        computed += r.computed
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    doc = {
        "description": __doc__.splitlines()[0],
        "generated_by": "benchmarks/bench_existence.py",
        "max_order": a.max_order,
        "function": "existence_table" if a.list else "iter_existence_table",
        "defaults": {"search_max_order": DEFAULT_SEARCH_MAX_ORDER,
                     "verify_singer": DEFAULT_TABLE_VERIFY_SINGER},
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rows": sum(counts.values()),
        "computed_here": computed,
        "by_status": dict(sorted(counts.items())),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in load],
                    "note": "2-core CPU box shared with other jobs"},
    }
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
