"""Forward and backward runs: the engine's pieces wired together for one call.

:func:`run_forward` and :func:`run_backward` take a :class:`~cqs_attention.engine.placement.Choice`
(plan, accumulator placement, prefetching) and a :class:`RunContext` (device, mask, scale,
kernels, and the optional checkpoint journal and process group) and return the results on
the inputs' device. They build the transport, the compute, the accumulator stores and the
driver; checkpointing is the journal's ``commit`` hook plus a resume of the stored
accumulators, and a distributed run is a shard of the plan's tasks plus one collective at the
end: both take the same streamed path with the same OOM guard as any other run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cqs_attention.engine.accumulate import RowStore
from cqs_attention.engine.compute import Compute, Staged
from cqs_attention.engine.driver import Driver
from cqs_attention.engine.placement import SLAB_BYTES, Choice, conversion_slab_bytes
from cqs_attention.engine.schedule import PlanRects, merge_ranges, task_steps
from cqs_attention.engine.transport import Transport, host_empty
from cqs_attention.masks import MaskSpec
from cqs_attention.merge import accumulator_dtype

__all__ = ["RunContext", "run_backward", "run_forward"]


@dataclass
class RunContext:
    """Everything about one call that is not the tensors or the choice of plan."""

    device: torch.device
    home: torch.device
    streamed: bool
    spec: MaskSpec
    scale: float
    backend: str
    report: Any
    progress: bool | None = None
    journal: Any = None  # cqs_attention.checkpoint.Journal
    dist: Any = None  # cqs_attention._collectives.DistributedOptions
    positions: list[int] | None = None  # this rank's tasks (plan positions)
    budget: int | None = None  # the device memory budget in force (None: unbounded)


def _row_counts(rects: PlanRects, positions: list[int], n: int, side: str) -> np.ndarray:
    """Per row: how many of the tasks at ``positions`` touch it (merged ranges per task)."""
    diff = np.zeros(n + 1, dtype=np.int64)
    for pos in positions:
        q0, q1, k0, k1 = rects.task(pos)
        a, b = (q0, q1) if side == "q" else (k0, k1)
        for s, e in merge_ranges(zip(a.tolist(), b.tolist(), strict=True)):
            diff[s] += 1
            diff[e] -= 1
    return np.cumsum(diff[:-1]).astype(np.int32)


def _single_call(rects: PlanRects, ctx: RunContext, lq: int, lk: int) -> Any:
    """The one call of a one-rectangle plan covering everything, or None."""
    if len(rects) != 1 or int(rects.ptr[-1]) != 1:
        return None
    steps = task_steps(rects, 0, ctx.spec, stationary="kv", device=ctx.device)
    if len(steps) != 1 or len(steps[0].calls) != 1:
        return None
    call = steps[0].calls[0]
    if (call.q0, call.q1) != (0, lq) or call.key_ranges != ((0, lk),):
        return None
    return call


def _pin(ctx: RunContext) -> bool:
    return ctx.device.type == "cuda" and ctx.streamed


def run_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, choice: Choice,
                ctx: RunContext, out_target: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)``: out in q's dtype (written into ``out_target`` when given, which must be
    on the home device), lse in the accumulator dtype, both on the home device."""
    rep = ctx.report
    t_start = time.perf_counter()
    b, h, lq, _d = q.shape
    lk, dv = k.shape[2], v.shape[-1]
    acc_dt = accumulator_dtype(q.dtype)
    tr = Transport(ctx.device, streamed=ctx.streamed, report=rep)
    comp = Compute(device=ctx.device, backend=ctx.backend, scale=ctx.scale, report=rep)
    rects = choice.rects
    positions = list(range(len(rects))) if ctx.positions is None else list(ctx.positions)
    full = ctx.journal is not None or ctx.dist is not None
    _peak_start(ctx)
    if choice.accumulators == "none" and not full:
        # the classified call is cached on the (shared) choice only for band masks, which the
        # choice's cache key determines; document ids and mask_mod change it call by call
        band = ctx.spec.q_doc is None and ctx.spec.mask_mod is None
        call = choice.call if band else None
        if call is None:
            call = _single_call(rects, ctx, lq, lk)
            if band:
                choice.call = call
        if call is not None:
            try:
                res = _whole_forward(q, k, v, call, tr, comp, ctx, out_target)
                rep.tasks, rep.accumulator_device = 1, "none (one kernel call)"
                _peak_end(ctx, rep)
                rep.add_time("total", time.perf_counter() - t_start)
                return res
            except torch.cuda.OutOfMemoryError:
                rep.oom_retries += 1
                if ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
            finally:  # no buffer is freed while a copy or kernel may still use it
                tr.close()
        choice = dataclasses.replace(choice, accumulators="host" if ctx.streamed else "device")
    placement = "device" if choice.accumulators in ("device", "none") else "host"
    done: set[int] = set()
    initial = None
    complete = False
    if ctx.journal is not None:
        done, initial, complete = ctx.journal.resume()
    if placement == "device":
        acc_out = torch.zeros(b, h, lq, dv, dtype=acc_dt, device=ctx.device)
        acc_lse = torch.full((b, h, lq), float("-inf"), dtype=acc_dt, device=ctx.device)
        if initial is not None:
            acc_out.copy_(initial[0])
            acc_lse.copy_(initial[1])
        store = RowStore([acc_out, acc_lse], inits=[0.0, float("-inf")], transport=tr,
                         placement="device")
        final_out = None
        remaining = None
    else:
        pin = _pin(ctx)
        if out_target is not None:
            final_out = out_target
        else:
            final_out = host_empty((b, h, lq, dv), q.dtype, pin=pin)
        lse_home = host_empty((b, h, lq), acc_dt, pin=pin)
        out_home: Any = ((b, h, lq, dv), acc_dt, pin)  # allocated on first write-back
        if full:
            out_home = host_empty((b, h, lq, dv), acc_dt, pin=pin)
        remaining = None if full else _row_counts(rects, positions, lq, "q")
        store = RowStore([out_home, lse_home], inits=[0.0, float("-inf")], transport=tr,
                         placement="host", full=full,
                         finalize_to=None if full else [final_out, None], remaining=remaining)
        if initial is not None:
            store.home_tensor(0).copy_(initial[0])
            store.home_tensor(1).copy_(initial[1])
    order = [] if complete else [p for p in positions if int(rects.ids[p]) not in done]
    rep.accumulator_device = (str(ctx.device) if placement == "device" else
                              f"{ctx.home} (merged on {ctx.device})")
    driver = Driver(direction="forward", rects=rects, order=order, spec=ctx.spec,
                    stationary=choice.stationary, transport=tr, compute=comp,
                    q_inputs=[q], kv_inputs=[k, v], q_store=store, kv_store=None, report=rep,
                    remaining_q=remaining, prefetch=choice.prefetch, progress=ctx.progress)

    def snapshot() -> tuple[torch.Tensor, torch.Tensor]:
        driver.flush()
        return store.home[0].cpu(), store.home[1].cpu()

    if ctx.journal is not None:
        driver.on_commit = lambda tid: ctx.journal.commit(tid, snapshot)
    try:
        driver.run()
    finally:  # on any error too: no buffer is freed while a copy or kernel may still use it
        tr.close()
    if ctx.journal is not None:
        ctx.journal.finish(snapshot)
        rep.add_time("checkpoint", ctx.journal.seconds)
    tr.close()
    if ctx.dist is not None:
        from cqs_attention._collectives import collective_merge_, guarded

        t0 = time.perf_counter()
        guarded("merge (forward)", ctx.dist.rank, collective_merge_, store.home_tensor(0),
                store.home_tensor(1), group=ctx.dist.group, dst=ctx.dist.dst)
        rep.add_time("collective", time.perf_counter() - t0)
    # assemble the result on the home device
    if placement == "device":
        res_out = _to_home(acc_out, q.dtype, ctx.home, out_target, budget=ctx.budget)
        res_lse = acc_lse.to(ctx.home)
    else:
        res_lse = store.home_tensor(1)
        if full:
            _convert_into(final_out, store.home_tensor(0))
        else:
            _finish_rows(store, [final_out, res_lse], [None, float("-inf")])
        res_out = final_out
    _peak_end(ctx, rep)
    rep.add_time("total", time.perf_counter() - t_start)
    return res_out, res_lse


