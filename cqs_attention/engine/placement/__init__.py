"""Placement: every decision made before a call's first kernel call, in one package.

* :mod:`~cqs_attention.engine.placement.footprint`: the ONE footprint model (the device bytes a
  run of a plan holds at once);
* :mod:`~cqs_attention.engine.placement.cost`: the ONE cost model (a run's predicted seconds,
  from rates calibrated once per device);
* :mod:`~cqs_attention.engine.placement.choice`: the ONE budget search (:func:`choose`: the
  schedule, its granularity, where accumulators live and whether to prefetch);
* :mod:`~cqs_attention.engine.placement.call`: a call's plan (:func:`plan_call`: the budget in
  force, both directions' choices, the kernel of every kind of call, one-task steps) and the
  re-plan after a single call runs out of memory;
* :mod:`~cqs_attention.engine.placement.decisions`: the one cache of these decisions
  (:data:`DECISIONS`);
* :mod:`~cqs_attention.engine.placement.traffic`: the lower bound on the bytes any schedule
  under a budget moves (:func:`min_link_bytes`; what the benchmark's ``ratio_to_bound``
  divides by the link's bandwidth).

>>> import torch
>>> dims = Dims(batch=1, heads=2, kv_heads=2, q_len=64, kv_len=64, head_dim=8,
...             dtype=torch.float32)
>>> choose(dims, budget=None, streamed=False, backward=False, causal=True,
...        window=None).accumulators
'none'
"""

from __future__ import annotations

from cqs_attention.engine.placement.call import (
    CATEGORY_PROBES,
    DEFAULT_BUDGET_FRACTION,
    OneTaskSteps,
    Planned,
    call_budget,
    check_unmasked_kernel,
    choose_for,
    choose_kernel,
    plan_call,
    plan_kernels,
    replan_with_accumulators,
    streams_rows,
    summarize,
)
from cqs_attention.engine.placement.choice import (
    FORCE,
    GRANULE,
    MAX_BLOCK_PAIRS,
    MAX_SCAN_RECTANGLES,
    SINGER_ORDERS,
    Choice,
    _describe,
    choose,
)
from cqs_attention.engine.placement.cost import (
    CALIBRATION_BYTES,
    CostModel,
    allowed_pairs,
    calibrate,
    predict,
)
from cqs_attention.engine.placement.decisions import DECISIONS, DecisionCache
from cqs_attention.engine.placement.footprint import (
    MERGE_TEMPS,
    SLAB_BYTES,
    SLACK_BYTES,
    SLACK_FRACTION,
    Dims,
    call_memory,
    conversion_slab_bytes,
    footprint,
)
from cqs_attention.engine.placement.traffic import LinkBound, min_link_bytes

__all__ = [
    "CALIBRATION_BYTES",
    "CATEGORY_PROBES",
    "DECISIONS",
    "DEFAULT_BUDGET_FRACTION",
    "FORCE",
    "GRANULE",
    "MAX_BLOCK_PAIRS",
    "MAX_SCAN_RECTANGLES",
    "MERGE_TEMPS",
    "SINGER_ORDERS",
    "SLAB_BYTES",
    "SLACK_BYTES",
    "SLACK_FRACTION",
    "Choice",
    "CostModel",
    "DecisionCache",
    "Dims",
    "LinkBound",
    "OneTaskSteps",
    "Planned",
    "_describe",
    "allowed_pairs",
    "calibrate",
    "call_budget",
    "call_memory",
    "check_unmasked_kernel",
    "choose",
    "choose_for",
    "choose_kernel",
    "conversion_slab_bytes",
    "footprint",
    "min_link_bytes",
    "plan_call",
    "plan_kernels",
    "predict",
    "replan_with_accumulators",
    "streams_rows",
    "summarize",
]
