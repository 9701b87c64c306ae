"""Headline: one causal forward on one GPU whose Q, K, V and output do not fit on the card.

Run on the GPU machine (one 10-minute call)::

    python benchmarks/bench_headline.py --json headline.json
    python benchmarks/bench_headline.py --dry-run          # the plan and arithmetic only (CPU)
    python benchmarks/bench_headline.py --seq 1048576      # a smaller trial

Default: L = 5,505,024 (5.25 * 2^20) tokens x 16 heads x head dim 128, bf16, batch 1: Q, K, V
and O are 22.5 GB each, 90.2 GB together, more than an H100's 80 GB. They live in page-locked
host memory, filled head by head and slab by slab from a seeded CUDA generator (a slab is
generated on the GPU and copied into place), so host memory holds the four tensors and nothing
else of that size. Page-locking uses ``cudaHostRegister`` on ordinary tensors (``--pin
register``, the default): torch's pinned allocator (``--pin torch``) rounds every allocation up
to a power of two, 32 GiB per tensor here, 128 GiB for the four. ``/proc/meminfo``
MemAvailable is checked first.

Then ``attention(q, k, v, causal=True, device="cuda", memory_budget=--budget-gib, out=out,
progress=True)`` runs once, timed by the wall clock (no warm-up, synchronized):
TFLOP/s = 4·H·L²·D / 2 / t. A spot check follows: 64 seeded random (head, row) pairs whose
reference is computed on the GPU in float32 from the host tensors (keys <= row, streamed per
head in slabs, online softmax); max abs and relative errors are reported and must be <= 2e-2
relative (exit code 1 otherwise).

Projection (stated in the JSON next to its formula): H100 hours of one forward and backward
pass over N = 10^9 tokens, 1 head, head dim 128, from the measured forward rate R, with the
backward counted as 2.5x the forward FLOPs at the same rate::

    hours = (1 + 2.5) * 4 * N^2 * D / 2 / (R * 1e12) / 3600      (causal; x2 for full)

Progress goes to stdout (flushed) as the run goes. ``--device cpu --seq 256`` runs every step
on the CPU (a smoke test of the script).
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
from _common import fill_randn, host_memory_available

GIB = 1 << 30
DEFAULT_L = 5_505_024  # 5.25 * 2^20
#: anchors measured on the GPU machine's H100 (bf16, H=16, D=128, causal, L=64K)
ANCHORS_TFLOPS = {"fa4": 649.0, "cudnn": 615.0}
PINNED_GBPS = 55.0  # pinned host<->device copies, each way
HOST_MARGIN = 6 * GIB  # host memory beyond the four tensors (CUDA context, python, staging)


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:8.1f} s] {msg}", flush=True)


mem_available_bytes = host_memory_available


def causal_flops(L: int, heads: int, head_dim: int, causal: bool = True) -> float:
    """4·H·L²·D, halved for causal."""
    return 4.0 * heads * L * L * head_dim * (0.5 if causal else 1.0)


def projection(tflops: float, *, tokens: float = 1e9, head_dim: int = 128,
               backward_factor: float = 2.5) -> dict:
    """H100 hours for one forward + backward over ``tokens`` (1 head) at ``tflops``.

    >>> round(projection(600.0)["hours_causal"], 1)
    414.8
    """
    fwd_causal = 4.0 * tokens * tokens * head_dim / 2
    total_causal = fwd_causal * (1 + backward_factor)
    hours = total_causal / (tflops * 1e12) / 3600
    return {
        "tokens": tokens, "heads": 1, "head_dim": head_dim, "rate_tflops": tflops,
        "backward_factor": backward_factor,
        "formula": "hours = (1 + 2.5) * 4 * N^2 * D / 2 / (R * 1e12) / 3600 (causal); "
                   "x2 without the causal mask; R = measured forward TFLOP/s, backward "
                   "assumed 2.5x the forward FLOPs at the same rate",
        "flop_causal": total_causal, "hours_causal": hours,
        "flop_full": 2 * total_causal, "hours_full": 2 * hours,
    }


def plan(args: argparse.Namespace) -> dict:
    """The memory and time arithmetic of the run (no GPU needed)."""
    L, h, d = args.seq, args.heads, args.head_dim
    tensor = L * h * d * 2
    acc = L * h * (d + 1) * 4
    flop = causal_flops(L, h, d, args.causal)
    avail = mem_available_bytes()
    # forward: q, k, v, out; backward: q, k, v, dout, out, dq, dk, dv and dq's float32 sums
    host_need = (10 if getattr(args, "backward", False) else 4) * tensor + HOST_MARGIN
    budget = int(args.budget_gib * GIB)
    return {
        "L": L, "B": 1, "H": h, "D": d, "causal": args.causal, "dtype": "bfloat16",
        "tensor_bytes": tensor, "qkvo_bytes": 4 * tensor,
        "qkvo_gb": 4 * tensor / 1e9, "gpu_memory_gb": args.gpu_mem_gb,
        "exceeds_gpu_memory": 4 * tensor > args.gpu_mem_gb * 1e9,
        "host_mem_available_bytes": avail, "host_need_bytes": host_need,
        "host_ok": None if avail is None else avail >= host_need,
        "budget_bytes": budget, "budget_gib": args.budget_gib,
        "fp32_accumulator_bytes": acc,
        "accumulators_fit_budget": acc <= budget,
        "host_fp32_conversion_warning": (
            f"if attention converts the float32 accumulators ({acc / GIB:.1f} GiB) to the "
            "bf16 output through a host temporary, host memory needs that much more"),
        "flop": flop,
        "min_transfer_bytes": 4 * tensor,
        "min_transfer_s_at_55GBps": 4 * tensor / (PINNED_GBPS * 1e9),
        "expected_s_at_anchor": {k: flop / (r * 1e12) for k, r in ANCHORS_TFLOPS.items()},
        "projection_at_anchor": projection(ANCHORS_TFLOPS["fa4"], head_dim=d),
    }


def print_plan(p: dict) -> None:
    print(f"L = {p['L']:,} tokens, H = {p['H']}, D = {p['D']}, "
          f"{'causal' if p['causal'] else 'full'}, bf16")
    print(f"Q, K, V, O: {p['tensor_bytes'] / 1e9:.2f} GB each, {p['qkvo_gb']:.1f} GB together "
          f"(GPU: {p['gpu_memory_gb']:.0f} GB; exceeds it: {p['exceeds_gpu_memory']})")
    avail = p["host_mem_available_bytes"]
    print(f"host: need {p['host_need_bytes'] / GIB:.1f} GiB (the tensors + "
          f"{HOST_MARGIN / GIB:.0f} GiB), MemAvailable "
          f"{'unknown' if avail is None else f'{avail / GIB:.1f} GiB'}")
    print(f"memory_budget {p['budget_gib']:g} GiB; float32 accumulators "
          f"{p['fp32_accumulator_bytes'] / GIB:.1f} GiB (fit the budget: "
          f"{p['accumulators_fit_budget']})")
    print(f"work: {p['flop']:.3e} FLOP; at the anchors "
          + ", ".join(f"{k} {s:.0f} s" for k, s in p["expected_s_at_anchor"].items())
          + f"; moving Q+K+V in and O out once: {p['min_transfer_s_at_55GBps']:.1f} s at "
          f"{PINNED_GBPS:.0f} GB/s")
    pr = p["projection_at_anchor"]
    print(f"projection at {pr['rate_tflops']:.0f} TFLOP/s: {pr['hours_causal']:.0f} H100 hours "
          f"(causal), {pr['hours_full']:.0f} (full) for fwd+bwd over 1e9 tokens, 1 head, "
          f"D={pr['head_dim']}")


# -- host memory ---------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM), or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class HostMemory:
    """Peak resident memory of this process (``VmHWM``) and the lowest ``MemAvailable`` of
    the machine, sampled every ``interval`` seconds while the run goes."""

    def __init__(self, interval: float = 0.25) -> None:
        import threading

        self.interval = interval
        self.min_available: int | None = mem_available_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            avail = mem_available_bytes()
            if avail is not None and (self.min_available is None or avail < self.min_available):
                self.min_available = avail

    def __enter__(self) -> HostMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def rss_bytes() -> int | None:
        kib = _status_kib("VmRSS")
        return None if kib is None else kib * 1024

    @staticmethod
    def peak_rss_bytes() -> int | None:
        kib = _status_kib("VmHWM")
        return None if kib is None else kib * 1024


# -- host tensors --------------------------------------------------------------------------------
def host_tensor(shape: tuple[int, ...], pin: str) -> Any:
    """An uninitialised bf16 host tensor, page-locked per ``pin`` ("register", "torch", "none")."""
    import torch

    if pin == "torch":
        return torch.empty(shape, dtype=torch.bfloat16, pin_memory=True)
    t = torch.empty(shape, dtype=torch.bfloat16)
    if pin == "register" and t.numel() > 0:
        nbytes = t.numel() * t.element_size()
        err = torch.cuda.cudart().cudaHostRegister(t.data_ptr(), nbytes, 0)
        if int(err) != 0:
            raise RuntimeError(f"cudaHostRegister of {nbytes} bytes failed with cudaError "
                               f"{int(err)}; try --pin torch or a smaller --seq")
        if not t.is_pinned():
            raise RuntimeError("cudaHostRegister succeeded but torch does not see the tensor "
                               "as pinned; try --pin torch")
    return t


def unregister(t: Any, pin: str) -> None:
    import torch

    if pin == "register" and t.numel() > 0:
        torch.cuda.cudart().cudaHostUnregister(t.data_ptr())


# -- spot check ------------------------------------------------------------------------------------
def reference_rows(q: Any, k: Any, v: Any, head: int, rows: list[int], *, causal: bool,
                   scale: float, device: Any, slab_rows: int, return_lse: bool = False) -> Any:
    """float32 attention output of query ``rows`` of ``head`` (batch 0), keys streamed to
    ``device`` in slabs with an online softmax; ``(len(rows), D)`` on ``device`` (and the
    rows' log-sum-exp with ``return_lse``)."""
    import torch

    L = k.shape[2]
    r = torch.tensor(rows, dtype=torch.long)
    qg = q[0, head].index_select(0, r).to(device).float()
    r_dev = r.to(device)
    m = torch.full((len(rows),), float("-inf"), device=device)
    den = torch.zeros(len(rows), device=device)
    acc = torch.zeros(len(rows), v.shape[-1], device=device)
    end = max(rows) + 1 if causal else L
    for s0 in range(0, end, slab_rows):
        s1 = min(end, s0 + slab_rows)
        ks = k[0, head, s0:s1].to(device).float()
        vs = v[0, head, s0:s1].to(device).float()
        s = (qg @ ks.T) * scale
        if causal:
            cols = torch.arange(s0, s1, device=device)
            s.masked_fill_(cols[None, :] > r_dev[:, None], float("-inf"))
        m_new = torch.maximum(m, s.max(dim=1).values)
        safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m - safe)
        p = torch.exp(s - safe[:, None])
        acc = acc * alpha[:, None] + p @ vs
        den = den * alpha + p.sum(dim=1)
        m = m_new
    out = acc / den[:, None]
    return (out, m + torch.log(den)) if return_lse else out


