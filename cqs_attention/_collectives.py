"""Collectives and task assignment behind :mod:`cqs_attention.distributed` (see its
docstring): task weights and balanced shares, the options of a process-group call, the
log-sum-exp merge across ranks and the sum of gradients.

>>> from cqs_design.plans import make_plan
>>> shares = assign_tasks(task_pairs(make_plan(70, design=2, causal=True)), 2)
>>> sorted(int(i) for s in shares for i in s) == list(range(7))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cqs_attention.errors import AttentionInputError, PlanMismatchError, RankFailureError
from cqs_design.plans import causal_pairs

__all__ = [
    "DistributedOptions",
    "PlanShard",
    "assign_tasks",
        "collective_merge_",
    "distributed_options",
    "task_pairs",
]

_NO_BUDGET = 2**62


# -- the plan side -------------------------------------------------------------------------
def task_pairs(plan: Any) -> np.ndarray:
    """(query, key) pairs each task of ``plan`` computes (per batch and head), in plan order.

    Causal rectangles count only their allowed pairs; finer masks are ignored (an estimate of
    the work, used to balance ranks).

    >>> from cqs_design.plans import make_plan
    >>> task_pairs(make_plan(7, design=2)).tolist()
    [7, 7, 7, 7, 7, 7, 7]
    """
    off = plan.kv_len - plan.seq_len
    if hasattr(plan, "arrays"):
        a = plan.arrays()
        t = np.asarray(a["task"], dtype=np.int64)
        qs, qe, ks, ke = (np.asarray(a[n], dtype=np.int64)
                          for n in ("q_start", "q_end", "k_start", "k_end"))
        causal = np.asarray(a["kind"]) == 1
        n = len(plan)
    else:
        rows = [(i, r.q_start, r.q_end, r.k_start, r.k_end, r.kind == "causal")
                for i, task in enumerate(plan.tasks) for r in task.rectangles]
        n = len(plan.tasks)
        if not rows:
            return np.zeros(n, dtype=np.int64)
        cols = list(zip(*rows, strict=True))
        t, qs, qe, ks, ke = (np.asarray(c, dtype=np.int64) for c in cols[:5])
        causal = np.asarray(cols[5], dtype=bool)
    area = (qe - qs) * (ke - ks)
    if causal.any():
        area = area.copy()
        area[causal] = causal_pairs(qs[causal], qe[causal], ks[causal], ke[causal], off)
    return np.bincount(t, weights=area.astype(np.float64), minlength=n).astype(np.int64)


def assign_tasks(pairs: Sequence[int] | np.ndarray, world_size: int, *,
                 weights: Sequence[float] | None = None) -> list[np.ndarray]:
    """Split tasks over ``world_size`` ranks, balancing ``pairs / weight`` per rank.

    Longest-processing-time-first greedy (within 4/3 of the best balance), deterministic: every
    rank computes the same assignment. Each rank's task positions come back sorted (plan
    order). ``weights[r]`` is rank ``r``'s relative speed (default all 1).

    >>> [s.tolist() for s in assign_tasks([5, 1, 4, 2], 2)]
    [[0, 1], [2, 3]]
    >>> [s.tolist() for s in assign_tasks([5, 1, 4, 2], 2, weights=[3, 1])]
    [[0, 2], [1, 3]]
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    w = np.ones(world_size) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (world_size,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"weights must be {world_size} positive finite numbers, got {weights!r}")
    p = np.asarray(pairs, dtype=np.int64)
    order = sorted(range(len(p)), key=lambda i: (-int(p[i]), i))
    shares: list[list[int]] = [[] for _ in range(world_size)]
    load = np.zeros(world_size)
    for i in order:
        # the rank whose finish time after taking task i is smallest
        best = min(range(world_size), key=lambda r: ((load[r] + p[i]) / w[r], r))
        shares[best].append(i)
        load[best] += p[i]
    return [np.asarray(sorted(s), dtype=np.int64) for s in shares]


