"""``attention`` (on-GPU and streamed from pinned host memory) vs the fastest monolithic kernel.

Run on the GPU machine (bf16, batch 1, 16 heads, head dim 128)::

    python benchmarks/bench_attention.py --lengths 65536 262144 --json results.json

For each length and mask (full, causal), in ONE process so that the ratios compare like with
like:

* ``mono``: the fastest monolithic kernel that runs here (FA4, else cuDNN, ...), forward and
  backward (backward given the kernel's own out/lse);
* ``gpu``: :func:`cqs_attention.attention` with q, k, v already on the GPU;
* ``streamed``: the same with q, k, v in pinned host memory and ``memory_budget`` = 1/4 of
  the Q+K+V bytes;
* ``gpu`` backward: ``attention(...)`` under autograd, ``out.backward(dout)``.

TFLOP/s counts 4·B·H·L²·D per forward (halved for causal) and 2.5x that per backward. Times are
medians of CUDA-event-timed repetitions after one warm-up call. Each record carries
``ratio_on_gpu``, ``ratio_streamed`` and ``ratio_backward`` (attention / fastest monolithic in
this run), the GPU name, torch version and kernel names. ``--plot`` turns a JSON file into a
PNG (runs without a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time


def _tflops(L: int, h: int, d: int, causal: bool, ms: float, backward: bool = False) -> float:
    flop = 4.0 * h * L * L * d * (0.5 if causal else 1.0) * (2.5 if backward else 1.0)
    return flop / (ms * 1e-3) / 1e12


def _time_ms(fn, reps: int) -> float:
    """Median CUDA-event time of ``fn`` over ``reps`` runs (after one warm-up run)."""
    import statistics

    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _fastest_kernel(names: list[str]):
    import torch

    from cqs_attention.kernels import available_kernels

    dev = torch.device("cuda")
    for k in available_kernels():
        if k.name in names and not k.not_supported(device=dev, dtype=torch.bfloat16,
                                                   head_dim=128, mask=None, gqa=False,
                                                   needs_grad=True):
            return k
    raise RuntimeError(f"none of {names} runs here")


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def measure(L: int, causal: bool, *, heads: int, head_dim: int, reps: int, kernel_names,
            backward: bool, streamed: bool, progress: bool, plan=None) -> dict:
    """One configuration: monolithic vs attention on GPU vs streamed, fwd (+ bwd)."""
    import torch

    from cqs_attention.api import attention
    from cqs_attention.kernels.base import BlockMask
    from cqs_attention.report import last_run_stats

    dev = torch.device("cuda")
    dt = torch.bfloat16
    scale = 1 / math.sqrt(head_dim)
    mono = _fastest_kernel(kernel_names)
    rec: dict = {"L": L, "causal": causal, "B": 1, "H": heads, "D": head_dim,
                 "dtype": "bfloat16", "gpu": torch.cuda.get_device_name(),
                 "torch": torch.__version__, "mono_kernel": mono.name, "plan_arg": plan}
    g = torch.Generator(device=dev).manual_seed(L + causal)
    q, k, v, dout = (torch.randn(1, heads, L, head_dim, device=dev, dtype=dt, generator=g)
                     for _ in range(4))
    mask = BlockMask(causal_offset=0) if causal else None

    # fastest monolithic kernel
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = _time_ms(lambda: mono.fwd(q, k, v, scale=scale, mask=mask), reps)
    rec["mono_fwd_ms"] = ms
    rec["mono_fwd_tflops"] = _tflops(L, heads, head_dim, causal, ms)
    rec["mono_fwd_peak_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    mono_out, mono_lse = mono.fwd(q, k, v, scale=scale, mask=mask)
    if backward:
        ms = _time_ms(lambda: mono.bwd(dout, q, k, v, mono_out, mono_lse, scale=scale,
                                       mask=mask), reps)
        rec["mono_bwd_ms"] = ms
        rec["mono_bwd_tflops"] = _tflops(L, heads, head_dim, causal, ms, backward=True)
    if progress:
        print("mono", json.dumps(rec), flush=True)

    # attention, tensors on the GPU
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = _time_ms(lambda: attention(q, k, v, causal=causal, plan=plan, progress=False), reps)
    rep = last_run_stats()
    rec["gpu_fwd_ms"] = ms
    rec["gpu_fwd_tflops"] = _tflops(L, heads, head_dim, causal, ms)
    rec["gpu_fwd_peak_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    rec["gpu_report"] = None if rep is None else _summary(rep)
    out = attention(q, k, v, causal=causal, plan=plan, progress=False)
    rec["gpu_vs_mono_rel_err"] = _rel(out, mono_out)
    del out
    rec["ratio_on_gpu"] = rec["gpu_fwd_tflops"] / rec["mono_fwd_tflops"]
    if progress:
        print("gpu", json.dumps(rec), flush=True)

    if backward:
        torch.cuda.empty_cache()
        qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))

        def fwd_bwd():
            o = attention(qq, kk, vv, causal=causal, plan=plan, progress=False)
            o.backward(dout)
            qq.grad = kk.grad = vv.grad = None

        fb_ms = _time_ms(fwd_bwd, max(1, reps // 2))
        bwd_ms = max(fb_ms - rec["gpu_fwd_ms"], 1e-9)
        rec["gpu_fwd_plus_bwd_ms"] = fb_ms
        rec["gpu_bwd_ms"] = bwd_ms
        rec["gpu_bwd_tflops"] = _tflops(L, heads, head_dim, causal, bwd_ms, backward=True)
        rec["ratio_backward"] = rec["gpu_bwd_tflops"] / rec["mono_bwd_tflops"]
        del qq, kk, vv
        if progress:
            print("bwd", json.dumps(rec), flush=True)

    if streamed:
        hq, hk, hv = (t.cpu().pin_memory() for t in (q, k, v))
        budget = (hq.numel() + hk.numel() + hv.numel()) * hq.element_size() // 4
        rec["streamed_budget_bytes"] = budget
        del q, k, v, dout, mono_out, mono_lse
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        res = attention(hq, hk, hv, causal=causal, memory_budget=budget, device=dev,
                        progress=False)
        torch.cuda.synchronize()
        rec["streamed_first_s"] = time.perf_counter() - t0
        ms = _time_ms(lambda: attention(hq, hk, hv, causal=causal, memory_budget=budget,
                                        device=dev, progress=False), max(1, reps // 2))
        rep = last_run_stats()
        rec["streamed_fwd_ms"] = ms
        rec["streamed_fwd_tflops"] = _tflops(L, heads, head_dim, causal, ms)
        rec["streamed_peak_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        rec["streamed_report"] = None if rep is None else _summary(rep)
        rec["ratio_streamed"] = rec["streamed_fwd_tflops"] / rec["mono_fwd_tflops"]
        del res
        if progress:
            print("streamed", json.dumps(rec), flush=True)
    return rec


def _summary(rep) -> dict:
    d = rep.to_dict()
    keep = ("plan_source", "design_v", "design_k", "levels", "tasks", "kernel_calls",
            "bytes_to_device", "bytes_from_device", "peak_device_bytes", "timings",
            "accumulator_device", "oom_retries")
    return {k: d.get(k) for k in keep}


def plot(json_path: str, png_path: str) -> None:
    """Bar chart of forward/backward TFLOP/s per configuration from a results JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(json_path) as fh:
        data = json.load(fh)
    recs = [r for r in data["records"] if "mono_fwd_tflops" in r]
    labels = [f"{r['L'] // 1024}K {'causal' if r['causal'] else 'full'}" for r in recs]
    series = [("mono_fwd_tflops", "fastest monolithic fwd"), ("gpu_fwd_tflops", "attention fwd"),
              ("streamed_fwd_tflops", "attention streamed fwd"),
              ("mono_bwd_tflops", "monolithic bwd"), ("gpu_bwd_tflops", "attention bwd")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(recs)), 4))
    width = 0.8 / len(series)
    for i, (key, name) in enumerate(series):
        xs = [j + i * width for j in range(len(recs))]
        ax.bar(xs, [r.get(key) or 0 for r in recs], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(recs))], labels)
    ax.set_ylabel("TFLOP/s (bf16, H=16, D=128)")
    gpu = recs[0]["gpu"] if recs else ""
    ax.set_title(f"cqs_attention vs monolithic kernels on {gpu}")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[65536, 262144])
    p.add_argument("--masks", nargs="+", choices=["full", "causal"], default=["full", "causal"])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--kernels", nargs="+", default=["fa4", "fa3", "cudnn", "fa2", "sdpa_flash"])
    p.add_argument("--plan", type=int, default=None,
                   help="Singer design order q for the on-GPU runs (default: attention's choice)")
    p.add_argument("--no-backward", action="store_true")
    p.add_argument("--no-streamed", action="store_true")
    p.add_argument("--json", help="write the records here")
    p.add_argument("--plot", nargs=2, metavar=("JSON", "PNG"), help="only plot a results file")
    args = p.parse_args(argv)
    if args.plot:
        plot(*args.plot)
        return 0
    import torch

    if not torch.cuda.is_available():
        print("bench_attention: needs a CUDA device", file=sys.stderr)
        return 2
    records = []
    for L in args.lengths:
        for m in args.masks:
            try:
                rec = measure(L, m == "causal", heads=args.heads, head_dim=args.head_dim,
                              reps=args.reps, kernel_names=args.kernels,
                              backward=not args.no_backward, streamed=not args.no_streamed,
                              progress=True, plan=args.plan)
            except Exception as exc:
                rec = {"L": L, "causal": m == "causal", "error": f"{type(exc).__name__}: {exc}"}
                print("error", json.dumps(rec), flush=True)
            records.append(rec)
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump({"records": records}, fh, indent=1)
            torch.cuda.empty_cache()
    print(f"{'L':>8} {'mask':>6} {'mono':>6} {'fwd':>7} {'gpu':>7} {'stream':>7} "
          f"{'r_gpu':>6} {'r_str':>6} {'r_bwd':>6}")
    for r in records:
        if "mono_fwd_tflops" not in r:
            print(r)
            continue
        print(f"{r['L']:>8} {'causal' if r['causal'] else 'full':>6} {r['mono_kernel']:>6} "
              f"{r['mono_fwd_tflops']:7.1f} {r.get('gpu_fwd_tflops', 0):7.1f} "
              f"{r.get('streamed_fwd_tflops', 0):7.1f} {r.get('ratio_on_gpu', 0):6.3f} "
              f"{r.get('ratio_streamed', 0):6.3f} {r.get('ratio_backward', 0):6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
