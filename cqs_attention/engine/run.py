"""Run: one validated call of attention, planned and executed by the driver.

:func:`execute` takes the :class:`~cqs_attention.engine.request.AttentionRequest` that
:func:`cqs_attention.attention` builds and

1. plans it (:func:`cqs_attention.engine.placement.plan_call`: the budget, both directions'
   plans and placements, the kernels);
2. wires what the plan needs besides the driver: a distributed run's agreement (every rank
   checks the same plan and inputs, and all raise together when any cannot run) and its shard
   of tasks; a checkpointed run's manifest and journal;
3. runs the forward (through :class:`CQSAttentionFunction` when gradients are needed, whose
   backward runs the backward plan) and files the report (:func:`last_run_stats`).

:func:`run_forward` and :func:`run_backward` are the passes: they build the transport, the
compute, the accumulator stores and the driver for a
:class:`~cqs_attention.engine.placement.Choice`.
Every run goes through the driver, the single kernel call too (a one-step plan whose call's
outputs are the result, with no accumulators); when that call runs out of memory where the
guard would split it, the run re-plans with accumulators under the same budget
(:func:`cqs_attention.engine.placement.replan_with_accumulators`). Checkpointing is the
journal's ``commit`` hook plus a resume of the stored accumulators, and a distributed run is a
shard of the plan's tasks plus one collective at the end: both take the same streamed path
with the same out-of-memory guard as any other run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cqs_attention._collectives import _all_reduce_sum_, collective_merge_, guarded
from cqs_attention.checkpoint import Journal, make_manifest
from cqs_attention.engine.accumulate import ResultStore, RowStore
from cqs_attention.engine.compute import Compute
from cqs_attention.engine.driver import Driver, PlacementSwitch
from cqs_attention.engine.placement import (
    SLAB_BYTES,
    Choice,
    OneTaskSteps,
    Planned,
    call_budget,
    check_unmasked_kernel,
    conversion_slab_bytes,
    plan_call,
    replan_with_accumulators,
    streams_rows,
)
from cqs_attention.engine.request import AttentionRequest
from cqs_attention.engine.schedule import PlanRects, merge_ranges
from cqs_attention.engine.transport import Transport, host_empty
from cqs_attention.errors import MemoryBudgetError
from cqs_attention.kernels.base import Kernel
from cqs_attention.merge import accumulator_dtype
from cqs_attention.report import (
    PlanSummary,
    RunCounters,
    RunReport,
    current_slot,
    set_last,
)

__all__ = ["CQSAttentionFunction", "RunContext", "execute", "run_backward", "run_forward"]

Classified = OneTaskSteps | None


@dataclass(slots=True)
class RunContext:
    """Everything about one pass that is not the tensors or the choice of plan."""

    request: AttentionRequest
    budget: int | None  # the device memory budget in force (None: unbounded)
    counters: RunCounters
    kernels: dict[tuple[str, bool], Kernel] = dataclasses.field(default_factory=dict)
    journal: Journal | None = None
    positions: list[int] | None = None  # this rank's tasks (plan positions)
    #: the request's compute device and home, and whether rows are staged (from the request)
    device: torch.device = dataclasses.field(init=False)
    home: torch.device = dataclasses.field(init=False)
    streamed: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.device = self.request.device
        self.home = self.request.home
        self.streamed = streams_rows(self.request)


# -- the call ------------------------------------------------------------------------------------
def execute(request: AttentionRequest) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
    """Plan and run ``request`` (see the module docstring); the value
    :func:`cqs_attention.attention` returns."""
    q, k, v = request.q, request.k, request.v
    if q.shape[2] == 0 or k.shape[2] == 0:
        check_unmasked_kernel(request)
        return _empty(request)
    budget = call_budget(request)
    dist = request.dist
    try:
        planned = plan_call(request, budget)
    except MemoryBudgetError as exc:
        if dist is not None:  # every rank raises, none waits for the others
            dist.agree(False, str(exc))
        raise
    positions = None
    if dist is not None:
        dist.check_same(planned.forward.plan, q, k, v)
        dist.agree(True, "")
        positions = [int(p) for p in dist.positions(planned.forward.plan)]
    journal = None if request.checkpoint is None else _journal(request, planned.forward,
                                                               positions)
    report = _report("forward", planned.summaries[0], request, budget)
    ctx = RunContext(request=request, budget=budget, counters=report.counters,
                     kernels=planned.kernels, journal=journal, positions=positions)
    if request.needs_grad:
        res_out, res_lse = CQSAttentionFunction.apply(q, k, v, planned, ctx)
    elif torch.is_grad_enabled():
        with torch.no_grad():
            res_out, res_lse = run_forward(q, k, v, planned.forward, ctx,
                                           classified=planned.steps[0],
                                           out_target=request.out)
    else:
        res_out, res_lse = run_forward(q, k, v, planned.forward, ctx,
                                       classified=planned.steps[0], out_target=request.out)
    set_last(report)
    if dist is not None and not dist.is_destination:
        return None
    if request.out is not None and res_out is not request.out:
        request.out.copy_(res_out)
        res_out = request.out
    return (res_out, res_lse) if request.return_lse else res_out


def _report(direction: str, summary: PlanSummary, request: AttentionRequest,
            budget: int | None) -> RunReport:
    return RunReport(direction=direction, summary=summary, counters=RunCounters(),
                     device=str(request.device), memory_budget=budget)


def _journal(request: AttentionRequest, choice: Choice, positions: list[int] | None
             ) -> Journal:
    """The checkpoint journal of a forward run of ``choice`` (this rank's tasks)."""
    opts = request.checkpoint
    assert opts is not None
    rects = choice.rects
    ids = [int(rects.ids[p]) for p in (positions if positions is not None
                                       else range(len(rects)))]
    manifest = make_manifest(request.q, request.k, request.v, spec=request.spec,
                             scale=request.scale, plan=choice.plan, task_ids=ids,
                             rank=opts.rank)
    return Journal(opts, manifest, ids)


def _empty(request: AttentionRequest) -> Any:
    """Lq == 0 or Lk == 0: zeros and -inf, still connected to the graph (zero gradients)."""
    q, v = request.q, request.v
    b, h, lq, _ = q.shape
    res_out = torch.zeros(b, h, lq, v.shape[-1], dtype=q.dtype, device=request.home)
    res_lse = torch.full((b, h, lq), float("-inf"), dtype=accumulator_dtype(q.dtype),
                         device=request.home)
    if request.needs_grad:  # connect to the inputs so backward gives (zero) gradients
        tie = sum(t.reshape(-1)[:0].sum().to(res_out.dtype)
                  for t in (q, request.k, v) if t.requires_grad)
        res_out = res_out + tie
    set_last(_report("forward", PlanSummary(plan_source="none (empty sequence)"), request,
                     request.memory_budget))
    if request.out is not None:
        request.out.copy_(res_out)
        res_out = request.out
    return (res_out, res_lse) if request.return_lse else res_out


class CQSAttentionFunction(torch.autograd.Function):
    """``apply(q, k, v, planned, run_ctx) -> (out, lse)``: the forward pass of
    ``planned.forward``, and a backward pass of ``planned.backward``.

    The forward saves ``q, k, v`` and the GLOBAL merged ``out`` and ``lse``. The backward runs
    the plan the planner chose for it under the same budget (key/value-stationary: ``dk``/``dv``
    rows stay with their keys while ``dq`` rows stream), passing the global ``out`` and ``lse``
    to every kernel backward, so each call's ``dq, dk, dv`` are exact partial sums. Gradients
    are accumulated in float32 (float64 for float64 inputs) and returned in the inputs' dtypes.
    The log-sum-exp output is not differentiable, and the backward itself is not: a backward
    with ``create_graph=True`` (the start of a double backward) raises a ``RuntimeError``
    saying so.

    >>> import cqs_attention
    >>> q = torch.randn(1, 2, 12, 4, dtype=torch.float64, requires_grad=True)
    >>> cqs_attention.attention(q, q, q, causal=True).sum().backward()
    >>> q.grad.shape
    torch.Size([1, 2, 12, 4])
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                planned: Planned, run_ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse = run_forward(q, k, v, planned.forward, run_ctx, classified=planned.steps[0])
        ctx.run_ctx = run_ctx
        ctx.planned = planned
        ctx.report_slot = current_slot()  # the backward may run on another thread
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor, _dlse: torch.Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError("cqs attention is differentiable once: double backward "
                               "(create_graph=True through attention) is not supported")
        q, k, v, out, lse = ctx.saved_tensors
        fwd: RunContext = ctx.run_ctx
        planned: Planned = ctx.planned
        choice = planned.backward
        assert choice is not None
        assert planned.summaries[1] is not None
        rep = _report("backward", planned.summaries[1], fwd.request, fwd.budget)
        positions = None
        if fwd.request.dist is not None:
            positions = [int(p) for p in fwd.request.dist.positions(choice.plan)]
        run_ctx = dataclasses.replace(fwd, counters=rep.counters, journal=None,
                                      positions=positions)
        with torch.no_grad():
            dq, dk, dv = run_backward(dout.contiguous().to(q.dtype), q, k, v, out, lse,
                                      choice, run_ctx, classified=planned.steps[1])
        set_last(rep, ctx.report_slot)
        return dq, dk, dv, None, None


# -- the passes ----------------------------------------------------------------------------------
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


def _pin(ctx: RunContext) -> bool:
    return ctx.device.type == "cuda" and ctx.streamed


def run_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, choice: Choice,
                ctx: RunContext, *, classified: Classified = None,
                out_target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)``: out in q's dtype (written into ``out_target`` when given, which must be
    on the home device), lse in the accumulator dtype, both on the home device.
    ``classified``: the steps of a one-task ``choice``, classified by the planner."""
    t_start = time.perf_counter()
    mem0 = _peak_start(ctx.device)
    try:
        res = _forward(q, k, v, choice, ctx, classified, out_target)
    except PlacementSwitch:
        choice = replan_with_accumulators(ctx.request, ctx.budget, backward=False)
        ctx.counters.discard_plan()
        res = _forward(q, k, v, choice, ctx, None, out_target,
                       ooms_before=ctx.counters.oom_retries)
    ctx.counters.peak_device_bytes = _peak(ctx.device, mem0)
    ctx.counters.add_time("total", time.perf_counter() - t_start)
    return res


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, choice: Choice,
             ctx: RunContext, classified: Classified, out_target: torch.Tensor | None, *,
             ooms_before: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rep = ctx.counters
    b, h, lq, _d = q.shape
    dv = v.shape[-1]
    tr = Transport(ctx.device, streamed=ctx.streamed, counters=rep)
    comp = Compute(device=ctx.device, backend=ctx.request.backend, scale=ctx.request.scale,
                   counters=rep, kernels=ctx.kernels)
    rects = choice.rects
    positions = list(range(len(rects))) if ctx.positions is None else list(ctx.positions)
    full = ctx.journal is not None or ctx.request.dist is not None
    placement = choice.accumulators
    done: set[int] = set()
    initial = None
    complete = False
    if ctx.journal is not None:
        done, initial, complete = ctx.journal.resume()
    store: RowStore | ResultStore
    remaining = None
    final_out: torch.Tensor | None = None
    acc_dt = accumulator_dtype(q.dtype)
    if placement == "none":
        store = ResultStore(lq)
    elif placement == "device":
        acc_out = torch.zeros(b, h, lq, dv, dtype=acc_dt, device=ctx.device)
        acc_lse = torch.full((b, h, lq), float("-inf"), dtype=acc_dt, device=ctx.device)
        if initial is not None:
            acc_out.copy_(initial[0])
            acc_lse.copy_(initial[1])
        store = RowStore([acc_out, acc_lse], inits=[0.0, float("-inf")], transport=tr,
                         placement="device")
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
    order = [] if complete else positions if not done else [
        p for p in positions if int(rects.ids[p]) not in done]
    rep.accumulator_device = _where(placement, ctx)
    driver = Driver(direction="forward", rects=rects, order=order, spec=ctx.request.spec,
                    stationary=choice.stationary, transport=tr, compute=comp,
                    q_inputs=[q], kv_inputs=[k, v], q_store=store, kv_store=None, counters=rep,
                    remaining_q=remaining, prefetch=choice.prefetch,
                    progress=ctx.request.progress, classified=classified,
                    ooms_before=ooms_before)

    if ctx.journal is not None:
        journal = ctx.journal
        assert isinstance(store, RowStore)
        row_store = store

        def snapshot() -> tuple[torch.Tensor, torch.Tensor]:
            driver.flush()
            return row_store.home[0].cpu(), row_store.home[1].cpu()

        driver.on_commit = lambda tid: journal.commit(tid, snapshot)
    try:
        driver.run()  # which closes the transport at its end
    except BaseException:  # no buffer is freed while a copy or kernel may still use it
        tr.close()
        raise
    if ctx.journal is not None:
        ctx.journal.finish(snapshot)  # flushes the driver: copies to wait for again
        rep.add_time("checkpoint", ctx.journal.seconds)
        tr.close()
    if isinstance(store, ResultStore):  # the one call's outputs are the result
        if not store.results.taken:  # the mask allows no pair at all
            return _no_keys(q, v, ctx.home, out_target)
        out, lse = store.results.tensors
        _count_result(ctx, (out, q.dtype), (lse, lse.dtype))
        return (_to_home(out, q.dtype, ctx.home, out_target, budget=ctx.budget),
                lse.to(ctx.home))
    if ctx.request.dist is not None:
        t0 = time.perf_counter()
        guarded("merge (forward)", ctx.request.dist.rank, collective_merge_,
                store.home_tensor(0), store.home_tensor(1), group=ctx.request.dist.group,
                dst=ctx.request.dist.dst)
        rep.add_time("collective", time.perf_counter() - t0)
    # assemble the result on the home device
    if placement == "device":
        _count_result(ctx, (store.home_tensor(0), q.dtype),
                      (store.home_tensor(1), store.home_tensor(1).dtype))
        res_out = _to_home(store.home_tensor(0), q.dtype, ctx.home, out_target,
                           budget=ctx.budget)
        res_lse = store.home_tensor(1).to(ctx.home)
    else:
        assert final_out is not None
        res_lse = store.home_tensor(1)
        if full:
            _convert_into(final_out, store.home_tensor(0))
        else:
            _finish_rows(store, [final_out, res_lse], [None, float("-inf")])
        res_out = final_out
    return res_out, res_lse


def _count_result(ctx: RunContext, *results: tuple[torch.Tensor, torch.dtype]) -> None:
    """Count in ``bytes_from_device`` the results of a streamed run that leave the device
    outside the transport (one call's outputs, accumulators kept on the device), in the dtype
    they arrive in at home; the CPU shim counts them as a GPU would move them."""
    if not ctx.streamed:
        return
    for t, dtype in results:
        ctx.counters.add_bytes_from_device(
            t.numel() * torch.empty((), dtype=dtype).element_size())


def _where(placement: str, ctx: RunContext) -> str:
    if placement == "none":
        return "none (one kernel call)"
    return (str(ctx.device) if placement == "device" else
            f"{ctx.home} (merged on {ctx.device})")


def _no_keys(q: torch.Tensor, v: torch.Tensor, home: torch.device,
             out_target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The result when the mask allows no pair: out = 0, lse = -inf."""
    b, h, lq, _ = q.shape
    out = out_target if out_target is not None else torch.empty(
        b, h, lq, v.shape[-1], dtype=q.dtype, device=home)
    out.zero_()
    return out, torch.full((b, h, lq), float("-inf"), dtype=accumulator_dtype(q.dtype),
                           device=home)


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
    if target is None and t.device == home:
        return t if t.dtype == dtype else t.to(dtype)
    slab = conversion_slab_bytes(budget)
    if target is not None:
        _convert_into(target, t, slab)
        return target
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
                 out: torch.Tensor, lse: torch.Tensor, choice: Choice, ctx: RunContext, *,
                 classified: Classified = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` in the inputs' dtypes on the inputs' device; ``out`` and ``lse`` are
    the GLOBAL forward results. ``classified``: the steps of a one-task ``choice``,
    classified by the planner."""
    t_start = time.perf_counter()
    mem0 = _peak_start(ctx.device)
    out = out.to(q.dtype)
    try:
        res = _backward(dout, q, k, v, out, lse, choice, ctx, classified)
    except PlacementSwitch:
        choice = replan_with_accumulators(ctx.request, ctx.budget, backward=True)
        ctx.counters.discard_plan()
        res = _backward(dout, q, k, v, out, lse, choice, ctx, None,
                        ooms_before=ctx.counters.oom_retries)
    ctx.counters.peak_device_bytes = _peak(ctx.device, mem0)
    ctx.counters.add_time("total", time.perf_counter() - t_start)
    return res


def _backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              out: torch.Tensor, lse: torch.Tensor, choice: Choice, ctx: RunContext,
              classified: Classified, *, ooms_before: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rep = ctx.counters
    acc_dt = accumulator_dtype(q.dtype)
    tr = Transport(ctx.device, streamed=ctx.streamed, counters=rep)
    comp = Compute(device=ctx.device, backend=ctx.request.backend, scale=ctx.request.scale,
                   counters=rep, kernels=ctx.kernels)
    rects = choice.rects
    positions = list(range(len(rects))) if ctx.positions is None else list(ctx.positions)
    full = ctx.request.dist is not None
    lq, lk = q.shape[2], k.shape[2]
    placement = choice.accumulators
    finals: list[torch.Tensor] = []
    remaining_kv = None
    q_store: RowStore | ResultStore
    kv_store: RowStore | ResultStore
    if placement == "none":
        q_store, kv_store = ResultStore(lq), ResultStore(lk)
    elif placement == "device":
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
    rep.accumulator_device = _where(placement, ctx)
    driver = Driver(direction="backward", rects=rects, order=positions, spec=ctx.request.spec,
                    stationary=choice.stationary, transport=tr, compute=comp,
                    q_inputs=[q, dout, out, lse], kv_inputs=[k, v], q_store=q_store,
                    kv_store=kv_store, counters=rep, prefetch=choice.prefetch,
                    progress=ctx.request.progress, remaining_kv=remaining_kv,
                    classified=classified, ooms_before=ooms_before)
    try:
        driver.run()
    finally:  # on any error too: no buffer is freed while a copy or kernel may still use it
        tr.close()
    del driver  # its stores go with the last reference below: each gradient freed once home
    if isinstance(q_store, ResultStore) and isinstance(kv_store, ResultStore):
        if not q_store.results.taken:  # the mask allows no pair at all: zero gradients
            return tuple(torch.zeros_like(t, device=ctx.home)  # type: ignore[return-value]
                         for t in (q, k, v))
        grads = [*q_store.results.tensors, *kv_store.results.tensors]
        del q_store, kv_store
    elif isinstance(q_store, RowStore) and isinstance(kv_store, RowStore):
        if placement == "host" and not full:
            for s0, e0 in q_store.unwritten_rows():
                q_store.home_tensor(0)[:, :, s0:e0].zero_()
            _finish_rows(kv_store, finals, [None, None])
            return (_to_home(q_store.home_tensor(0), q.dtype, ctx.home, None,
                             budget=ctx.budget), finals[0], finals[1])
        grads = [q_store.home_tensor(0), kv_store.home_tensor(0), kv_store.home_tensor(1)]
        if ctx.request.dist is not None:
            t0 = time.perf_counter()
            guarded("gradient sum (backward)", ctx.request.dist.rank, _all_reduce_sum_, grads,
                    ctx.request.dist.group)
            rep.add_time("collective", time.perf_counter() - t0)
    else:
        raise RuntimeError("internal error: a backward with one store of each kind")
    if placement in ("none", "device"):
        _count_result(ctx, *((g, t.dtype) for g, t in zip(grads, (q, k, v), strict=True)))
    res = []
    for i, t in enumerate((q, k, v)):  # each gradient released once it is home
        res.append(_to_home(grads[i], t.dtype, ctx.home, None, budget=ctx.budget))
        grads[i] = None  # type: ignore[call-overload]
    return res[0], res[1], res[2]


def _peak_start(device: torch.device) -> int:
    """The device bytes allocated now, after resetting the peak counter (0 on the CPU)."""
    if device.type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak(device: torch.device, start: int) -> int | None:
    """The peak device bytes since :func:`_peak_start` above ``start``; None on the CPU,
    where it is not measured."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) - start
