"""OOM guardrails: size the run before it starts, and survive out-of-memory errors during it.

Two knobs bound the device memory a run holds:

* **granularity** -- the plan's design and levels: a finer design (or one more level of CQS
  Divide, :meth:`cqs_design.plans.Plan.refine`) makes every task smaller;
* **n_cap** -- how many tasks are resident on the device at once (1: strictly one after the
  other; 2: the next task's inputs arrive while the current one computes).

Before the first task, :func:`size_run` picks ``n_cap`` from the budget (``memory_budget``, or
the free device memory from ``torch.cuda.mem_get_info``) and the per-task footprint
(:func:`cqs_attention.executor.estimate_plan_bytes` times a calibration factor, 1 until a task
has been measured), and refines the whole plan while even one task would not fit.

During the run, :class:`OOMGuard` decides what an out-of-memory error in a task means: the task
is evicted (its staged inputs and partial results are dropped; nothing of it was merged) and
requeued; ``n_cap`` is halved; at ``n_cap = 1`` the task is retried once after emptying the
allocator cache (fragmentation), and if it fails again it is *refined*: replaced by the
sub-tasks of one more CQS Divide level inside it, and the calibration factor is raised. A task
is merged exactly once however often it is retried: merging starts only after all its kernel
calls succeeded, and each call's merge computes its temporaries before touching the
accumulators (:func:`merge_atomic_`). ``GuardrailReport.merge_counts`` records it.

>>> guard = OOMGuard(n_cap=2)
>>> guard.on_oom(5), guard.n_cap
('retry', 1)
>>> guard.on_oom(5), guard.on_oom(5)
('retry', 'refine')
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from cqs_attention.executor import _HOOK, Call, PlanExecutor, TaskWork, accumulator_bytes
from cqs_attention.merge import merge_partials_
from cqs_attention.report import RunReport

__all__ = [
    "GuardedExecutor",
    "GuardrailReport",
    "OOMGuard",
    "merge_atomic_",
    "refine_task",
    "size_run",
]


@dataclass
class GuardrailReport(RunReport):
    """:class:`~cqs_attention.report.RunReport` plus what the guardrails and streaming did.

    Attributes
    ----------
    n_cap_start, n_cap_final
        Tasks allowed on the device at once, at the start (from :func:`size_run`) and at the
        end (lowered by out-of-memory errors).
    refinements
        Times a task (or, before the run, the whole plan) was replaced by finer sub-tasks, or,
        streaming with host accumulators, had the query rows it had not merged yet halved
        after an out-of-memory error (those tasks are not in ``refined_tasks``).
    refined_tasks
        Ids of the tasks that were replaced (never merged themselves).
    merge_counts
        Task id -> times its results were merged into the accumulators (always 1).
    oom_events
        ``(task_id, attempt, n_cap)`` of every out-of-memory error caught.
    calibration
        Measured peak device bytes of a task over its estimate (1.0 until measured; raised
        after an out-of-memory error at ``n_cap = 1``).
    profile
        Seconds per stage of the streamed run: ``"h2d"``, ``"compute"``, ``"d2h"``,
        ``"merge"`` (device time from CUDA events, or host time on the CPU) and ``"idle"``
        (wall time the compute stream waited).
    chunk_hits, chunk_misses, bytes_saved
        Chunk cache: chunks found already on the device, chunks copied, bytes not re-sent.
    host_accumulator_dtype
        Streamed forward with accumulators on the host: the dtype of their rows ("float32",
        or q's dtype when host memory is short); empty otherwise.
    """

    n_cap_start: int = 1
    n_cap_final: int = 1
    refinements: int = 0
    refined_tasks: list[int] = field(default_factory=list)
    merge_counts: dict[int, int] = field(default_factory=dict)
    oom_events: list[tuple[int, int, int]] = field(default_factory=list)
    calibration: float = 1.0
    profile: dict[str, float] = field(default_factory=dict)
    chunk_hits: int = 0
    chunk_misses: int = 0
    bytes_saved: int = 0
    host_accumulator_dtype: str = ""

    def add_profile(self, stage: str, seconds: float) -> None:
        self.profile[stage] = self.profile.get(stage, 0.0) + seconds


class OOMGuard:
    """The out-of-memory policy of one run (see the module docstring).

    Parameters
    ----------
    n_cap
        Tasks resident at once to start with (>= 1).
    retries_at_one
        Plain retries of a task at ``n_cap = 1`` before it is refined.
    """

    def __init__(self, n_cap: int, *, retries_at_one: int = 1) -> None:
        if isinstance(n_cap, bool) or not isinstance(n_cap, int) or n_cap < 1:
            raise ValueError(f"n_cap must be an int >= 1, got {n_cap!r}")
        if retries_at_one < 0:
            raise ValueError(f"retries_at_one must be >= 0, got {retries_at_one!r}")
        self.n_cap = n_cap
        self.retries_at_one = retries_at_one
        self._at_one: dict[int, int] = {}

    def on_oom(self, task_id: int) -> Literal["retry", "refine"]:
        """Record an OOM of ``task_id``; say whether to retry it as is or refine it."""
        if self.n_cap > 1:
            self.n_cap = max(1, self.n_cap // 2)
            return "retry"
        used = self._at_one.get(task_id, 0)
        if used < self.retries_at_one:
            self._at_one[task_id] = used + 1
            return "retry"
        return "refine"


def refine_task(plan: Any, task: Any, *, design: int = 2) -> tuple[Any, list[Any]] | None:
    """Replace ``task`` of ``plan`` by the sub-tasks of one more CQS Divide level.

    Returns ``(new_plan, sub_tasks)`` or None when the task is too small to split (fewer
    tokens than the design's ``v``) or the plan cannot be refined.

    >>> from cqs_design.plans import make_plan
    >>> plan = make_plan(70, design=2)
    >>> new, subs = refine_task(plan, plan.task(3))
    >>> len(new), len(subs), sorted({t.id for t in subs}) == list(range(7, 14))
    (13, 7, True)
    """
    if not hasattr(plan, "refine"):
        return None
    v = design * design + design + 1
    lq = sum(e - s for s, e in task.q_segments) if hasattr(task, "q_segments") else task.tokens
    lk = sum(e - s for s, e in task.kv_segments) if hasattr(task, "kv_segments") else lq
    if min(lq, lk) < v:
        return None
    old = set(plan.task_ids)
    try:
        new = plan.refine([task.id], design)
    except ValueError:
        return None
    subs = [new.task(i) for i, tid in enumerate(new.task_ids) if tid not in old]
    return new, subs


def size_run(*, budget: int | None, task_bytes: int, resident_bytes: int, n_cap_max: int,
             calibration: float = 1.0) -> int:
    """``n_cap`` for a run: how many tasks of ``task_bytes`` (times ``calibration``) fit in
    ``budget`` beside ``resident_bytes`` (accumulators, cache), clamped to ``[1, n_cap_max]``.

    0 means not even one task fits (the caller refines the plan). No budget: ``n_cap_max``.

    >>> size_run(budget=1000, task_bytes=300, resident_bytes=100, n_cap_max=2)
    2
    >>> size_run(budget=1000, task_bytes=950, resident_bytes=100, n_cap_max=2)
    0
    """
    if budget is None:
        return n_cap_max
    per = max(1.0, task_bytes * calibration)
    fit = int((budget - resident_bytes) // per)
    return max(0, min(n_cap_max, fit))


# The one log-sum-exp merge already allocates before it writes (see merge.merge_partials_),
# so an OOM leaves the accumulators untouched; the guardrails name it for clarity.
merge_atomic_ = merge_partials_


def _retry_oom(fn: Callable[[], None], device: torch.device, tries: int = 3) -> None:
    """Run an accumulator update, retrying after emptying the cache if it runs out of memory
    (it has written nothing then); a persistent failure is a hard error, never a requeue."""
    for i in range(tries):
        try:
            fn()
            return
        except torch.cuda.OutOfMemoryError as exc:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if i == tries - 1:
                raise RuntimeError("out of device memory while merging a finished task into "
                                   "the accumulators; lower memory_budget") from exc


class GuardedExecutor(PlanExecutor):
    """:class:`~cqs_attention.executor.PlanExecutor` with the guardrails of this module.

    Class attributes ``n_cap_max`` (tasks resident at once when memory allows) and
    ``retries_at_one`` tune the policy; :meth:`evict` is the hook a streaming subclass
    uses to drop a failed task's device buffers.
    """

    n_cap_max: int = 2
    retries_at_one: int = 1
    refine_design: int = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_cap = self.n_cap_max
        self.calibration = 1.0
        self._dims: dict[str, Any] = {}

    def _fresh_report(self, direction: str) -> RunReport:
        old = self.report
        keep = ("plan", "plan_source", "design_v", "design_k", "levels", "memory_budget",
                "task_bytes_estimate")
        self.report = GuardrailReport(direction=direction, **{n: getattr(old, n) for n in keep})
        self.report.calibration = self.calibration
        return self.report

    # -- sizing ----
    def available_bytes(self) -> int | None:
        """Device bytes this run may use: ``memory_budget``, else (CUDA) the free memory."""
        if self.memory_budget is not None:
            return int(self.memory_budget)
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            return int(free)
        return None

    def task_bytes(self, plan: Any) -> int:
        """Estimated device bytes of the largest task of ``plan`` (see estimate_plan_bytes)."""
        from cqs_attention.executor import estimate_plan_bytes

        d = self._dims
        if not d:
            return int(self.report.task_bytes_estimate)
        return estimate_plan_bytes(plan, batch=d["b"], heads=d["h"], kv_heads=d["hkv"],
                                   head_dim=d["d"], dtype=d["dtype"],
                                   backward=d["backward"])

    def resident_bytes(self) -> int:
        """Bytes held on the device besides the tasks (accumulators there)."""
        return int(self._dims.get("acc_device_bytes", 0))

    def size(self) -> None:
        """Choose ``n_cap``; refine the whole plan while one task does not fit."""
        rep = self.report
        budget = self.available_bytes()
        while True:
            tb = self.task_bytes(self.plan)
            n = size_run(budget=budget, task_bytes=tb, resident_bytes=self.resident_bytes(),
                         n_cap_max=self.n_cap_max, calibration=self.calibration)
            if n >= 1 or self.memory_budget is not None or not hasattr(self.plan, "refine"):
                break  # an explicit budget was already checked against the estimate
            try:
                finer = self.plan.refine(None, self.refine_design)
            except ValueError:
                break
            self.plan = finer
            rep.plan = finer
            rep.levels = getattr(finer, "levels", rep.levels)
            rep.refinements += 1
        rep.task_bytes_estimate = self.task_bytes(self.plan)
        self.n_cap = max(1, n)
        rep.n_cap_start = self.n_cap

    # -- merging, exactly once ----
    def merge_forward(self, results: list[tuple[Call, torch.Tensor, torch.Tensor]],
                      acc_out: torch.Tensor, acc_lse: torch.Tensor) -> None:
        for call, out, lse in results:
            self._count_back(out, acc_out)
            _retry_oom(lambda call=call, out=out, lse=lse: merge_atomic_(
                acc_out[:, :, call.q0:call.q1], acc_lse[:, :, call.q0:call.q1], out, lse),
                self.device)

    def merge_backward(self, results, dq_acc: torch.Tensor, dk_acc: torch.Tensor,
                       dv_acc: torch.Tensor) -> None:
        for call, dq, dk, dv in results:
            for t in (dq, dk, dv):
                self._count_back(t, dq_acc)

            def one(call=call, dq=dq, dk=dk, dv=dv) -> None:
                gq = dq.to(dq_acc.device, dq_acc.dtype)
                gk = dk.to(dk_acc.device, dk_acc.dtype)
                gv = dv.to(dv_acc.device, dv_acc.dtype)
                dq_acc[:, :, call.q0:call.q1] += gq
                pos = 0
                for s, e in call.key_ranges:
                    n = e - s
                    dk_acc[:, :, s:e] += gk[:, :, pos:pos + n]
                    dv_acc[:, :, s:e] += gv[:, :, pos:pos + n]
                    pos += n

            _retry_oom(one, self.device)

    # -- the loop ----
    def evict(self, task_id: int) -> None:
        """Drop whatever the failed task ``task_id`` holds on the device (nothing here)."""

    def split_instead_of_refine(self, task: Any) -> bool:
        """Called when ``task`` would be refined; True means the executor made the task's
        remaining work smaller itself (retry it as is). Here: False."""
        return False

    def on_refined(self, task: Any, subs: list[Any]) -> None:
        """Called after ``task`` was replaced by the sub-tasks ``subs``."""

    def order(self, items: list[Any]) -> list[Any]:
        """The order tasks run in (plan order here; streaming reorders for chunk reuse)."""
        return items

    def finish_task(self, work: TaskWork) -> None:
        """Called after a task's body returned (streaming waits for older tasks here)."""

    def drain(self) -> None:
        """Called once after the last task (streaming completes pending copies here)."""

    def _run(self, body: Callable[[TaskWork], None], desc: str) -> None:
        from tqdm.auto import tqdm

        rep = self.report
        assert isinstance(rep, GuardrailReport)
        rep.device = str(self.device)
        self.size()
        guard = OOMGuard(self.n_cap, retries_at_one=self.retries_at_one)
        plan = self.plan
        n_tasks = len(plan) if hasattr(plan, "task") else len(plan.tasks)
        get = plan.task if hasattr(plan, "task") else plan.tasks.__getitem__
        queue: deque[Any] = deque(self.order([get(i) for i in range(n_tasks)]))
        self._queue = queue  # a streaming subclass peeks at the next task to prefetch it
        disable = False if self.progress is True else (True if self.progress is False else None)
        bar = tqdm(total=len(queue), desc=desc, unit="task", disable=disable,
                   delay=0 if self.progress else 2.0, leave=False)
        rep.tasks = rep.tasks_skipped = rep.blocks_full = rep.blocks_partial = 0
        rep.blocks_empty = 0
        attempts: dict[int, int] = {}
        counted: set[int] = set()
        while queue:
            task = queue.popleft()
            work = self._classified(task, count=task.id not in counted)
            counted.add(task.id)
            if not work.calls:
                rep.tasks_skipped += 1
                bar.update()
                continue
            attempt = attempts.get(task.id, 0)
            self.n_cap = guard.n_cap
            try:
                for hook in list(_HOOK):
                    hook(task.id, attempt)
                body(work)
            except torch.cuda.OutOfMemoryError as exc:
                attempts[task.id] = attempt + 1
                rep.oom_retries += 1
                rep.oom_events.append((task.id, attempt, guard.n_cap))
                self.evict(task.id)
                del work
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if guard.on_oom(task.id) == "retry" or self.split_instead_of_refine(task):
                    queue.appendleft(task)
                    continue
                refined = refine_task(self.plan, task, design=self.refine_design)
                if refined is None:
                    raise torch.cuda.OutOfMemoryError(
                        f"task {task.id} ran out of device memory at n_cap=1 and is too small "
                        f"to refine further; lower memory_budget or free device memory "
                        f"({exc})") from exc
                self.plan, subs = refined
                self.on_refined(task, subs)
                rep.plan = self.plan
                rep.levels = getattr(self.plan, "levels", rep.levels)
                rep.refinements += 1
                rep.refined_tasks.append(task.id)
                self.calibration *= 1.25
                rep.calibration = self.calibration
                queue.extendleft(reversed(subs))
                bar.total += len(subs) - 1
                bar.refresh()
                continue
            self.finish_task(work)
            rep.tasks += 1
            rep.merge_counts[task.id] = rep.merge_counts.get(task.id, 0) + 1
            bar.update()
        self.drain()
        rep.n_cap_final = guard.n_cap
        bar.close()

    def _set_dims(self, q: torch.Tensor, k: torch.Tensor, backward: bool,
                  acc_device_bytes: int) -> None:
        self._dims = {"b": q.shape[0], "h": q.shape[1], "hkv": k.shape[1], "d": q.shape[-1],
                      "dtype": q.dtype, "backward": backward,
                      "acc_device_bytes": acc_device_bytes}

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                home: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        home = q.device if home is None else home
        acc_bytes = accumulator_bytes(q, k, v, backward=False)
        on_dev = self.accumulator_device(home, acc_bytes) == self.device
        self._set_dims(q, k, False, acc_bytes if on_dev and home != self.device else 0)
        return super().forward(q, k, v, home=home)

    def backward(self, dout, q, k, v, out, lse):
        acc_bytes = accumulator_bytes(q, k, v, backward=True)
        on_dev = self.accumulator_device(q.device, acc_bytes) == self.device
        self._set_dims(q, k, True, acc_bytes if on_dev and q.device != self.device else 0)
        return super().backward(dout, q, k, v, out, lse)
