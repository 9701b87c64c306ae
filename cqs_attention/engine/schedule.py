"""Schedule: a plan (any schedule: CQS tasks, query blocks, key/value blocks, a rank's shard, a
refined task) turned into *steps*, the units the driver stages, computes and merges.

A **step** holds one *query side* (rows ``q_rows``: the query-side inputs and the accumulator
rows of those queries) and one *key/value side* (rows ``kv_rows``), and a few kernel
:class:`Call` s between them. Every step belongs to one plan task; a task is *committed* (the
point checkpointing and distributed reduction rely on) once all its steps are merged.

Which side stays put within a task follows the plan's schedule:

* ``"kv"`` (CQS tasks, key/value blocks, every backward): the task's key/value rows are staged
  once; each step is one elementary query range of the task (ranges that partly overlap are cut
  into disjoint pieces, so no two steps of a task write the same accumulator row).
* ``"q"`` (query blocks): the task's query rows and accumulator rows stay; each step is one key
  range (a key/value block) streaming by.

Calls: per query range, every fully allowed key range is concatenated into ONE unmasked call
(with the causal diagonal block appended through a shifted ``causal_offset`` when possible), and
the remaining partial blocks form one masked call (:meth:`MaskSpec.classify`). Each call has a
unique ``id``; the accumulators record merged ids, so a call is merged exactly once however
often its step is retried or split (:func:`split_call`).

>>> from cqs_design.plans import make_plan
>>> from cqs_attention.masks import make_mask_spec
>>> plan = make_plan(14, design=2, causal=True)
>>> spec = make_mask_spec(14, 14, batch=1, heads=1, causal=True)
>>> rects = plan_rectangles(plan)
>>> steps = task_steps(rects, 0, spec, stationary="kv")
>>> [(s.q_rows, len(s.calls)) for s in steps], steps[0].kv_rows
([(((0, 2),), 1), (((2, 4),), 1), (((6, 8),), 1)], ((0, 4),))
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from cqs_attention.kernels.base import BlockMask, block_mask_tensor
from cqs_attention.masks import MaskSpec
from cqs_design.plans.intervals import merge_ranges

__all__ = [
    "Call",
    "PlanRects",
    "Step",
    "mask_categories",
    "merge_ranges",
    "plan_rectangles",
    "split_call",
    "stationary_side",
    "task_steps",
]

Range = tuple[int, int]
_IDS = itertools.count()


@dataclass(slots=True)
class Call:
    """One kernel call: query rows ``[q0, q1)`` against the concatenation of ``key_ranges``
    (global coordinates), under ``mask`` in the call's local coordinates."""

    q0: int
    q1: int
    key_ranges: tuple[Range, ...]
    mask: BlockMask | None = None
    id: int = field(default_factory=lambda: next(_IDS))

    @property
    def lk(self) -> int:
        ranges = self.key_ranges
        if len(ranges) == 1:
            return ranges[0][1] - ranges[0][0]
        return sum(e - s for s, e in ranges)

    @property
    def lq(self) -> int:
        return self.q1 - self.q0


@dataclass(slots=True)
class Step:
    """Calls sharing one query side and one key/value side, inside plan task ``task_id``."""

    task_id: int
    q_rows: tuple[Range, ...]
    kv_rows: tuple[Range, ...]
    calls: list[Call]
    #: out-of-memory errors of this step, of the steps it was split from, and the axis
    #: ("q" or "k") its lineage was last split along (see engine.guard)
    failures: int = 0
    lineage: int = 0
    last_split: str | None = None


@dataclass
class PlanRects:
    """A plan's rectangles as int64 arrays grouped by task (CSR over ``ptr``), in plan order.

    ``ids[i]`` is the id of the ``i``-th task; its rectangles are ``ptr[i]:ptr[i+1]`` of
    ``q0, q1, k0, k1``.
    """

    ids: np.ndarray
    ptr: np.ndarray
    q0: np.ndarray
    q1: np.ndarray
    k0: np.ndarray
    k1: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def task(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s, e = int(self.ptr[i]), int(self.ptr[i + 1])
        return self.q0[s:e], self.q1[s:e], self.k0[s:e], self.k1[s:e]


def plan_rectangles(plan: Any) -> PlanRects:
    """:class:`PlanRects` of a :class:`cqs_design.plans.Plan` (vectorised) or of any object with
    ``tasks`` whose items have ``id`` and ``rectangles`` (``q_start, q_end, k_start, k_end``).

    >>> from cqs_design.plans import make_plan
    >>> r = plan_rectangles(make_plan(7, design=2)); len(r), int(r.ptr[-1])
    (7, 49)
    """
    if hasattr(plan, "arrays") and hasattr(plan, "task_ids"):
        a = plan.arrays()
        task = np.asarray(a["task"], dtype=np.int64)
        order = np.argsort(task, kind="stable")
        n = len(plan)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(task, minlength=n))]).astype(np.int64)
        cols = [np.asarray(a[c], dtype=np.int64)[order]
                for c in ("q_start", "q_end", "k_start", "k_end")]
        return PlanRects(np.asarray(plan.task_ids, dtype=np.int64), ptr, *cols)
    tasks = list(plan.tasks)
    ids = np.asarray([t.id for t in tasks], dtype=np.int64)
    rows = [(r.q_start, r.q_end, r.k_start, r.k_end) for t in tasks for r in t.rectangles]
    counts = [len(t.rectangles) for t in tasks]
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return PlanRects(ids, ptr, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])