def _whole_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: Any,
                   tr: Transport, comp: Compute, ctx: RunContext,
                   out_target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    lq, lk = q.shape[2], k.shape[2]
    (qd,), ev_q = tr.gather([q], ((0, lq),))
    kv, ev_kv = tr.gather([k, v], ((0, lk),))
    tr.wait([ev_q, ev_kv])
    out, lse = comp.forward(call, Staged(((0, lq),), [qd], ev_q),
                            Staged(((0, lk),), kv, ev_kv))
    res = _to_home(out, q.dtype, ctx.home, out_target)
    return res, lse.to(ctx.home)


def _finish_rows(store: RowStore, finals: list[torch.Tensor],
                 empty: list[float | None]) -> None:
    """After a run with rows finalised on their last visit: rows merged at home but never
    finalised are converted into ``finals``; rows nothing was merged into get ``empty``
    (``None``: zeros) in ``finals`` (for the tensors with a home only where given)."""
    for s, e in store.pending_rows():
        for i, f in enumerate(finals):
            if f is not store.home_tensor(i):
                _convert_into(f[:, :, s:e], store.home_tensor(i)[:, :, s:e])
    for s, e in store.unwritten_rows():
        for f, value in zip(finals, empty, strict=True):
            if value is None:
                f[:, :, s:e].zero_()
            else:
                f[:, :, s:e].fill_(value)


