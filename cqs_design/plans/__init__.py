"""Decomposition plans: which task computes which part of the attention matrix.

The public names live here (``from cqs_design.plans import make_plan, Plan, ...``); the
modules, each importing only those listed before it:

* :mod:`~cqs_design.plans.mask`      -- the causal / sliding-window mask in closed form
* :mod:`~cqs_design.plans.check`     -- the vectorised proof of exact cover
* :mod:`~cqs_design.plans.intervals` -- per-task interval arithmetic (segments, causal pairs)
* :mod:`~cqs_design.plans.design`    -- :class:`PlanError`, argument checks, the design choice
  and the size estimates that keep plans bounded
* :mod:`~cqs_design.plans.build`     -- numpy builders: CQS levels, blocks, subdivision
* :mod:`~cqs_design.plans.serialize` -- JSON out and (untrusted) JSON in
* :mod:`~cqs_design.plans.plan`      -- :class:`Plan`, :class:`Task`, :class:`Rect` and
  :func:`make_plan`

>>> plan = make_plan(4096, max_task_tokens=1024)
>>> plan.design.v, plan.validate() is plan
(21, True)
"""

from cqs_design.plans.build import MAX_BLOCKS, MAX_RECTANGLES
from cqs_design.plans.design import (
    DEFAULT_MAX_CHUNKS,
    DEFAULT_MAX_RECTANGLES,
    DEFAULT_MAX_REFINED_RECTANGLES,
    MAX_CHUNKS,
    MAX_REFINED_RECTANGLES,
    MAX_TOKENS,
    PlanError,
    _singer,
    estimate_rectangles,
    largest_usable_q,
)
from cqs_design.plans.intervals import causal_pairs
from cqs_design.plans.plan import (
    DEFAULT_MAX_TASK_TOKENS,
    SCHEDULES,
    Plan,
    PlanStats,
    Rect,
    Schedule,
    Task,
    make_plan,
)
from cqs_design.plans.serialize import SCHEMA

__all__ = [
    "DEFAULT_MAX_CHUNKS",
    "DEFAULT_MAX_RECTANGLES",
    "DEFAULT_MAX_REFINED_RECTANGLES",
    "DEFAULT_MAX_TASK_TOKENS",
    "MAX_BLOCKS",
    "MAX_CHUNKS",
    "MAX_RECTANGLES",
    "MAX_REFINED_RECTANGLES",
    "MAX_TOKENS",
    "SCHEDULES",
    "SCHEMA",
    "Plan",
    "PlanError",
    "PlanStats",
    "Rect",
    "Schedule",
    "Task",
    "causal_pairs",
    "estimate_rectangles",
    "largest_usable_q",
    "make_plan",
]

_ = _singer  # re-exported (private) for cqs_design.strategies and the benchmarks
