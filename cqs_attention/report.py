"""The run report: what the last :func:`cqs_attention.attention` call (or its backward) did.

A :class:`RunReport` joins two parts with different owners:

* a :class:`PlanSummary`: what the planner chose and why, built once from its choice
  (:func:`cqs_attention.engine.placement.plan_call`) and shared, read-only, by every run of
  that decision;
* :class:`RunCounters`: the counters and timings of this run alone, written only by the
  engine (the driver, the transport, the compute and the run wiring), through its methods.

Every field of both is readable on the report itself under its own name (``rep.schedule``,
``rep.kernel_calls``), and :meth:`RunReport.to_dict` flattens them for JSON.

>>> from cqs_attention.report import RunCounters, RunReport
>>> c = RunCounters()
>>> c.count_call("reference", lq=4, lk=8); c.kernel_calls, c.pairs_computed
({'reference': 1}, 32)
>>> r = RunReport(direction="forward", counters=c)
>>> r.kernel_calls, r.schedule
({'reference': 1}, '')
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["PlanSummary", "ReportSlot", "RunCounters", "RunReport", "current_slot",
           "last_run_stats", "set_last"]


@dataclass(frozen=True)
class PlanSummary:
    """What the planner chose for one direction of a call (read-only; see :class:`RunReport`
    for the meaning of each field)."""

    plan: Any = None
    plan_source: str = ""
    schedule: str = ""
    design_v: int | None = None
    design_k: int | None = None
    levels: int | None = None
    accumulators: str = ""
    prefetch: bool = False
    chosen_because: str = ""
    predicted_seconds: float = 0.0
    task_bytes_estimate: int = 0


@dataclass(slots=True)
class RunCounters:
    """Counters and timings of one run, owned by the engine (see :class:`RunReport`)."""

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
    peak_device_bytes: int | None = None
    oom_retries: int = 0
    oom_events: list[tuple[int, int]] = field(default_factory=list)
    refinements: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    profile: dict[str, float] = field(default_factory=dict)

    def count_call(self, kernel: str, *, lq: int, lk: int) -> None:
        """One kernel call of ``lq`` query rows against ``lk`` keys."""
        self.kernel_calls[kernel] = self.kernel_calls.get(kernel, 0) + 1
        self.pairs_computed += lq * lk

    def count_blocks(self, counts: dict[str, int]) -> None:
        """Blocks classified ``"full"``, ``"partial"`` and ``"empty"``."""
        self.blocks_full += counts.get("full", 0)
        self.blocks_partial += counts.get("partial", 0)
        self.blocks_empty += counts.get("empty", 0)

    def discard_plan(self) -> None:
        """Forget the tasks and blocks of a plan the run abandoned (a single call switched to
        accumulators); its out-of-memory errors, bytes and timings stay counted."""
        self.tasks = self.tasks_skipped = 0
        self.blocks_full = self.blocks_partial = self.blocks_empty = 0

    def count_oom(self, task_id: int, attempt: int) -> None:
        """An out-of-memory error caught in a step of task ``task_id``."""
        self.oom_retries += 1
        self.oom_events.append((task_id, attempt))

    def add_bytes_to_device(self, n: int) -> None:
        self.bytes_to_device += n

    def add_bytes_from_device(self, n: int) -> None:
        self.bytes_from_device += n

    def add_time(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def add_profile(self, stage: str, seconds: float) -> None:
        self.profile[stage] = self.profile.get(stage, 0.0) + seconds


_SUMMARY = tuple(f.name for f in fields(PlanSummary))
_COUNTERS = tuple(f.name for f in fields(RunCounters))


@dataclass(slots=True)
class RunReport:
    """What one run did: the planner's :class:`PlanSummary` and the engine's
    :class:`RunCounters`, readable here field by field.

    Attributes
    ----------
    direction
        ``"forward"`` or ``"backward"``.
    device
        Where the kernels ran (``"cpu"``, ``"cuda:0"``).
    memory_budget
        The device memory budget in force in bytes (the one passed, or on CUDA without one
        80% of the free device memory; the smallest over the ranks of a distributed run);
        None: unbounded.
    plan
        The :class:`cqs_design.plans.Plan` executed.
    plan_source
        How it was chosen: ``"given"`` (passed as ``plan=``, a Plan or a design), the
        planner's pick (``"whole"``, ``"query_blocks"``, ``"kv_blocks"``, ``"cqs"``), or
        ``"none (empty sequence)"``; ``" (80% of free device memory)"`` is appended when that
        default budget applied.
    schedule
        The planner's pick (``"whole"``, ``"query_blocks"``, ``"kv_blocks"``, ``"cqs"``), or
        ``"given <schedule>"`` for a given plan (``"given cqs"``, ``"given query_blocks"``, ...).
    design_v, design_k, levels
        The CQS design of the plan (``v``, ``k`` and the nesting levels); None for plans
        without one (a single call, query blocks, key/value blocks).
    accumulators, prefetch, chosen_because
        Where the planner put the accumulators (``"none"``: one kernel call, ``"device"``,
        ``"host"``), whether the next step's rows are prefetched, and why.
    predicted_seconds
        The cost model's prediction for the run (compare with ``timings["total"]``).
    task_bytes_estimate
        The footprint model's bound on the device bytes the run holds at once.
    accumulator_device
        Where the accumulators lived in this run.
    tasks, tasks_skipped
        Tasks run, and tasks the mask emptied entirely.
    blocks_full, blocks_partial, blocks_empty
        Plan rectangles by classification; empty ones are never computed.
    pairs_computed
        (query, key) token pairs handed to kernels (per batch and head).
    kernel_calls
        Kernel name -> number of calls.
    bytes_to_device, bytes_from_device
        Bytes staged onto / copied back from the compute device (0 when data already there);
        a streamed run's results that leave the device whole (one call's outputs, gradients
        or accumulators kept on the device) are counted in the dtype they arrive in.
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
    """

    direction: str = "forward"
    summary: PlanSummary = field(default_factory=PlanSummary)
    counters: RunCounters = field(default_factory=RunCounters)
    device: str = ""
    memory_budget: int | None = None

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not attributes of the report itself
        if name in _SUMMARY:
            return getattr(self.summary, name)
        if name in _COUNTERS:
            return getattr(self.counters, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-friendly dict of every field (the plan is summarised, not embedded).

        >>> sorted(RunReport().to_dict())[:4]
        ['accumulator_device', 'accumulators', 'blocks_empty', 'blocks_full']
        """
        d: dict[str, Any] = {"direction": self.direction, "device": self.device,
                             "memory_budget": self.memory_budget}
        d.update({name: getattr(self.summary, name) for name in _SUMMARY})
        d.update(asdict(self.counters))
        d["plan"] = None if self.summary.plan is None else repr(self.summary.plan)[:200]
        return d


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


def set_last(report: RunReport, slot: ReportSlot | None = None) -> None:
    """Make ``report`` what :func:`last_run_stats` returns (in ``slot``, default this
    thread's)."""
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