def _to_home(t: torch.Tensor, dtype: torch.dtype, home: torch.device,
             target: torch.Tensor | None, *, budget: int | None = None) -> torch.Tensor:
    slab = conversion_slab_bytes(budget)
    if target is not None:
        _convert_into(target, t, slab)
        return target
    if t.device == home:
        return t.to(dtype)
    res = host_empty(t.shape, dtype, pin=t.device.type == "cuda") if home.type == "cpu" else \
        torch.empty(t.shape, dtype=dtype, device=home)
    _convert_into(res, t, slab)
    return res


def _convert_into(dst: torch.Tensor, src: torch.Tensor, slab_bytes: int = SLAB_BYTES) -> None:
    """``dst.copy_(src)`` across devices and dtypes, converting on ``src``'s device slab by
    slab (a device -> host copy with a dtype change would first build a full-size host
    temporary in ``src``'s dtype; a slab of the converted rows is all the device holds)."""
    if src.device == dst.device or src.dtype == dst.dtype or src.dim() < 3:
        dst.copy_(src)
        return
    rows = src.shape[2]
    per_row = max(1, src[:, :, :1].numel() * dst.element_size())
    step = max(1, slab_bytes // per_row)
    for s in range(0, rows, step):
        dst[:, :, s:s + step].copy_(src[:, :, s:s + step].to(dst.dtype))


def run_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 out: torch.Tensor, lse: torch.Tensor, choice: Choice, ctx: RunContext
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` in the inputs' dtypes on the inputs' device; ``out`` and ``lse`` are
    the GLOBAL forward results."""
    rep = ctx.report
    t_start = time.perf_counter()
    acc_dt = accumulator_dtype(q.dtype)
    tr = Transport(ctx.device, streamed=ctx.streamed, report=rep)
    comp = Compute(device=ctx.device, backend=ctx.backend, scale=ctx.scale, report=rep)
    rects = choice.rects
    positions = list(range(len(rects))) if ctx.positions is None else list(ctx.positions)
    full = ctx.dist is not None
    out = out.to(q.dtype)
    lq, lk = q.shape[2], k.shape[2]
    _peak_start(ctx)
    if choice.accumulators == "none" and not full:
        call = _single_call(rects, ctx, lq, lk)
        if call is not None:
            try:
                (qd, dod, od, ld), ev_q = tr.gather([q, dout, out, lse], ((0, lq),))
                kv, ev_kv = tr.gather([k, v], ((0, lk),))
                tr.wait([ev_q, ev_kv])
                grads = comp.backward(call, Staged(((0, lq),), [qd, dod, od, ld], ev_q),
                                      Staged(((0, lk),), kv, ev_kv))
                tr.release([qd, dod, od, ld, *kv])
                del qd, dod, od, ld, kv
                res = tuple(_to_home(g, t.dtype, ctx.home, None, budget=ctx.budget)
                            for g, t in zip(grads, (q, k, v), strict=True))
                del grads
                rep.tasks, rep.accumulator_device = 1, "none (one kernel call)"
                _peak_end(ctx, rep)
                rep.add_time("total", time.perf_counter() - t_start)
                return res  # type: ignore[return-value]
            except torch.cuda.OutOfMemoryError:
                rep.oom_retries += 1
                if ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
            finally:  # no buffer is freed while a copy or kernel may still use it
                tr.close()
        choice = dataclasses.replace(choice, accumulators="host" if ctx.streamed else "device")
    placement = "host" if choice.accumulators == "host" else "device"
    finals: list[torch.Tensor] = []
    remaining_kv = None
    if placement == "device":
        dq = torch.zeros(q.shape, dtype=acc_dt, device=ctx.device)
        dk = torch.zeros(k.shape, dtype=acc_dt, device=ctx.device)
        dvv = torch.zeros(v.shape, dtype=acc_dt, device=ctx.device)
        q_store = RowStore([dq], inits=[0.0], transport=tr, placement="device")
        kv_store = RowStore([dk, dvv], inits=[0.0, 0.0], transport=tr, placement="device")
    else:
        pin = _pin(ctx)

        def lazy(t: torch.Tensor) -> Any:  # float32 at home, allocated on first write-back
            return (tuple(t.shape), acc_dt, pin)

        q_store = RowStore([lazy(q) if not full else host_empty(q.shape, acc_dt, pin=pin)],
                           inits=[0.0], transport=tr, placement="host", full=full)
        if full:
            kv_store = RowStore([host_empty(t.shape, acc_dt, pin=pin) for t in (k, v)],
                                inits=[0.0, 0.0], transport=tr, placement="host", full=True)
        else:
            # dk, dv rows go straight into the gradients on their last visit (a key/value
            # block's task is usually its only one): no float32 copy of them at home
            finals = [host_empty(t.shape, t.dtype, pin=pin) for t in (k, v)]
            remaining_kv = _row_counts(rects, positions, lk, "k")
            kv_store = RowStore([lazy(k), lazy(v)], inits=[0.0, 0.0], transport=tr,
                                placement="host", finalize_to=finals, remaining=remaining_kv)
    rep.accumulator_device = (str(ctx.device) if placement == "device" else
                              f"{ctx.home} (merged on {ctx.device})")
    driver = Driver(direction="backward", rects=rects, order=positions, spec=ctx.spec,
                    stationary=choice.stationary, transport=tr, compute=comp,
                    q_inputs=[q, dout, out, lse], kv_inputs=[k, v], q_store=q_store,
                    kv_store=kv_store, report=rep, prefetch=choice.prefetch,
                    progress=ctx.progress, remaining_kv=remaining_kv)
    try:
        driver.run()
    finally:  # on any error too: no buffer is freed while a copy or kernel may still use it
        tr.close()
    if placement == "host" and not full:
        for s0, e0 in q_store.unwritten_rows():
            q_store.home_tensor(0)[:, :, s0:e0].zero_()
        _finish_rows(kv_store, finals, [None, None])
        dq_acc = q_store.home_tensor(0)
        res = (_to_home(dq_acc, q.dtype, ctx.home, None, budget=ctx.budget), *finals)
    else:
        grads = [q_store.home_tensor(0), kv_store.home_tensor(0), kv_store.home_tensor(1)]
        if ctx.dist is not None:
            from cqs_attention._collectives import _all_reduce_sum_, guarded

            t0 = time.perf_counter()
            guarded("gradient sum (backward)", ctx.dist.rank, _all_reduce_sum_, grads,
                    ctx.dist.group)
            rep.add_time("collective", time.perf_counter() - t0)
        res = tuple(_to_home(g, t.dtype, ctx.home, None, budget=ctx.budget)
                    for g, t in zip(grads, (q, k, v), strict=True))
    _peak_end(ctx, rep)
    rep.add_time("total", time.perf_counter() - t_start)
    return res  # type: ignore[return-value]


def _peak_start(ctx: RunContext) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
        ctx._mem0 = torch.cuda.memory_allocated(ctx.device)  # type: ignore[attr-defined]


def _peak_end(ctx: RunContext, rep: Any) -> None:
    if ctx.device.type == "cuda":
        rep.peak_device_bytes = (torch.cuda.max_memory_allocated(ctx.device)
                                 - ctx._mem0)  # type: ignore[attr-defined]
    else:
        rep.peak_device_bytes = None  # not measured on the CPU
