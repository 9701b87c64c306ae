"""``attention`` (on-GPU and streamed from pinned host memory) vs the fastest monolithic kernel
and the plain out-of-core baseline.

Run on the GPU machine (bf16, batch 1, 16 heads, head dim 128)::

    python benchmarks/bench_attention.py --lengths 65536 262144 --json results.json

For each length and mask (full, causal), in ONE process so that the ratios compare like with
like:

* ``mono``: the monolithic kernels of ``--kernels`` that run here, forward and backward
  (backward given the kernel's own out/lse); the fastest forward is the reference of every
  forward ratio, the fastest backward of every backward ratio. At ``L >=
  --mono-only-fastest-from`` (default 1M), or everywhere with ``--mono-only-fastest``, only the
  first kernel of ``--kernels`` that runs here (the fastest by the anchors) is timed;
* ``gpu``: :func:`cqs_attention.attention` with q, k, v already on the GPU, and its backward
  (``attention(...)`` under autograd, ``out.backward(dout)``, minus the forward time);
* ``streamed``: the same with q, k, v in pinned host memory and ``memory_budget`` = 1/4 of
  the Q+K+V bytes, forward, and backward (q, k, v pinned host tensors requiring grad, dout
  pinned; fwd+bwd time minus the streamed forward; ``--no-streamed-backward`` skips it);
* ``baseline``: the plain query-block loop of ``benchmarks/_baseline_loop.py`` (a query block
  and its accumulators resident, key/value blocks streamed double-buffered, the same kernel),
  independent of the engine, on the same pinned inputs and budget.

``--budget-fraction`` takes several values (e.g. ``0.125 0.25 0.5``, or ``1/16 1/8``): the
streamed, baseline and
streamed-backward parts run once per budget, one record each (the monolithic and on-GPU parts
are measured once and copied into each). Each streamed record names the schedule the planner
chose (``streamed_schedule``, ``streamed_accumulators``, ``streamed_chosen_because``) and its
predicted vs measured time.

**The host-link bound** (issue 21): each streamed forward and backward also records the bytes
the run moved (``streamed_bytes_to_device``, ``streamed_bytes_from_device``; ``streamed_bwd_*``
for the backward), the bytes any schedule under that budget must move at least
(``*_min_bytes_to_device``, ``*_min_bytes_from_device``, ``*_bound_kind``: from
:func:`cqs_attention.engine.placement.traffic.min_link_bytes`), and the pinned host <-> device
bandwidths measured once per process (``link_h2d_bytes_per_s``, ``link_d2h_bytes_per_s``: the
best of 3 copies of a 512 MiB pinned buffer; None on the CPU). The lower bound of the run's
time is ``*_bound_ms = max(kernel, link)``: the fastest monolithic kernel's time in this
process (``mono_fwd_ms``, ``mono_bwd_ms``) and ``max(min bytes in / h2d, min bytes out /
d2h)`` (the link is full duplex: the two directions may overlap); ``*_bound_limited_by`` says
which. ``ratio_to_bound`` (forward) and ``ratio_to_bound_backward`` are bound / measured: 1.0
would be a run at the bound; None where the part failed. On the CPU, with no link measured,
the bound is the kernel's time. ``benchmarks/plot_budget_ratio.py`` draws the ratios against
the budget fraction beside the bound (the sweep: the ``sweep_*`` parts of
``scripts/gpu_runs.sh``).

TFLOP/s counts 4·B·H·L²·D per forward (halved for causal) and 2.5x that per backward. Times on
the GPU are medians of CUDA-event-timed repetitions after one warm-up call; streamed and
baseline runs are timed by the wall clock (synchronized), the warm-up being the first call
(``streamed_first_s``, ``baseline_first_s``). ``--reps`` defaults to 5 below 1M tokens and to
1 (one warm-up, one timed run) from 1M on; each record says ``reps``.

Each record carries ``ratio_on_gpu``, ``ratio_streamed``, ``ratio_backward`` (on-GPU),
``ratio_backward_streamed``, ``ratio_baseline`` (baseline / fastest monolithic) and
``streamed_vs_baseline`` (CQS streamed / baseline TFLOP/s), the GPU name, torch version, kernel
names, bytes moved and the per-stage profiles (``streamed_report.profile``,
``baseline_report.profile``: h2d, compute, d2h, merge, idle seconds). The JSON file is rewritten
after every measured part, so a run cut short keeps what it measured. ``--plot JSON PNG`` turns
a results file into a PNG (runs without a GPU).

``--device cpu`` is a smoke test of this script with small CPU defaults (L = 1024, 4 heads,
D = 64, 3 repetitions: well under a minute on a 2-core machine). Each measured part prints
one line as it completes (``--quiet``: none). Ctrl-C stops between two timed calls (each is
short on the CPU defaults): what was measured so far is printed as the table (and saved to
``--json``), and the exit code is 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _baseline_loop import query_block_loop
from _common import BenchDevice, report_summary, tflops

from cqs_attention.engine.placement.traffic import min_link_bytes
from cqs_design.cli.options import UsageParser, int_at_least

#: from this length on, ``--reps`` defaults to 1 and only the fastest monolithic kernel is timed
LONG = 1 << 20

#: default sizes per device kind: the GPU benchmark, and a CPU smoke test sized to finish in
#: well under a minute on a 2-core machine
DEFAULTS = {
    "cuda": {"lengths": [65536, 262144], "heads": 16, "head_dim": 128, "reps": None},
    "cpu": {"lengths": [1024], "heads": 4, "head_dim": 64, "reps": 3},
}


def _tflops(L: int, h: int, d: int, causal: bool, ms: float, backward: bool = False) -> float:
    return tflops(L, h, d, causal, ms * 1e-3, backward=backward)


_Device = BenchDevice


def _time_ms(fn: Callable[[], Any], reps: int, dev: _Device | None = None) -> float:
    """Median CUDA-event time of ``fn`` over ``reps`` runs (after one warm-up run); wall clock
    on the CPU."""
    import torch

    if dev is not None and not dev.cuda:
        return _wall_ms(fn, reps, dev=dev)[1]
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


def _wall_ms(fn: Callable[[], Any], reps: int, warmup: bool = True,
             dev: _Device | None = None) -> tuple[float, float]:
    """``(first_s, median_ms)``: wall time of a warm-up call, and the median of ``reps`` more
    (``warmup=False``: the first call is the one timed run)."""
    sync = dev.sync if dev is not None else _Device("cuda").sync
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    if not warmup:
        return first, first * 1e3
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return first, statistics.median(times)


def _difference(total_ms: float, fwd_ms: float) -> float:
    """Backward time = (forward + backward) - forward; an error when timing noise makes it
    non-positive (recorded under ``errors`` by the caller instead of an absurd rate)."""
    if total_ms <= fwd_ms:
        raise RuntimeError(f"forward+backward ({total_ms:.3f} ms) was not slower than the "
                           f"forward alone ({fwd_ms:.3f} ms): timing noise, no backward time")
    return total_ms - fwd_ms


def _runnable_kernels(names: list[str], dev: Any, head_dim: int) -> list:
    """Kernels named in ``names`` that run bf16 here with a backward, in ``names`` order."""
    import torch

    from cqs_attention.kernels import available_kernels

    by_name = {k.name: k for k in available_kernels()}
    out = []
    for n in names:
        k = by_name.get(n)
        if k is not None and not k.not_supported(device=dev, dtype=torch.bfloat16,
                                                 head_dim=head_dim, mask=None, gqa=False,
                                                 needs_grad=True):
            out.append(k)
    if not out:
        raise RuntimeError(f"none of {names} runs here")
    return out


def _rel(a, b, dev: Any = "cuda") -> float:
    """||a - b|| / ||b||, one head at a time on ``dev`` (inputs may be big host tensors)."""
    import torch

    num = den = 0.0
    for h in range(b.shape[1]):
        x = a[:, h].to(dev).float()
        y = b[:, h].to(dev).float()
        num += float(torch.linalg.vector_norm(x - y).double() ** 2)
        den += float(torch.linalg.vector_norm(y).double() ** 2)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


_summary = report_summary

#: bytes of the pinned buffer the host <-> device bandwidths are measured with
LINK_PROBE_BYTES = 512 << 20

#: the measured ``(h2d, d2h)`` bytes/s per device, once per process
_LINK: dict[str, tuple[float, float]] = {}


def link_rates(dev: _Device, nbytes: int = LINK_PROBE_BYTES,
               reps: int = 3) -> tuple[float | None, float | None]:
    """``(h2d, d2h)``: the best of ``reps`` copies (after one warm-up) of a pinned host buffer
    of ``nbytes`` to the device and back, in bytes/s, CUDA-event timed; measured once per
    process and device. ``(None, None)`` on the CPU."""
    if not dev.cuda:
        return None, None
    key = str(dev.dev)
    if key not in _LINK:
        import torch

        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        buf = torch.empty(nbytes, dtype=torch.uint8, device=dev.dev)

        def best(copy: Callable[[], Any]) -> float:
            times = []
            for _ in range(reps + 1):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                copy()
                b.record()
                torch.cuda.synchronize(dev.dev)
                times.append(a.elapsed_time(b) / 1e3)
            return nbytes / min(times[1:])

        h2d = best(lambda: buf.copy_(host, non_blocking=True))
        d2h = best(lambda: host.copy_(buf, non_blocking=True))
        del host, buf
        torch.cuda.empty_cache()
        _LINK[key] = (h2d, d2h)
    return _LINK[key]


def time_bound(*, kernel_ms: float | None, min_in: int, min_out: int, h2d: float | None,
               d2h: float | None, measured_ms: float | None) -> dict[str, Any]:
    """The lower bound of a streamed run's time: the larger of the kernel's time and the
    link's (``max(min_in / h2d, min_out / d2h)``: the link is full duplex), and bound /
    measured. Without bandwidths the bound is the kernel's time; without a kernel time or a
    measured time, what cannot be computed is None.

    >>> b = time_bound(kernel_ms=10.0, min_in=3 * 10**9, min_out=10**9, h2d=5e10, d2h=5e10,
    ...                measured_ms=120.0)
    >>> b["link_ms"], b["bound_ms"], b["bound_limited_by"], b["ratio_to_bound"]
    (60.0, 60.0, 'link', 0.5)
    >>> time_bound(kernel_ms=10.0, min_in=1, min_out=1, h2d=None, d2h=None,
    ...            measured_ms=40.0)["ratio_to_bound"]
    0.25
    """
    link_ms = None if h2d is None or d2h is None else max(min_in / h2d, min_out / d2h) * 1e3
    if kernel_ms is None:
        bound = None
    else:
        bound = kernel_ms if link_ms is None else max(kernel_ms, link_ms)
    limited = None if bound is None else (
        "link" if link_ms is not None and link_ms > kernel_ms else "kernel")
    ratio = None if bound is None or not measured_ms else bound / measured_ms
    return {"link_ms": link_ms, "bound_ms": bound, "bound_limited_by": limited,
            "ratio_to_bound": ratio}


def measure(L: int, causal: bool, *, heads: int, head_dim: int, reps: int,
            kernel_names: list[str], backward: bool, streamed: bool, progress: bool,
            plan: int | None = None, mono_only_fastest: bool = False, gpu: bool = True,
            baseline: bool = True, streamed_backward: bool = True, device: str = "cuda",
            budget_fraction: float = 0.25, on_update: Callable[[dict], None] | None = None,
            more_fractions: tuple[float, ...] = ()) -> list[dict]:
    """One configuration: monolithic vs attention on GPU vs streamed vs baseline, fwd (+ bwd);
    one record per budget fraction (``budget_fraction`` first, then ``more_fractions``).

    ``on_update(rec)`` is called after every part (the caller saves partial results).
    ``device="cpu"`` runs the same code paths on the CPU (smoke test of this script; "pinned"
    tensors are plain host tensors there and nothing is streamed).
    """
    import torch

    from cqs_attention.api import attention
    from cqs_attention.kernels.base import BlockMask
    from cqs_attention.report import last_run_stats

    D = _Device(device)
    dev = D.dev
    dt = torch.bfloat16
    elem = torch.empty((), dtype=dt).element_size()
    scale = 1 / math.sqrt(head_dim)
    kernels = _runnable_kernels(kernel_names, dev, head_dim)
    if mono_only_fastest:
        kernels = kernels[:1]
    rec: dict = {"L": L, "causal": causal, "B": 1, "H": heads, "D": head_dim,
                 "dtype": "bfloat16", "gpu": D.name(), "torch": torch.__version__,
                 "plan_arg": plan, "reps": reps, "warmup": 1,
                 "mono_kernels_timed": [k.name for k in kernels]}

    def update(part: str) -> None:
        if on_update is not None:  # first: the caller holds the record before it is shown
            on_update(rec)
        if progress:
            print(part_line(part, rec, time.perf_counter() - _STARTED[0]), flush=True)

    g = torch.Generator(device=dev).manual_seed(L + causal)
    q, k, v, dout = (torch.randn(1, heads, L, head_dim, device=dev, dtype=dt, generator=g)
                     for _ in range(4))
    mask = BlockMask(causal_offset=0) if causal else None

    # monolithic kernels: the fastest forward and the fastest backward are the references
    per: dict[str, dict] = {}
    best_out = None
    for kern in kernels:
        try:
            base = D.start_peak()
            ms = _time_ms(lambda kern=kern: kern.fwd(q, k, v, scale=scale, mask=mask), reps, D)
            r = {"fwd_ms": ms, "fwd_tflops": _tflops(L, heads, head_dim, causal, ms),
                 "fwd_peak_gib": D.peak_gib(base)}
            o, lse = kern.fwd(q, k, v, scale=scale, mask=mask)
            if backward:
                ms = _time_ms(lambda kern=kern, o=o, lse=lse: kern.bwd(
                    dout, q, k, v, o, lse, scale=scale, mask=mask), reps, D)
                r["bwd_ms"] = ms
                r["bwd_tflops"] = _tflops(L, heads, head_dim, causal, ms, backward=True)
        except Exception as exc:  # one kernel failing (OOM, compile error) leaves the others
            per[kern.name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"mono {kern.name} error: {per[kern.name]['error']}", file=sys.stderr,
                  flush=True)
            o = lse = None
            D.start_peak()
            continue
        per[kern.name] = r
        if best_out is None or r["fwd_tflops"] > per[rec["mono_kernel"]]["fwd_tflops"]:
            rec["mono_kernel"] = kern.name
            best_out = o
        del o, lse
    rec["mono_kernels"] = per
    if best_out is None:
        raise RuntimeError("no monolithic kernel ran: " + json.dumps(per))
    mono_out, best_out = best_out, None
    best = per[rec["mono_kernel"]]
    rec["mono_fwd_ms"] = best["fwd_ms"]
    rec["mono_fwd_tflops"] = best["fwd_tflops"]
    rec["mono_fwd_peak_gib"] = best["fwd_peak_gib"]
    if backward:
        ok = [n for n in per if "bwd_tflops" in per[n]]
        bwd_name = max(ok, key=lambda n: per[n]["bwd_tflops"])
        rec["mono_bwd_kernel"] = bwd_name
        rec["mono_bwd_ms"] = per[bwd_name]["bwd_ms"]
        rec["mono_bwd_tflops"] = per[bwd_name]["bwd_tflops"]
    update("mono")

    def record_bound(prefix: str, rep: Any, *, backward: bool, measured_ms: float,
                     ratio_key: str) -> None:
        """The bytes the run moved, the least any schedule under ``budget`` moves, and the
        time bound (see the module docstring), under ``prefix``."""
        lb = min_link_bytes(batch=1, heads=heads, q_len=L, kv_len=L, head_dim=head_dim,
                            elem=elem, budget=budget, causal=causal, backward=backward)
        h2d, d2h = link[0] if link else (None, None)
        rec["link_h2d_bytes_per_s"], rec["link_d2h_bytes_per_s"] = h2d, d2h
        rec[f"{prefix}_bytes_to_device"] = rep.bytes_to_device
        rec[f"{prefix}_bytes_from_device"] = rep.bytes_from_device
        rec[f"{prefix}_min_bytes_to_device"] = lb.bytes_in
        rec[f"{prefix}_min_bytes_from_device"] = lb.bytes_out
        rec[f"{prefix}_bound_kind"] = lb.kind
        b = time_bound(kernel_ms=rec.get("mono_bwd_ms" if backward else "mono_fwd_ms"),
                       min_in=lb.bytes_in, min_out=lb.bytes_out, h2d=h2d, d2h=d2h,
                       measured_ms=measured_ms)
        rec[f"{prefix}_link_ms"] = b["link_ms"]
        rec[f"{prefix}_bound_ms"] = b["bound_ms"]
        rec[f"{prefix}_bound_limited_by"] = b["bound_limited_by"]
        rec[ratio_key] = b["ratio_to_bound"]

    link: list[tuple[float | None, float | None]] = []

    def part_gpu() -> None:
        base = D.start_peak()
        keep: dict = {}

        def run_gpu() -> None:
            keep.pop("out", None)
            keep["out"] = attention(q, k, v, causal=causal, plan=plan, device=dev,
                                    progress=False)

        ms = _time_ms(run_gpu, reps, D)
        rep = last_run_stats()
        rec["gpu_fwd_ms"] = ms
        rec["gpu_fwd_tflops"] = _tflops(L, heads, head_dim, causal, ms)
        rec["gpu_fwd_peak_gib"] = D.peak_gib(base)
        rec["gpu_report"] = _summary(rep)
        rec["gpu_predicted_over_measured"] = rep.predicted_seconds * 1e3 / ms
        rec["gpu_vs_mono_rel_err"] = _rel(keep.pop("out"), mono_out, dev)
        rec["ratio_on_gpu"] = rec["gpu_fwd_tflops"] / rec["mono_fwd_tflops"]

    def part_gpu_bwd() -> None:
        D.start_peak()
        qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))

        def fwd_bwd() -> None:
            o = attention(qq, kk, vv, causal=causal, plan=plan, device=dev, progress=False)
            o.backward(dout)
            qq.grad = kk.grad = vv.grad = None

        fb_ms = _time_ms(fwd_bwd, max(1, reps // 2), D)
        rec["gpu_fwd_plus_bwd_ms"] = fb_ms
        bwd_ms = _difference(fb_ms, rec["gpu_fwd_ms"])
        rec["gpu_bwd_ms"] = bwd_ms
        rec["gpu_bwd_tflops"] = _tflops(L, heads, head_dim, causal, bwd_ms, backward=True)
        rec["ratio_backward"] = rec["gpu_bwd_tflops"] / rec["mono_bwd_tflops"]

    def part_streamed() -> None:
        base = D.start_peak()
        keep: dict = {}

        def run_streamed() -> None:
            keep.pop("out", None)
            keep["out"] = attention(hq, hk, hv, causal=causal, memory_budget=budget,
                                    device=dev, progress=False)

        first, ms = _wall_ms(run_streamed, max(1, reps // 2), dev=D)
        rep = last_run_stats()
        rec["streamed_first_s"] = first
        rec["streamed_fwd_ms"] = ms
        rec["streamed_fwd_tflops"] = _tflops(L, heads, head_dim, causal, ms)
        rec["streamed_peak_gib"] = D.peak_gib(base)
        peak = D.peak_bytes(base)
        rec["streamed_peak_bytes"] = peak
        rec["streamed_peak_over_budget"] = None if peak is None else peak / budget
        rec["streamed_footprint_bytes"] = rep.task_bytes_estimate
        rec["streamed_oom_retries"] = rep.oom_retries
        rec["streamed_report"] = _summary(rep)
        rec["streamed_schedule"] = rep.schedule
        rec["schedule"] = rep.schedule
        rec["streamed_accumulators"] = rep.accumulators
        rec["streamed_chosen_because"] = rep.chosen_because
        rec["streamed_predicted_ms"] = rep.predicted_seconds * 1e3
        rec["streamed_predicted_over_measured"] = rep.predicted_seconds * 1e3 / ms
        rec["streamed_vs_mono_rel_err"] = _rel(keep.pop("out"), mono_out, dev)
        rec["ratio_streamed"] = rec["streamed_fwd_tflops"] / rec["mono_fwd_tflops"]
        record_bound("streamed", rep, backward=False, measured_ms=ms, ratio_key="ratio_to_bound")

    def part_baseline() -> None:
        base = D.start_peak()
        keep: dict = {}

        def run_baseline() -> None:
            keep.pop("out", None)
            keep["out"] = query_block_loop(hq, hk, hv, causal=causal, budget=budget,
                                           device=dev, kernel=kernels[0])

        first, ms = _wall_ms(run_baseline, max(1, reps // 2), dev=D)
        rec["baseline_first_s"] = first
        rec["baseline_fwd_ms"] = ms
        rec["baseline_fwd_tflops"] = _tflops(L, heads, head_dim, causal, ms)
        rec["baseline_peak_gib"] = D.peak_gib(base)
        rec["baseline_kernel"] = kernels[0].name
        rec["baseline_vs_mono_rel_err"] = _rel(keep.pop("out"), mono_out, dev)
        rec["ratio_baseline"] = rec["baseline_fwd_tflops"] / rec["mono_fwd_tflops"]
        if "streamed_fwd_tflops" in rec:
            rec["streamed_vs_baseline"] = (rec["streamed_fwd_tflops"]
                                           / rec["baseline_fwd_tflops"])

    def part_streamed_bwd() -> None:
        base = D.start_peak()
        gq, gk, gv = (t.detach().requires_grad_(True) for t in (hq, hk, hv))

        def streamed_fwd_bwd() -> None:
            o = attention(gq, gk, gv, causal=causal, memory_budget=budget, device=dev,
                          progress=False)
            o.backward(hdout)
            gq.grad = gk.grad = gv.grad = None

        # from 1M tokens on, the first call is the timed one (the forward ran already)
        warm = L < LONG
        first, fb_ms = _wall_ms(streamed_fwd_bwd, max(1, reps // 2), warmup=warm, dev=D)
        rep = last_run_stats()
        rec["streamed_bwd_warmup"] = int(warm)
        fwd_ms = rec.get("streamed_fwd_ms")
        if fwd_ms is None:  # no streamed forward measured: time one now
            _, fwd_ms = _wall_ms(lambda: attention(hq, hk, hv, causal=causal,
                                                   memory_budget=budget, device=dev,
                                                   progress=False), 1, warmup=False, dev=D)
            rec["streamed_fwd_ms_for_bwd"] = fwd_ms
        rec["streamed_fwd_plus_bwd_first_s"] = first
        bwd_ms = _difference(fb_ms, fwd_ms)
        rec["streamed_fwd_plus_bwd_ms"] = fb_ms
        rec["streamed_bwd_ms"] = bwd_ms
        rec["streamed_bwd_tflops"] = _tflops(L, heads, head_dim, causal, bwd_ms,
                                             backward=True)
        rec["streamed_bwd_peak_gib"] = D.peak_gib(base)
        peak = D.peak_bytes(base)  # over the forward and the backward
        rec["streamed_bwd_peak_bytes"] = peak
        rec["streamed_bwd_peak_over_budget"] = None if peak is None else peak / budget
        rec["streamed_bwd_footprint_bytes"] = rep.task_bytes_estimate
        rec["streamed_bwd_oom_retries"] = rep.oom_retries
        rec["streamed_bwd_predicted_ms"] = rep.predicted_seconds * 1e3
        rec["streamed_bwd_predicted_over_measured"] = rep.predicted_seconds * 1e3 / bwd_ms
        rec["streamed_bwd_report"] = _summary(rep)
        rec["streamed_bwd_schedule"] = rep.schedule
        rec["streamed_bwd_accumulators"] = rep.accumulators
        if "mono_bwd_tflops" in rec:
            rec["ratio_backward_streamed"] = rec["streamed_bwd_tflops"] / rec["mono_bwd_tflops"]
        record_bound("streamed_bwd", rep, backward=True, measured_ms=bwd_ms,
                     ratio_key="ratio_to_bound_backward")

    def run_part(name: str, fn: Callable[[], None]) -> None:
        """Run one part; an error is recorded under ``errors[name]`` and the rest goes on."""
        try:
            fn()
        except Exception as exc:
            rec.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name} error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        D.start_peak()  # frees what the part left in the allocator cache
        update(name)

    if gpu:
        run_part("gpu", part_gpu)
        if backward and "gpu_fwd_ms" in rec:
            run_part("gpu_bwd", part_gpu_bwd)
    if not (streamed or baseline or (backward and streamed_backward)):
        return [rec]
    mono_out = mono_out.cpu()  # frees the device for the streamed runs
    hq, hk, hv = (D.pin(t) for t in (q, k, v))
    hdout = D.pin(dout) if backward and streamed_backward else None
    q = k = v = dout = None  # frees the device copies (the parts above hold these names)
    try:
        link.append(link_rates(D))
    except Exception as exc:  # no bandwidth: the bound is the kernel's time alone
        rec.setdefault("errors", {})["link"] = f"{type(exc).__name__}: {exc}"
        print(f"link error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    first_rec = rec
    out_recs = []
    for frac in (budget_fraction, *more_fractions):
        if frac != budget_fraction:
            rec = {key: val for key, val in first_rec.items()
                   if (key.startswith(("mono", "gpu", "ratio_on_gpu", "ratio_backward"))
                   and not key.startswith("ratio_backward_streamed"))
                   or key in ("L", "causal", "B", "H", "D", "dtype", "torch", "plan_arg",
                              "reps", "warmup", "mono_kernels_timed")}
            rec["gpu"] = first_rec["gpu"]
        budget = int((hq.numel() + hk.numel() + hv.numel()) * hq.element_size() * frac)
        rec["streamed_budget_bytes"] = budget
        rec["budget_fraction"] = frac
        if streamed:  # None unless the part measures it (an error leaves None)
            rec["ratio_to_bound"] = None
        if hdout is not None:
            rec["ratio_to_bound_backward"] = None
        if streamed:
            run_part("streamed", part_streamed)
        if baseline:
            run_part("baseline", part_baseline)
        if hdout is not None:
            run_part("streamed_bwd", part_streamed_bwd)
        out_recs.append(rec)
    return out_recs


#: when this run started (reset by :func:`main`): the seconds shown on each part's line
_STARTED = [time.perf_counter()]

#: per part: (label, the keys its line shows as (key, unit))
_PART_KEYS = {
    "mono": ("monolithic", (("mono_kernel", ""), ("mono_fwd_ms", "ms fwd"),
                            ("mono_fwd_tflops", "TFLOP/s"), ("mono_bwd_ms", "ms bwd"))),
    "gpu": ("attention on device", (("gpu_fwd_ms", "ms fwd"), ("gpu_fwd_tflops", "TFLOP/s"),
                                    ("ratio_on_gpu", "x mono"))),
    "gpu_bwd": ("attention on device bwd", (("gpu_bwd_ms", "ms bwd"),
                                            ("ratio_backward", "x mono"))),
    "streamed": ("attention streamed", (("streamed_fwd_ms", "ms fwd"),
                                        ("streamed_schedule", "schedule"),
                                        ("ratio_streamed", "x mono"),
                                        ("ratio_to_bound", "x bound"))),
    "baseline": ("out-of-core baseline", (("baseline_fwd_ms", "ms fwd"),
                                          ("ratio_baseline", "x mono"))),
    "streamed_bwd": ("attention streamed bwd", (("streamed_bwd_ms", "ms bwd"),
                                                ("ratio_backward_streamed", "x mono"),
                                                ("ratio_to_bound_backward", "x bound"))),
}


def part_line(part: str, rec: dict, elapsed: float) -> str:
    """One line saying what the part just measured (or its error) and the seconds so far.

    >>> part_line("gpu", {"L": 1024, "causal": True, "gpu_fwd_ms": 1.5, "gpu_fwd_tflops": 0.1,
    ...                   "ratio_on_gpu": 0.9}, 2.0)
    'L=1024 causal  attention on device: 1.500 ms fwd, 0.1 TFLOP/s, 0.900 x mono  [2.0 s]'
    """
    label, keys = _PART_KEYS.get(part, (part, ()))
    head = f"L={rec.get('L')} {'causal' if rec.get('causal') else 'full'}"
    if "budget_fraction" in rec and part in ("streamed", "baseline", "streamed_bwd"):
        head += f" budget {rec['budget_fraction']:g}"
    err = rec.get("errors", {}).get(part)
    if err is not None:
        body = f"error: {err}"
    else:
        shown = []
        for key, unit in keys:
            val = rec.get(key)
            if val is None:
                continue
            if isinstance(val, float):
                val = f"{val:.1f}" if unit == "TFLOP/s" else f"{val:.3f}"
            shown.append(f"{val} {unit}".strip() if unit != "schedule" else f"schedule {val}")
        body = ", ".join(shown) or "done"
    return f"{head}  {label}: {body}  [{elapsed:.1f} s]"


SERIES = [("mono_fwd_tflops", "fastest monolithic fwd"), ("gpu_fwd_tflops", "attention fwd"),
          ("streamed_fwd_tflops", "attention streamed fwd"),
          ("baseline_fwd_tflops", "out-of-core baseline fwd"),
          ("mono_bwd_tflops", "monolithic bwd"), ("gpu_bwd_tflops", "attention bwd"),
          ("streamed_bwd_tflops", "attention streamed bwd")]


def _len_label(L: int) -> str:
    """1048576 -> '1M', 65536 -> '64K', 300 -> '300'."""
    for unit, name in ((1 << 20, "M"), (1 << 10, "K")):
        if L >= unit and L % (unit // 4) == 0:
            return f"{L / unit:g}{name}"
    return str(L)


class PlotInputError(ValueError):
    """The results file given to --plot cannot be plotted (the message names it)."""


def _load_records(json_path: str) -> list[dict]:
    path = Path(json_path)
    if not path.is_file():
        raise PlotInputError(f"{json_path}: no such file" if not path.exists() else
                             f"{json_path}: not a file")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PlotInputError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise PlotInputError(f"{json_path}: not a bench_attention results file (expected an "
                             "object with a 'records' list)")
    recs = [r for r in data["records"] if isinstance(r, dict) and "mono_fwd_tflops" in r]
    if not recs:
        raise PlotInputError(f"{json_path}: no measured record to plot")
    return recs


def plot(json_path: str, png_path: str) -> None:
    """Bar chart of forward/backward TFLOP/s per configuration from a results JSON, and next
    to it (records with several budget fractions) the streamed and baseline ratios against
    the budget."""
    recs = _load_records(json_path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{_len_label(r['L'])} {'causal' if r['causal'] else 'full'}"
              + (f" b={r['budget_fraction']:g}" if "budget_fraction" in r else "") for r in recs]
    series = [(k, n) for k, n in SERIES if any(r.get(k) for r in recs)]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(recs)), 4.4))
    width = 0.8 / max(1, len(series))
    for i, (key, name) in enumerate(series):
        xs = [j + i * width for j in range(len(recs))]
        ax.bar(xs, [r.get(key) or 0 for r in recs], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(recs))], labels)
    if recs:
        ax.set_ylabel(f"TFLOP/s ({recs[0].get('dtype', 'bf16')}, H={recs[0].get('H')}, "
                      f"D={recs[0].get('D')})")
    gpu = recs[0]["gpu"] if recs else ""
    ax.set_title(f"cqs_attention vs monolithic kernels and the out-of-core baseline on {gpu}",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def _row(r: dict) -> str:
    def f(key: str, fmt: str) -> str:
        val = r.get(key)
        return format(val, fmt) if isinstance(val, (int, float)) else "-".rjust(
            int(fmt.split(".")[0]))

    return (f"{r['L']:>8} {'causal' if r['causal'] else 'full':>6} {r['mono_kernel'][:6]:>6} "
            f"{f('mono_fwd_tflops', '7.1f')} {f('gpu_fwd_tflops', '7.1f')} "
            f"{f('streamed_fwd_tflops', '7.1f')} {f('baseline_fwd_tflops', '7.1f')} "
            f"{f('ratio_on_gpu', '6.3f')} {f('ratio_streamed', '6.3f')} "
            f"{f('ratio_baseline', '6.3f')} {f('streamed_vs_baseline', '6.3f')} "
            f"{f('ratio_backward', '6.3f')} {f('ratio_backward_streamed', '6.3f')} "
            f"{f('budget_fraction', '6.3f')} {f('streamed_peak_over_budget', '6.3f')} "
            f"{f('streamed_bwd_peak_over_budget', '6.3f')} "
            f"{f('streamed_predicted_over_measured', '6.3f')} {f('ratio_to_bound', '6.3f')} "
            f"{f('ratio_to_bound_backward', '6.3f')}")


_positive = int_at_least(1)


def _fraction(text: str) -> float:
    """A budget fraction: a number or ``a/b`` (``1/16`` = 0.0625), finite and > 0.

    >>> _fraction("1/16"), _fraction("0.25")
    (0.0625, 0.25)
    """
    from fractions import Fraction

    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


@contextlib.contextmanager
def interrupt_on_sigint() -> Iterator[None]:
    """Ctrl-C raises :class:`KeyboardInterrupt` in the main thread, even where the process was
    started with SIGINT ignored (e.g. a background job); the previous handler comes back after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_table(records: list[dict]) -> None:
    print(f"{'L':>8} {'mask':>6} {'mono':>6} {'fwd':>7} {'gpu':>7} {'stream':>7} {'base':>7} "
          f"{'r_gpu':>6} {'r_str':>6} {'r_base':>6} {'s/b':>6} {'r_bwd':>6} {'r_sbwd':>6} "
          f"{'frac':>6} {'pk/b':>6} {'bpk/b':>6} {'pr/ms':>6} {'r_bnd':>6} {'r_bbnd':>6}",
          flush=True)
    for r in records:
        print(_row(r) if "mono_fwd_tflops" in r else r, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = UsageParser(prog="bench_attention", description=__doc__.splitlines()[0])
    cuda, cpu = DEFAULTS["cuda"], DEFAULTS["cpu"]
    p.add_argument("--lengths", type=_positive, nargs="+", default=None,
                   help=f"sequence lengths (default {' '.join(map(str, cuda['lengths']))}; "
                        f"with --device cpu {' '.join(map(str, cpu['lengths']))})")
    p.add_argument("--masks", nargs="+", choices=["full", "causal"], default=["full", "causal"])
    p.add_argument("--heads", type=_positive, default=None,
                   help=f"heads (default {cuda['heads']}; with --device cpu {cpu['heads']})")
    p.add_argument("--head-dim", type=_positive, default=None,
                   help=f"head dimension (default {cuda['head_dim']}; with --device cpu "
                        f"{cpu['head_dim']})")
    p.add_argument("--reps", type=_positive, default=None,
                   help=f"timed repetitions after one warm-up (default 5, 1 from L={LONG}; "
                        f"with --device cpu {cpu['reps']})")
    p.add_argument("--kernels", nargs="+", default=["fa4", "fa3", "cudnn", "fa2", "sdpa_flash"],
                   help="monolithic kernels to time, fastest first")
    p.add_argument("--mono-only-fastest", action="store_true",
                   help="time only the first kernel of --kernels that runs, at every length")
    p.add_argument("--mono-only-fastest-from", type=_positive, default=LONG, metavar="L",
                   help="time only the first runnable kernel of --kernels from this length on")
    p.add_argument("--plan", type=_positive, default=None,
                   help="Singer design order q for the on-GPU runs (default: attention's choice)")
    p.add_argument("--no-backward", action="store_true", help="no backward pass at all")
    p.add_argument("--no-gpu", action="store_true", help="skip attention on GPU tensors")
    p.add_argument("--no-streamed", action="store_true", help="skip the streamed forward")
    p.add_argument("--no-streamed-backward", action="store_true",
                   help="skip the streamed backward")
    p.add_argument("--no-baseline", action="store_true", help="skip the out-of-core baseline")
    p.add_argument("--budget-fraction", type=_fraction, nargs="+", default=[0.25],
                   help="memory_budget of the streamed and baseline runs, as fractions of the "
                        "Q+K+V bytes, e.g. 1/16 0.125 1 (default 1/4; several values: one "
                        "record each)")
    p.add_argument("--device", default="cuda",
                   help="'cuda' (default); 'cpu' runs a small smoke test of this script (sizes "
                        "above)")
    p.add_argument("--json", help="write the records here (rewritten after every part)")
    p.add_argument("--quiet", action="store_true",
                   help="no line per measured part (the table at the end is printed)")
    p.add_argument("--plot", nargs=2, metavar=("JSON", "PNG"), help="only plot a results file")
    args = p.parse_args(argv)
    if args.plot:
        try:
            plot(*args.plot)
        except PlotInputError as exc:
            print(f"bench_attention: error: {exc}", file=sys.stderr)
            return 2
        return 0
    kind = "cpu" if args.device == "cpu" else "cuda"
    if kind == "cuda" and not args.device.startswith("cuda"):
        print(f"bench_attention: error: --device must be cuda, cuda:N or cpu, got "
              f"{args.device!r}", file=sys.stderr)
        return 2
    for name in ("lengths", "heads", "head_dim", "reps"):
        if getattr(args, name) is None:
            setattr(args, name, DEFAULTS[kind][name])
    import torch

    if args.device == "cpu" and args.kernels == p.get_default("kernels"):
        args.kernels = ["cpu_flash", "reference"]  # the kernels that run on a CPU
    if kind == "cuda" and not torch.cuda.is_available():
        print("bench_attention: needs a CUDA device (or --device cpu for a smoke test)",
              file=sys.stderr)
        return 2
    import os

    meta = {"argv": sys.argv[1:] if argv is None else list(argv),
            "gpu": _Device(args.device).name(), "torch": torch.__version__,
            "commit": os.environ.get("CQS_COMMIT"), "kernels_asked": args.kernels,
            "date": time.strftime("%Y-%m-%d")}
    records: list[dict] = []
    current: dict = {}
    _STARTED[0] = time.perf_counter()

    def save(partial: dict | None = None) -> None:
        current["rec"] = partial
        if args.json:
            rows = records + ([partial] if partial is not None else [])
            with open(args.json, "w") as fh:
                json.dump({"meta": meta, "records": rows}, fh, indent=1)

    if not args.quiet:
        print(f"bench_attention on {meta['gpu']}: lengths {args.lengths}, masks {args.masks}, "
              f"H={args.heads}, D={args.head_dim}; one line per measured part (Ctrl-C stops "
              "and prints what was measured)", flush=True)
    try:
        with interrupt_on_sigint():
            for L in args.lengths:
                reps = args.reps if args.reps is not None else (1 if L >= LONG else 5)
                for m in args.masks:
                    try:
                        recs = measure(
                            L, m == "causal", heads=args.heads, head_dim=args.head_dim,
                            reps=reps, kernel_names=args.kernels,
                            backward=not args.no_backward, streamed=not args.no_streamed,
                            progress=not args.quiet, plan=args.plan,
                            mono_only_fastest=(args.mono_only_fastest
                                               or L >= args.mono_only_fastest_from),
                            gpu=not args.no_gpu, baseline=not args.no_baseline,
                            streamed_backward=not args.no_streamed_backward,
                            device=args.device, budget_fraction=args.budget_fraction[0],
                            more_fractions=tuple(args.budget_fraction[1:]), on_update=save)
                    except Exception as exc:
                        recs = [{"L": L, "causal": m == "causal",
                                 "error": f"{type(exc).__name__}: {exc}"}]
                        print("error", json.dumps(recs[0]), flush=True)
                    records.extend(recs)
                    current["rec"] = None
                    save()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
    except KeyboardInterrupt:
        partial = current.get("rec")
        if partial is not None and "mono_fwd_tflops" in partial:
            records.append({**partial, "interrupted": True})
        save()
        print(f"bench_attention: interrupted; {len(records)} record(s) measured so far"
              + (f" (saved to {args.json})" if args.json else ""), file=sys.stderr, flush=True)
        _print_table(records)
        return 130
    _print_table(records)
    measured = [r for r in records if "mono_fwd_tflops" in r]
    if not measured:
        print("bench_attention: every measurement failed (see the errors above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
