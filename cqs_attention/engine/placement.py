"""Placement: the ONE footprint model, the ONE cost model and the ONE budget search.

:func:`footprint` bounds the device bytes a run of a plan holds at once (the largest step:
staged query and key/value rows, accumulator rows, call results, merge temporaries, masks,
kernel workspace; doubled for the sides prefetched while a step computes), for accumulators on
the device or at home. :class:`CostModel` predicts a run's seconds from its FLOPs at the
kernel's rate, the bytes it moves at the copy bandwidth, and a per-call overhead.
:func:`choose` searches the candidates (one whole call; query-block plans; CQS plans with Singer
designs; each with accumulators on the device or at home, with or without prefetching) for the
fastest predicted one that fits the budget.

>>> dims = Dims(batch=1, heads=2, kv_heads=2, q_len=64, kv_len=64, head_dim=8,
...             dtype=torch.float32)
>>> choice = choose(dims, budget=None, streamed=False, backward=False, causal=True,
...                 window=None)
>>> choice.kind, choice.accumulators
('whole', 'none')
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cqs_attention._bytes import format_bytes
from cqs_attention.engine.request import AttentionRequest
from cqs_attention.engine.schedule import (
    PlanRects,
    Step,
    mask_categories,
    plan_rectangles,
    stationary_side,
    task_steps,
)
from cqs_attention.errors import KernelUnavailableError, MemoryBudgetError
from cqs_attention.kernels import registry_version as kernel_registry_version
from cqs_attention.kernels import select_kernel
from cqs_attention.kernels.base import BlockMask, Kernel, scale_breaks_masking
from cqs_attention.kernels.reference import ReferenceKernel
from cqs_attention.masks import MaskSpec
from cqs_attention.merge import accumulator_dtype
from cqs_attention.report import PlanSummary

__all__ = [
    "CATEGORY_PROBES",
    "DECISIONS",
    "DEFAULT_BUDGET_FRACTION",
    "FORCE",
    "SLAB_BYTES",
    "Choice",
    "CostModel",
    "DecisionCache",
    "Dims",
    "OneTaskSteps",
    "Planned",
    "call_budget",
    "call_memory",
    "check_unmasked_kernel",
    "choose",
    "choose_for",
    "choose_kernel",
    "conversion_slab_bytes",
    "footprint",
    "plan_call",
    "plan_kernels",
    "predict",
    "replan_with_accumulators",
    "streams_rows",
    "summarize",
]

#: overrides for tests (:func:`cqs_attention.testing.force_placement`): keys "accumulators",
#: "prefetch"
FORCE: list[dict[str, Any]] = []

#: Singer orders the budget search tries for CQS plans (v = q^2 + q + 1)
SINGER_ORDERS = (2, 3, 4, 5, 7, 8, 9, 11, 13, 16, 17, 19, 23, 25, 27, 29, 31, 32, 37, 41, 43)
#: CQS plans with more rectangles than this are not tried by the search (pass plan= instead)
MAX_SCAN_RECTANGLES = 1 << 21
#: query-block plans: block sizes are rounded to multiples of this when at least twice as long
GRANULE = 128
#: query-block plans with more (query block, key/value block) pairs are not tried
MAX_BLOCK_PAIRS = 1 << 12


@dataclass(frozen=True)
class Dims:
    """Sizes of one attention call."""

    batch: int
    heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    dtype: torch.dtype
    v_dim: int | None = None

    @property
    def e(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def a(self) -> int:
        return torch.empty((), dtype=accumulator_dtype(self.dtype)).element_size()

    @property
    def dv(self) -> int:
        return self.head_dim if self.v_dim is None else self.v_dim

    def accumulator_bytes(self, backward: bool) -> int:
        """Bytes of the run's accumulators: ``(out, lse)``, or ``(dq, dk, dv)``."""
        b, h, hk = self.batch, self.heads, self.kv_heads
        if backward:
            return (b * h * self.q_len * self.head_dim
                    + b * hk * self.kv_len * (self.head_dim + self.dv)) * self.a
        return b * h * self.q_len * (self.dv + 1) * self.a


