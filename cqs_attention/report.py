"""The run report: what the last :func:`cqs_attention.attention` call (or its backward) did.

>>> from cqs_attention.report import RunReport
>>> r = RunReport(direction="forward")
>>> r.count_call("reference", lq=4, lk=8); r.kernel_calls
{'reference': 1}
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PLAN_FIELDS", "ReportSlot", "RunReport", "current_slot", "fill_plan_summary",
           "last_run_stats"]


@dataclass
class RunReport:
    """Counters and timings of one executor run.

    Attributes
    ----------
    direction
        ``"forward"`` or ``"backward"``.
    plan
        The :class:`cqs_design.plans.Plan` executed; ``plan_source`` says how it was chosen:
        ``"given"`` (passed as ``plan=``, a Plan or a design), or the planner's pick
        (``"whole"``, ``"query_blocks"``, ``"kv_blocks"``, ``"cqs"``), with
        ``" (80% of free device memory)"`` appended when that default budget applied.
    design_v, design_k, levels
        The CQS design of the plan (``v``, ``k`` and the nesting levels); None for plans
        without one (a single call, query blocks, key/value blocks).
    device, accumulator_device
        Where kernels ran, and where the float32 accumulators lived.
    tasks, tasks_skipped
        Tasks run, and tasks the mask emptied entirely.
    blocks_full, blocks_partial, blocks_empty
        Plan rectangles by classification; empty ones are never computed.
    pairs_computed
        (query, key) token pairs handed to kernels (per batch and head).
    kernel_calls
        Kernel name -> number of calls.
    bytes_to_device, bytes_from_device
        Bytes staged onto / copied back from the compute device (0 when data already there).
    task_bytes_estimate, memory_budget
        The footprint model's bound on the device bytes the run holds at once, and the budget
        (None: unbounded).
    peak_device_bytes
        The measured peak: ``torch.cuda.max_memory_allocated`` during the run minus the bytes
        allocated when it started, on CUDA; None on the CPU, where it is not measured.
    oom_retries
        Out-of-memory errors caught (each failed step retried or split; every kernel call
        still merged exactly once).
    oom_events
        ``(task_id, attempt)`` of every out-of-memory error caught.
    refinements
        Steps split after an out-of-memory error (into two steps covering the same pairs).
    timings
        Seconds per stage: ``"classify"``, ``"checkpoint"``, ``"collective"``, ``"total"``.
    profile
        Seconds per stage of a streamed run measured on the host (``"host_copy"``: pageable
        rows copied through pinned staging).
    schedule, accumulators, prefetch, chosen_because
        What the planner chose (:func:`cqs_attention.engine.placement.choose`): the plan's
        schedule (``"whole"``, ``"query_blocks"``, ``"kv_blocks"``, ``"cqs"``, ``"given"``),
        where the accumulators lived (``"none"``, ``"device"``, ``"host"``), whether the next
        step's rows were prefetched, and why.
    predicted_seconds
        The cost model's prediction for the run (compare with ``timings["total"]``).
    """

    direction: str = "forward"
    plan: Any = None
    plan_source: str = ""
    design_v: int | None = None
    design_k: int | None = None
    levels: int | None = None
    device: str = ""
    accumulator_device: str = ""
    tasks: int = 0
    tasks_skipped: int = 0
    blocks_full: int = 0
    blocks_partial: int = 0
    blocks_empty: int = 0
    pairs_computed: int = 0
    kernel_calls: dict[str, int] = field(default_factory=dict)
    bytes_to_device: int = 0
    bytes_from_device: int = 0
    task_bytes_estimate: int = 0
    memory_budget: int | None = None
    peak_device_bytes: int | None = None
    oom_retries: int = 0
    oom_events: list[tuple[int, int]] = field(default_factory=list)
    refinements: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    profile: dict[str, float] = field(default_factory=dict)
    schedule: str = ""
    accumulators: str = ""
    prefetch: bool = False
    chosen_because: str = ""
    predicted_seconds: float = 0.0

    def fresh_copy(self) -> RunReport:
        """A report for another run of the same choice: the plan summary copied, every
        counter and timing new (a repeated call reports its own run, never the first's).

        >>> r = RunReport(schedule="whole", oom_retries=3)
        >>> c = r.fresh_copy(); c.schedule, c.oom_retries
        ('whole', 0)
        """
        return RunReport(direction=self.direction,
                         **{name: getattr(self, name) for name in PLAN_FIELDS})

    def count_call(self, kernel: str, *, lq: int, lk: int) -> None:
        self.kernel_calls[kernel] = self.kernel_calls.get(kernel, 0) + 1
        self.pairs_computed += lq * lk

    def add_time(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def add_profile(self, stage: str, seconds: float) -> None:
        self.profile[stage] = self.profile.get(stage, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the plan is summarised, not embedded)."""
        d = asdict(self) if self.plan is None else {
            **{k: v for k, v in self.__dict__.items() if k != "plan"}, "plan": None}
        d["plan"] = None if self.plan is None else repr(self.plan)[:200]
        return d


#: the fields describing what was chosen (the rest are the run's own counters and timings)
PLAN_FIELDS = ("plan", "plan_source", "design_v", "design_k", "levels", "memory_budget",
               "schedule", "accumulators", "prefetch", "chosen_because", "predicted_seconds",
               "task_bytes_estimate")



def fill_plan_summary(report: RunReport, choice: Any, *, given: bool,
                      default_budget: bool = False) -> None:
    """Write the plan summary of a planner ``choice``
    (:class:`~cqs_attention.engine.placement.Choice`) into ``report``: the plan, how it was
    chosen, its CQS design (None for other schedules), placement and prediction."""
    p = choice.plan
    report.plan = p
    sched = getattr(p, "schedule", "cqs")
    report.plan_source = "given" if given else choice.kind
    if default_budget:
        report.plan_source += " (80% of free device memory)"
    report.schedule = choice.kind if not given else f"given {sched}"
    ds = getattr(p, "design", None) if sched == "cqs" else None
    report.design_v = None if ds is None else ds.v
    report.design_k = None if ds is None else ds.k
    report.levels = None if ds is None else getattr(p, "levels", 1)
    report.accumulators = choice.accumulators
    report.prefetch = choice.prefetch
    report.chosen_because = choice.reason
    report.predicted_seconds = choice.predicted_s
    report.task_bytes_estimate = choice.footprint


_LOCAL = threading.local()


class ReportSlot:
    """Where the reports of one thread's runs land (see :func:`current_slot`)."""

    report: RunReport | None = None


def current_slot() -> ReportSlot:
    """This thread's report slot. The autograd function keeps the slot of the thread that ran
    the forward, so the backward (which CUDA autograd runs on a worker thread of its own)
    reports to the thread that called ``backward()``."""
    slot = getattr(_LOCAL, "slot", None)
    if slot is None:
        slot = _LOCAL.slot = ReportSlot()
    return slot


def _set_last(report: RunReport, slot: ReportSlot | None = None) -> None:
    (current_slot() if slot is None else slot).report = report


def last_run_stats() -> RunReport | None:
    """The report of the most recent run started from this thread (forward, or the backward
    of a forward run from this thread), or None.

    >>> import torch, cqs_attention
    >>> q = torch.randn(1, 1, 20, 4)
    >>> _ = cqs_attention.attention(q, q, q, causal=True)
    >>> r = cqs_attention.last_run_stats(); r.direction, r.tasks > 0
    ('forward', True)
    """
    return current_slot().report
