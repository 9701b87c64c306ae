"""Run a :class:`cqs_design.plans.Plan`: per task, stage inputs -> compute -> merge.

The executor is a per-task loop with explicit, overridable stages so that a streaming version
(separate CUDA streams, chunk cache, ``n_cap`` tasks in flight) can overlap them:

1. :meth:`PlanExecutor.task_work` classifies the task's rectangles with the mask
   (:meth:`~cqs_attention.masks.MaskSpec.classify`): empty blocks are dropped, and for each
   query range the fully-allowed key ranges are concatenated into ONE kernel call without mask
   (plus, when possible, the causal diagonal block appended with a shifted ``causal_offset``);
   the remaining partial blocks form one masked call.
2. :meth:`PlanExecutor.stage` gathers the rows the task needs, once, onto ``device``.
3. :meth:`PlanExecutor.compute_forward` / :meth:`compute_backward` run the kernel calls.
4. :meth:`PlanExecutor.merge_forward` / :meth:`merge_backward` fold the results into float32
   accumulators (float64 for float64 inputs) in place, with
   :func:`~cqs_attention.merge.merge_partials_`.

A task is merged only after its compute finished, so a task that fails with
``torch.cuda.OutOfMemoryError`` is retried (up to ``max_oom_retries``) and merged exactly
once. :func:`task_hook` installs a callable run before each task attempt (tests use it to
inject OOMs).

>>> import torch
>>> from cqs_design.plans import make_plan
>>> from cqs_attention.masks import make_mask_spec
>>> q = torch.randn(1, 2, 30, 8, dtype=torch.float64)
>>> ex = PlanExecutor(make_plan(30, design=2, causal=True),
...                   make_mask_spec(30, 30, batch=1, heads=2, causal=True),
...                   device=torch.device("cpu"), scale=8 ** -0.5)
>>> out, lse = ex.forward(q, q, q)
>>> ref = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
>>> bool(torch.allclose(out, ref, atol=1e-12))
True
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cqs_attention.kernels import select_kernel
from cqs_attention.kernels.base import BlockMask
from cqs_attention.kernels.reference import block_mask_tensor
from cqs_attention.masks import MaskSpec
from cqs_attention.merge import accumulator_dtype, merge_partials_
from cqs_attention.report import RunReport

__all__ = [
    "Call",
    "PlanExecutor",
    "TaskWork",
    "accumulator_bytes",
    "estimate_plan_bytes",
    "executor_class",
    "register_executor",
    "task_hook",
]

Range = tuple[int, int]

_HOOK: list[Callable[[int, int], None]] = []


@contextlib.contextmanager
def task_hook(fn: Callable[[int, int], None]) -> Iterator[None]:
    """Within the ``with`` block, call ``fn(task_id, attempt)`` before each task attempt.

    The hook may raise ``torch.cuda.OutOfMemoryError`` to simulate an OOM in that task.
    """
    _HOOK.append(fn)
    try:
        yield
    finally:
        _HOOK.remove(fn)


@dataclass
class Call:
    """One kernel call: query rows ``[q0, q1)`` against the concatenation of ``key_ranges``."""

    q0: int
    q1: int
    key_ranges: list[Range]
    mask: BlockMask | None = None

    @property
    def lk(self) -> int:
        return sum(e - s for s, e in self.key_ranges)


@dataclass
class TaskWork:
    """A task after mask classification: its kernel calls and the rows to stage."""

    task_id: int
    calls: list[Call] = field(default_factory=list)
    q_segments: list[Range] = field(default_factory=list)
    kv_segments: list[Range] = field(default_factory=list)
    full: int = 0
    partial: int = 0
    empty: int = 0


def _merge_ranges(ranges: Sequence[Range]) -> list[Range]:
    out: list[list[int]] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


class _Staged:
    """Rows ``segments`` of several tensors gathered once onto a device; local views by range."""

    def __init__(self, segments: list[Range], tensors: Sequence[torch.Tensor],
                 device: torch.device, report: RunReport | None) -> None:
        self.segments = segments
        self.starts: list[int] = []
        pos = 0
        for s, e in segments:
            self.starts.append(pos)
            pos += e - s
        self.data: list[torch.Tensor] = []
        for t in tensors:
            parts = [t[:, :, s:e] for s, e in segments]
            if not parts:
                g = t[:, :, 0:0]
            elif len(parts) == 1:
                g = parts[0]
            else:
                g = torch.cat(parts, dim=2) if t.device == device else torch.cat(
                    [p.to(device) for p in parts], dim=2)
            if g.device != device:
                g = g.to(device)
            if t.device != device and report is not None:
                report.bytes_to_device += g.numel() * g.element_size()
            self.data.append(g)

    def _local(self, g0: int, g1: int) -> int:
        for (s, e), st in zip(self.segments, self.starts, strict=True):
            if s <= g0 and g1 <= e:
                return st + g0 - s
        raise AssertionError(f"range {(g0, g1)} not staged in {self.segments}")

    def rows(self, i: int, ranges: Sequence[Range]) -> torch.Tensor:
        """Tensor ``i`` on the concatenation of global ``ranges`` (a view when possible)."""
        locs = [(self._local(s, e), e - s) for s, e in ranges]
        t = self.data[i]
        if all(locs[j][0] + locs[j][1] == locs[j + 1][0] for j in range(len(locs) - 1)):
            return t[:, :, locs[0][0]:locs[0][0] + sum(n for _, n in locs)]
        return torch.cat([t[:, :, a:a + n] for a, n in locs], dim=2)


def accumulator_bytes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                      backward: bool) -> int:
    """Bytes of a run's accumulators: float32 (float64 for float64 inputs) ``out`` and ``lse``
    rows for the forward pass, ``dq``, ``dk``, ``dv`` for the backward pass.

    >>> t = torch.zeros(1, 2, 10, 4)
    >>> accumulator_bytes(t, t, t, backward=False), accumulator_bytes(t, t, t, backward=True)
    (400, 960)
    """
    esz = torch.empty((), dtype=accumulator_dtype(q.dtype)).element_size()
    if backward:
        return (q.numel() + k.numel() + v.numel()) * esz
    return q.shape[0] * q.shape[1] * q.shape[2] * (v.shape[-1] + 1) * esz


def _kernel_workspace(kernel: Any, b: int, h: int, hkv: int, lq: int, lk: int, d: int,
                      dtype: torch.dtype) -> int:
    fn = getattr(kernel, "workspace_bytes", None)
    return 0 if fn is None else int(fn(b, h, hkv, lq, lk, d, dtype))


def _unique_rows(a: Any) -> tuple[Any, Any]:
    """``np.unique(a, axis=0, return_inverse=True)`` for an ``(n, 3)`` int array, by lexsort
    (much faster than ``np.unique`` with ``axis``, which sorts a structured view).

    >>> import numpy as np
    >>> u, inv = _unique_rows(np.array([[1, 2, 3], [0, 5, 5], [1, 2, 3]]))
    >>> u.tolist(), inv.tolist()
    ([[0, 5, 5], [1, 2, 3]], [1, 0, 1])
    """
    import numpy as np

    if len(a) and a.min() >= 0:
        m1, m2 = int(a[:, 1].max()) + 1, int(a[:, 2].max()) + 1
        if (int(a[:, 0].max()) + 1) * m1 * m2 < 2**63:  # one int64 key per row
            key = (a[:, 0] * m1 + a[:, 1]) * m2 + a[:, 2]
            _, first, inv = np.unique(key, return_index=True, return_inverse=True)
            return a[first], inv.reshape(-1)
    order = np.lexsort((a[:, 2], a[:, 1], a[:, 0]))
    s = a[order]
    keep = np.ones(len(s), dtype=bool)
    if len(s) > 1:
        keep[1:] = np.any(s[1:] != s[:-1], axis=1)
    inv = np.empty(len(a), dtype=np.int64)
    inv[order] = np.cumsum(keep) - 1
    return s[keep], inv


def estimate_plan_bytes(plan: Any, *, batch: int, heads: int, kv_heads: int, head_dim: int,
                        dtype: torch.dtype, kernel: Any = None, backward: bool = False,
                        mask: MaskSpec | None = None, tasks_alive: int = 1,
                        merge_on_device: bool = True, query_streamed: bool = False,
                        groups_alive: int = 4) -> int:
    """Upper bound of the device bytes one task of ``plan`` holds (max over tasks).

    Counts the staged q/k/v rows (and out, dout, lse for backward), per-call results in the
    accumulator dtype, a bool mask per call, and the kernel's ``workspace_bytes(batch, heads,
    kv_heads, lq, lk, head_dim, dtype)`` if it has one (for the largest call). Mask pruning is
    ignored (an upper bound).

    Forward partial results are counted as the kernels return them (``out`` in ``dtype``, lse
    in the accumulator dtype). ``mask`` (the run's :class:`~cqs_attention.masks.MaskSpec`)
    tightens the mask term: without document ids, ``mask_mod`` or a left window bound, dense
    masks are band masks of shape ``(1, 1, lq, n)`` over the partial blocks, which all meet
    one diagonal (``n <= lq + 2 * longest block``); no causal/window: no mask at all.
    ``tasks_alive`` is how many tasks' staged rows and results can be on the device at once
    (2 for the streaming executor: the task being staged beside the previous one it reuses
    chunks from); mask, workspace and merge temporaries belong to the computing task only.
    ``merge_on_device=False`` (accumulators on the host) drops the merge temporaries.

    ``query_streamed=True`` models the streaming executor's forward with host accumulators
    (:mod:`cqs_attention.streaming`): only the task's key/value rows are staged per task (times
    ``tasks_alive``); query rows and the float32 accumulator rows of one *query group* (the
    calls of one query range) are staged per group, ``groups_alive`` groups at a time, each
    with its call results and merge temporaries.
    """
    import numpy as np

    if hasattr(plan, "arrays"):
        a = plan.arrays()
        t, qs, qe, ks, ke = (np.asarray(a[n], dtype=np.int64) for n in
                             ("task", "q_start", "q_end", "k_start", "k_end"))
    else:
        rows = [(i, r.q_start, r.q_end, r.k_start, r.k_end)
                for i, task in enumerate(plan.tasks) for r in task.rectangles]
        t, qs, qe, ks, ke = (np.asarray(c, dtype=np.int64) for c in zip(*rows, strict=True))
    n_tasks = int(t.max()) + 1 if t.size else 0
    if n_tasks == 0:
        return 0
    elt = torch.empty((), dtype=dtype).element_size()
    acc = torch.empty((), dtype=accumulator_dtype(dtype)).element_size()
    # query groups: unique (task, q_start, q_end) with the total key length of each
    qkey = np.stack([t, qs, qe], axis=1)
    uq, inv = _unique_rows(qkey)
    lk = np.bincount(inv, weights=(ke - ks).astype(np.float64), minlength=len(uq))
    lq = (uq[:, 2] - uq[:, 1]).astype(np.float64)
    nq = np.bincount(uq[:, 0], weights=lq, minlength=n_tasks)
    uk, _ = _unique_rows(np.stack([t, ks, ke], axis=1))
    nk = np.bincount(uk[:, 0], weights=(uk[:, 2] - uk[:, 1]).astype(np.float64),
                     minlength=n_tasks)
    if query_streamed and not backward:
        kv = batch * head_dim * elt * 2 * nk * kv_heads
        group = batch * heads * lq * (head_dim * elt + (head_dim + 1) * acc  # q, acc rows
                                      + head_dim * elt + acc  # one call's out, lse
                                      + (2 * head_dim + 3) * acc)  # merge temporaries
        gmax = np.zeros(n_tasks)
        np.maximum.at(gmax, uq[:, 0], group)
        band_only = mask is not None and mask.q_doc is None and mask.mask_mod is None and (
            mask.window is None or mask.window[0] is None)
        if not band_only:
            work = batch * heads * lq * lk
        elif not (mask.causal or mask.window is not None):
            work = np.zeros_like(lq)
        elif getattr(kernel, "band_mask_free", False):  # pieces: a second result and a merge
            work = batch * heads * lq * (2 * head_dim * elt + 2 * head_dim * acc + 5 * acc)
        else:
            work = lq * np.minimum(lk, lq + 2 * float(np.max(ke - ks)))
        wmax = np.zeros(n_tasks)
        np.maximum.at(wmax, uq[:, 0], work)
        big = int(np.argmax(lq * lk))
        ws = _kernel_workspace(kernel, batch, heads, kv_heads, int(lq[big]), int(lk[big]),
                               head_dim, dtype)
        return int(np.max(max(1, tasks_alive) * kv + max(1, groups_alive) * gmax + wmax)) + ws
    q_side = heads * (3 if backward else 1)
    staged = batch * head_dim * elt * (nq * q_side + 2 * nk * kv_heads)
    if backward:
        staged = staged + nq * batch * heads * acc
    if backward:
        res = batch * heads * lq * (head_dim + 1) * acc
        res = res + batch * (heads * lq + 2 * kv_heads * lk) * head_dim * acc
    else:
        res = batch * heads * lq * (head_dim * elt + acc)
    results = np.bincount(uq[:, 0], weights=res, minlength=n_tasks)
    band_only = mask is not None and mask.q_doc is None and mask.mask_mod is None and (
        mask.window is None or mask.window[0] is None)
    if not band_only:
        work = batch * heads * lq * lk  # a bool mask per call
    elif mask.causal or mask.window is not None:
        longest = float(np.max(ke - ks))
        work = lq * np.minimum(lk, lq + 2 * longest)  # one (1, 1, lq, n) band mask
    else:
        work = np.zeros_like(lq)
    if merge_on_device:  # merge_atomic_: the call's out in acc dtype, the term, the weights
        work = work + batch * heads * lq * (2 * head_dim + 3) * acc
    work_task = np.zeros(n_tasks)
    np.maximum.at(work_task, uq[:, 0], work)
    big = int(np.argmax(lq * lk))
    ws = _kernel_workspace(kernel, batch, heads, kv_heads, int(lq[big]), int(lk[big]),
                           head_dim, dtype)
    return int(np.max(max(1, tasks_alive) * (staged + results) + work_task)) + ws


class PlanExecutor:
    """Executes one plan for one mask on one device (see the module docstring)."""

    def __init__(self, plan: Any, spec: MaskSpec, *, device: torch.device, scale: float,
                 backend: str = "auto", memory_budget: int | None = None,
                 progress: bool | None = None, max_oom_retries: int = 3,
                 report: RunReport | None = None) -> None:
        self.plan = plan
        self.spec = spec
        self.device = torch.device(device)
        self.scale = scale
        self.backend = backend
        self.memory_budget = memory_budget
        self.progress = progress
        self.max_oom_retries = max_oom_retries
        self.report = report if report is not None else RunReport()
        self._kernels: dict[tuple[Any, ...], Any] = {}

    def _fresh_report(self, direction: str) -> RunReport:
        old = self.report
        keep = ("plan", "plan_source", "design_v", "design_k", "levels", "memory_budget",
                "task_bytes_estimate")
        self.report = RunReport(direction=direction, **{n: getattr(old, n) for n in keep})
        return self.report

    # -- stage 0: classification -------------------------------------------------------
    def task_work(self, task: Any) -> TaskWork:
        """Classify the task's rectangles and build its kernel calls.

        Not cached: dense masks live on the device only while their task runs (backward
        classifies again).
        """
        work = TaskWork(task.id)
        groups: dict[Range, list[Any]] = {}
        for r in task.rectangles:
            groups.setdefault((r.q_start, r.q_end), []).append(r)
        for (q0, q1), rects in groups.items():
            full: list[Range] = []
            band: tuple[Range, int] | None = None  # a causal-only partial block
            masked: list[tuple[Range, BlockMask]] = []
            for r in rects:
                c = self.spec.classify(q0, q1, r.k_start, r.k_end, self.device)
                if c.kind == "empty":
                    work.empty += 1
                    continue
                if c.kind == "full":
                    work.full += 1
                    full.append((r.k_start, r.k_end))
                    continue
                work.partial += 1
                m = c.mask
                if (band is None and m.dense is None and m.causal_offset is not None
                        and m.causal_offset >= -1):
                    band = ((r.k_start, r.k_end), m.causal_offset)
                else:
                    masked.append(((r.k_start, r.k_end), m))
            full = _merge_ranges(full)
            if band is not None:
                n_full = sum(e - s for s, e in full)
                mask = BlockMask(causal_offset=band[1] + n_full)
                work.calls.append(Call(q0, q1, [*full, band[0]], mask))
            elif full:
                work.calls.append(Call(q0, q1, full, None))
            if len(masked) == 1:
                work.calls.append(Call(q0, q1, [masked[0][0]], masked[0][1]))
            elif masked:
                lq = q1 - q0
                parts = [block_mask_tensor(m, lq, e - s, self.device) for (s, e), m in masked]
                bm = max(p.shape[0] for p in parts)
                hm = max(p.shape[1] for p in parts)
                dense = torch.cat([p.expand(bm, hm, lq, p.shape[-1]) for p in parts], dim=-1)
                work.calls.append(Call(q0, q1, [rg for rg, _ in masked], BlockMask(dense=dense)))
        work.q_segments = _merge_ranges([(c.q0, c.q1) for c in work.calls])
        work.kv_segments = _merge_ranges([rg for c in work.calls for rg in c.key_ranges])
        return work

    def _kernel(self, q: torch.Tensor, k: torch.Tensor, mask: BlockMask | None,
                needs_grad: bool) -> Any:
        """Dispatch one call; cached per (mask category, dtype, head_dim, gqa, needs_grad)."""
        cat = ("none" if mask is None or mask.is_full else
               "causal" if mask.dense is None else "dense")
        key = (cat, q.dtype, q.shape[-1], q.shape[1] != k.shape[1], needs_grad)
        kernel = self._kernels.get(key)
        if kernel is None:
            kernel = select_kernel(self.backend, device=self.device, dtype=q.dtype,
                                   head_dim=q.shape[-1], mask=mask,
                                   gqa=q.shape[1] != k.shape[1], needs_grad=needs_grad)
            self._kernels[key] = kernel
        return kernel

    # -- stage 1: inputs -----------------------------------------------------------------
    def stage(self, work: TaskWork, q_tensors: Sequence[torch.Tensor],
              kv_tensors: Sequence[torch.Tensor]) -> tuple[_Staged, _Staged]:
        """Gather the task's query-side and key-side rows onto the device, once."""
        return (_Staged(work.q_segments, q_tensors, self.device, self.report),
                _Staged(work.kv_segments, kv_tensors, self.device, self.report))

    # -- stage 2: compute ------------------------------------------------------------------
    def compute_forward(self, work: TaskWork, qs: _Staged, kvs: _Staged
                        ) -> list[tuple[Call, torch.Tensor, torch.Tensor]]:
        results = []
        for call in work.calls:
            q = qs.rows(0, [(call.q0, call.q1)])
            k = kvs.rows(0, call.key_ranges)
            v = kvs.rows(1, call.key_ranges)
            kernel = self._kernel(q, k, call.mask, needs_grad=False)
            out, lse = kernel.fwd(q, k, v, scale=self.scale, mask=call.mask)
            self.report.count_call(kernel.name, lq=call.q1 - call.q0, lk=call.lk)
            results.append((call, out, lse))
        return results

    def compute_backward(self, work: TaskWork, qs: _Staged, kvs: _Staged
                         ) -> list[tuple[Call, torch.Tensor, torch.Tensor, torch.Tensor]]:
        results = []
        for call in work.calls:
            rows = [(call.q0, call.q1)]
            q, out, dout, lse = (qs.rows(i, rows) for i in range(4))
            k = kvs.rows(0, call.key_ranges)
            v = kvs.rows(1, call.key_ranges)
            kernel = self._kernel(q, k, call.mask, needs_grad=True)
            dq, dk, dv = kernel.bwd(dout, q, k, v, out, lse, scale=self.scale, mask=call.mask)
            self.report.count_call(kernel.name, lq=call.q1 - call.q0, lk=call.lk)
            results.append((call, dq, dk, dv))
        return results

    # -- stage 3: merge --------------------------------------------------------------------
    def _count_back(self, t: torch.Tensor, acc: torch.Tensor) -> None:
        if t.device != acc.device:
            self.report.bytes_from_device += t.numel() * t.element_size()

    def merge_forward(self, results: list[tuple[Call, torch.Tensor, torch.Tensor]],
                      acc_out: torch.Tensor, acc_lse: torch.Tensor) -> None:
        for call, out, lse in results:
            self._count_back(out, acc_out)
            merge_partials_(acc_out[:, :, call.q0:call.q1], acc_lse[:, :, call.q0:call.q1],
                            out, lse)

    def merge_backward(self, results, dq_acc: torch.Tensor, dk_acc: torch.Tensor,
                       dv_acc: torch.Tensor) -> None:
        for call, dq, dk, dv in results:
            for t in (dq, dk, dv):
                self._count_back(t, dq_acc)
            dq_acc[:, :, call.q0:call.q1] += dq.to(dq_acc.device, dq_acc.dtype)
            pos = 0
            for s, e in call.key_ranges:
                n = e - s
                dk_acc[:, :, s:e] += dk[:, :, pos:pos + n].to(dk_acc.device, dk_acc.dtype)
                dv_acc[:, :, s:e] += dv[:, :, pos:pos + n].to(dv_acc.device, dv_acc.dtype)
                pos += n

    # -- the loop ----------------------------------------------------------------------------
    def _classified(self, task: Any, *, count: bool) -> TaskWork:
        """:meth:`task_work`, timed; ``count`` adds its blocks to the report."""
        t0 = time.perf_counter()
        work = self.task_work(task)
        if count:
            self.report.blocks_full += work.full
            self.report.blocks_partial += work.partial
            self.report.blocks_empty += work.empty
        self.report.add_time("classify", time.perf_counter() - t0)
        return work

    def _run(self, body: Callable[[TaskWork], None], desc: str) -> None:
        from tqdm.auto import tqdm

        rep = self.report
        rep.device = str(self.device)
        n_tasks = len(self.plan) if hasattr(self.plan, "task") else len(self.plan.tasks)
        get = self.plan.task if hasattr(self.plan, "task") else self.plan.tasks.__getitem__
        tasks = (get(i) for i in range(n_tasks))
        disable = False if self.progress is True else (True if self.progress is False else None)
        bar = tqdm(tasks, total=n_tasks, desc=desc, unit="task", disable=disable,
                   delay=0 if self.progress else 2.0, leave=False)
        rep.tasks = rep.tasks_skipped = rep.blocks_full = rep.blocks_partial = 0
        rep.blocks_empty = 0
        for task in bar:
            work = self._classified(task, count=True)
            if not work.calls:
                rep.tasks_skipped += 1
                continue
            rep.tasks += 1
            for attempt in range(self.max_oom_retries + 1):
                try:
                    for hook in list(_HOOK):
                        hook(task.id, attempt)
                    body(work)
                    break
                except torch.cuda.OutOfMemoryError:
                    if attempt == self.max_oom_retries:
                        raise
                    rep.oom_retries += 1
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
        bar.close()

    def _peak_start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._mem0 = torch.cuda.memory_allocated(self.device)

    def _peak_end(self) -> None:
        if self.device.type == "cuda":
            self.report.peak_device_bytes = (torch.cuda.max_memory_allocated(self.device)
                                             - self._mem0)
        else:
            self.report.peak_device_bytes = self.report.task_bytes_estimate

    def accumulator_device(self, home: torch.device, acc_bytes: int) -> torch.device:
        """Keep accumulators on the compute device when they fit the budget, else at home."""
        if home == self.device or self.memory_budget is None:
            return self.device
        if self.report.task_bytes_estimate + acc_bytes <= self.memory_budget:
            return self.device
        return home

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                home: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the merged ``(out, lse)`` in the accumulator dtype, on the accumulator device."""
        t_start = time.perf_counter()
        rep = self._fresh_report("forward")
        home = q.device if home is None else home
        b, h, lq, _d = q.shape
        acc_dtype = accumulator_dtype(q.dtype)
        acc_dev = self.accumulator_device(home, accumulator_bytes(q, k, v, backward=False))
        rep.accumulator_device = str(acc_dev)
        acc_out = torch.zeros(b, h, lq, v.shape[-1], dtype=acc_dtype, device=acc_dev)
        acc_lse = torch.full((b, h, lq), float("-inf"), dtype=acc_dtype, device=acc_dev)
        self._peak_start()

        def body(work: TaskWork) -> None:
            t0 = time.perf_counter()
            qs, kvs = self.stage(work, [q], [k, v])
            t1 = time.perf_counter()
            results = self.compute_forward(work, qs, kvs)
            t2 = time.perf_counter()
            self.merge_forward(results, acc_out, acc_lse)
            t3 = time.perf_counter()
            rep.add_time("stage", t1 - t0)
            rep.add_time("compute", t2 - t1)
            rep.add_time("merge", t3 - t2)

        self._run(body, "cqs attention")
        self._peak_end()
        rep.add_time("total", time.perf_counter() - t_start)
        return acc_out, acc_lse

    def backward(self, dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 out: torch.Tensor, lse: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact ``(dq, dk, dv)`` in the accumulator dtype, summed task by task.

        ``out`` and ``lse`` are the GLOBAL merged forward results.
        """
        t_start = time.perf_counter()
        rep = self._fresh_report("backward")
        acc_dtype = accumulator_dtype(q.dtype)
        acc_dev = self.accumulator_device(q.device, accumulator_bytes(q, k, v, backward=True))
        rep.accumulator_device = str(acc_dev)
        dq_acc = torch.zeros(q.shape, dtype=acc_dtype, device=acc_dev)
        dk_acc = torch.zeros(k.shape, dtype=acc_dtype, device=acc_dev)
        dv_acc = torch.zeros(v.shape, dtype=acc_dtype, device=acc_dev)
        self._peak_start()

        def body(work: TaskWork) -> None:
            t0 = time.perf_counter()
            qs, kvs = self.stage(work, [q, out, dout, lse], [k, v])
            t1 = time.perf_counter()
            results = self.compute_backward(work, qs, kvs)
            t2 = time.perf_counter()
            self.merge_backward(results, dq_acc, dk_acc, dv_acc)
            t3 = time.perf_counter()
            rep.add_time("stage", t1 - t0)
            rep.add_time("compute", t2 - t1)
            rep.add_time("merge", t3 - t2)

        self._run(body, "cqs attention backward")
        self._peak_end()
        rep.add_time("total", time.perf_counter() - t_start)
        return dq_acc, dk_acc, dv_acc


