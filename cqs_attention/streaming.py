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

from cqs_attention.executor import Call, TaskWork, _Staged, register_executor
from cqs_attention.guardrails import GuardedExecutor, GuardrailReport, merge_atomic_

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

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers.values())


def _rows_view(t: torch.Tensor) -> torch.Tensor:
    """``(B*H, L, rest)`` view of a contiguous ``(B, H, L, ...)`` tensor."""
    return t.view(t.shape[0] * t.shape[1], t.shape[2], -1)


class StreamingExecutor(GuardedExecutor):
    """Streams host/disk-resident inputs through the device (see the module docstring)."""

    n_cap_max: int = 2
    #: finished tasks whose buffers are kept as a chunk cache (memory permitting)
    retain: int = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cuda = self.device.type == "cuda"
        self._h2d = torch.cuda.Stream(self.device) if self._cuda else None
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
                                   mask=self.spec, tasks_alive=2, merge_on_device=on_dev)

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
    def _copy_in(self, dst: torch.Tensor, dpos: int, src: torch.Tensor, s: int, e: int) -> None:
        """Host rows ``[s, e)`` of ``src`` into device rows ``[dpos, ...)`` of ``dst``."""
        n = e - s
        rep = self.report
        t0 = time.perf_counter()
        piece = src[:, :, s:e]
        if not (src.is_pinned() and src.is_contiguous()) or not self._cuda:
            staged = torch.empty(piece.shape, dtype=src.dtype, pin_memory=self._cuda)
            staged.copy_(piece)
            rep.add_profile("host_copy", time.perf_counter() - t0)
            src, s = staged, 0
        dv, sv = _rows_view(dst), _rows_view(src)
        for i in range(dv.shape[0]):
            dv[i, dpos:dpos + n].copy_(sv[i, s:s + n], non_blocking=True)
        rep.bytes_to_device += piece.numel() * piece.element_size()
        rep.chunk_misses += 1

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
        staged = []
        for side, tensors in (("q", q_tensors), ("k", kv_tensors)):
            st = object.__new__(_Staged)
            st.segments = res.segments[side]
            st.starts = res.starts[side]
            st.data = [res.buffers[(side, i)] for i in range(len(tensors))]
            staged.append(st)
        return staged[0], staged[1]

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