class PlanShard:
    """A view of some tasks of a plan (by position), usable wherever the executor takes a plan.

    >>> from cqs_design.plans import make_plan
    >>> shard = PlanShard(make_plan(7, design=2), [1, 4])
    >>> len(shard), [t.id for t in shard.tasks]
    (2, [1, 4])
    """

    def __init__(self, parent: Any, positions: Sequence[int] | np.ndarray) -> None:
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if isinstance(parent, PlanShard):  # a shard of a shard: positions in the parent's
            pos = parent.positions[pos]
            parent = parent.parent
        self.parent = parent
        self.positions = pos
        for name in ("seq_len", "kv_len", "causal", "window", "design", "levels"):
            setattr(self, name, getattr(self.parent, name, None))

    def __len__(self) -> int:
        return len(self.positions)

    def task(self, index: int) -> Any:
        p = int(self.positions[index])
        if hasattr(self.parent, "task"):
            return self.parent.task(p)
        return self.parent.tasks[p]

    @property
    def tasks(self) -> tuple[Any, ...]:
        return tuple(self.task(i) for i in range(len(self)))

    @property
    def task_ids(self) -> tuple[int, ...]:
        ids = plan_task_ids(self.parent)
        return tuple(ids[int(p)] for p in self.positions)

    def __repr__(self) -> str:
        return f"PlanShard({self.parent!r}, {len(self)} tasks)"



def plan_task_ids(plan: Any) -> tuple[int, ...]:
    """Task ids of ``plan`` (or a :class:`PlanShard`) in plan order."""
    if isinstance(plan, PlanShard):
        return plan.task_ids
    if hasattr(plan, "task_ids"):
        return tuple(plan.task_ids)
    return tuple(t.id for t in plan.tasks)


# -- collectives ---------------------------------------------------------------------------
def _comm_device(group: Any) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def collective_merge_(acc_out: torch.Tensor, acc_lse: torch.Tensor, *, group: Any = None,
                      dst: int | None = None) -> None:
    """Merge every rank's partial ``(acc_out, acc_lse)`` in place (log-sum-exp space).

    One ``all_reduce(MAX)`` of ``lse`` (B, H, L) and one ``all_reduce(SUM)`` (or ``reduce`` to
    group rank ``dst``) of ``[out * w, w]`` (B, H, L, D+1), ``w = exp(lse - max)``, in the
    accumulators' dtype. Rows with ``lse = -inf`` on every rank end with 0 / ``-inf``. With
    ``dst``, the other ranks' tensors hold unspecified values afterwards.
    """
    dev = _comm_device(group)
    lse = acc_lse.to(dev)
    m = lse.clone()
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    empty = torch.isneginf(m)
    safe = torch.where(empty, torch.zeros_like(m), m)
    w = torch.exp(lse - safe)  # 0 where this rank has nothing for the row
    packed = torch.cat([acc_out.to(dev) * w.unsqueeze(-1), w.unsqueeze(-1)], dim=-1)
    if dst is None:
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    else:
        dist.reduce(packed, dst=dist.get_global_rank(group, dst) if group is not None
                    else dst, op=dist.ReduceOp.SUM, group=group)
    den = packed[..., -1]
    has = den > 0
    out = torch.where(has.unsqueeze(-1), packed[..., :-1] / torch.where(
        has, den, torch.ones_like(den)).unsqueeze(-1), torch.zeros_like(packed[..., :-1]))
    new_lse = torch.where(has, m + torch.log(torch.where(has, den, torch.ones_like(den))),
                          torch.full_like(m, float("-inf")))
    acc_out.copy_(out)
    acc_lse.copy_(new_lse)


def _all_reduce_sum_(tensors: Sequence[torch.Tensor], group: Any) -> None:
    dev = _comm_device(group)
    for t in tensors:
        c = t.to(dev)
        dist.all_reduce(c, op=dist.ReduceOp.SUM, group=group)
        if c.data_ptr() != t.data_ptr():
            t.copy_(c)


