"""The streaming executor: overlapped host -> device copies, compute and device -> host copies.

Used automatically (through :func:`cqs_attention.executor.register_executor`) when kernels run
on CUDA and the inputs live in host memory or on disk. Runs with inputs already on the GPU use
:class:`~cqs_attention.guardrails.GuardedExecutor` (the plain executor plus OOM guardrails);
CPU runs keep the plain :class:`~cqs_attention.executor.PlanExecutor`.

How a run flows, per task (``n_cap`` tasks may be resident at once, see
:mod:`cqs_attention.guardrails`):

1. **H2D** (copy stream): the task's query rows and key/value rows are written into one
   contiguous device buffer per tensor. Rows that a resident task (one still computing, or
   the last one finished) already holds are copied device-to-device from its buffer: chunks
   shared by consecutive tasks are not sent again. The rest is copied from the host: straight
   from pinned memory (asynchronous DMA, one contiguous copy per batch*head), or from
   pageable memory through a pinned staging buffer (a host memcpy, then DMA). An event marks
   the end of the task's copies.
2. **compute** (the current stream) waits for that event only, so the next task's copies run
   while this task computes (double buffering with ``n_cap = 2``).
3. **merge**: with accumulators on the device (when they fit the budget) the merge runs on the
   compute stream; otherwise the partial results go back on a **D2H** stream into pinned
   buffers and are merged into float32 host accumulators once their copy event has fired.
4. Before staging a task, the executor waits until at most ``n_cap - 1`` older tasks are
   still in flight, which bounds device memory.

Tasks are ordered greedily so that consecutive tasks share rows. The report
(:class:`~cqs_attention.guardrails.GuardrailReport`) has a ``profile`` with the device seconds
of ``h2d``, ``compute``, ``d2h``, ``merge`` and the ``idle`` time of the compute stream, plus
``bytes_to_device``, ``bytes_from_device``, ``bytes_saved`` and chunk cache hits.

The streaming executor also runs (synchronously, for tests) with a CPU "device".

>>> import torch
>>> from cqs_design.plans import make_plan
>>> from cqs_attention.masks import make_mask_spec
>>> q = torch.randn(1, 2, 70, 8)
>>> ex = StreamingExecutor(make_plan(70, design=2), make_mask_spec(70, 70, batch=1, heads=2),
...                        device=torch.device("cpu"), scale=8 ** -0.5)
>>> out, lse = ex.forward(q, q, q)
>>> ref = torch.nn.functional.scaled_dot_product_attention(q, q, q)
>>> bool(torch.allclose(out, ref, atol=1e-5)), ex.report.chunk_hits > 0
(True, True)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from cqs_attention._copies import copy_rows_in, copy_rows_out
from cqs_attention.executor import (
    Call,
    TaskWork,
    _Staged,
    accumulator_bytes,
    register_executor,
)
from cqs_attention.guardrails import GuardedExecutor, GuardrailReport, merge_atomic_
from cqs_attention.info import host_memory_available
from cqs_attention.kernels.base import BlockMask
from cqs_attention.merge import accumulator_dtype

__all__ = ["GuardedExecutor", "StreamingExecutor"]

Range = tuple[int, int]


class _Resident:
    """One task's staged buffers: per (side, slot) a contiguous tensor over ``segments``."""

    def __init__(self, task_id: int, segments: dict[str, list[Range]]) -> None:
        self.task_id = task_id
        self.segments = segments
        self.buffers: dict[tuple[str, int], torch.Tensor] = {}
        self.starts: dict[str, list[int]] = {}
        for side, segs in segments.items():
            pos, st = 0, []
            for s, e in segs:
                st.append(pos)
                pos += e - s
            self.starts[side] = st

    def find(self, side: str, pos: int) -> tuple[int, int] | None:
        """``(local offset of pos, end of the covering segment)`` or None."""
        for (s, e), st in zip(self.segments.get(side, ()), self.starts.get(side, ()),
                              strict=True):
            if s <= pos < e:
                return st + pos - s, e
        return None

    def next_start(self, side: str, pos: int) -> int | None:
        nxt = [s for s, _ in self.segments.get(side, ()) if s > pos]
        return min(nxt) if nxt else None

    def staged(self, side: str, n: int) -> _Staged:
        """The executor's :class:`_Staged` view of this side's first ``n`` buffers."""
        st = object.__new__(_Staged)
        st.segments, st.starts = self.segments[side], self.starts[side]
        st.data = [self.buffers[(side, i)] for i in range(n)]
        return st

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers.values())


