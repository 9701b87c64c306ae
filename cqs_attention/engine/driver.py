"""Driver: the one loop that runs any schedule, forward or backward.

Per plan task (in plan order, or the order of a rank's shard, minus the tasks a checkpoint
journal already holds) the driver asks :mod:`~cqs_attention.engine.schedule` for its steps and
runs them:

1. **sides**: the step's key/value side and query side are reused when the previous step had
   the same rows (the stationary side of a task), else the old one is closed (its accumulator
   rows written back, or finalised) and the new one staged by the transport; the next step's
   sides are prefetched on the copy stream while this step computes, unless their rows overlap
   rows still being accumulated;
2. **compute**: each call not merged yet runs on the compute stream, which waits only for the
   events of its sides' copies;
3. **accumulate**: the call's result merges into the residency of its rows; the call id is
   recorded, so it is merged exactly once;
4. **commit**: when a task's steps are all merged, the ``on_commit`` hook runs (the checkpoint
   journal; it may ask for a :meth:`Driver.flush`, which closes every residency and waits for
   every copy, so the home accumulators then hold exactly the committed tasks).

An out-of-memory error anywhere in a step closes the open residencies without finalising
anything, drops staged buffers and asks :class:`~cqs_attention.engine.guard.OOMGuard` what to
do: retry, or split the step's unmerged calls along the queries or the keys (the refinement).
A run of one kernel call has no accumulators to merge the halves into: where the guard would
split its step, the driver raises :class:`PlacementSwitch` and the run re-plans with
accumulators under the same budget (:mod:`cqs_attention.engine.run`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from cqs_attention.engine.accumulate import Residency, ResultStore, RowStore
from cqs_attention.engine.compute import Compute, Staged
from cqs_attention.engine.guard import OOMGuard
from cqs_attention.engine.schedule import (
    Call,
    PlanRects,
    Step,
    merge_ranges,
    split_call,
    task_steps,
)
from cqs_attention.engine.transport import Transport
from cqs_attention.masks import MaskSpec
from cqs_attention.report import RunCounters
from cqs_design.plans.intervals import ranges_overlap

__all__ = ["TASK_HOOKS", "Driver", "PlacementSwitch", "Side"]

Range = tuple[int, int]
#: ``fn(task_id, attempt)`` run before a task's first step and each retry (see testing.py)
TASK_HOOKS: list[Callable[[int, int], None]] = []


@dataclass(slots=True)
class Side:
    """One side of a step on the device: input rows and (optionally) accumulator rows."""

    rows: tuple[Range, ...]
    inputs: Staged
    acc: Residency | None

    def events(self) -> list[Any]:
        evs = [self.inputs.ready]
        if self.acc is not None:
            evs.append(self.acc.ready)
        return [e for e in evs if e is not None]


class PlacementSwitch(Exception):
    """Raised by the driver of a run without accumulators where the guard would split a step:
    the run re-plans with accumulators (the step's out-of-memory error is ``__cause__``)."""


class Driver:
    """Runs the tasks of ``rects`` (see the module docstring).

    Parameters
    ----------
    direction
        ``"forward"``: query side inputs ``[q]``, accumulators ``q_store`` = ``(out, lse)``;
        ``"backward"``: query side inputs ``[q, dout, out, lse]``, ``q_store`` = ``dq`` and
        ``kv_store`` = ``(dk, dv)``.
    q_inputs, kv_inputs
        Home tensors of each side (row axis 2).
    remaining_q, remaining_kv
        Per-row counts of tasks not started yet that touch the row (decremented here when a
        task starts); used by stores that finalise rows.
    on_commit
        ``on_commit(task_id)`` after every merged task.
    classified
        The steps of the only task of a one-task plan and their block counts, classified
        already (by the planner); None: every task is classified when reached.
    ooms_before
        Out-of-memory errors the run met before this driver (a run without accumulators that
        switched placement): counted in every step's lineage, and no prefetching.
    """

    __slots__ = ("_counts", "_task_ooms", "classified", "compute", "counters", "direction",
                 "guard", "kv_inputs", "kv_next", "kv_side", "kv_store", "merged",
                 "on_commit", "ooms_before", "order", "progress", "q_inputs", "q_next",
                 "q_side", "q_store", "rects", "remaining_kv", "remaining_q", "spec",
                 "stationary", "tr")

    def __init__(self, *, direction: Literal["forward", "backward"], rects: PlanRects,
                 order: Sequence[int], spec: MaskSpec, stationary: str, transport: Transport,
                 compute: Compute, q_inputs: list[torch.Tensor], kv_inputs: list[torch.Tensor],
                 q_store: RowStore | ResultStore, kv_store: RowStore | ResultStore | None,
                 counters: RunCounters,
                 remaining_q: np.ndarray | None = None,
                 remaining_kv: np.ndarray | None = None,
                 on_commit: Callable[[int], None] | None = None,
                 prefetch: bool = True, progress: bool | None = None,
                 classified: tuple[Sequence[Step], dict[str, int]] | None = None,
                 ooms_before: int = 0) -> None:
        self.direction = direction
        self.rects = rects
        self.order = list(order)
        self.spec = spec
        self.stationary = stationary
        self.tr = transport
        self.compute = compute
        self.q_inputs = q_inputs
        self.kv_inputs = kv_inputs
        self.q_store = q_store
        self.kv_store = kv_store
        self.counters = counters
        self.classified = classified
        self.remaining_q = remaining_q
        self.remaining_kv = remaining_kv
        self.on_commit = on_commit
        self.guard = OOMGuard()
        self.guard.prefetch = prefetch and not ooms_before
        self.ooms_before = ooms_before
        self.progress = progress
        self.merged: set[int] = set()
        self.q_side: Side | None = None
        self.kv_side: Side | None = None
        self.q_next: Side | None = None
        self.kv_next: Side | None = None
        self._counts: dict[str, int] = {}
        self._task_ooms: dict[int, int] = {}  # per task, for the task hooks (testing.py)

    # -- sides ----------------------------------------------------------------------------
    def _stage_q(self, rows: tuple[Range, ...]) -> Side:
        bufs, ev = self.tr.gather(self.q_inputs, rows)
        return Side(rows, Staged(rows, bufs, ev), self.q_store.open(rows))

    def _stage_kv(self, rows: tuple[Range, ...]) -> Side:
        bufs, ev = self.tr.gather(self.kv_inputs, rows)
        acc = self.kv_store.open(rows) if self.kv_store is not None else None
        return Side(rows, Staged(rows, bufs, ev), acc)

    def _close(self, side: Side | None, store: RowStore | None, *, final_ok: bool) -> None:
        """Write a side's accumulator rows back and hand its buffers to the transport, which
        frees them once no stream uses them any more."""
        if side is None:
            return
        if side.acc is not None and store is not None:
            store.close(side.acc, final_ok=final_ok)
        self.tr.release(side.inputs.tensors)

    def _acquire(self, step: Step, queue: deque[Step]) -> tuple[Side, Side]:
        """The step's sides: reused, taken from the prefetch slot, or staged now."""
        # every step of the current task still to run, this one included: the task has
        # started (its rows' remaining counts are decremented), so a side closed now must not
        # finalise rows any of them will still merge into
        kv = self.kv_side
        if kv is None or kv.rows != step.kv_rows:
            kv = self._side("kv", step.kv_rows, queue)
        q = self.q_side
        if q is None or q.rows != step.q_rows:
            q = self._side("q", step.q_rows, queue)
        return q, kv

    def _side(self, which: str, rows: tuple[Range, ...], later: deque[Step]) -> Side:
        """One side (``"q"`` or ``"kv"``) for ``rows``: the current one when its rows match;
        else the current one is closed (finalising only rows no step in ``later`` touches)
        and the prefetched one taken, or new rows staged."""
        is_q = which == "q"
        side_name, next_name = ("q_side", "q_next") if is_q else ("kv_side", "kv_next")
        cur: Side | None = getattr(self, side_name)
        if cur is not None and cur.rows == rows:
            return cur
        store = self.q_store if is_q else self.kv_store
        stage = self._stage_q if is_q else self._stage_kv
        if cur is not None:
            touched = [s.q_rows if is_q else s.kv_rows for s in later]
            self._close(cur, store, final_ok=not any(ranges_overlap(cur.rows, r) for r in touched))
            setattr(self, side_name, None)
        # no reference to a closed side may survive here: the transport frees its buffers
        # before it stages new ones only when nothing else holds them (measured on an H100:
        # a side kept alive by this variable held the old and the new stationary side at once,
        # 1.2x the budget)
        del cur
        nxt: Side | None = getattr(self, next_name)
        if nxt is None:
            side = stage(rows)
        else:
            setattr(self, next_name, None)
            if nxt.rows == rows:
                side = nxt
            else:
                self._close(nxt, store, final_ok=False)
                del nxt
                side = stage(rows)
        setattr(self, side_name, side)
        return side

    def _prefetch(self, nxt: Step | None) -> None:
        """Stage the next step's sides now when they differ from the current ones and their
        accumulator rows are not being accumulated by an open residency."""
        if nxt is None or not self.guard.prefetch or not self.tr.streamed:
            return
        # only the side that streams within a task is prefetched: the stationary one changes
        # once per task, and holding two of it would double the largest buffers
        if (self.stationary == "q" and self.kv_next is None and self.kv_side is not None
                and nxt.kv_rows != self.kv_side.rows
                and (self.kv_store is None
                     or not ranges_overlap(nxt.kv_rows, self.kv_side.rows))):
            self.kv_next = self._stage_kv(nxt.kv_rows)
        if (self.stationary == "kv" and self.q_next is None and self.q_side is not None
                and nxt.q_rows != self.q_side.rows
                and not ranges_overlap(nxt.q_rows, self.q_side.rows)):
            self.q_next = self._stage_q(nxt.q_rows)

    def _close_all(self, *, final_ok: bool) -> None:
        if self.q_next is not None or self.kv_next is not None:
            self._close(self.q_next, self.q_store, final_ok=False)
            self._close(self.kv_next, self.kv_store, final_ok=False)
        self._close(self.q_side, self.q_store, final_ok=final_ok)
        self._close(self.kv_side, self.kv_store, final_ok=final_ok)
        self.q_side = self.kv_side = self.q_next = self.kv_next = None
        self.tr.close()  # no side is open: every transport buffer can go

    def _evict(self) -> None:
        """After an out-of-memory error: write open accumulator rows back (never as final)
        and drop every staged buffer."""
        self._close_all(final_ok=False)
        if self.tr.cuda:
            torch.cuda.empty_cache()

    def flush(self) -> None:
        """Close every residency and wait for every copy: the home accumulators then hold
        exactly what was merged (the commit point checkpoints rely on)."""
        self._close_all(final_ok=False)

    # -- one step ---------------------------------------------------------------------------
    def _run_step(self, step: Step, queue: deque[Step], nxt: Step | None,
                  first: bool) -> None:
        if TASK_HOOKS and (first or self._task_ooms.get(step.task_id, 0)):
            for hook in list(TASK_HOOKS):
                hook(step.task_id, self._task_ooms.get(step.task_id, 0))
        qs, kvs = self._acquire(step, queue)
        if self.tr.cuda:
            self.tr.wait(qs.events() + kvs.events())
        self._compute(step, qs, kvs)
        # staged after this step's kernels are queued: the transport first waits for the
        # buffers the previous step released, so at most two of the streaming side are held
        self._prefetch(nxt)

    def _compute(self, step: Step, qs: Side, kvs: Side) -> None:
        for call in step.calls:
            if call.id in self.merged:
                continue
            if self.direction == "forward":
                out, lse = self.compute.forward(call, qs.inputs, kvs.inputs)
                qs.acc.merge(call.q0, call.q1, out, lse)
            else:
                dq, dk, dv = self.compute.backward(call, qs.inputs, kvs.inputs)
                qs.acc.add(((call.q0, call.q1),), [dq])
                kvs.acc.add(call.key_ranges, [dk, dv])
            self.merged.add(call.id)

    def _split(self, step: Step, axis: Literal["q", "k"]) -> list[Step]:
        calls = [c for c in step.calls if c.id not in self.merged]
        halves: list[list[Call]] = [[], []]
        for c in calls:
            parts = split_call(c, axis)
            for i, p in enumerate(parts):
                halves[i].append(p)
        out = []
        for part in halves:
            if not part:
                continue
            inherit = {"lineage": step.lineage + step.failures, "last_split": axis}
            if axis == "q":
                out.append(Step(step.task_id, merge_ranges((c.q0, c.q1) for c in part)
                                if self.stationary == "kv" else step.q_rows,
                                step.kv_rows, part, **inherit))
            else:
                kv = merge_ranges(r for c in part for r in c.key_ranges)
                out.append(Step(step.task_id, step.q_rows, kv, part, **inherit))
        return out

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        rep = self.counters
        bar = _Progress(len(self.order), self.direction, self.progress)
        t_classify = 0.0
        steps_of: dict[int, list[Step]] = {}

        def steps_for(pos: int) -> list[Step]:
            nonlocal t_classify
            if pos not in steps_of:
                t0 = time.perf_counter()
                if self.classified is not None:  # a copy: the driver marks failures on steps
                    known, counts = self.classified
                    steps_of[pos] = [Step(s.task_id, s.q_rows, s.kv_rows, list(s.calls))
                                     for s in known]
                    for kind, n in counts.items():
                        self._counts[kind] = self._counts.get(kind, 0) + n
                else:
                    steps_of[pos] = task_steps(self.rects, pos, self.spec,
                                               stationary=self.stationary,
                                               device=self.compute.device,
                                               counts=self._counts)
                t_classify += time.perf_counter() - t0
            return steps_of[pos]

        try:
            for n, pos in enumerate(self.order):
                queue = deque(steps_for(pos))
                steps_of.pop(pos, None)
                self._start_task(pos)
                if not queue:
                    rep.tasks_skipped += 1
                else:
                    rep.tasks += 1
                first = True
                while queue:
                    step = queue[0]
                    nxt = queue[1] if len(queue) > 1 else (
                        self._first_step(steps_for, n + 1) if n + 1 < len(self.order)
                        else None)
                    try:
                        self._run_step(step, queue, nxt, first)
                        first = False
                    except torch.cuda.OutOfMemoryError as exc:
                        self._on_oom(step, queue, exc)
                        continue
                    queue.popleft()
                    self.tr.poll()
                if self.on_commit is not None:
                    self.on_commit(int(self.rects.ids[pos]))
                bar.update()
            self._close_all(final_ok=True)
        finally:
            bar.close()
            rep.count_blocks(self._counts)
            rep.add_time("classify", t_classify)

    def _first_step(self, steps_for: Callable[[int], list[Step]], n: int) -> Step | None:
        while n < len(self.order):
            steps = steps_for(self.order[n])
            if steps:
                return steps[0]
            n += 1
        return None

    def _start_task(self, pos: int) -> None:
        if self.remaining_q is None and self.remaining_kv is None:
            return
        q0, q1, k0, k1 = self.rects.task(pos)
        for rem, a, b in ((self.remaining_q, q0, q1), (self.remaining_kv, k0, k1)):
            if rem is None:
                continue
            for s, e in merge_ranges(zip(a.tolist(), b.tolist(), strict=True)):
                rem[s:e] -= 1

    def _on_oom(self, step: Step, queue: deque[Step], exc: BaseException) -> None:
        rep = self.counters
        rep.count_oom(step.task_id, self._task_ooms.get(step.task_id, 0))
        self._task_ooms[step.task_id] = self._task_ooms.get(step.task_id, 0) + 1
        step.failures += 1
        unmerged = [c for c in step.calls if c.id not in self.merged]
        self._evict()
        act = self.guard.on_oom(failures=step.failures, lineage=step.lineage + self.ooms_before,
                                rows=max((c.lq for c in unmerged), default=1),
                                keys=max((c.lk for c in unmerged), default=1),
                                last=step.last_split)
        if act == "retry":
            return
        if act == "fail":
            raise torch.cuda.OutOfMemoryError(
                f"a step of task {step.task_id} ran out of device memory even split down to "
                f"single rows and keys; lower memory_budget or free device memory ({exc})"
            ) from exc
        if not (self.q_store.accumulates
                and (self.kv_store is None or self.kv_store.accumulates)):
            raise PlacementSwitch(f"task {step.task_id}: one kernel call ran out of device "
                                  "memory twice") from exc
        queue.popleft()
        parts = self._split(step, "q" if act == "split_q" else "k")
        queue.extendleft(reversed(parts))
        rep.refinements += 1


class _Progress:
    """The tqdm bar over tasks: ``progress=True`` at once, None only once the run has taken
    :data:`PROGRESS_DELAY` seconds (and on a terminal: tqdm decides), False never. The bar is
    created only then, so short runs pay nothing for it."""

    __slots__ = ("bar", "direction", "done", "progress", "start", "total")

    def __init__(self, total: int, direction: str, progress: bool | None) -> None:
        self.total = total
        self.direction = direction
        self.progress = progress
        self.done = 0
        self.start = time.perf_counter()
        self.bar: Any = None
        if progress is True:
            self._open()

    def _open(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=f"cqs attention {self.direction}", unit="task",
                        leave=False, initial=self.done,
                        disable=None if self.progress is None else False)

    def update(self) -> None:
        self.done += 1
        if (self.bar is None and self.progress is None
                and time.perf_counter() - self.start >= PROGRESS_DELAY):
            self._open()
            return
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


#: seconds after which a run with ``progress=None`` shows its bar (on a terminal)
PROGRESS_DELAY = 2.0
