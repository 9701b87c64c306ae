"""Attention over several processes: each rank runs a share of the plan's tasks.

CQS tasks are independent, so ``N`` ranks (GPUs, or CPU processes with gloo) split one
attention without exchanging anything until the end:

1. Every rank resolves the SAME plan (when the plan is chosen from a memory budget, from the
   smallest budget of all ranks, so every task fits every rank), checks with one collective
   that all ranks agree on the plan and the input shapes, and with one more that every rank
   can run it (otherwise EVERY rank raises, before any work: no rank waits for another that
   gave up).
2. :func:`assign_tasks` gives each rank a disjoint set of tasks, balanced by the number of
   (query, key) pairs each task computes (optionally weighted by a per-rank speed).
3. Each rank runs its tasks with the engine (streaming, OOM guard and checkpoints included)
   into float32 accumulators ``(out_r, lse_r)``.
4. :func:`collective_merge_` merges in log-sum-exp space with two collectives:
   ``m = all_reduce_MAX(lse_r)``, then ``all_reduce_SUM([out_r * w_r, w_r])`` with
   ``w_r = exp(lse_r - m)``; ``out = num / den``, ``lse = m + log(den)``. Rows no rank can
   attend stay ``out = 0``, ``lse = -inf``.

Backward: every rank gets the global ``out``/``lse``, computes its tasks' exact partial
``dq, dk, dv`` and one ``all_reduce_SUM`` adds them up.

>>> import torch
>>> from cqs_design.plans import make_plan
>>> pairs = task_pairs(make_plan(70, design=2, causal=True))
>>> shares = assign_tasks(pairs, 2)
>>> sorted(int(i) for s in shares for i in s) == list(range(7))
True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from cqs_attention import api
from cqs_attention._collectives import (
    _WEIGHT_OVERRIDE,
    DistributedOptions,
    PlanShard,
    assign_tasks,
    collective_merge_,
    distributed_options,
    task_pairs,
)

__all__ = [
    "DistributedOptions",
    "PlanShard",
    "assign_tasks",
    "attention",
    "collective_merge_",
    "distributed_options",
    "task_pairs",
]


def attention(q: Any, k: Any, v: Any, *, process_group: Any = None, dst: int | None = None,
              rank_weight: float = 1.0, **kwargs: Any
              ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`cqs_attention.attention` spread over the ranks of ``process_group``.

    Parameters
    ----------
    q, k, v, **kwargs
        As for :func:`cqs_attention.attention`; every rank passes the same shapes, mask and
        plan (``memory_budget`` may differ per rank: the plan is chosen from the smallest).
    process_group
        A ``torch.distributed`` group; None: the default (world) group, which must be
        initialised (``dist.init_process_group``, e.g. under ``torchrun``).
    dst
        None: every rank gets the result. A rank of the group: only it does; the others
        return None (no autograd then).
    rank_weight
        This rank's relative speed; tasks are balanced by ``pairs / weight``.

    Returns
    -------
    out, ``(out, lse)`` or None
        As :func:`cqs_attention.attention`; differentiable (backward runs distributed too).

    Needs ``dist.init_process_group`` first (e.g. under torchrun):

    >>> q = torch.randn(1, 2, 30, 8)
    >>> out = attention(q, q, q, causal=True)  # doctest: +SKIP
    """
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in (q, k, v))
    # validate here (clear errors before any work); api.attention rebuilds the same options
    opts = distributed_options(process_group, dst, needs_grad=needs_grad, weight=rank_weight)
    group = dist.group.WORLD if process_group is None else process_group
    _WEIGHT_OVERRIDE.append(opts.weight)
    try:
        return api.attention(q, k, v, process_group=group, dst=dst, **kwargs)
    finally:
        _WEIGHT_OVERRIDE.pop()


