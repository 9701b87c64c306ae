"""Benchmark: the prime power conjecture verification (``cqs_design.ppc``), full runs and
measured projections.

Full run (Gordon 1994's bound by default): every order up to ``--max-order`` through
:func:`cqs_design.ppc.verify`, the compact result written to ``--out`` and checked with
:func:`cqs_design.ppc.verification.check_result` (stored certificates, block bookkeeping and a
sample of regenerated certificates); wall and CPU seconds recorded::

    nice -n 10 python benchmarks/bench_ppc.py                  # N = 2*10^6 -> ppc_2e6.json

Projection (``--project``): segments of ``--segment`` orders (default 2*10^6, in blocks of
``--block-size``) starting at 10^6 ... and ending at 2*10^9, each sieved and timed (CPU
seconds per order; the box is shared, so CPU time is the stable measure).  The large prime
divisors of ``v`` are sieved once per ``SEGMENT_ORDERS`` orders in a run, so one such segment is
timed at each point and charged per order; the root table (once per process) is timed on its
own.  Then ``rate(n) = A * n^alpha`` is fitted in log-log and integrated to 2*10^9 and to 10^10
(and the measured rates, linear between the points).  The sieve works with 64-bit
``v = n^2 + n + 1`` (``n < 2^31``), so the 10^10 figure is an extrapolation; the per-order
functions (which reach 10^12) are also timed on a random sample of orders near 10^10 to bound
the cost of the survivors there::

    nice -n 10 python benchmarks/bench_ppc.py --project        # -> ppc_projection.json

Summary of a large result file (``--summarize``): totals, counts per 10^8 orders, the check
(``--sample`` orders), the file's size and sha256, and any ``--extra`` JSON::

    python benchmarks/bench_ppc.py --summarize ppc_2e9.json --out ppc_2e9_summary.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cqs_design.ppc import check_certificate, decide  # noqa: E402
from cqs_design.ppc.roots import LargeDivisors, root_table  # noqa: E402
from cqs_design.ppc.sieve import MAX_V_SIEVE, needs_large_divisors, sieve_block  # noqa: E402
from cqs_design.ppc.verification import SEGMENT_ORDERS, check_result, verify  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _machine() -> dict[str, object]:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "note": "2-core CPU box shared with other jobs; run under nice -n 10"}


def full_run(max_order: int, block_size: int, out: Path) -> dict[str, object]:
    t0, c0 = time.perf_counter(), time.process_time()
    result = verify(max_order, block_size=block_size, progress=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result.info.update(machine=_machine(), wall_s=round(wall, 1), cpu_s=round(cpu, 1),
                       generated_by="benchmarks/bench_ppc.py",
                       regenerate=f"cqs-design ppc --max-order {max_order} --block-size "
                                  f"{block_size} --out {out.name}")
    result.save(out)
    t1 = time.perf_counter()
    report = check_result(out, sample=2000)
    summary = {"max_order": max_order, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
               "totals": result.totals(), "open": len(result.open),
               "stored_certificates": len(result.certificates),
               "check": {**report.to_dict(), "seconds": round(time.perf_counter() - t1, 1)},
               "file": str(out.relative_to(ROOT)), "bytes": out.stat().st_size}
    print(result.format_summary())
    print(json.dumps(summary, indent=1))
    return summary


def project(segment: int, starts: list[int], sample_1e10: int, out: Path,
            block_size: int = 250_000) -> dict[str, object]:
    top = max(2, min(max(starts), (1 << 31) - 1 - segment)) + segment
    c0 = time.process_time()
    root_table(MAX_V_SIEVE, math.isqrt(top * top))  # once per process, timed on its own
    table_s = time.process_time() - c0
    sieve_block(2, 1000, w_limit=MAX_V_SIEVE)  # the block sieve's own tables, once
    points = []
    for a in starts:
        lo = max(2, min(a, (1 << 31) - 1 - segment))
        # the large divisors of v are sieved once per SEGMENT_ORDERS orders in a run: time
        # one such segment here and charge its cost per order
        seg_lo = min(lo, (1 << 31) - 1 - SEGMENT_ORDERS)
        c0 = time.process_time()
        if needs_large_divisors(seg_lo, seg_lo + SEGMENT_ORDERS):
            LargeDivisors(seg_lo, seg_lo + SEGMENT_ORDERS, w_min=MAX_V_SIEVE)
        large_s = time.process_time() - c0
        c0, t0 = time.process_time(), time.perf_counter()
        r = verify(lo + segment - 1, min_order=lo, block_size=block_size,
                   segment_orders=segment)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        t = r.totals()
        blocks_s = sum(b.seconds for b in r.blocks)
        rate = 1e6 * (blocks_s / segment + large_s / SEGMENT_ORDERS)
        points.append({"min_order": lo, "max_order": lo + segment - 1, "orders": segment,
                       "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                       "blocks_s": round(blocks_s, 2),
                       "large_divisors_s_per_segment": round(large_s, 2),
                       "cpu_us_per_order": round(rate, 2),
                       "open": t["open"], "totals": t})
        print(json.dumps(points[-1]), flush=True)
    xs = [math.log(p["min_order"] + segment / 2) for p in points]
    ys = [math.log(p["cpu_us_per_order"]) for p in points]
    k = len(xs)
    mx, my = sum(xs) / k, sum(ys) / k
    alpha = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / sum((x - mx) ** 2 for x in xs))
    a_coef = math.exp(my - alpha * mx)

    def total_s(n: float) -> float:  # integral of A n^alpha microseconds from 2 to n
        return a_coef * (n ** (alpha + 1) - 2 ** (alpha + 1)) / (alpha + 1) / 1e6

    def trapezoid_s(n: float) -> float:  # the measured rates, linear between the points
        xs_ = [2.0] + [p["min_order"] + segment / 2 for p in points]
        ys_ = [points[0]["cpu_us_per_order"]] + [p["cpu_us_per_order"] for p in points]
        total = 0.0
        for x0, x1, y0, y1 in zip(xs_, xs_[1:], ys_, ys_[1:], strict=False):
            if x0 >= n:
                break
            x1c = min(x1, n)
            y1c = y0 + (y1 - y0) * (x1c - x0) / (x1 - x0)
            total += (x1c - x0) * (y0 + y1c) / 2
        if n > xs_[-1]:  # beyond the last point: the fit's growth from there
            total += (total_s(n) - total_s(xs_[-1])) * 1e6
        return total / 1e6

    # the per-order functions near 10^10 (no sieve): what one order costs there
    rng = random.Random(0)
    per_order = []
    statuses: dict[str, int] = {}
    for _ in range(sample_1e10):
        n = rng.randrange(10**10 - 10**8, 10**10)
        t0 = time.process_time()
        v = decide(n)
        per_order.append(time.process_time() - t0)
        if v.certificate is not None:
            check_certificate(v.certificate)
        key = v.status if v.certificate is None else v.certificate.test
        statuses[key] = statuses.get(key, 0) + 1
    doc = {
        "description": "measured cost of the ppc sieve by segment, and projections",
        "generated_by": "benchmarks/bench_ppc.py --project",
        "segment_orders": segment,
        "points": points,
        "fit": {"model": "cpu microseconds per order = A * n^alpha",
                "A": a_coef, "alpha": round(alpha, 4)},
        "projection_cpu_hours": {"2e9": round(total_s(2e9) / 3600, 2),
                                 "1e10": round(total_s(1e10) / 3600, 2)},
        "projection_cpu_hours_trapezoid": {"2e9": round(trapezoid_s(2e9) / 3600, 2),
                                           "1e10": round(trapezoid_s(1e10) / 3600, 2),
                                           "note": "measured rates linear between the "
                                                   "points; past the last point the fit"},
        "root_table_cpu_s": round(table_s, 1),
        "root_table_note": "the roots of x^2+x+1 modulo the primes in (2^24, sqrt(v)], built "
                           "once per process (each process of a sharded run pays it)",
        "segment_orders_for_large_divisors": SEGMENT_ORDERS,
        "rate_note": "cpu_us_per_order = sieve_block CPU per order + the CPU of one "
                     "LargeDivisors segment (SEGMENT_ORDERS orders from the point) / "
                     "SEGMENT_ORDERS",
        "per_order_functions_near_1e10": {
            "sample": sample_1e10, "statuses": statuses,
            "mean_ms": round(1e3 * sum(per_order) / len(per_order), 2),
            "max_ms": round(1e3 * max(per_order), 1),
            "projection_cpu_hours_1e10_one_by_one":
                round(1e10 * sum(per_order) / len(per_order) / 3600, 0)},
        "machine": _machine(),
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))
    return doc


def summarize(result_path: Path, out: Path, sample: int, extra: dict[str, object]) -> dict:
    """A small summary of a (large) result file, for the repository: totals, counts per
    10^8 orders, the check, the file's size and sha256, and the commands."""
    import hashlib

    from cqs_design.ppc.verification import PPCResult

    raw = result_path.read_bytes()
    result = PPCResult.load(result_path)
    t1 = time.perf_counter()
    report = check_result(result, sample=sample)
    check_s = time.perf_counter() - t1
    step = 10**8
    by_range: dict[int, dict[str, int]] = {}
    for b in result.blocks:  # grouped by the 10^8 range a block starts in
        row = by_range.setdefault(b.lo // step, {"from": b.lo, "to": b.hi - 1})
        row["to"] = b.hi - 1
        for k, c in b.counts.items():
            row[k] = row.get(k, 0) + c
    doc = {
        "description": "summary of a full ppc verification run (the result file itself is "
                       "too large for the repository; the command below regenerates it)",
        "min_order": result.min_order, "max_order": result.max_order,
        "orders": result.max_order - result.min_order + 1,
        "block_size": result.block_size, "blocks": len(result.blocks),
        "totals": result.totals(), "open": result.open,
        "stored_certificates": len(result.certificates),
        "block_seconds_sum": round(sum(b.seconds for b in result.blocks), 1),
        "block_seconds_note": "wall seconds of sieve_block per block, summed; without the "
                              "root table and the per-segment sieve of large divisors",
        "check": {**report.to_dict(), "sample": sample, "seconds": round(check_s, 1)},
        "result_file": {"name": result_path.name, "bytes": len(raw),
                        "sha256": hashlib.sha256(raw).hexdigest()},
        "counts_per_1e8_orders": [row for _, row in sorted(by_range.items())],
        **extra,
        "machine": _machine(),
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "counts_per_1e8_orders"}, indent=1))
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-order", type=int, default=2_000_000)
    ap.add_argument("--block-size", type=int, default=250_000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--project", action="store_true")
    ap.add_argument("--segment", type=int, default=2_000_000)
    ap.add_argument("--starts", default="1e6,1e7,1e8,3e8,1e9,1.9998e9")
    ap.add_argument("--sample-1e10", type=int, default=300)
    ap.add_argument("--summarize", type=Path, default=None, metavar="RESULT",
                    help="write a small summary (--out) of a finished result file")
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--extra", default="{}", help="with --summarize: JSON merged in")
    a = ap.parse_args(argv)
    if a.summarize is not None:
        summarize(a.summarize, a.out or RESULTS / f"{a.summarize.stem}_summary.json",
                  a.sample, json.loads(a.extra))
    elif a.project:
        starts = [int(float(x)) for x in a.starts.split(",")]
        project(a.segment, starts, a.sample_1e10,
                a.out or RESULTS / "ppc_projection.json", a.block_size)
    else:
        name = f"ppc_{a.max_order:.0e}".replace("+0", "").replace("+", "")
        full_run(a.max_order, a.block_size, a.out or RESULTS / f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