def _groups(r: PlanRects) -> tuple[np.ndarray, ...]:
    """Per (task, q range): task index, lq, total key length; per task: kv rows, q rows."""
    task = np.repeat(np.arange(len(r), dtype=np.int64), np.diff(r.ptr))
    if len(task) == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros(len(r)), np.zeros(len(r))
    m1 = int(max(r.q1.max(), 1)) + 1
    key = (task * m1 + r.q0) * m1 + r.q1
    uniq, inv = np.unique(key, return_inverse=True)
    g_task = uniq // (m1 * m1)
    g_q0 = (uniq // m1) % m1
    g_q1 = uniq % m1
    lk = np.bincount(inv.reshape(-1), weights=(r.k1 - r.k0).astype(np.float64),
                     minlength=len(uniq))
    mk = int(max(r.k1.max(), 1)) + 1
    kkey = np.unique((task * mk + r.k0) * mk + r.k1)
    kv_task = np.bincount(kkey // (mk * mk), weights=((kkey % mk) - (kkey // mk) % mk)
                          .astype(np.float64), minlength=len(r))
    q_task = np.bincount(g_task, weights=(g_q1 - g_q0).astype(np.float64), minlength=len(r))
    return g_task, (g_q1 - g_q0).astype(np.float64), lk, kv_task, q_task


#: bytes of the merge's temporaries per (query row, head), in units of the accumulator
#: element: the new lse, a safe copy, two exponent arguments and two weights (and a bool)
MERGE_TEMPS = 8


def call_memory(kernels: Sequence[Any], d: Dims, lq: Any, lk: Any, *, backward: bool,
                masked: bool) -> Any:
    """The largest of the ``kernels``' memory models (``memory_bytes``, see
    :class:`~cqs_attention.kernels._gpu_common.CallMemory`) for calls of ``lq x lk``; a
    kernel without a model is assumed to materialise its scores like the reference kernel."""
    from cqs_attention.kernels._gpu_common import CallMemory
    from cqs_attention.kernels.reference import ReferenceKernel

    m = CallMemory(batch=d.batch, heads=d.heads, kv_heads=d.kv_heads, lq=lq, lk=lk,
                   head_dim=d.head_dim, v_dim=d.dv, elem=d.e, acc=d.a)
    pieces = 2 if masked else 1  # a causal offset may cut a call into two pieces
    best: Any = 0
    for kernel in kernels or [ReferenceKernel()]:
        fn = getattr(kernel, "memory_bytes", None)
        if fn is None:
            fn = ReferenceKernel().memory_bytes
        best = np.maximum(best, fn(m, backward=backward, pieces=pieces))
    return best


def footprint(rects: PlanRects, d: Dims, *, stationary: str, streamed: bool,
              accumulators: Literal["device", "host", "none"], backward: bool,
              prefetch: bool, masked: bool = True, dense_masks: int = 0,
              kernels: Sequence[Any] = (), home_is_device: bool | None = None,
              slab: int | None = None, slack: bool = False) -> int:
    """Upper bound of the device bytes a run of ``rects`` holds at once (the measured peak of
    ``torch.cuda.max_memory_allocated`` over the run, minus what was allocated before).

    Per step of the driver, the bound adds:

    * the **stationary side** of its task (the task's key/value rows, or for query blocks its
      query rows), with its accumulator rows when they live at home;
    * the **streaming side** of the step (query rows with ``q`` and, backward, ``dout``,
      ``out`` and ``lse``; or a key/value block) and, with prefetching, a second one of the
      largest: the transport frees a released buffer only after the streams that use it have
      finished, and before it allocates the next, so no more than two are ever held;
    * the **call**: the kernel's own allocations (outputs and workspace, from the kernels'
      memory models ``memory_bytes``; the largest over ``kernels``, the kernels of the mask
      kinds the run makes) for a call over the step's rows and keys, the merge's temporaries,
      keys concatenated when a call's ranges are not contiguous, and dense masks
      (``dense_masks`` bytes per (query, key) pair: the masks of a task and of the next are
      classified ahead, and a call builds a few temporaries of its own); or, if larger,
      converting the rows a closing side writes into the output dtype;
    * accumulators kept on the device for the run (``accumulators="device"``), and what the
      end of the run converts: the whole result when it stays on the device
      (``home_is_device``), else a slab of ``slab`` bytes at a time;
    * with ``slack`` (CUDA devices), :data:`SLACK_FRACTION` and :data:`SLACK_BYTES` for the
      small allocations not listed.

    ``accumulators="none"`` is the single kernel call (its output is the result).
    """
    if len(rects) == 0:
        return 0
    b, h, hk, e, a = d.batch, d.heads, d.kv_heads, d.e, d.a
    home_is_device = (not streamed) if home_is_device is None else home_is_device
    g_task, lq, lk, kv_task, q_task = _groups(rects)
    if stationary == "q":  # one call per rectangle: a key/value block against the task's rows
        g_task = np.repeat(np.arange(len(rects), dtype=np.int64), np.diff(rects.ptr))
        lq = (rects.q1 - rects.q0).astype(np.float64)
        lk = (rects.k1 - rects.k0).astype(np.float64)
    host = accumulators == "host"
    if backward:
        q_in = b * h * (d.head_dim * e + 2 * d.dv * e + a)  # q, dout, out, lse
        q_acc = b * h * d.head_dim * a  # dq
        kv_acc = b * hk * (d.head_dim + d.dv) * a  # dk, dv
        q_conv, kv_conv = 0, b * hk * (d.head_dim + d.dv) * e  # dk, dv written as final
    else:
        q_in = b * h * d.head_dim * e
        q_acc = b * h * (d.dv + 1) * a  # out, lse
        kv_acc = 0
        q_conv, kv_conv = b * h * d.dv * e, 0  # out rows written as final
    kv_in = b * hk * (d.head_dim + d.dv) * e
    call = call_memory(kernels, d, lq, lk, backward=backward, masked=masked)
    if not backward:  # the merge's temporaries while the call's out and lse are held
        call = call + lq * b * h * MERGE_TEMPS * a
    if dense_masks:
        pairs = lq * lk
        per_task = np.bincount(g_task, weights=pairs, minlength=len(rects))
        call = call + dense_masks * (4 * pairs + 2 * per_task.max())
    if stationary == "kv":  # keys of one call concatenated when not contiguous in the buffer
        call = call + lk * kv_in * (kv_task[g_task] > lk)
    if stationary == "q":
        station = q_task[g_task] * (q_in * streamed + q_acc * host)
        stream = lk * (kv_in * streamed + kv_acc * host)
        conv = q_task[g_task] * q_conv * host
    else:
        station = kv_task[g_task] * (kv_in * streamed + kv_acc * host)
        stream = lq * (q_in * streamed + q_acc * host)
        conv = np.maximum(lq * q_conv, kv_task[g_task] * kv_conv) * host
    second = stream.max() if (prefetch and streamed) else 0.0
    step = station + stream + second + np.maximum(call, conv)
    resident = 0.0
    if accumulators == "device":
        resident = d.accumulator_bytes(backward)
    if accumulators in ("device", "none") and (accumulators == "device" or backward):
        # the result leaves the float32 accumulators (or, for one backward call, the kernel's
        # gradients when they are not in the inputs' dtype: the reference kernel's float32)
        out_e = (b * h * d.q_len * d.head_dim
                 + b * hk * d.kv_len * (d.head_dim + d.dv)) * e if backward else \
            b * h * d.q_len * d.dv * e
        conv_end = out_e if home_is_device else min(out_e, slab or SLAB_BYTES)
        resident = resident + conv_end
    if not slack:
        return int(np.max(step) + resident)
    return int((np.max(step) + resident) * (1 + SLACK_FRACTION) + SLACK_BYTES)


#: an allowance for the small allocations the bound does not list one by one (kernel
#: scheduling metadata, contiguous copies of row vectors, the allocator's 512-byte rounding):
#: on the H100 sweep of 2026-12-07 the measured peaks exceeded the listed terms by at most
#: 1.0 MB (2.4%) at a 48 MiB budget
SLACK_BYTES = 2 << 20
SLACK_FRACTION = 0.01


#: bytes of one conversion slab (device -> host results with a dtype change), at most
SLAB_BYTES = 256 << 20


def conversion_slab_bytes(budget: int | None) -> int:
    """The slab of a device -> host conversion under ``budget``: at most 1/8 of it (and at
    most :data:`SLAB_BYTES`, at least 1 MiB), so converting never needs much of the budget.

    >>> conversion_slab_bytes(None), conversion_slab_bytes(64 << 20)
    (268435456, 8388608)
    """
    if budget is None:
        return SLAB_BYTES
    return int(min(SLAB_BYTES, max(1 << 20, budget // 8)))


# -- the cost model ----------------------------------------------------------------------------
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
    from cqs_attention.kernels import select_kernel
    from cqs_attention.kernels.base import BlockMask

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
    >>> r = plan_rectangles(make_plan(8, schedule="query_blocks", block_q=4, block_kv=4,
    ...                               causal=True))
    >>> allowed_pairs(r, Dims(1, 1, 1, 8, 8, 4, torch.float32), causal=True,
    ...               window=None).tolist()
    [10.0, 16.0, 10.0]
    """
    q0, q1, k0, k1 = (x.astype(np.float64) for x in (rects.q0, rects.q1, rects.k0, rects.k1))
    n, w = q1 - q0, k1 - k0
    off = d.kv_len - d.q_len
    right = None if window is None else window[1]
    left = None if window is None else window[0]
    hi = (0 if right is None else min(right, 0)) if causal else right

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


# -- the search ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """What a run will do: the plan, where accumulators live, and why (read-only: a choice
    is a planning decision, shared by every run of the call it was made for)."""

    kind: str  # "whole", "query_blocks", "kv_blocks", "cqs" or "given"
    plan: Any
    rects: PlanRects
    stationary: str
    accumulators: Literal["device", "host", "none"]
    prefetch: bool
    footprint: int
    predicted_s: float
    reason: str = ""
    candidates: tuple[tuple[str, int, float], ...] = ()


def _block(n: int, parts: int) -> int:
    size = -(-n // parts)
    if size >= 2 * GRANULE:
        size = -(-size // GRANULE) * GRANULE
    return max(1, min(n, size))


def _candidates(d: Dims, *, backward: bool, causal: bool, window: Any) -> list[tuple[str, Any]]:
    from cqs_design.plans import PlanError, make_plan

    out: list[tuple[str, Any]] = []
    lq, lk = d.q_len, d.kv_len
    kw = {"kv_len": lk, "causal": causal, "window": window}
    sched = "kv_blocks" if backward else "query_blocks"
    seen = set()
    for i in range(0, 14):
        for j in range(0, 14):
            bq, bk = _block(lq, 2 ** i), _block(lk, 2 ** j)
            if (bq, bk) in seen or 2 ** i > max(1, lq // 16) or 2 ** j > max(1, lk // 16):
                continue
            if 2 ** (i + j) > MAX_BLOCK_PAIRS:
                continue
            seen.add((bq, bk))
            name = "whole" if bq >= lq and bk >= lk else sched
            out.append((name, lambda bq=bq, bk=bk: make_plan(
                lq, schedule=sched, block_q=bq, block_kv=bk, **kw)))
    for order in SINGER_ORDERS:
        v = order * order + order + 1
        if v > min(lq, lk):
            break
        if v * (order + 1) * (order + 2) // 2 > MAX_SCAN_RECTANGLES:
            break

        def build(order: int = order) -> Any:
            try:
                return make_plan(lq, design=order, **kw)
            except PlanError:
                return None
        out.append(("cqs", build))
    return out


def choose(d: Dims, *, budget: int | None, streamed: bool, backward: bool, causal: bool,
           window: Any, dense_masks: int = 0, masked: bool | None = None, plan: Any = None,
           kernels: Sequence[Any] = (), model: CostModel | None = None,
           allow_whole_call: bool = True, force_accumulators: str | None = None,
           min_tasks: int = 1, home_is_device: bool | None = None,
           slack: bool = False) -> Choice:
    """The fastest predicted run that fits ``budget`` (see the module docstring).

    ``plan`` forces the plan (a given :class:`~cqs_design.plans.Plan`); only the accumulator
    placement and prefetching are chosen then. ``kernels``: the kernels of the kinds of call
    the run makes, whose memory models :func:`footprint` uses; ``dense_masks``: bytes of dense
    mask per (query, key) pair (document ids, ``mask_mod``). ``min_tasks``: plans with fewer
    tasks are only used when no other fits (a distributed run wants a task per rank). Raises
    :class:`MemoryBudgetError` naming the smallest footprint found when nothing fits (its
    ``minimum``).
    """
    model = model if model is not None else CostModel()
    masked = (causal or window is not None) if masked is None else masked
    forced = FORCE[-1] if FORCE else {}
    if force_accumulators is None and streamed:
        force_accumulators = forced.get("accumulators")
    best: Choice | None = None
    smallest: tuple[int, str] | None = None
    tried: list[tuple[str, int, float]] = []
    cqs_after_fit = 0
    sources = [("given", lambda: plan)] if plan is not None else _candidates(
        d, backward=backward, causal=causal, window=window)
    for name, build in sources:
        if name == "cqs" and cqs_after_fit >= 2:
            continue  # finer designs only add tasks once two have fit
        n_tried = len(tried)
        p = build()
        if p is None:
            continue
        rects = plan_rectangles(p)
        if int(rects.ptr[-1]) > MAX_SCAN_RECTANGLES and plan is None:
            continue
        if plan is None and len(rects) < min_tasks and name != "cqs":
            continue
        stationary = stationary_side(p, "backward" if backward else "forward")
        # one kernel call: one rectangle covering the whole matrix (its outputs are the result)
        single = (len(rects) == 1 and int(rects.ptr[-1]) == 1
                  and (int(rects.q0[0]), int(rects.q1[0]), int(rects.k0[0]), int(rects.k1[0]))
                  == (0, d.q_len, 0, d.kv_len))
        places: list[str] = ["none"] if (single and allow_whole_call) else []
        places += ["device", "host"] if streamed else ["device"]
        if force_accumulators is not None:
            places = [force_accumulators]
        for acc in places:
            pre = (True, False) if streamed else (False,)
            if streamed and "prefetch" in forced:
                pre = (forced["prefetch"],)
            for prefetch in pre:
                fp = footprint(rects, d, stationary=stationary, streamed=streamed,
                               accumulators=acc, backward=backward, prefetch=prefetch,
                               masked=masked, dense_masks=dense_masks, kernels=kernels,
                               home_is_device=home_is_device,
                               slab=conversion_slab_bytes(budget), slack=slack)
                label = f"{name} {_describe(p)} acc={acc}{' prefetch' if prefetch else ''}"
                if smallest is None or fp < smallest[0]:
                    smallest = (fp, label)
                if budget is not None and fp > budget:
                    continue
                t = predict(rects, d, model, stationary=stationary, streamed=streamed,
                            accumulators=acc, backward=backward, causal=causal, window=window)
                if not prefetch and streamed:
                    t *= 1.3  # copies no longer overlap the compute
                tried.append((label, fp, t))
                if best is None or t < best.predicted_s:
                    best = Choice(name, p, rects, stationary, acc, prefetch, fp, t)
        if name == "cqs" and len(tried) > n_tried:
            cqs_after_fit += 1
        if best is not None and plan is None and name == "whole" and best.kind == "whole":
            break  # nothing beats one call when it fits
    if best is None and min_tasks > 1 and plan is None:
        return choose(d, budget=budget, streamed=streamed, backward=backward, causal=causal,
                      window=window, dense_masks=dense_masks, masked=masked,
                      kernels=kernels, model=model, allow_whole_call=allow_whole_call,
                      force_accumulators=force_accumulators, home_is_device=home_is_device,
                      slack=slack)
    if best is None:
        fp, label = smallest if smallest is not None else (0, "no plan")
        what = "the given plan" if plan is not None else "any plan"
        raise MemoryBudgetError(
            f"memory_budget={budget} bytes is too small for {what}"
            f"{' (backward)' if backward else ''}: the smallest footprint found is {fp} "
            f"bytes ({label}); pass memory_budget >= {fp}"
            + (" or a finer plan" if plan is not None else ""), minimum=fp)
    return dataclasses.replace(
        best, candidates=tuple(sorted(tried, key=lambda x: x[2])[:8]),
        reason=(f"{best.kind} {_describe(best.plan)}, accumulators {best.accumulators}"
                f"{', prefetching' if best.prefetch else ''}: predicted "
                f"{best.predicted_s * 1e3:.1f} ms with footprint {best.footprint} bytes"
                + ("" if budget is None else f" <= budget {budget}")
                + f" ({len(tried)} candidates fit; cost model: {model.source})"))


def _describe(p: Any) -> str:
    sched = getattr(p, "schedule", "cqs")
    if sched != "cqs":
        return f"(block_q={p.block_q}, block_kv={p.block_kv})"
    ds = getattr(p, "design", None)
    if ds is None:
        return "(one task)"
    return f"(v={ds.v}, k={ds.k}, levels={getattr(p, 'levels', 1)})"


# -- which kernel runs a call ------------------------------------------------------------------
_REFERENCE = ReferenceKernel()

#: a mask of each category, for the dispatcher (kernels tell categories apart by
#: ``BlockMask.band_only`` and ``is_full`` only)
CATEGORY_PROBES: dict[str, BlockMask | None] = {
    "none": None, "causal": BlockMask(causal_offset=0),
    "dense": BlockMask(dense=torch.ones(1, 1, 1, 1, dtype=torch.bool))}


def choose_kernel(backend: str, *, device: torch.device, dtype: torch.dtype, head_dim: int,
                  gqa: bool, category: str, needs_grad: bool, scale: float) -> Kernel:
    """The kernel for calls of one mask ``category`` (``"none"``, ``"causal"``, ``"dense"``)
    and direction: the registry's dispatcher (:func:`cqs_attention.kernels.select_kernel`),
    except that masked calls whose score scale breaks the fast kernels' masking go to the
    reference kernel. Raises :class:`~cqs_attention.errors.KernelUnavailableError` when none
    (or not the forced ``backend``) can run them."""
    if (category != "none" and scale_breaks_masking(scale) and backend == "auto"
            and device.type == "cuda"):
        # cuDNN and the flash kernels break masking for scales that are not positive in
        # float32 (issue 13, item 7; a tiny positive scale rounds to 0 there); the
        # reference kernel is right for every scale
        return _REFERENCE
    return select_kernel(backend, device=device, dtype=dtype, head_dim=head_dim,
                         mask=CATEGORY_PROBES[category], gqa=gqa, needs_grad=needs_grad)



# -- the one cache of planning decisions -------------------------------------------------------
class DecisionCache:
    """The one cache of planning decisions, keyed by everything that decides them.

    Keys are tuples whose first item names the decision: ``("plan", ...)`` a call's
    :class:`Planned` (see :func:`plan_call` for its key), ``("valid", digest)`` a given plan
    proven an exact cover, ``("calibration", device)`` a device's measured :class:`CostModel`.
    Values are read-only and hold no state of any run. Least recently used entries go first
    beyond ``size``; calibrations (seconds to measure) are kept.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._lru: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()
        self._kept: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...]) -> Any:
        """The value stored under ``key``, or None."""
        hit = self._kept.get(key)
        if hit is not None:
            return hit
        hit = self._lru.get(key)
        if hit is not None:
            self._lru.move_to_end(key)
        return hit

    def put(self, key: tuple[Any, ...], value: Any, *, keep: bool = False) -> None:
        """Store ``value`` under ``key`` (``keep``: never evicted)."""
        if keep:
            self._kept[key] = value
            return
        self._lru[key] = value
        self._lru.move_to_end(key)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)

    def clear(self) -> None:
        """Forget every decision (calibrations stored on disk are read again when needed)."""
        self._lru.clear()
        self._kept.clear()

    def __len__(self) -> int:
        return len(self._lru) + len(self._kept)


#: the cache of :func:`plan_call`, :func:`CostModel.for_device` and given plans' validation
DECISIONS = DecisionCache()


# -- a call's plan: budget, placement, kernels --------------------------------------------------
#: the fraction of the free device memory used as the budget when none is given (CUDA)
DEFAULT_BUDGET_FRACTION = 0.8


#: the steps of a one-task plan and the counts of its blocks by classification
OneTaskSteps = tuple[tuple[Step, ...], dict[str, int]]


@dataclass(frozen=True)
class Planned:
    """Everything decided for one call before any work: the forward's :class:`Choice` and,
    when gradients are needed, the backward's; the kernel of every kind of call they make
    (``(mask category, needs_grad) -> kernel``); for one-task plans under a band mask, the
    steps of that task (per direction, classified once); and the plan summaries the run
    reports start from. Read-only: every run of the call shares it."""

    forward: Choice
    backward: Choice | None
    kernels: dict[tuple[str, bool], Kernel]
    summaries: tuple[PlanSummary, PlanSummary | None]
    steps: tuple[OneTaskSteps | None, OneTaskSteps | None] = (None, None)

    @property
    def footprint(self) -> int:
        """The larger footprint of the two directions."""
        return max(self.forward.footprint,
                   0 if self.backward is None else self.backward.footprint)


def streams_rows(request: AttentionRequest) -> bool:
    """Whether rows are staged (and the budget bounds them): when kernels run elsewhere than
    the data lives, or on the CPU under a budget (numpy memmaps: the data is on disk)."""
    return request.device != request.home or (
        request.device.type == "cpu" and request.memory_budget is not None)


def call_budget(request: AttentionRequest) -> int | None:
    """The budget in force: the one given, else on CUDA :data:`DEFAULT_BUDGET_FRACTION` of the
    free device memory, else None (unbounded); a distributed run uses the smallest over its
    ranks (one collective)."""
    budget = request.memory_budget
    if budget is None and request.device.type == "cuda":
        budget = int(DEFAULT_BUDGET_FRACTION * torch.cuda.mem_get_info(request.device)[0])
    if request.dist is not None:
        budget = request.dist.shared_budget(budget)
    return budget


def plan_kernels(spec: MaskSpec, backend: str, dev: torch.device, dtype: torch.dtype,
                 head_dim: int, gqa: bool, scale: float, *, needs_grad: bool) -> list[Any]:
    """The kernels a run may call, one per kind of call the mask can make (none, a causal
    offset, a window edge or dense mask), for the footprint model. Kinds no kernel can run
    are left out here (:func:`plan_call` reports them)."""
    cats = ["none"]
    if spec.causal or spec.window is not None:
        cats.append("causal")
    if spec.q_doc is not None or spec.mask_mod is not None or (
            spec.window is not None and spec.window[0] is not None):
        cats.append("dense")
    out = []
    for cat in cats:
        try:
            out.append(choose_kernel(backend, device=dev, dtype=dtype, head_dim=head_dim,
                                     gqa=gqa, category=cat, needs_grad=needs_grad,
                                     scale=scale))
        except KernelUnavailableError:
            continue
    return out


def _plan_key(request: AttentionRequest, budget: int | None) -> tuple[Any, ...]:
    """Everything that decides a call's :class:`Planned` besides the budget's value."""
    q, k, v, spec, dev = request.q, request.k, request.v, request.spec, request.device
    band = spec.q_doc is None and spec.mask_mod is None
    model = ("cpu",) if dev.type != "cuda" else (
        "uncalibrated",) if request.dist is not None else (
        "cuda", budget is not None and budget < CALIBRATION_BYTES)
    forced = FORCE[-1] if FORCE else {}
    return ("plan", tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, dev,
            request.home, request.memory_budget is None, spec.causal, spec.window,
            band, spec.dense_bytes_per_pair(), scale_breaks_masking(request.scale),
            request.plan_digest, request.backend, kernel_registry_version(),
            request.needs_grad, None if request.dist is None else request.dist.world_size,
            request.checkpoint is not None, tuple(sorted(forced.items())), model)


def plan_call(request: AttentionRequest, budget: int | None) -> Planned:
    """The plan of a call under ``budget`` (from :func:`call_budget`): both directions
    chosen by :func:`choose`, every kind of call they make given a kernel (which raises
    :class:`~cqs_attention.errors.KernelUnavailableError` before any work when one cannot
    run), the one-task steps classified.

    Decisions are cached (:data:`DECISIONS`) under everything that decides them; a cached
    plan is reused while it fits the budget and the budget is at most 1.25x the one it was
    chosen under (a larger budget may fit a faster plan).

    Raises :class:`~cqs_attention.errors.MemoryBudgetError` when no plan fits; when gradients
    are needed it names the budget that runs the forward AND the backward.
    """
    key = _plan_key(request, budget)
    hit = DECISIONS.get(key)
    if hit is not None:
        used, planned = hit
        if (budget is None) == (used is None) and (
                budget is None or (planned.footprint <= budget and budget <= 1.25 * used)):
            return planned
    planned = _plan(request, budget)
    DECISIONS.put(key, (budget, planned))
    return planned


def choose_for(request: AttentionRequest, budget: int | None, *, backward: bool,
               allow_whole_call: bool = True) -> Choice:
    """:func:`choose` for one direction of ``request`` under ``budget``. One kernel call (no
    accumulators) is considered only where ``allow_whole_call`` and the run needs none: not
    for a rank's shard, nor for a forward that checkpoints its accumulators."""
    q, k, v, spec, dev = request.q, request.k, request.v, request.spec, request.device
    b, h, lq, d = q.shape
    dims = Dims(b, h, k.shape[1], lq, k.shape[2], d, q.dtype, v.shape[-1])
    # distributed ranks must choose identically: the uncalibrated model then
    model = (CostModel() if request.dist is not None else
             CostModel.for_device(dev, q.dtype, d, budget=budget))
    kernels = plan_kernels(spec, request.backend, dev, q.dtype, d, h != k.shape[1],
                           request.scale, needs_grad=backward)
    whole = (allow_whole_call and request.dist is None
             and (backward or request.checkpoint is None))
    return choose(dims, budget=budget, streamed=streams_rows(request), backward=backward,
                  causal=spec.causal, window=spec.window,
                  dense_masks=spec.dense_bytes_per_pair(), masked=not spec.is_empty_spec,
                  plan=request.plan, kernels=kernels, model=model, allow_whole_call=whole,
                  home_is_device=request.home == dev,
                  min_tasks=1 if request.dist is None else 4 * request.dist.world_size,
                  slack=dev.type == "cuda")


def replan_with_accumulators(request: AttentionRequest, budget: int | None, *,
                             backward: bool) -> Choice:
    """The plan after one kernel call ran out of memory where the guard would split it: the
    fastest run WITH accumulators that fits the same budget (the given plan, if any, with
    accumulators); :class:`~cqs_attention.errors.MemoryBudgetError` when none does."""
    try:
        return choose_for(request, budget, backward=backward, allow_whole_call=False)
    except MemoryBudgetError as exc:
        raise MemoryBudgetError(
            f"one kernel call ran out of device memory and no run with accumulators fits "
            f"memory_budget={budget} bytes: {exc}", minimum=exc.minimum) from exc


def check_unmasked_kernel(request: AttentionRequest) -> None:
    """:class:`~cqs_attention.errors.KernelUnavailableError` when no kernel (or not the forced
    backend) can run even an unmasked call of ``request``: before any planning."""
    q = request.q
    choose_kernel(request.backend, device=request.device, dtype=q.dtype,
                  head_dim=q.shape[-1], gqa=q.shape[1] != request.k.shape[1],
                  category="none", needs_grad=request.needs_grad, scale=request.scale)


def _plan(request: AttentionRequest, budget: int | None) -> Planned:
    q, k, spec, dev = request.q, request.k, request.spec, request.device
    d = q.shape[-1]
    gqa = q.shape[1] != k.shape[1]
    check_unmasked_kernel(request)

    def decide(backward: bool) -> Choice | MemoryBudgetError:
        try:
            return choose_for(request, budget, backward=backward)
        except MemoryBudgetError as exc:
            return exc

    fwd = decide(False)
    bwd = decide(True) if request.needs_grad else None
    failed = [c for c in (fwd, bwd) if isinstance(c, MemoryBudgetError)]
    if request.needs_grad and failed:  # name the budget that runs the forward AND the backward
        need = max(c.minimum or 0 for c in failed)
        which = ("forward and backward" if len(failed) == 2 else
                 "backward" if failed[0] is bwd else "forward")
        raise MemoryBudgetError(
            f"memory_budget={budget} bytes is too small for the {which} of this call "
            f"(q, k or v require grad, so the backward runs under the same budget): pass "
            f"memory_budget >= {need} ({format_bytes(need)}) to run both; {failed[0]}",
            minimum=need)
    if failed:
        raise failed[0]
    assert isinstance(fwd, Choice)
    assert not isinstance(bwd, MemoryBudgetError)
    cats = mask_categories(fwd.rects, spec, fwd.stationary)
    if bwd is not None:
        cats |= mask_categories(bwd.rects, spec, bwd.stationary)
    kernels = {(cat, grad): choose_kernel(request.backend, device=dev, dtype=q.dtype,
                                          head_dim=d, gqa=gqa, category=cat, needs_grad=grad,
                                          scale=request.scale)
               for cat in sorted(cats)
               for grad in ((False, True) if request.needs_grad else (False,))}
    default = request.memory_budget is None and budget is not None
    given = request.plan is not None
    band = spec.q_doc is None and spec.mask_mod is None
    return Planned(
        forward=fwd, backward=bwd, kernels=kernels,
        summaries=(summarize(fwd, given=given, default_budget=default),
                   None if bwd is None else summarize(bwd, given=given,
                                                      default_budget=default)),
        steps=(_one_task_steps(fwd, spec, dev) if band else None,
               _one_task_steps(bwd, spec, dev) if band and bwd is not None else None))


def _one_task_steps(choice: Choice, spec: MaskSpec, dev: torch.device) -> OneTaskSteps | None:
    """The steps of a one-task plan and its block counts (a band mask classifies the same
    way in every run), or None for plans of several tasks."""
    if len(choice.rects) != 1:
        return None
    counts: dict[str, int] = {}
    steps = task_steps(choice.rects, 0, spec, stationary=choice.stationary, device=dev,
                       counts=counts)
    return tuple(steps), counts


def summarize(choice: Choice, *, given: bool, default_budget: bool = False) -> PlanSummary:
    """The :class:`~cqs_attention.report.PlanSummary` of a planner ``choice``: the plan, how
    it was chosen, its CQS design (None for other schedules), placement and prediction."""
    p = choice.plan
    sched = getattr(p, "schedule", "cqs")
    source = "given" if given else choice.kind
    if default_budget:
        source += f" ({DEFAULT_BUDGET_FRACTION:.0%} of free device memory)"
    ds = getattr(p, "design", None) if sched == "cqs" else None
    return PlanSummary(
        plan=p, plan_source=source, schedule=choice.kind if not given else f"given {sched}",
        design_v=None if ds is None else ds.v, design_k=None if ds is None else ds.k,
        levels=None if ds is None else getattr(p, "levels", 1),
        accumulators=choice.accumulators, prefetch=choice.prefetch,
        chosen_because=choice.reason, predicted_seconds=choice.predicted_s,
        task_bytes_estimate=choice.footprint)