def spot_check(q: Any, k: Any, v: Any, out: Any, *, n: int, seed: int, causal: bool,
               device: Any, slab_rows: int) -> dict:
    """Compare ``n`` seeded random (head, row) outputs with :func:`reference_rows`."""
    import torch

    _, H, L, D = q.shape
    g = torch.Generator().manual_seed(seed)
    heads = torch.randint(0, H, (n,), generator=g).tolist()
    rows = torch.randint(0, L, (n,), generator=g).tolist()
    scale = 1.0 / math.sqrt(D)
    by_head: dict[int, list[int]] = {}
    for hh, rr in zip(heads, rows, strict=True):
        by_head.setdefault(hh, []).append(rr)
    max_abs = max_rel = 0.0
    num = den = 0.0
    worst = None
    for hh, rs in sorted(by_head.items()):
        ref = reference_rows(q, k, v, hh, rs, causal=causal, scale=scale, device=device,
                             slab_rows=slab_rows)
        got = out[0, hh].index_select(0, torch.tensor(rs)).to(device).float()
        diff = (got - ref).abs()
        row_rel = (got - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-30)
        i = int(row_rel.argmax())
        if float(row_rel[i]) >= max_rel:
            max_rel = float(row_rel[i])
            worst = {"head": hh, "row": rs[i]}
        max_abs = max(max_abs, float(diff.max()))
        num += float((got - ref).double().norm() ** 2)
        den += float(ref.double().norm() ** 2)
    return {"pairs": n, "seed": seed, "heads": heads, "rows": rows, "max_abs_err": max_abs,
            "max_row_rel_err": max_rel, "rel_err": math.sqrt(num / den) if den else 0.0,
            "worst": worst, "tolerance": 2e-2}


