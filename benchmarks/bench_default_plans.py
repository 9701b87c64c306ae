"""Benchmark: the default ``make_plan(n)`` (no design) at 10^6, 10^9 and 10^12 tokens.

For each length (full and causal) a fresh subprocess builds the default plan, validates it and
reports the design chosen, the rectangles, the wall-clock and CPU seconds of ``make_plan`` and
of ``validate()``, and the peak resident memory of that subprocess (``ru_maxrss``, which
includes the interpreter and numpy: about 0.1 GiB).  Wall-clock times on a shared machine are
inflated by other processes; the CPU seconds are this process's own.  Issue 16's target: at
10^9 tokens, build + validate in under 10 s on the 2-core development machine.

    python benchmarks/bench_default_plans.py                       # print the table
    python benchmarks/bench_default_plans.py --json benchmarks/results/plans_default_cpu.json
    python benchmarks/bench_default_plans.py --lengths 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from cqs_design.plans import make_plan
n, causal = int(sys.argv[1]), sys.argv[2] == "1"

def clocks():
    return time.perf_counter(), time.process_time()

w0, c0 = clocks()
plan = make_plan(n, causal=causal)
w1, c1 = clocks()
plan.validate()
w2, c2 = clocks()
print(json.dumps({
    "seq_len": n, "causal": causal, "design_q": plan.design.k - 1, "design_v": plan.design.v,
    "tasks": len(plan), "rectangles": plan.num_rectangles,
    "make_plan_s": w1 - w0, "validate_s": w2 - w1, "total_s": w2 - w0,
    "make_plan_cpu_s": c1 - c0, "validate_cpu_s": c2 - c1,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "chosen_because": plan.chosen_because,
}))
"""


def _run(n: int, causal: bool) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), "1" if causal else "0"],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[10**6, 10**9, 10**12])
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per case; the record keeps the fastest (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    args = parser.parse_args(argv)
    records = []
    print(f"{'seq_len':>15} {'causal':>6} {'q':>4} {'v':>6} {'rectangles':>12} "
          f"{'make_plan':>9} {'validate':>9} {'total':>7} {'cpu':>7} {'peak':>9}")
    for n in args.lengths:
        for causal in (False, True):
            runs = [_run(n, causal) for _ in range(max(1, args.repeat))]
            rec = min(runs, key=lambda r: r["total_s"])
            rec["runs"] = len(runs)
            records.append(rec)
            print(f"{n:>15,} {causal!s:>6} {rec['design_q']:>4} {rec['design_v']:>6} "
                  f"{rec['rectangles']:>12,} {rec['make_plan_s']:>8.2f}s "
                  f"{rec['validate_s']:>8.2f}s {rec['total_s']:>6.2f}s "
                  f"{rec['make_plan_cpu_s'] + rec['validate_cpu_s']:>6.2f}s "
                  f"{rec['peak_rss_mib']:>6.0f} MiB", flush=True)
    if args.json is not None:
        doc = {
            "benchmark": "default make_plan(n) + validate()",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(), "python": platform.python_version(),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "processor": platform.processor() or platform.machine(),
                        "note": "shared 2-core development box; wall-clock includes other "
                                "processes' load, *_cpu_s is this process only"},
            "records": records,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