# -- executor selection (the GPU streaming executor plugs in here) ---------------------------
_EXECUTORS: list[tuple[Callable[[torch.device, torch.device], bool], type[PlanExecutor]]] = []
_EXECUTORS_DISCOVERED = False


def register_executor(applies: Callable[[torch.device, torch.device], bool],
                      cls: type[PlanExecutor]) -> None:
    """Use ``cls`` (a PlanExecutor subclass, same constructor) when
    ``applies(compute_device, home_device)`` is true; later registrations win.

    A module ``cqs_attention/streaming.py``, if present, is imported on first use so that it
    can register itself.
    """
    if not (isinstance(cls, type) and issubclass(cls, PlanExecutor)):
        raise TypeError(f"cls must be a PlanExecutor subclass, got {cls!r}")
    _EXECUTORS.insert(0, (applies, cls))


def executor_class(device: torch.device, home: torch.device) -> type[PlanExecutor]:
    """The executor class for a run computing on ``device`` with inputs/output on ``home``.

    >>> executor_class(torch.device("cpu"), torch.device("cpu")).__name__
    'PlanExecutor'
    """
    global _EXECUTORS_DISCOVERED
    if not _EXECUTORS_DISCOVERED:
        _EXECUTORS_DISCOVERED = True
        import importlib.util

        if importlib.util.find_spec("cqs_attention.streaming") is not None:
            importlib.import_module("cqs_attention.streaming")
    for applies, cls in _EXECUTORS:
        if applies(device, home):
            return cls
    return PlanExecutor
