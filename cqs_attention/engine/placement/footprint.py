"""The ONE footprint model: the device bytes a run of a plan holds at once.

:func:`footprint` bounds them for the largest step (staged query and key/value rows,
accumulator rows, call results, merge temporaries, masks, kernel workspace; doubled for the
sides prefetched while a step computes), for accumulators on the device, at home, or none (one
kernel call). :class:`Dims` are the sizes of a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from cqs_attention.engine.schedule import PlanRects
from cqs_attention.kernels.reference import ReferenceKernel
from cqs_attention.merge import accumulator_dtype


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