# -- the run -------------------------------------------------------------------------------------
def run(args: argparse.Namespace, p: dict, t0: float) -> dict:
    import torch

    from cqs_attention import attention
    from cqs_attention.report import last_run_stats

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    pin = args.pin if cuda else "none"
    L, h, d = args.seq, args.heads, args.head_dim
    shape = (1, h, L, d)
    res: dict = {"plan": p, "pin": pin, "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(dev) if cuda else "cpu"}
    if cuda:
        res["gpu_total_bytes"] = torch.cuda.get_device_properties(dev).total_memory
    tensors = []
    if cuda:
        torch.cuda.init()
    res["host_rss_before_inputs_bytes"] = HostMemory.rss_bytes()
    try:
        for i, name in enumerate(("q", "k", "v")):
            t = host_tensor(shape, pin)
            tensors.append(t)
            fill_randn(t, seed=args.seed + i, device=dev, slab_rows=args.slab_rows)
            log(f"{name} ready ({t.numel() * 2 / 1e9:.2f} GB, pinned={t.is_pinned()})", t0)
        out = host_tensor(shape, pin)
        tensors.append(out)
        q, k, v = tensors[:3]
        res["setup_s"] = time.perf_counter() - t0
        if cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        log(f"attention: memory_budget {args.budget_gib:g} GiB", t0)
        with HostMemory() as hm:
            t1 = time.perf_counter()
            attention(q, k, v, causal=args.causal, device=dev,
                      memory_budget=int(args.budget_gib * GIB), out=out,
                      progress=args.progress)
            if cuda:
                torch.cuda.synchronize(dev)
            secs = time.perf_counter() - t1
        _host_fields(res, hm, io_bytes=4 * q.numel() * q.element_size())
        rep = last_run_stats()
        res["forward_s"] = secs
        res["tflops"] = causal_flops(L, h, d, args.causal) / secs / 1e12
        res["timing"] = "one run, no warm-up, wall clock, synchronized"
        res["peak_device_bytes"] = (torch.cuda.max_memory_allocated(dev) - base) if cuda \
            else None
        res["report"] = None if rep is None else rep.to_dict()
        res["design_v"] = getattr(rep, "design_v", None)
        res["design_k"] = getattr(rep, "design_k", None)
        res["accumulator_device"] = getattr(rep, "accumulator_device", None)
        log(f"forward done: {secs:.1f} s, {res['tflops']:.1f} TFLOP/s, design v="
            f"{res['design_v']}, peak device {(res['peak_device_bytes'] or 0) / GIB:.1f} GiB",
            t0)
        save(args, res)
        res["spot_check"] = spot_check(q, k, v, out, n=args.check_rows, seed=args.seed + 99,
                                       causal=args.causal, device=dev,
                                       slab_rows=args.slab_rows)
        sc = res["spot_check"]
        res["spot_check_passed"] = sc["max_row_rel_err"] <= sc["tolerance"]
        log(f"spot check: max row rel err {sc['max_row_rel_err']:.2e}, rel err "
            f"{sc['rel_err']:.2e}, max abs err {sc['max_abs_err']:.2e} "
            f"({'ok' if res['spot_check_passed'] else 'FAILED'})", t0)
        res["projection"] = projection(res["tflops"], head_dim=d)
        pr = res["projection"]
        log(f"projection: {pr['hours_causal']:.0f} H100 hours causal, {pr['hours_full']:.0f} "
            f"full, for fwd+bwd over 1e9 tokens (1 head, D={d}) at {res['tflops']:.0f} "
            "TFLOP/s", t0)
    finally:
        for t in tensors:
            unregister(t, pin)
    res["total_s"] = time.perf_counter() - t0
    return res


def reference_dq_rows(q: Any, k: Any, v: Any, dout: Any, head: int, rows: list[int], *,
                      causal: bool, scale: float, device: Any, slab_rows: int) -> Any:
    """float32 ``dq`` of query ``rows`` of ``head`` (batch 0): the rows' log-sum-exp and
    output from a first pass over the keys (streamed in slabs), then
    ``dq_i = scale * sum_j P_ij (dO_i . v_j - dO_i . o_i) k_j`` in a second; ``(n, D)``."""
    import torch

    r = torch.tensor(rows, dtype=torch.long)
    qg = q[0, head].index_select(0, r).to(device).float()
    dog = dout[0, head].index_select(0, r).to(device).float()
    r_dev = r.to(device)
    end = max(rows) + 1 if causal else k.shape[2]
    out, lse = reference_rows(q, k, v, head, rows, causal=causal, scale=scale, device=device,
                              slab_rows=slab_rows, return_lse=True)

    def scores(s0: int, s1: int) -> tuple[Any, Any, Any]:
        ks = k[0, head, s0:s1].to(device).float()
        vs = v[0, head, s0:s1].to(device).float()
        s = (qg @ ks.T) * scale
        if causal:
            cols = torch.arange(s0, s1, device=device)
            s.masked_fill_(cols[None, :] > r_dev[:, None], float("-inf"))
        return s, ks, vs

    delta = (dog * out).sum(1)
    dq = torch.zeros_like(qg)
    for s0 in range(0, end, slab_rows):
        s, ks, vs = scores(s0, min(end, s0 + slab_rows))
        p = torch.exp(s - lse[:, None])
        ds = p * (dog @ vs.T - delta[:, None])
        dq += (ds @ ks) * scale
    return dq


def dq_spot_check(q: Any, k: Any, v: Any, dout: Any, dq: Any, *, n: int, seed: int,
                  causal: bool, device: Any, slab_rows: int) -> dict:
    """Compare ``n`` seeded random (head, row) rows of ``dq`` with :func:`reference_dq_rows`."""
    import torch

    _, H, L, D = q.shape
    g = torch.Generator().manual_seed(seed)
    heads = torch.randint(0, H, (n,), generator=g).tolist()
    rows = torch.randint(0, L, (n,), generator=g).tolist()
    by_head: dict[int, list[int]] = {}
    for hh, rr in zip(heads, rows, strict=True):
        by_head.setdefault(hh, []).append(rr)
    num = den = max_rel = 0.0
    for hh, rs in sorted(by_head.items()):
        ref = reference_dq_rows(q, k, v, dout, hh, rs, causal=causal, scale=D ** -0.5,
                                device=device, slab_rows=slab_rows)
        got = dq[0, hh].index_select(0, torch.tensor(rs)).to(device).float()
        row_rel = (got - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-30)
        max_rel = max(max_rel, float(row_rel.max()))
        num += float((got - ref).double().norm() ** 2)
        den += float(ref.double().norm() ** 2)
    return {"pairs": n, "seed": seed, "max_row_rel_err": max_rel,
            "rel_err": math.sqrt(num / den) if den else 0.0, "tolerance": 2e-2}


def run_backward(args: argparse.Namespace, p: dict, t0: float) -> dict:
    """Forward and backward with q, k, v, dout in host memory: times, TFLOP/s (the backward
    counted as 2.5x the forward's FLOPs), device and host memory peaks, and a spot check of
    dq rows against a float32 reference computed row by row."""
    import torch

    from cqs_attention import attention
    from cqs_attention.report import last_run_stats

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    pin = args.pin if cuda else "none"
    L, h, d = args.seq, args.heads, args.head_dim
    shape = (1, h, L, d)
    tensor = L * h * d * 2
    budget = (int(args.budget_fraction * 3 * tensor) if args.budget_fraction is not None
              else int(args.budget_gib * GIB))
    res: dict = {"mode": "backward", "plan": p, "pin": pin, "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(dev) if cuda else "cpu",
                 "budget_bytes": budget, "budget_fraction_of_qkv": budget / (3 * tensor)}
    if cuda:
        torch.cuda.init()
    res["host_rss_before_inputs_bytes"] = HostMemory.rss_bytes()
    tensors = []
    try:
        for i, name in enumerate(("q", "k", "v", "dout")):
            t = host_tensor(shape, pin)
            tensors.append(t)
            fill_randn(t, seed=args.seed + i, device=dev, slab_rows=args.slab_rows)
            log(f"{name} ready ({t.numel() * 2 / 1e9:.2f} GB, pinned={t.is_pinned()})", t0)
        q, k, v, dout = tensors
        qg, kg, vg = (t.requires_grad_(True) for t in (q, k, v))
        res["setup_s"] = time.perf_counter() - t0
        log(f"attention forward + backward: memory_budget {budget / GIB:.2f} GiB", t0)
        with HostMemory() as hm:
            t1 = time.perf_counter()
            out = attention(qg, kg, vg, causal=args.causal, device=dev, memory_budget=budget,
                            progress=args.progress)
            if cuda:
                torch.cuda.synchronize(dev)
            fwd_s = time.perf_counter() - t1
            fwd = last_run_stats()
            t2 = time.perf_counter()
            out.backward(dout)
            if cuda:
                torch.cuda.synchronize(dev)
            bwd_s = time.perf_counter() - t2
            bwd = last_run_stats()
        _host_fields(res, hm, io_bytes=8 * tensor)  # q, k, v, dout, out, dq, dk, dv
        flop = causal_flops(L, h, d, args.causal)
        res.update({
            "forward_s": fwd_s, "forward_tflops": flop / fwd_s / 1e12,
            "backward_s": bwd_s, "backward_tflops": 2.5 * flop / bwd_s / 1e12,
            "timing": "one run each, no warm-up, wall clock, synchronized",
            "forward_peak_device_bytes": fwd.peak_device_bytes,
            "backward_peak_device_bytes": bwd.peak_device_bytes,
            "forward_peak_over_budget": (fwd.peak_device_bytes or 0) / budget,
            "backward_peak_over_budget": (bwd.peak_device_bytes or 0) / budget,
            "forward_report": fwd.to_dict(), "backward_report": bwd.to_dict()})
        log(f"forward {fwd_s:.1f} s ({res['forward_tflops']:.0f} TFLOP/s), backward "
            f"{bwd_s:.1f} s ({res['backward_tflops']:.0f} TFLOP/s); device peaks "
            f"{res['forward_peak_over_budget']:.3f} / {res['backward_peak_over_budget']:.3f} "
            f"of the budget; host extra {res.get('host_extra_over_inputs_outputs')}", t0)
        save(args, res)
        res["spot_check"] = spot_check(q, k, v, out.detach(), n=args.check_rows,
                                       seed=args.seed + 99, causal=args.causal, device=dev,
                                       slab_rows=args.slab_rows)
        res["dq_spot_check"] = dq_spot_check(q, k, v, dout, qg.grad, n=args.check_rows,
                                             seed=args.seed + 98, causal=args.causal,
                                             device=dev, slab_rows=args.slab_rows)
        res["spot_check_passed"] = (
            res["spot_check"]["max_row_rel_err"] <= res["spot_check"]["tolerance"]
            and res["dq_spot_check"]["max_row_rel_err"] <= res["dq_spot_check"]["tolerance"])
        log(f"spot checks: out {res['spot_check']['max_row_rel_err']:.2e}, dq "
            f"{res['dq_spot_check']['max_row_rel_err']:.2e} "
            f"({'ok' if res['spot_check_passed'] else 'FAILED'})", t0)
    finally:
        for t in tensors:
            unregister(t, pin)
    res["total_s"] = time.perf_counter() - t0
    return res


def _host_fields(res: dict, hm: HostMemory, *, io_bytes: int) -> None:
    """Host memory of the run: peak RSS against the inputs and outputs it must hold."""
    peak = HostMemory.peak_rss_bytes()
    before = res.get("host_rss_before_inputs_bytes")
    res["host_inputs_outputs_bytes"] = io_bytes
    res["host_peak_rss_bytes"] = peak
    res["host_min_mem_available_bytes"] = hm.min_available
    if peak is not None and before is not None:
        extra = peak - before - io_bytes
        res["host_extra_bytes"] = extra
        res["host_extra_over_inputs_outputs"] = extra / io_bytes


def save(args: argparse.Namespace, res: dict) -> None:
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=str)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=DEFAULT_L, help="sequence length L")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--full", dest="causal", action="store_false",
                    help="no causal mask (default causal)")
    ap.add_argument("--budget-gib", type=float, default=60.0, help="memory_budget in GiB")
    ap.add_argument("--budget-fraction", type=float, default=None,
                    help="memory_budget as a fraction of the Q+K+V bytes (instead of GiB)")
    ap.add_argument("--backward", action="store_true",
                    help="forward and backward with q, k, v, dout in host memory")
    ap.add_argument("--pin", choices=["register", "torch", "none"], default="register",
                    help="how host tensors are page-locked (see the module docstring)")
    ap.add_argument("--check-rows", type=int, default=64, help="(head, row) pairs checked")
    ap.add_argument("--slab-rows", type=int, default=1 << 20,
                    help="rows per slab when filling inputs and streaming the spot check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpu-mem-gb", type=float, default=None,
                    help="GPU memory for the plan (default: the device's, else 80)")
    ap.add_argument("--device", default="cuda",
                    help="'cuda' (default); 'cpu' runs a tiny smoke test of this script")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the plan and memory arithmetic only (no GPU needed)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    for name in ("seq", "heads", "head_dim", "check_rows", "slab_rows"):
        if getattr(args, name) <= 0:
            print(f"bench_headline: --{name.replace('_', '-')} must be positive",
                  file=sys.stderr)
            return 2
    if args.budget_gib <= 0 or (args.budget_fraction is not None and args.budget_fraction <= 0):
        print("bench_headline: --budget-gib and --budget-fraction must be positive",
              file=sys.stderr)
        return 2
    if args.gpu_mem_gb is None:
        args.gpu_mem_gb = 80.0
        if not args.dry_run and args.device.startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                args.gpu_mem_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    p = plan(args)
    print_plan(p)
    if args.dry_run:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"dry_run": True, "plan": p}, fh, indent=1)
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_headline: needs a CUDA device (or --dry-run, or --device cpu for a smoke "
              "test)", file=sys.stderr)
        return 2
    if p["host_ok"] is False:
        print(f"bench_headline: not enough host memory: MemAvailable "
              f"{p['host_mem_available_bytes'] / GIB:.1f} GiB < {p['host_need_bytes'] / GIB:.1f}"
              f" GiB needed for Q, K, V, O ({p['tensor_bytes'] / GIB:.1f} GiB each) + "
              f"{HOST_MARGIN / GIB:.0f} GiB; pass a smaller --seq", file=sys.stderr)
        return 2
    res = run_backward(args, p, t0) if args.backward else run(args, p, t0)
    save(args, res)
    print(json.dumps({k: res.get(k) for k in (
        "gpu", "mode", "forward_s", "tflops", "forward_tflops", "backward_s", "backward_tflops",
        "peak_device_bytes", "forward_peak_over_budget", "backward_peak_over_budget",
        "host_extra_over_inputs_outputs", "spot_check_passed", "total_s")}), flush=True)
    return 0 if res.get("spot_check_passed") else 1


if __name__ == "__main__":
    raise SystemExit(main())
