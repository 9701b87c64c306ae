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

__all__ = ["RunReport", "last_run_stats"]


@dataclass
class RunReport:
    """Counters and timings of one executor run.

    Attributes
    ----------
    direction
        ``"forward"`` or ``"backward"``.
    plan
        The :class:`cqs_design.plans.Plan` executed; ``plan_source`` says how it was chosen:
        ``"given"``, ``"design"`` (built from a design passed as ``plan=``), ``"budget"``
        (smallest-task plan search under ``memory_budget``) or ``"default"``.
    design_v, design_k, levels
        Summary of the plan's design.
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
        Estimated device bytes of the largest task, and the budget (None: unbounded).
    peak_device_bytes
        ``torch.cuda.max_memory_allocated`` delta on CUDA, else the estimate.
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
    design_v: int = 0
    design_k: int = 0
    levels: int = 0
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
    peak_device_bytes: int = 0
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


_LOCAL = threading.local()


def _set_last(report: RunReport) -> None:
    _LOCAL.last = report


def last_run_stats() -> RunReport | None:
    """The report of the most recent run in this thread (forward or backward), or None.

    >>> import torch, cqs_attention
    >>> q = torch.randn(1, 1, 20, 4)
    >>> _ = cqs_attention.attention(q, q, q, causal=True)
    >>> r = cqs_attention.last_run_stats(); r.direction, r.tasks > 0
    ('forward', True)
    """
    return getattr(_LOCAL, "last", None)