# -- options and the executor mixin --------------------------------------------------------
@dataclass
class DistributedOptions:
    """How one :func:`cqs_attention.attention` call is spread over a process group."""

    group: Any
    rank: int
    world_size: int
    dst: int | None = None
    weight: float = 1.0
    _weights: list[float] | None = field(default=None, repr=False)

    @property
    def is_destination(self) -> bool:
        """True when this rank receives the result."""
        return self.dst is None or self.dst == self.rank

    def _tensor(self, values: Sequence[float | int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(list(values), dtype=dtype, device=_comm_device(self.group))

    def shared_budget(self, budget: int | None) -> int | None:
        """The smallest budget over all ranks (None where no rank has one); also gathers
        the per-rank weights (same collective)."""
        t = self._tensor([_NO_BUDGET if budget is None else budget], torch.int64)
        guarded("budget", self.rank, dist.all_reduce, t, op=dist.ReduceOp.MIN,
                group=self.group)
        low = int(t.item())
        return None if low >= _NO_BUDGET else low

    def check_same(self, plan: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Raise :class:`PlanMismatchError` (on every rank) unless all ranks have the same
        plan and input shapes/dtypes; gathers the per-rank weights."""
        from cqs_attention.checkpoint import plan_digest

        key = f"{plan_digest(plan)}|{tuple(q.shape)}|{tuple(k.shape)}|{tuple(v.shape)}|{q.dtype}"
        h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "big")
        t = self._tensor([h, -h], torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        ws = self._tensor([0.0] * self.world_size, torch.float64)
        ws[self.rank] = self.weight
        dist.all_reduce(ws, op=dist.ReduceOp.SUM, group=self.group)
        self._weights = ws.tolist()
        if int(t[0]) != h or int(-t[1]) != h:
            raise PlanMismatchError(
                f"rank {self.rank}: the ranks of the process group disagree on the plan or on "
                f"the q/k/v shapes and dtype (this rank: plan {plan!r}, q {tuple(q.shape)}, "
                f"k {tuple(k.shape)}, {q.dtype}); every rank must call attention with the "
                "same shapes, mask and plan")

    def positions(self, plan: Any) -> np.ndarray:
        """Positions of the tasks this rank runs."""
        return assign_tasks(task_pairs(plan), self.world_size, weights=self._weights
                            )[self.rank]

    def agree(self, ok: bool, message: str) -> None:
        """One collective so that every rank takes the same decision: raise
        :class:`~cqs_attention.errors.MemoryBudgetError` on EVERY rank when any rank is not
        ``ok`` (the message names the ranks that were not), before any work starts."""
        from cqs_attention.errors import MemoryBudgetError

        flags = self._tensor([0] * self.world_size, torch.int64)
        flags[self.rank] = 0 if ok else 1
        guarded("feasibility", self.rank, dist.all_reduce, flags, op=dist.ReduceOp.SUM,
                group=self.group)
        bad = [r for r, f in enumerate(flags.tolist()) if f]
        if bad:
            raise MemoryBudgetError(f"rank {self.rank}: ranks {bad} of the process group cannot "
                                    f"run this call ({message if not ok else 'see their error'}"
                                    "); no rank started any work")


def distributed_options(process_group: Any, dst: Any, *, needs_grad: bool = False,
                        weight: float | None = None) -> DistributedOptions:
    """Validate ``process_group`` / ``dst`` (as passed to :func:`cqs_attention.attention`).

    ``process_group=None`` with a ``dst`` means the default (world) group.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise AttentionInputError(
            "process_group/dst need torch.distributed initialised (dist.init_process_group, "
            "e.g. under torchrun); got an uninitialised default group")
    group = process_group
    try:
        rank = dist.get_rank(group)
        world = dist.get_world_size(group)
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise AttentionInputError(f"process_group={process_group!r} is not a torch.distributed "
                                  "process group this rank belongs to") from exc
    if rank < 0:
        raise AttentionInputError("this rank is not a member of process_group")
    if dst is not None and (isinstance(dst, bool) or not isinstance(dst, int)
                            or not 0 <= dst < world):
        raise AttentionInputError(f"dst must be None or a rank of the group in [0, {world}), "
                                  f"got {dst!r}")
    if dst is not None and needs_grad:
        raise AttentionInputError("dst= cannot be used when q, k or v require grad: backward "
                                  "needs the global output on every rank; pass dst=None")
    if weight is None:
        weight = _WEIGHT_OVERRIDE[-1] if _WEIGHT_OVERRIDE else 1.0
    try:
        w = float(weight)
    except (TypeError, ValueError):
        w = float("nan")
    if isinstance(weight, bool) or not (np.isfinite(w) and w > 0):
        raise AttentionInputError(f"rank_weight must be a positive finite number, got {weight!r}")
    return DistributedOptions(group=group, rank=rank, world_size=world, dst=dst, weight=w)


# rank_weight of the distributed.attention call in progress (api.attention has no such argument)
_WEIGHT_OVERRIDE: list[float] = []


def guarded(what: str, rank: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a collective; a failure (a peer that died or timed out) becomes a
    :class:`~cqs_attention.errors.RankFailureError` naming this rank and the collective."""
    try:
        return fn(*args, **kwargs)
    except RankFailureError:
        raise
    except (RuntimeError, ConnectionError, OSError) as exc:
        raise RankFailureError(
            f"rank {rank}: the {what} collective failed, so another rank of the process group "
            f"died, was killed or timed out before reaching it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); this rank's partial results are "
            "discarded") from exc
