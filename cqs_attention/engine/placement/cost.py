"""The ONE cost model: a run's predicted seconds, from rates measured once per device.

:class:`CostModel` holds a device's rates (calibrated on CUDA by :func:`calibrate`, cached in
memory and on disk); :func:`predict` turns a plan's allowed pairs (:func:`allowed_pairs`), the
bytes it moves and its calls into seconds.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cqs_attention.engine.placement.decisions import DECISIONS
from cqs_attention.engine.placement.footprint import Dims, _groups
from cqs_attention.engine.schedule import PlanRects
from cqs_attention.kernels import select_kernel
from cqs_attention.kernels.base import BlockMask
from cqs_design.plans.mask import Mask


@dataclass
class CostModel:
    """Rates of one device, measured once (:func:`calibrate`) and cached on disk.

    Attributes
    ----------
    flops_per_s
        The attention kernel's rate on large unmasked forward calls (4·B·H·Lq·Lk·D per call).
    causal_flops_per_s
        Its rate on causal calls, counting only the allowed pairs (the diagonal tiles are
        partly wasted, so this is lower).
    bwd_flops_per_s
        The backward's rate, counting 2.5x the forward's FLOPs.
    copy_bytes_per_s
        Host -> device copy bandwidth from pinned memory while a kernel runs.
    mem_bytes_per_s
        Device memory bandwidth (merges).
    call_overhead_s
        Fixed cost per kernel call (launch, dispatch, slicing): the time of a tiny call.
    copy_call_s
        Host time of one row copy call (rows of one batch and head are copied per call, so a
        streamed step costs ``tensors x B x H`` of them; small steps are bound by this).
    bwd_call_overhead_s
        The time of a tiny backward call (the forward's where not calibrated).
    step_overhead_s
        Host time of one streamed step besides its calls and copies.
    """

    flops_per_s: float = 5e11
    copy_bytes_per_s: float = 1e10
    mem_bytes_per_s: float = 5e10
    call_overhead_s: float = 2e-5
    source: str = "defaults"
    copy_call_s: float = 8e-6
    causal_flops_per_s: float | None = None
    bwd_flops_per_s: float | None = None
    bwd_call_overhead_s: float | None = None
    #: host time of one streamed step besides its kernel calls and copies (the driver's
    #: bookkeeping, events, the merge's launches): not calibrated, fitted to the streamed
    #: runs of an H100 (benchmarks/results/attention_h100_short.json, 2026-12-07: 0.9-1.6
    #: ms a forward step, 2-3.6 ms a backward step, kernel calls and copies included)
    step_overhead_s: float = 6e-4

    def rate(self, *, causal: bool, backward: bool) -> float:
        """FLOP/s of calls of this kind (the forward rate where not calibrated)."""
        if backward:
            return self.bwd_flops_per_s or self.flops_per_s
        return (self.causal_flops_per_s or self.flops_per_s) if causal else self.flops_per_s

    @classmethod
    def gpu_defaults(cls, why: str) -> CostModel:
        """A model for a GPU that has not been calibrated: rates of the order an H100 with
        FA4 reaches (measured 2026-12-07), for relative choices between plans."""
        return cls(flops_per_s=6e14, causal_flops_per_s=5.5e14, bwd_flops_per_s=5e14,
                   copy_bytes_per_s=4e10, mem_bytes_per_s=2e12, call_overhead_s=1e-4,
                   bwd_call_overhead_s=3e-4, copy_call_s=8e-6,
                   source=f"GPU defaults ({why})")

    @classmethod
    def for_device(cls, device: torch.device, dtype: torch.dtype, head_dim: int,
                   budget: int | None = None) -> CostModel:
        """The cached calibration of ``device`` (measured and stored on first use on CUDA;
        CPU runs use fixed defaults). A run whose ``budget`` is below
        :data:`CALIBRATION_BYTES` does not calibrate (the probe would exceed it): it uses a
        stored calibration, or defaults that are not stored."""
        if device.type != "cuda":
            return cls(flops_per_s=2e10, copy_bytes_per_s=1e10, mem_bytes_per_s=1e10,
                       call_overhead_s=5e-5, source="cpu defaults")
        name = torch.cuda.get_device_name(device)
        key = f"{name}|{torch.__version__}|{dtype}|{head_dim}|v2"
        cache = DECISIONS.get(("calibration", key))
        if cache is not None:
            return cache
        path = _cache_path()
        stored: dict[str, Any] = {}
        if path is not None and path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError):
                stored = {}
        if key in stored:
            try:
                model = cls(**stored[key])
            except TypeError:  # written by another version
                model = None
            if model is not None:
                DECISIONS.put(("calibration", key), model, keep=True)
                return model
        if budget is not None and budget < CALIBRATION_BYTES:
            return cls.gpu_defaults(f"memory_budget {budget} < {CALIBRATION_BYTES} bytes that "
                                    "calibrating needs")
        try:
            model = calibrate(device, dtype, head_dim)
        except Exception as exc:  # e.g. a full card: plan with defaults, say so
            model = cls.gpu_defaults(f"calibration failed: {type(exc).__name__}")
            DECISIONS.put(("calibration", key), model, keep=True)
            return model
        stored[key] = model.__dict__
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(stored, indent=1))
            except OSError:
                pass
        DECISIONS.put(("calibration", key), model, keep=True)
        return model


#: device bytes :func:`calibrate` allocates at most (a run under a smaller budget does not
#: calibrate)
CALIBRATION_BYTES = 512 << 20


def _cache_path() -> Path | None:
    base = os.environ.get("CQS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cqs_attention")
    return Path(base) / "calibration.json"


def calibrate(device: torch.device, dtype: torch.dtype, head_dim: int) -> CostModel:
    """Measure a :class:`CostModel` on a CUDA device (a few seconds; at most
    :data:`CALIBRATION_BYTES` of device memory): the kernel's forward rate on full and on
    causal calls, its backward rate, the time of a tiny call, the pinned host -> device
    bandwidth while a kernel runs, the device memory bandwidth and the host time of a copy."""

    torch.cuda.synchronize(device)
    # a size that fills the chip for the fast half-precision kernels; float32/float64 calls may
    # land on the reference kernel, which materialises the scores
    h, n = (16, 8192) if dtype in (torch.float16, torch.bfloat16) else (4, 1024)
    q = torch.randn(1, h, n, head_dim, dtype=dtype, device=device)
    causal = BlockMask(causal_offset=0)

    def kern(mask: Any, grad: bool) -> Any:
        return select_kernel("auto", device=device, dtype=dtype, head_dim=head_dim,
                             mask=mask, gqa=False, needs_grad=grad)

    def timed(fn: Any, reps: int) -> float:
        fn()
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / reps

    scale = head_dim ** -0.5
    full_k, causal_k = kern(None, False), kern(causal, False)
    flop = 4.0 * h * n * n * head_dim
    t_full = timed(lambda: full_k.fwd(q, q, q, scale=scale), 5)
    t_causal = timed(lambda: causal_k.fwd(q, q, q, scale=scale, mask=causal), 5)
    bwd_k = kern(None, True)
    o, lse = bwd_k.fwd(q, q, q, scale=scale)
    t_bwd = timed(lambda: bwd_k.bwd(q, q, q, q, o, lse, scale=scale), 3)
    small = q[:, :, :128]
    t_small = timed(lambda: full_k.fwd(small, small, small, scale=scale), 50)
    so, slse = bwd_k.fwd(small, small, small, scale=scale)
    t_small_bwd = timed(lambda: bwd_k.bwd(small, small, small, small, so, slse, scale=scale),
                        20)
    size = 32 << 20
    host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(size, dtype=torch.uint8, device=device)
    side = torch.cuda.Stream(device)

    def copy_under_load() -> float:  # the copy engine's time while kernels run
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(4):
            full_k.fwd(q, q, q, scale=scale)
        with torch.cuda.stream(side):
            start.record()
            dev.copy_(host, non_blocking=True)
            end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3

    copy_under_load()
    t_copy = sorted(copy_under_load() for _ in range(3))[1]
    d2 = torch.empty_like(dev)
    t_mem = timed(lambda: d2.copy_(dev), 10)
    small_h, small_d = host[:4096], dev[:4096]

    def copies() -> None:
        for _ in range(100):
            small_d.copy_(small_h, non_blocking=True)

    t_calls = timed(copies, 3) / 100
    return CostModel(flops_per_s=flop / t_full, copy_bytes_per_s=size / t_copy,
                     mem_bytes_per_s=2 * size / t_mem, call_overhead_s=t_small,
                     source=f"measured on {torch.cuda.get_device_name(device)}",
                     copy_call_s=t_calls, causal_flops_per_s=flop / 2 / t_causal,
                     bwd_flops_per_s=2.5 * flop / t_bwd, bwd_call_overhead_s=t_small_bwd)


def allowed_pairs(rects: PlanRects, d: Dims, *, causal: bool, window: Any) -> np.ndarray:
    """Per rectangle, the (query, key) pairs a causal / window mask allows (exactly, by
    summing the clamped band widths row by row in closed form).

    >>> from cqs_design.plans import make_plan
    >>> from cqs_attention.engine.schedule import plan_rectangles
    >>> r = plan_rectangles(make_plan(8, schedule="query_blocks", block_q=4, block_kv=4,
    ...                               causal=True))
    >>> allowed_pairs(r, Dims(1, 1, 1, 8, 8, 4, torch.float32), causal=True,
    ...               window=None).tolist()
    [10.0, 16.0, 10.0]
    """
    q0, q1, k0, k1 = (x.astype(np.float64) for x in (rects.q0, rects.q1, rects.k0, rects.k1))
    n, w = q1 - q0, k1 - k0
    off = d.kv_len - d.q_len
    band = Mask.of(d.q_len, d.kv_len, causal=causal, window=window)  # the band rule
    hi, left = band.upper_shift, band.lower_shift

    def p(x: np.ndarray) -> np.ndarray:  # sum_{u < x} max(0, u)
        x = np.maximum(x, 0)
        return x * (x - 1) / 2

    def clamped(c: np.ndarray) -> np.ndarray:  # sum_{t < n} clamp(t + c, 0, w)
        return (p(c + n) - p(c)) - (p(c + n - w) - p(c - w))

    upper = n * w if hi is None else clamped(q0 + off + hi + 1 - k0)
    lower = 0.0 if left is None else clamped(q0 + off - left - k0)
    return np.maximum(upper - lower, 0.0)


def predict(rects: PlanRects, d: Dims, model: CostModel, *, stationary: str, streamed: bool,
            accumulators: str, backward: bool, causal: bool = False,
            window: Any = None) -> float:
    """Predicted seconds of a run: the allowed pairs at the calibrated rate plus per-call
    overheads and merges; copies of the streaming side overlap the compute, those of the
    stationary side (once per task, after the previous task's buffers are freed) do not."""
    b, h, hk, e, a = d.batch, d.heads, d.kv_heads, d.e, d.a
    _g_task, lq, lk, kv_task, q_task = _groups(rects)
    masked = causal or window is not None
    pairs = float(np.sum(allowed_pairs(rects, d, causal=causal, window=window)))
    flops = 4.0 * b * h * d.head_dim * pairs * (2.5 if backward else 1.0)
    if stationary == "q":
        lq = (rects.q1 - rects.q0).astype(np.float64)
        lk = (rects.k1 - rects.k0).astype(np.float64)
    calls = len(lq) * (2 if masked else 1)
    call_s = (model.bwd_call_overhead_s or model.call_overhead_s) if backward else \
        model.call_overhead_s
    compute = flops / model.rate(causal=masked, backward=backward)
    merge_rows = float(np.sum(lq)) if accumulators != "none" else 0.0  # one merge per call
    compute += merge_rows * b * h * (d.dv + 1) * a * 4 / model.mem_bytes_per_s
    if not streamed:
        return compute + calls * call_s
    k_in = b * hk * (d.head_dim + d.dv) * e
    q_in = b * h * (d.head_dim * e if not backward else d.head_dim * e + 2 * d.dv * e + a)
    acc = b * h * (d.dv + 1) * a if not backward else b * h * d.head_dim * a
    if stationary == "q":
        moved = float(np.sum(lk)) * k_in
        serial = float(np.sum(q_task)) * q_in + d.q_len * b * h * d.dv * e
        if accumulators == "host":
            serial += float(np.sum(q_task)) * acc * 2 - d.q_len * acc
    else:
        moved = float(np.sum(lq)) * q_in
        serial = float(np.sum(kv_task)) * k_in
        if accumulators == "host":
            moved += float(np.sum(lq)) * acc * 2 - d.q_len * acc
        if backward:
            serial += float(np.sum(kv_task)) * b * hk * (d.head_dim + d.dv) * a * 2
    transfer = moved / model.copy_bytes_per_s
    serial_s = serial / model.copy_bytes_per_s
    # host time issuing the row copies (one call per batch and head and tensor and range)
    q_tensors = 4 if backward else 1
    acc_tensors = 1 if backward else 2
    if stationary == "q":
        calls = len(lk) * 2 * b * hk + len(rects) * (q_tensors + 2 * acc_tensors) * b * h
    else:
        calls = (len(lq) * (q_tensors + 2 * acc_tensors) * b * h
                 + len(rects) * (2 + (4 if backward else 0)) * b * hk)
    # the host's work per step (copies issued, kernel calls, bookkeeping); the transport waits
    # for the previous step before staging the next, so a host-bound run is this long
    steps = len(lq)
    host = (calls * model.copy_call_s + len(lq) * (2 if masked else 1) * call_s
            + steps * model.step_overhead_s)
    return max(compute, transfer, host) + serial_s + min(compute, transfer) * 0.05