def stationary_side(plan: Any, direction: Literal["forward", "backward"]) -> str:
    """``"q"`` for the forward of a query-block plan, else ``"kv"`` (see the module doc)."""
    if direction == "forward" and getattr(plan, "schedule", "cqs") == "query_blocks":
        return "q"
    return "kv"


# -- calls ---------------------------------------------------------------------------------------
def _calls(q0: int, q1: int, key_ranges: Iterable[Range], spec: MaskSpec,
           device: torch.device | None, counts: dict[str, int]) -> list[Call]:
    """Classify the blocks ``[q0, q1) x key range`` and build at most two calls."""
    full: list[Range] = []
    band: tuple[Range, int] | None = None  # a causal-only partial block
    masked: list[tuple[Range, BlockMask]] = []
    for s, e in key_ranges:
        c = spec.classify(q0, q1, s, e, device)
        counts[c.kind] = counts.get(c.kind, 0) + 1
        if c.kind == "empty":
            continue
        if c.kind == "full":
            full.append((s, e))
            continue
        m = c.mask
        if (band is None and m.band_only and m.causal_offset is not None
                and m.causal_offset >= -1):
            band = ((s, e), m.causal_offset)
        else:
            masked.append(((s, e), m))
    calls: list[Call] = []
    full_m = merge_ranges(full)
    if band is not None:
        n_full = sum(e - s for s, e in full_m)
        calls.append(Call(q0, q1, (*full_m, band[0]), BlockMask(causal_offset=band[1] + n_full)))
    elif full_m:
        calls.append(Call(q0, q1, full_m, None))
    if len(masked) == 1 or (masked and all(m.dense is None for _, m in masked)):
        # analytic masks (window edges) stay analytic: one call per block, no tensor
        calls.extend(Call(q0, q1, (rg,), m) for rg, m in masked)
    elif masked:
        lq = q1 - q0
        parts = [block_mask_tensor(m, lq, e - s, device) for (s, e), m in masked]
        bm = max(p.shape[0] for p in parts)
        hm = max(p.shape[1] for p in parts)
        dense = torch.cat([p.expand(bm, hm, lq, p.shape[-1]) for p in parts], dim=-1)
        calls.append(Call(q0, q1, tuple(rg for rg, _ in masked), BlockMask(dense=dense)))
    return calls


def _elementary(bounds: Iterable[int]) -> list[Range]:
    b = sorted(set(bounds))
    return list(itertools.pairwise(b))


def task_steps(rects: PlanRects, index: int, spec: MaskSpec, *, stationary: str = "kv",
               device: torch.device | None = None,
               counts: dict[str, int] | None = None) -> list[Step]:
    """The steps of the task at position ``index`` (see the module docstring).

    ``counts`` (optional) receives the number of ``"empty"``, ``"full"`` and ``"partial"``
    blocks classified. Steps without calls (everything masked) are dropped.
    """
    counts = {} if counts is None else counts
    tid = int(rects.ids[index])
    q0, q1, k0, k1 = (a.tolist() for a in rects.task(index))
    rows = list(zip(q0, q1, k0, k1, strict=True))
    steps: list[Step] = []
    if stationary == "q":
        q_rows = merge_ranges(zip(q0, q1, strict=True))
        for ks, ke in _elementary(itertools.chain(k0, k1)):
            hit = [(a, b) for a, b, c, d in rows if c <= ks and ke <= d]
            if not hit:
                continue
            calls: list[Call] = []
            for qs, qe in _elementary(itertools.chain(*hit)):
                if any(a <= qs and qe <= b for a, b in hit):
                    calls.extend(_calls(qs, qe, [(ks, ke)], spec, device, counts))
            if calls:
                steps.append(Step(tid, q_rows, ((ks, ke),), calls))
        return steps
    kv_rows = merge_ranges(zip(k0, k1, strict=True))
    for qs, qe in _elementary(itertools.chain(q0, q1)):
        keys = [(c, d) for a, b, c, d in rows if a <= qs and qe <= b]
        if not keys:
            continue
        calls = _calls(qs, qe, sorted(keys), spec, device, counts)
        if calls:
            steps.append(Step(tid, ((qs, qe),), kv_rows, calls))
    return steps


