"""Memory scaling: one sequence streamed from pinned host memory at several memory budgets.

Run on the GPU machine::

    python benchmarks/bench_memory_scaling.py --json scaling.json
    python benchmarks/bench_memory_scaling.py --plot scaling.json scaling.png   # no GPU needed

Default: L = 1,048,576 tokens, causal, bf16, B=1, H=16, D=128 (Q, K, V = 4 GiB each, in pinned
host memory, filled slab by slab from a seeded CUDA generator), streamed by
:func:`cqs_attention.attention` with ``memory_budget`` = 2, 4, 8, 16, 32 GiB
(``--budgets-gib``). Per budget the record holds:

* ``time_s`` and ``tflops`` (4·B·H·L²·D, halved for causal): the second call after one warm-up
  when the first took less than ``--warmup-below`` seconds (``timed_run: "second"``), else the
  first call (``timed_run: "first"``); ``first_s`` is the first call's wall time;
* ``peak_gib``: ``torch.cuda.max_memory_allocated`` during the timed call minus what was
  allocated before it, next to ``budget_gib``;
* ``design_v``, ``design_k``, ``tasks``, ``plan_source``, ``bytes_to_device``,
  ``bytes_from_device``, ``profile`` (h2d, compute, d2h, merge, idle seconds) and the report
  summary from :func:`cqs_attention.last_run_stats`;
* ``rel_to_first``: ||out - out_first|| / ||out_first|| against the first budget's output
  (every budget computes the same attention).

``--with-baseline`` also times the independent query-block loop of ``_baseline_loop.py`` at each
budget (``baseline_time_s``, ``baseline_tflops``, ``baseline_peak_gib``). The JSON is rewritten
after every budget. ``--device cpu --seq 512 --budgets-gib 0.0001 ...`` is a smoke test of the
script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BenchDevice, fill_randn, report_summary, tflops

GIB = 1 << 30


def fill_host(shape: tuple[int, ...], *, seed: int, device: Any, pin: bool,
              slab_rows: int = 1 << 20) -> Any:
    """A bf16 host tensor of ``shape`` (B, H, L, D), pinned if ``pin``, filled with standard
    normal values generated on ``device`` slab by slab (host memory never holds more than the
    tensor itself)."""
    import torch

    out = torch.empty(shape, dtype=torch.bfloat16, pin_memory=pin)
    fill_randn(out, seed=seed, device=device, slab_rows=slab_rows)
    return out


def rel_diff(a: Any, b: Any, device: Any) -> float:
    """||a - b|| / ||b|| computed one (batch, head) at a time on ``device``."""
    import torch

    num = den = 0.0
    for bi in range(b.shape[0]):
        for hi in range(b.shape[1]):
            x = a[bi, hi].to(device).float()
            y = b[bi, hi].to(device).float()
            num += float(torch.linalg.vector_norm(x - y).double() ** 2)
            den += float(torch.linalg.vector_norm(y).double() ** 2)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


summary = report_summary
_Dev = BenchDevice


def timed(fn: Any, dev: _Dev, warmup_below: float) -> tuple[Any, float, float, str, int | None]:
    """``(result, first_s, time_s, timed_run, peak_bytes)``: run once; if that took less than
    ``warmup_below`` seconds it was a warm-up and a second run is timed."""
    base = dev.start_peak()
    dev.sync()
    t0 = time.perf_counter()
    res = fn()
    dev.sync()
    first = time.perf_counter() - t0
    peak = dev.peak_bytes(base)
    if first >= warmup_below:
        return res, first, first, "first", peak
    del res
    base = dev.start_peak()
    t0 = time.perf_counter()
    res = fn()
    dev.sync()
    return res, first, time.perf_counter() - t0, "second", dev.peak_bytes(base)


def run(args: argparse.Namespace) -> dict:
    import torch

    from cqs_attention import attention
    from cqs_attention.report import last_run_stats

    D = _Dev(args.device)
    b, h, L, d = 1, args.heads, args.seq, args.head_dim
    shape = (b, h, L, d)
    esz = 2
    meta = {"gpu": D.name(), "torch": torch.__version__, "L": L, "B": b, "H": h, "D": d,
            "causal": args.causal, "dtype": "bfloat16", "qkv_bytes": 3 * b * h * L * d * esz,
            "argv": args.argv, "warmup_below_s": args.warmup_below}
    data: dict = {"meta": meta, "records": []}

    def save() -> None:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(data, fh, indent=1)

    t0 = time.perf_counter()
    q, k, v = (fill_host(shape, seed=args.seed + i, device=D.dev, pin=D.cuda)
               for i in range(3))
    meta["fill_s"] = time.perf_counter() - t0
    print(f"inputs ready in {meta['fill_s']:.1f} s ({meta['qkv_bytes'] / GIB:.2f} GiB Q+K+V, "
          f"pinned={D.cuda})", flush=True)
    first_out = None
    for gib in args.budgets_gib:
        budget = int(gib * GIB)
        rec: dict = {"budget_gib": gib, "budget_bytes": budget}
        try:
            out, first, secs, which, peak = timed(
                lambda budget=budget: attention(q, k, v, causal=args.causal,
                                                memory_budget=budget, device=D.dev,
                                                progress=args.progress),
                D, args.warmup_below)
            rep = last_run_stats()
            rec.update(time_s=secs, first_s=first, timed_run=which,
                       tflops=tflops(L, h, d, args.causal, secs, b), peak_bytes=peak,
                       peak_gib=None if peak is None else peak / GIB)
            s = summary(rep) or {}
            for key in ("schedule", "accumulators", "task_bytes_estimate", "design_v",
                        "design_k", "tasks", "plan_source", "bytes_to_device",
                        "bytes_from_device", "profile"):
                rec[key] = s.get(key)
            rec["report"] = s
            if first_out is None:
                first_out = out
                rec["rel_to_first"] = 0.0
            else:
                rec["rel_to_first"] = rel_diff(out, first_out, D.dev)
            del out
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        if args.with_baseline:
            from _baseline_loop import query_block_loop

            from cqs_attention.kernels import select_kernel

            try:
                kern = select_kernel("auto", device=D.dev, dtype=q.dtype, head_dim=d,
                                     mask=None, gqa=False, needs_grad=False)
                out, first, secs, which, peak = timed(
                    lambda budget=budget, kern=kern: query_block_loop(
                        q, k, v, causal=args.causal, budget=budget, device=D.dev,
                        kernel=kern), D, args.warmup_below)
                rec.update(baseline_time_s=secs, baseline_first_s=first,
                           baseline_timed_run=which,
                           baseline_tflops=tflops(L, h, d, args.causal, secs, b),
                           baseline_peak_gib=None if peak is None else peak / GIB)
                if first_out is not None:
                    rec["baseline_rel_to_first"] = rel_diff(out, first_out, D.dev)
                del out
            except Exception as exc:
                rec["baseline_error"] = f"{type(exc).__name__}: {exc}"
        data["records"].append(rec)
        save()
        print(json.dumps({n: x for n, x in rec.items() if not isinstance(x, dict)}), flush=True)
    return data


def plot(json_path: str, png_path: str) -> None:
    """Time and peak device memory against the budget (with the line peak = budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(json_path) as fh:
        data = json.load(fh)
    meta = data.get("meta", {})
    recs = [r for r in data["records"] if r.get("time_s") is not None]
    xs = [r["budget_gib"] for r in recs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(xs, [r["time_s"] for r in recs], "o-", label="cqs_attention (streamed)")
    base = [r for r in recs if r.get("baseline_time_s") is not None]
    if base:
        ax1.plot([r["budget_gib"] for r in base], [r["baseline_time_s"] for r in base], "s--",
                 label="out-of-core baseline")
    for r in recs:
        ax1.annotate(f"v={r.get('design_v')}", (r["budget_gib"], r["time_s"]), fontsize=7,
                     textcoords="offset points", xytext=(3, 4))
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("memory budget (GiB)")
    ax1.set_ylabel("forward time (s)")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    peaks = [r for r in recs if r.get("peak_gib") is not None]
    ax2.plot([r["budget_gib"] for r in peaks], [r["peak_gib"] for r in peaks], "o-",
             label="peak device memory")
    bpeaks = [r for r in base if r.get("baseline_peak_gib") is not None]
    if bpeaks:
        ax2.plot([r["budget_gib"] for r in bpeaks], [r["baseline_peak_gib"] for r in bpeaks],
                 "s--", label="baseline peak")
    if xs:
        ax2.plot([min(xs), max(xs)], [min(xs), max(xs)], "k:", label="y = budget")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log", base=2)
    ax2.set_xlabel("memory budget (GiB)")
    ax2.set_ylabel("peak device memory (GiB)")
    ax2.legend(fontsize=8)
    L = meta.get("L", 0)
    fig.suptitle(f"Memory scaling on {meta.get('gpu', '?')}: L={L:,} "
                 f"{'causal' if meta.get('causal') else 'full'}, H={meta.get('H')}, "
                 f"D={meta.get('D')}, {meta.get('dtype', 'bf16')}, inputs in pinned host memory",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=1 << 20, help="sequence length L")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--full", dest="causal", action="store_false",
                   help="full attention (default causal)")
    p.add_argument("--budgets-gib", type=float, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--warmup-below", type=float, default=20.0, metavar="S",
                   help="a first run shorter than S seconds is a warm-up and a second run is "
                        "timed; longer ones are timed as they are")
    p.add_argument("--with-baseline", action="store_true",
                   help="also time the plain out-of-core baseline at each budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda",
                   help="'cuda' (default); 'cpu' runs a tiny smoke test of this script")
    p.add_argument("--progress", action="store_true", help="tqdm bar per run")
    p.add_argument("--json", help="write the results here (rewritten after every budget)")
    p.add_argument("--plot", nargs=2, metavar=("JSON", "PNG"), help="only plot a results file")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.plot:
        plot(*args.plot)
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_memory_scaling: needs a CUDA device (or --device cpu for a smoke test)",
              file=sys.stderr)
        return 2
    if any(g <= 0 for g in args.budgets_gib) or args.seq <= 0:
        print("bench_memory_scaling: --budgets-gib and --seq must be positive", file=sys.stderr)
        return 2
    data = run(args)
    print(f"{'budget GiB':>10} {'v':>5} {'time s':>8} {'TFLOP/s':>8} {'peak GiB':>9} "
          f"{'run':>6}")
    for r in data["records"]:
        if "error" in r:
            print(f"{r['budget_gib']:>10g} error: {r['error']}")
            continue
        peak = r["peak_gib"]
        print(f"{r['budget_gib']:>10g} {r['design_v']!s:>5} {r['time_s']:8.2f} "
              f"{r['tflops']:8.1f} {'-' if peak is None else format(peak, '9.2f'):>9} "
              f"{r['timed_run']:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