# -- forward with host accumulators, merged on the device ---------------------------------------
class _Intervals:
    """Sorted, disjoint, half-open integer intervals (rows of the host accumulators).

    >>> iv = _Intervals(); iv.add(0, 4); iv.add(6, 8); iv.add(4, 5)
    >>> iv.iv, iv.overlaps(5, 6), iv.covers(1, 5), iv.gaps(0, 10)
    ([[0, 5], [6, 8]], False, True, [(5, 6), (8, 10)])
    """

    def __init__(self) -> None:
        self.iv: list[list[int]] = []

    def add(self, s: int, e: int) -> None:
        if e <= s:
            return
        out: list[list[int]] = []
        placed = False
        for a, b in self.iv:
            if b < s or a > e:
                if a > e and not placed:
                    out.append([s, e])
                    placed = True
                out.append([a, b])
            else:
                s, e = min(a, s), max(b, e)
        if not placed:
            out.append([s, e])
        out.sort()
        self.iv = out

    def overlaps(self, s: int, e: int) -> bool:
        return any(a < e and s < b for a, b in self.iv)

    def covers(self, s: int, e: int) -> bool:
        return any(a <= s and e <= b for a, b in self.iv)

    def gaps(self, lo: int, hi: int) -> list[Range]:
        out, pos = [], lo
        for a, b in self.iv:
            if b <= pos or a >= hi:
                continue
            if a > pos:
                out.append((pos, a))
            pos = max(pos, b)
        if pos < hi:
            out.append((pos, hi))
        return out


class _Group:
    """The calls of one query range of a task, with its staged query and accumulator rows."""

    def __init__(self, q0: int, q1: int, calls: list[Call]) -> None:
        self.q0, self.q1, self.calls = q0, q1, calls
        self.q: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        self.lse: torch.Tensor | None = None
        self.ready: Any = None  # event: q and accumulator rows are on the device
        self.done: Any = None  # event: results copied back to the host


def _split_runs(call: Call, local: Any) -> list[tuple[list[Range], BlockMask | None]]:
    """Split ``call`` into runs of key ranges that are contiguous in the staged buffer, each
    with its own mask (``local(s, e)`` gives a range's offset there); all-masked runs go."""
    runs: list[list[Range]] = []
    prev_end = None
    for s, e in call.key_ranges:
        off = local(s, e)
        if runs and prev_end == off:
            runs[-1].append((s, e))
        else:
            runs.append([(s, e)])
        prev_end = off + e - s
    if len(runs) == 1:
        return [(runs[0], call.mask)]
    lq = call.q1 - call.q0
    out, pos = [], 0
    m = call.mask
    for run in runs:
        n = sum(e - s for s, e in run)
        if m is None or m.is_full:
            out.append((run, m))
        else:
            off = None if m.causal_offset is None else m.causal_offset - pos
            dense = None if m.dense is None else m.dense[..., pos:pos + n]
            if off is not None and off < -(lq - 1):
                pos += n
                continue  # no query row may attend any key of this run
            if off is not None and off >= n - 1:
                off = None
            out.append((run, None if off is None and dense is None
                        else BlockMask(causal_offset=off, dense=dense)))
        pos += n
    return out