def split_call(call: Call, axis: Literal["q", "k"]) -> list[Call]:
    """``call`` cut in two along the query rows (``"q"``) or the keys (``"k"``); the two calls
    cover exactly the same (query, key) pairs with the same mask. One call when it cannot be
    cut (a single row, or a single key).

    >>> c = Call(0, 4, ((0, 6),), BlockMask(causal_offset=2))
    >>> [(x.q0, x.q1, x.key_ranges, x.mask.causal_offset) for x in split_call(c, "q")]
    [(0, 2, ((0, 6),), 2), (2, 4, ((0, 6),), 4)]
    >>> [(x.key_ranges, x.mask) for x in split_call(c, "k")]  # the left half is all allowed
    [(((0, 3),), None), (((3, 6),), BlockMask(causal_offset=-1, lower_offset=None))]
    """
    m = call.mask
    if axis == "q":
        if call.lq < 2:
            return [call]
        mid = call.q0 + call.lq // 2
        out = []
        for a, b in ((call.q0, mid), (mid, call.q1)):
            off = a - call.q0
            if m is None or m.is_full:
                mm = m
            else:
                dense = m.dense
                if dense is not None and dense.shape[-2] != 1:
                    dense = dense[..., off:off + b - a, :]
                co = None if m.causal_offset is None else m.causal_offset + off
                lo = None if m.lower_offset is None else m.lower_offset + off
                mm = _simplified(co, lo, dense, b - a, call.lk)
            out.append(Call(a, b, call.key_ranges, mm))
        return out
    lk = call.lk
    if lk < 2:
        return [call]
    half = lk // 2
    left: list[Range] = []
    right: list[Range] = []
    pos = 0
    for s, e in call.key_ranges:
        n = e - s
        if pos + n <= half:
            left.append((s, e))
        elif pos >= half:
            right.append((s, e))
        else:
            cut = s + half - pos
            left.append((s, cut))
            right.append((cut, e))
        pos += n
    out = []
    for ranges, start in ((left, 0), (right, half)):
        n = sum(e - s for s, e in ranges)
        if m is None or m.is_full:
            mm = m
        else:
            co = None if m.causal_offset is None else m.causal_offset - start
            lo = None if m.lower_offset is None else m.lower_offset - start
            dense = None if m.dense is None else m.dense[..., start:start + n]
            mm = _simplified(co, lo, dense, call.lq, n)
        out.append(Call(call.q0, call.q1, tuple(ranges), mm))
    return out


def _simplified(co: int | None, lo: int | None, dense: torch.Tensor | None, lq: int,
                lk: int) -> BlockMask | None:
    """The mask of a ``lq x lk`` part, with band edges that no longer cut it dropped."""
    if co is not None and co >= lk - 1:
        co = None
    if lo is not None and lq - 1 + lo <= 0:
        lo = None
    if co is None and lo is None and dense is None:
        return None
    return BlockMask(causal_offset=co, dense=dense, lower_offset=lo)


def mask_categories(rects: PlanRects, spec: MaskSpec, stationary: str = "kv") -> set[str]:
    """The kinds of kernel call a run of ``rects`` under ``spec`` makes: ``"none"`` (no mask),
    ``"causal"`` (a causal offset) and ``"dense"`` (a boolean mask), computed without
    classifying every block (vectorised band arithmetic; document ids and ``mask_mod`` are
    assumed to need dense masks). Used to check, before any work, that a forced kernel can
    run every call.

    >>> from cqs_design.plans import make_plan
    >>> from cqs_attention.masks import make_mask_spec
    >>> spec = make_mask_spec(14, 14, batch=1, heads=1, causal=True)
    >>> sorted(mask_categories(plan_rectangles(make_plan(14, design=2, causal=True)), spec))
    ['causal', 'none']
    """
    if spec.is_empty_spec:
        return {"none"}
    if spec.q_doc is not None or spec.mask_mod is not None:
        return {"none", "causal", "dense"}
    task = np.repeat(np.arange(len(rects), dtype=np.int64), np.diff(rects.ptr))
    q0, q1, k0, k1 = rects.q0, rects.q1, rects.k0, rects.k1
    none = np.zeros(len(q0), dtype=bool)
    # the band's upper edge (a causal offset) and its lower edge (a window's left side: dense)
    empty, partial, cut = (none | x for x in spec.band.block_cuts(q0, q1, k0, k1))
    keep = ~empty
    cats = set()
    if np.any(keep & cut):
        cats.add("dense")
    band = keep & partial & ~cut
    full = keep & ~partial & ~cut
    if np.any(full):
        cats.add("none")
    if np.any(band):
        cats.add("causal")
        co = spec.band.block_offsets(q0, k0)[0]
        # a query range with two band blocks, or one below -1, gets a dense or bare call
        m1 = int(max(q1.max(), 1)) + 1 if len(q1) else 1
        key = (task * m1 + q0) * m1 + q1
        _, _inv, cnt = np.unique(key[band], return_inverse=True, return_counts=True)
        if stationary == "kv" and np.any(cnt > 1):
            cats.add("dense")
        if np.any(co[band] < -1):
            cats.add("causal")
    return cats