class _HostMergeMixin:
    """Forward pass with accumulators in (pinned) host memory, merged on the device.

    Per task only the key/value rows are staged (double-buffered: the next task's rows are
    prefetched while this one computes). Per *query group* (the calls of one query range) the
    query rows and the float32 accumulator rows travel host -> device on their own stream,
    one group ahead; the group's calls merge into them on the device and the rows go back on
    the D2H stream. Rows visited for the first time start from (0, -inf) on the device; on
    their last visit they go back once, converted to the output dtype, straight into the
    output. An out-of-memory error after some groups of a task merged retries only the other
    groups (and, at ``n_cap = 1``, splits their query rows in halves instead of refining the
    task), so every group is merged exactly once.
    """

    groups_ahead: int = 2
    #: dtype of the host accumulator rows: None = float32 (float64 for float64 inputs) when
    #: host memory allows, else q's dtype (rows then live in the output tensor itself)
    host_accumulator_dtype: torch.dtype | None = None

    def _host_merge_setup(self, q: torch.Tensor, v: torch.Tensor) -> tuple[Any, ...]:
        import numpy as np

        b, h, lq, _d = q.shape
        dv = v.shape[-1]
        acc_dtype = accumulator_dtype(q.dtype)
        pin = self._cuda
        out = getattr(self, "out_target", None)
        if out is None:
            out = torch.empty(b, h, lq, dv, dtype=q.dtype, pin_memory=pin)
        host_dtype = self.host_accumulator_dtype
        if host_dtype is None:  # float32 rows unless host memory is short (then q's dtype)
            need = b * h * lq * dv * torch.empty((), dtype=acc_dtype).element_size()
            if pin:  # PyTorch's pinned allocator rounds every block up to a power of two
                need = 1 << max(0, need - 1).bit_length()
            avail = host_memory_available()
            host_dtype = acc_dtype if avail is None or need <= 0.8 * avail else q.dtype
        self.report.host_accumulator_dtype = str(host_dtype).replace("torch.", "")
        acc_out = out if host_dtype == out.dtype else torch.empty(
            b, h, lq, dv, dtype=host_dtype, pin_memory=pin)
        acc_lse = torch.empty(b, h, lq, dtype=acc_dtype, pin_memory=pin)
        self._written = _Intervals()  # rows whose host accumulators hold data
        self._final = _Intervals()  # rows already written to ``out``
        self._acc_events: list[tuple[int, int, Any]] = []
        self._progress: dict[int, set[Range]] = {}
        self._splits: dict[int, int] = {}
        self._kv_ready: dict[int, tuple[_Resident, Any]] = {}
        self._work_ready.clear()
        self._last_compute: Any = None
        self._inflight_groups: deque[_Group] = deque()  # sent back, copy maybe unfinished
        # visits per row: how many query groups of the plan will merge into it
        diff = np.zeros(lq + 1, dtype=np.int64)
        for s, e in self._plan_query_ranges(self.plan):
            diff[s] += 1
            diff[e] -= 1
        self._visits = np.cumsum(diff[:-1])
        return out, acc_out, acc_lse

    def _plan_query_ranges(self, plan: Any) -> list[Range]:
        if hasattr(plan, "arrays"):
            import numpy as np

            a = plan.arrays()
            key = np.unique(np.stack([np.asarray(a[n], dtype=np.int64) for n in
                                      ("task", "q_start", "q_end")], axis=1), axis=0)
            return [(int(s), int(e)) for _, s, e in key]
        return self._task_query_ranges(plan.tasks)

    @staticmethod
    def _task_query_ranges(tasks: Sequence[Any]) -> list[Range]:
        out = []
        for t in tasks:
            out.extend(sorted({(r.q_start, r.q_end) for r in t.rectangles}))
        return out

    def on_refined(self, task: Any, subs: list[Any]) -> None:
        if getattr(self, "_visits", None) is None:
            return
        for s, e in self._task_query_ranges([task]):
            self._visits[s:e] -= 1
        for s, e in self._task_query_ranges(subs):
            self._visits[s:e] += 1

    def split_instead_of_refine(self, task: Any) -> bool:
        if not getattr(self, "_host_merge", False) or not self._progress.get(task.id):
            return False  # nothing merged yet: the task itself can be refined
        self._splits[task.id] = self._splits.get(task.id, 1) * 2
        self.report.refinements += 1  # not in refined_tasks: the task itself is still merged
        return True

    # -- per task ----
    def _stage_kv(self, work: TaskWork, kv_tensors: Sequence[torch.Tensor]) -> tuple[Any, Any]:
        # keep only the newest resident task (the one computing) as a source of shared chunks,
        # so that at most two tasks' key/value rows are allocated at once
        while len(self._resident) > 1:
            self._resident.popleft()
        res = _Resident(work.task_id, {"k": list(work.kv_segments)})
        ctx = torch.cuda.stream(self._h2d) if self._cuda else _nullctx()
        with ctx:
            ev0 = self._event(self._h2d)
            for slot, t in enumerate(kv_tensors):
                self._fill(res, "k", slot, t)
            ev1 = self._event(self._h2d)
        self._events.append(("h2d", ev0, ev1))
        self._resident.append(res)
        return res, ev1

    def _groups(self, work: TaskWork) -> list[_Group]:
        done = self._progress.get(work.task_id, set())
        split = self._splits.get(work.task_id, 1)
        by_q: dict[Range, list[Call]] = {}
        for c in work.calls:
            by_q.setdefault((c.q0, c.q1), []).append(c)
        groups = []
        for (q0, q1), calls in by_q.items():
            n = q1 - q0
            step = max(1, -(-n // split))
            for a in range(q0, q1, step):
                b = min(q1, a + step)
                if any(s <= a and b <= e for s, e in done):
                    continue
                sub = calls if (a, b) == (q0, q1) else [
                    _sub_call(c, a, b) for c in calls]
                groups.append(_Group(a, b, [c for c in sub if c is not None]))
        return self._order_groups(groups)

    def _order_groups(self, groups: list[_Group]) -> list[_Group]:
        """Large and small groups alternate (a small group's copies hide behind a large
        group's compute); groups whose rows an unfinished earlier group still writes back
        (the chunk shared with the previous task) go last."""
        pending = [(s, e) for s, e, ev in self._acc_events if not _fired(ev)]

        def waits(g: _Group) -> bool:
            return any(s < g.q1 and g.q0 < e for s, e in pending)

        def cost(g: _Group) -> int:
            return (g.q1 - g.q0) * sum(c.lk for c in g.calls)

        free = sorted((g for g in groups if not waits(g)), key=cost, reverse=True)
        mixed = []
        lo, hi = 0, len(free) - 1
        while lo <= hi:
            mixed.append(free[lo])
            if lo != hi:
                mixed.append(free[hi])
            lo, hi = lo + 1, hi - 1
        return mixed + [g for g in groups if waits(g)]

    def _stage_group(self, g: _Group, q: torch.Tensor, acc_out: torch.Tensor,
                     acc_lse: torch.Tensor) -> None:
        stream = self._h2q
        ctx = torch.cuda.stream(stream) if self._cuda else _nullctx()
        n = g.q1 - g.q0
        b, h = q.shape[:2]
        with ctx:
            ev0 = self._event(stream)
            g.q = torch.empty((b, h, n, q.shape[-1]), dtype=q.dtype, device=self.device)
            self._copy_in(g.q, 0, q, g.q0, g.q1, chunk=False)
            fresh = not self._written.overlaps(g.q0, g.q1)
            if fresh:
                g.out = torch.zeros((b, h, n, acc_out.shape[-1]), dtype=acc_lse.dtype,
                                    device=self.device)
                g.lse = torch.full((b, h, n), float("-inf"), dtype=acc_lse.dtype,
                                   device=self.device)
            else:
                if self._cuda:  # the host rows must hold every earlier group's result
                    for s, e, ev in self._acc_events:
                        if s < g.q1 and g.q0 < e:
                            stream.wait_event(ev)
                g.lse = torch.empty((b, h, n), dtype=acc_lse.dtype, device=self.device)
                rows = torch.empty((b, h, n, acc_out.shape[-1]), dtype=acc_out.dtype,
                                   device=self.device)
                self._copy_in(rows, 0, acc_out, g.q0, g.q1, chunk=False)
                g.out = rows if rows.dtype == acc_lse.dtype else rows.to(acc_lse.dtype)
                self._copy_in(g.lse, 0, acc_lse, g.q0, g.q1, chunk=False)
                # rows of this range no earlier group wrote (a refined or split plan visits
                # ranges that only partly overlap): their host memory holds nothing yet
                for a, b_ in self._written.gaps(g.q0, g.q1):
                    g.out[:, :, a - g.q0:b_ - g.q0].zero_()
                    g.lse[:, :, a - g.q0:b_ - g.q0].fill_(float("-inf"))
            g.ready = self._event(stream)
        self._events.append(("h2d", ev0, g.ready))

    def _compute_group(self, g: _Group, kvs: _Staged) -> None:
        if self._cuda:
            cur = torch.cuda.current_stream(self.device)
            cur.wait_event(g.ready)
            for t in (g.q, g.out, g.lse):
                t.record_stream(cur)
        ev0 = self._event()
        for call in g.calls:
            for run, mask in _split_runs(call, kvs._local):
                k = kvs.rows(0, run)
                v = kvs.rows(1, run)
                kernel = self._kernel(g.q, k, mask, needs_grad=False)
                o, lse = kernel.fwd(g.q, k, v, scale=self.scale, mask=mask)
                self.report.count_call(kernel.name, lq=g.q1 - g.q0,
                                       lk=sum(e - s for s, e in run))
                merge_atomic_(g.out, g.lse, o, lse)
                del o, lse
        self._events.append(("compute", ev0, self._event()))

    def _send_back(self, g: _Group, out: torch.Tensor, acc_out: torch.Tensor,
                   acc_lse: torch.Tensor) -> None:
        left = self._visits[g.q0:g.q1] - 1
        last = bool((left == 0).all())
        if last:
            src = g.out.to(out.dtype)
        else:
            src = g.out.to(acc_out.dtype)
        if self._cuda:
            cur = torch.cuda.current_stream(self.device)
            self._d2h.wait_stream(cur)
        ctx = torch.cuda.stream(self._d2h) if self._cuda else _nullctx()
        with ctx:
            ev0 = self._event(self._d2h)
            self._copy_out(out if last else acc_out, g.q0, src)
            self._copy_out(acc_lse, g.q0, g.lse)
            g.done = self._event(self._d2h)
            if self._cuda:
                for t in (src, g.out, g.lse):
                    t.record_stream(self._d2h)
        self._events.append(("d2h", ev0, g.done))
        self._visits[g.q0:g.q1] = left
        (self._final if last else self._written).add(g.q0, g.q1)
        if not last:
            self._acc_events.append((g.q0, g.q1, g.done))
        if len(self._acc_events) > 64:
            self._acc_events = [x for x in self._acc_events if not _fired(x[2])]
        g.q = g.out = g.lse = None

    def _copy_out(self, dst: torch.Tensor, pos: int, src: torch.Tensor) -> None:
        """Device rows ``src`` into host rows ``[pos, ...)`` of ``dst``."""
        self.report.bytes_from_device += copy_rows_out(dst, pos, src)

    def _host_merge_task(self, work: TaskWork, q: torch.Tensor, k: torch.Tensor,
                         v: torch.Tensor, out: torch.Tensor, acc_out: torch.Tensor,
                         acc_lse: torch.Tensor) -> None:
        rep = self.report
        t0 = time.perf_counter()
        ready = self._kv_ready.pop(work.task_id, None)
        if ready is None:
            ready = self._stage_kv(work, [k, v])
        res, ev_kv = ready
        if self._cuda:
            cur = torch.cuda.current_stream(self.device)
            cur.wait_event(ev_kv)
            for buf in res.buffers.values():
                buf.record_stream(cur)
        kvs = res.staged("k", 2)
        groups = self._groups(work)
        inflight = self._inflight_groups
        done = self._progress.setdefault(work.task_id, set())
        staged_upto = 0
        prefetched = False
        rep.add_time("stage", time.perf_counter() - t0)
        for i, g in enumerate(groups):
            t0 = time.perf_counter()
            while staged_upto < min(len(groups), i + 1 + self.groups_ahead):
                while len(inflight) > self.groups_ahead:
                    _sync(inflight.popleft().done)
                self._stage_group(groups[staged_upto], q, acc_out, acc_lse)
                staged_upto += 1
            t1 = time.perf_counter()
            self._compute_group(g, kvs)
            t2 = time.perf_counter()
            self._send_back(g, out, acc_out, acc_lse)
            done.add((g.q0, g.q1))
            inflight.append(g)
            rep.add_time("stage", t1 - t0)
            rep.add_time("compute", t2 - t1)
            rep.add_time("merge", time.perf_counter() - t2)
            if not prefetched:  # the previous task's compute is over: prefetch the next one
                prefetched = True
                _sync(self._last_compute)
                self._prefetch_next([k, v])
        if not prefetched:
            _sync(self._last_compute)
            self._prefetch_next([k, v])
        self._last_compute = self._event()

    def _prefetch_next(self, kv_tensors: Sequence[torch.Tensor]) -> None:
        queue = getattr(self, "_queue", None)
        if not queue:
            return
        nxt = queue[0]
        if nxt.id in self._kv_ready:
            return
        work = self.task_work(nxt)
        if work.calls:
            self._kv_ready[nxt.id] = self._stage_kv(work, kv_tensors)
        # task_work reuses this classification, unless it holds dense masks: those would sit
        # on the device beside the computing task's, so they are rebuilt when the task runs
        if all(c.mask is None or c.mask.dense is None for c in work.calls):
            self._work_ready[nxt.id] = work

    def task_work(self, task: Any) -> TaskWork:
        """The prefetched classification of ``task`` if there is one, else a fresh one."""
        work = self._work_ready.pop(task.id, None)
        return work if work is not None else super().task_work(task)

    def _host_merge_finish(self, out: torch.Tensor, acc_out: torch.Tensor,
                           acc_lse: torch.Tensor) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        lq = out.shape[2]
        for s, e in self._final.gaps(0, lq):  # rows never sent back in the output dtype
            for a, b in _pieces(self._written, s, e):
                out[:, :, a:b].copy_(acc_out[:, :, a:b])
            for a, b in self._written.gaps(s, e):  # rows no key may attend
                out[:, :, a:b].zero_()
                acc_lse[:, :, a:b].fill_(float("-inf"))
        self._kv_ready.clear()
        self._work_ready.clear()
        self._visits = None


def _pieces(iv: _Intervals, s: int, e: int) -> list[Range]:
    return [(max(a, s), min(b, e)) for a, b in iv.iv if a < e and s < b]


def _sub_call(call: Call, a: int, b: int) -> Call | None:
    """``call`` restricted to query rows ``[a, b)`` (masks sliced accordingly)."""
    m = call.mask
    off = a - call.q0
    if m is None or m.is_full:
        return Call(a, b, list(call.key_ranges), m)
    dense = m.dense
    if dense is not None and dense.shape[-2] != 1:
        dense = dense[..., off:off + b - a, :]
    co = None if m.causal_offset is None else m.causal_offset + off
    return Call(a, b, list(call.key_ranges), BlockMask(causal_offset=co, dense=dense))


def _fired(ev: Any) -> bool:
    return ev is None or not hasattr(ev, "query") or ev.query()


def _sync(ev: Any) -> None:
    if ev is not None and hasattr(ev, "synchronize"):
        ev.synchronize()



class StreamingExecutor(_HostMergeMixin, GuardedExecutor):
    """Streams host/disk-resident inputs through the device (see the module docstring)."""

    n_cap_max: int = 2
    #: finished tasks whose buffers are kept as a chunk cache (memory permitting)
    retain: int = 1
    #: forward with accumulators on the host, merged on the device (see _HostMergeMixin):
    #: None = when the accumulators do not fit the budget; True/False force it (tests)
    host_accumulators: bool | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cuda = self.device.type == "cuda"
        self._h2d = torch.cuda.Stream(self.device) if self._cuda else None
        self._h2q = torch.cuda.Stream(self.device) if self._cuda else None
        self._host_merge = False
        self._kv_ready: dict[int, Any] = {}
        self._work_ready: dict[int, TaskWork] = {}
        self._d2h = torch.cuda.Stream(self.device) if self._cuda else None
        self._resident: deque[_Resident] = deque()
        self._inflight: deque[tuple[Any, _Resident]] = deque()
        self._pending: deque[tuple[Any, Any]] = deque()  # (event, host merge closure)
        self._events: list[tuple[str, Any, Any]] = []
        self._current: _Resident | None = None
        self._keep = 0

    # -- sizing: in-flight tasks plus the retained cache ----------------------------------------
    def task_bytes(self, plan: Any) -> int:
        """Per-task estimate with this run's mask, counting the task being staged beside the
        previous one (see :func:`~cqs_attention.executor.estimate_plan_bytes`)."""
        from cqs_attention.executor import estimate_plan_bytes

        d = self._dims
        if not d:
            return int(self.report.task_bytes_estimate)
        budget = self.available_bytes()
        on_dev = budget is None or d["acc_device_bytes"] > 0 or not self._cuda
        return estimate_plan_bytes(plan, batch=d["b"], heads=d["h"], kv_heads=d["hkv"],
                                   head_dim=d["d"], dtype=d["dtype"], backward=d["backward"],
                                   mask=self.spec, tasks_alive=2,
                                   merge_on_device=on_dev or self._host_merge,
                                   query_streamed=self._host_merge,
                                   groups_alive=self.groups_ahead + 2)

    def size(self) -> None:
        super().size()
        budget = self.available_bytes()
        tb = self.task_bytes(self.plan)
        room = None if budget is None else budget - self.resident_bytes() - self.n_cap * tb
        self._keep = self.retain if room is None or room >= tb else 0

    # -- ordering: consecutive tasks share rows ----
    def order(self, items: list[Any]) -> list[Any]:
        if len(items) <= 2:
            return items
        segs = [set(_cells(t.segments)) for t in items]
        left = list(range(1, len(items)))
        out = [0]
        while left:
            cur = segs[out[-1]]
            window = left[:32]
            best = max(window, key=lambda i: len(cur & segs[i]))
            left.remove(best)
            out.append(best)
        return [items[i] for i in out]

    # -- stage: copies on the H2D stream ---------------------------------------------------------
    def _copy_in(self, dst: torch.Tensor, dpos: int, src: torch.Tensor, s: int, e: int,
                 chunk: bool = True) -> None:
        """Host rows ``[s, e)`` of ``src`` into device rows ``[dpos, ...)`` of ``dst``."""
        nbytes, staged = copy_rows_in(dst[:, :, dpos:dpos + e - s], src, s, e, cuda=self._cuda)
        if staged:
            self.report.add_profile("host_copy", staged)
        self.report.bytes_to_device += nbytes
        self.report.chunk_misses += chunk

    def _fill(self, res: _Resident, side: str, slot: int, src: torch.Tensor) -> torch.Tensor:
        segs = res.segments[side]
        total = sum(e - s for s, e in segs)
        dst = torch.empty((*src.shape[:2], total, *src.shape[3:]), dtype=src.dtype,
                          device=self.device)
        others = [r for r in self._resident if (side, slot) in r.buffers]
        pos = 0
        for s, e in segs:
            p = s
            while p < e:
                hit = None
                for r in reversed(others):
                    f = r.find(side, p)
                    if f is not None:
                        hit = (r, *f)
                        break
                if hit is not None:
                    r, loc, end = hit
                    q_end = min(e, end)
                    n = q_end - p
                    dst[:, :, pos:pos + n].copy_(r.buffers[(side, slot)][:, :, loc:loc + n],
                                                 non_blocking=True)
                    self.report.chunk_hits += 1
                    self.report.bytes_saved += (n * dst[:, :, :1].numel()
                                                * dst.element_size())
                else:
                    nxt = [x for x in (r.next_start(side, p) for r in others) if x is not None]
                    q_end = min([e, *nxt])
                    n = q_end - p
                    self._copy_in(dst, pos, src, p, q_end)
                pos += n
                p = q_end
        res.buffers[(side, slot)] = dst
        return dst

    def stage(self, work: TaskWork, q_tensors: Sequence[torch.Tensor],
              kv_tensors: Sequence[torch.Tensor]) -> tuple[_Staged, _Staged]:
        self._wait_inflight(self.n_cap - 1)
        res = _Resident(work.task_id, {"q": list(work.q_segments), "k": list(work.kv_segments)})
        ctx = torch.cuda.stream(self._h2d) if self._cuda else _nullctx()
        with ctx:
            ev0 = self._event(self._h2d)
            for side, tensors in (("q", q_tensors), ("k", kv_tensors)):
                for slot, t in enumerate(tensors):
                    self._fill(res, side, slot, t)
            ev1 = self._event(self._h2d)
        self._events.append(("h2d", ev0, ev1))
        if self._cuda:
            cur = torch.cuda.current_stream(self.device)
            cur.wait_event(ev1)
            for buf in res.buffers.values():
                buf.record_stream(cur)
        self._current = res
        return res.staged("q", len(q_tensors)), res.staged("k", len(kv_tensors))

    # -- compute: timed with events ----
    def compute_forward(self, work, qs, kvs):
        ev0 = self._event()
        res = super().compute_forward(work, qs, kvs)
        self._events.append(("compute", ev0, self._event()))
        return res

    def compute_backward(self, work, qs, kvs):
        ev0 = self._event()
        res = super().compute_backward(work, qs, kvs)
        self._events.append(("compute", ev0, self._event()))
        return res

    # -- merge: on the device, or back to the host ----
    def _to_host(self, tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
        """Copy ``tensors`` into pinned host buffers on the D2H stream; return them + event."""
        if not self._cuda:
            return [t.to("cpu") for t in tensors], None
        cur = torch.cuda.current_stream(self.device)
        self._d2h.wait_stream(cur)
        with torch.cuda.stream(self._d2h):
            ev0 = self._event(self._d2h)
            host = []
            for t in tensors:
                h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                h.copy_(t, non_blocking=True)
                t.record_stream(self._d2h)
                host.append(h)
                self.report.bytes_from_device += t.numel() * t.element_size()
            ev1 = self._event(self._d2h)
        self._events.append(("d2h", ev0, ev1))
        return host, ev1

    def merge_forward(self, results: list[tuple[Call, torch.Tensor, torch.Tensor]],
                      acc_out: torch.Tensor, acc_lse: torch.Tensor) -> None:
        if acc_out.device == self.device:
            ev0 = self._event()
            super().merge_forward(results, acc_out, acc_lse)
            self._events.append(("merge", ev0, self._event()))
            return
        for call, out, lse in results:
            (h_out, h_lse), ev = self._to_host([out, lse])

            def merge(call=call, h_out=h_out, h_lse=h_lse) -> None:
                merge_atomic_(acc_out[:, :, call.q0:call.q1], acc_lse[:, :, call.q0:call.q1],
                              h_out, h_lse)

            self._pending.append((ev, merge))

    def merge_backward(self, results, dq_acc, dk_acc, dv_acc) -> None:
        if dq_acc.device == self.device:
            ev0 = self._event()
            super().merge_backward(results, dq_acc, dk_acc, dv_acc)
            self._events.append(("merge", ev0, self._event()))
            return
        for call, dq, dk, dv in results:
            (h_dq, h_dk, h_dv), ev = self._to_host([dq, dk, dv])

            def merge(call=call, h_dq=h_dq, h_dk=h_dk, h_dv=h_dv) -> None:
                dq_acc[:, :, call.q0:call.q1] += h_dq.to(dq_acc.dtype)
                pos = 0
                for s, e in call.key_ranges:
                    n = e - s
                    dk_acc[:, :, s:e] += h_dk[:, :, pos:pos + n].to(dk_acc.dtype)
                    dv_acc[:, :, s:e] += h_dv[:, :, pos:pos + n].to(dv_acc.dtype)
                    pos += n

            self._pending.append((ev, merge))

    # -- forward: accumulators on the device, or on the host merged on the device ----
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                home: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out, lse)``; with host accumulators ``out`` is already in q's dtype."""
        home = q.device if home is None else home
        acc_bytes = accumulator_bytes(q, k, v, backward=False)
        use = self.host_accumulators
        if use is None:
            use = (self._cuda and home != self.device
                   and self.accumulator_device(home, acc_bytes) != self.device)
        if not use:
            return super().forward(q, k, v, home=home)
        t_start = time.perf_counter()
        rep = self._fresh_report("forward")
        self._set_dims(q, k, False, 0)
        self._host_merge = True
        try:
            out, acc_out, acc_lse = self._host_merge_setup(q, v)
            rep.accumulator_device = f"{home} (merged on {self.device})"
            self._peak_start()
            self._run(lambda work: self._host_merge_task(work, q, k, v, out, acc_out, acc_lse),
                      "cqs attention")
            self._host_merge_finish(out, acc_out, acc_lse)
        finally:
            self._host_merge = False
        self._peak_end()
        rep.add_time("total", time.perf_counter() - t_start)
        return out, acc_lse

    # -- bookkeeping between tasks ----
    def _event(self, stream: Any = None) -> Any:
        if not self._cuda:
            return time.perf_counter()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(stream if stream is not None else torch.cuda.current_stream(self.device))
        return ev

    def _host_merges(self, block: bool) -> None:
        while self._pending:
            ev, merge = self._pending[0]
            if ev is not None and not block and not ev.query():
                return
            if ev is not None:
                ev.synchronize()
            t0 = time.perf_counter()
            merge()
            self.report.add_profile("merge", time.perf_counter() - t0)
            self._pending.popleft()

    def _wait_inflight(self, keep: int) -> None:
        while len(self._inflight) > max(0, keep):
            ev, _res = self._inflight.popleft()
            if ev is not None:
                ev.synchronize()
        self._host_merges(block=False)

    def finish_task(self, work: TaskWork) -> None:
        res = self._current
        self._current = None
        if res is None:
            return
        ev = self._event() if self._cuda else None
        self._inflight.append((ev, res))
        self._resident.append(res)
        while len(self._resident) > self.n_cap + self._keep:
            self._resident.popleft()

    def evict(self, task_id: int) -> None:
        self._current = None
        self._kv_ready.clear()  # prefetched rows too: the queue changes after an OOM
        self._work_ready.clear()
        self._resident = deque(r for r in self._resident if r.task_id != task_id)

    def drain(self) -> None:
        self._wait_inflight(0)
        self._host_merges(block=True)
        if self._cuda:
            torch.cuda.synchronize(self.device)
        prof: dict[str, float] = {}
        for name, a, b in self._events:
            dt = a.elapsed_time(b) / 1e3 if self._cuda else b - a
            prof[name] = prof.get(name, 0.0) + dt
        rep = self.report
        assert isinstance(rep, GuardrailReport)
        for name, dt in prof.items():
            rep.add_profile(name, dt)
        self._events.clear()
        self._resident.clear()

    def _run(self, body, desc: str) -> None:
        t0 = time.perf_counter()
        self._resident.clear()
        self._inflight.clear()
        self._pending.clear()
        try:
            super()._run(body, desc)
        finally:
            self._resident.clear()
            self._inflight.clear()
        rep = self.report
        assert isinstance(rep, GuardrailReport)
        busy = rep.profile.get("compute", 0.0) + (
            rep.profile.get("merge", 0.0) if rep.accumulator_device == str(self.device) else 0.0)
        rep.add_profile("idle", max(0.0, time.perf_counter() - t0 - busy))


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _cells(segments: Sequence[Range]) -> list[Range]:
    return [(int(s), int(e)) for s, e in segments]


def _streams(device: torch.device, home: torch.device) -> bool:
    return device.type == "cuda" and home != device


register_executor(lambda device, home: device.type == "cuda", GuardedExecutor)
register_executor(_streams, StreamingExecutor)
