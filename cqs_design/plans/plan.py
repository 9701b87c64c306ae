"""Validated CQS decomposition plans: which task computes which part of the attention matrix.

A plan splits ``seq_len`` queries and ``kv_len`` keys into ``v`` chunks each (sizes differ by
at most one token) and, with a cyclic ``(v, k, 1)`` difference set ``D``, defines ``v`` tasks:
task ``i`` holds chunks ``{i + d mod v : d in D}``.  Each task OWNS rectangles of the attention
matrix (global token coordinates, ends exclusive):

* every off-diagonal chunk pair ``(a, b)`` is owned by the one task holding both chunks;
* the diagonal block of chunk ``c`` is owned by task ``c - D[0] mod v`` (the task whose base
  element ``D[0]`` places it; task ``c`` for a normalized set).

So the tasks' rectangles tile the matrix exactly once, and attention is ``v`` independent
tasks whose partial results merge exactly.  ``causal=True`` and ``window=(left, right)`` drop
the rectangles the mask empties (tasks left with nothing disappear); diagonal blocks of a causal
plan are kind ``"causal"`` (only ``k <= q + kv_len - seq_len`` inside).  ``levels > 1`` and
:meth:`Plan.refine` apply CQS Divide again inside tasks.  :meth:`Plan.validate` proves the exact
cover with numpy in time about the number of rectangles.

>>> from cqs_design import DifferenceSet
>>> plan = make_plan(14, design=DifferenceSet(7, [0, 1, 5]))
>>> len(plan.tasks), plan.stats().pairs_needed
(7, 196)
>>> plan.tasks[0].segments
((0, 4), (10, 12))
>>> plan.tasks[0].rectangles[2]
Rect(q_start=0, q_end=2, k_start=10, k_end=12, kind='full')
>>> plan.validate() is plan
True
>>> causal = make_plan(14, design=DifferenceSet(7, [0, 1, 5]), causal=True)
>>> causal.stats().pairs_needed, sum(len(t.rectangles) for t in causal.tasks)
(105, 28)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cqs_design.difference_sets import DifferenceSet
from cqs_design.plans.build import (
    TooManyPieces,
    block_rectangles,
    index_dtype,
    level_one,
    subdivide,
    subdivide_count,
)
from cqs_design.plans.check import (
    CoverProblem,
    _blocks,
    check_cover,
    check_rectangles,
    check_segments,
)
from cqs_design.plans.design import (
    MAX_REFINED_RECTANGLES,
    MAX_TOKENS,
    PlanError,
    _check_window,
    _choose_design,
    _prime_powers,
    _resolve_design,
    _too_short,
    check_size,
    plan_int,
)
from cqs_design.plans.intervals import (
    _bitmap_segments,
    _merge_intervals,
    _per_task,
    _unique_intervals,
    causal_pairs,
    design_segments,
    exact_sum,
    exact_sum_products,
    merge_ranges,
    sorted_unique,
)
from cqs_design.plans.mask import Mask
from cqs_design.plans.serialize import loads, plan_from_dict, plan_to_dict

__all__ = [
    "DEFAULT_MAX_TASK_TOKENS",
    "SCHEDULES",
    "Plan",
    "PlanStats",
    "Rect",
    "Schedule",
    "Task",
    "make_plan",
]

#: Task size aimed at when neither ``design`` nor ``max_task_tokens`` is given.
DEFAULT_MAX_TASK_TOKENS = 16384

#: What :func:`make_plan` can build: CQS tasks, or query-stationary / key/value-stationary blocks.
Schedule = Literal["cqs", "query_blocks", "kv_blocks"]
SCHEDULES: tuple[str, ...] = ("cqs", "query_blocks", "kv_blocks")

_I64 = np.int64
_KINDS = ("full", "causal")


@dataclass(frozen=True)
class Rect:
    """Query rows ``[q_start, q_end)`` x keys ``[k_start, k_end)`` owned by one task.

    ``kind == "causal"``: only pairs with ``k <= q + kv_len - seq_len`` inside are attended.

    >>> Rect(0, 2, 0, 2, "causal").area
    4
    """

    q_start: int
    q_end: int
    k_start: int
    k_end: int
    kind: Literal["full", "causal"] = "full"

    @property
    def area(self) -> int:
        """Number of (query, key) pairs in the rectangle, ignoring masks."""
        return (self.q_end - self.q_start) * (self.k_end - self.k_start)


@dataclass(frozen=True)
class Task:
    """One independent unit of work: the token segments it loads and the rectangles it owns.

    ``segments`` are merged, sorted ``(start, end)`` token ranges (for self-attention the union of
    its query and key rows; for cross-attention read :attr:`q_segments` and :attr:`kv_segments`).
    ``rectangles`` are sorted by ``(q_start, k_start)``, so those of one query range are adjacent.

    >>> t = Task(0, ((0, 4),), (Rect(0, 2, 2, 4), Rect(2, 4, 2, 4, "causal")))
    >>> t.q_segments, t.kv_segments, t.tokens
    (((0, 4),), ((2, 4),), 4)
    """

    id: int
    segments: tuple[tuple[int, int], ...]
    rectangles: tuple[Rect, ...]
    level: int = 1

    @property
    def q_segments(self) -> tuple[tuple[int, int], ...]:
        """Merged query ranges the task's rectangles touch."""
        return merge_ranges((r.q_start, r.q_end) for r in self.rectangles)

    @property
    def kv_segments(self) -> tuple[tuple[int, int], ...]:
        """Merged key ranges the task's rectangles touch."""
        return merge_ranges((r.k_start, r.k_end) for r in self.rectangles)

    @property
    def tokens(self) -> int:
        """Sum of the segment lengths."""
        return sum(e - s for s, e in self.segments)


@dataclass(frozen=True)
class PlanStats:
    """Summary of a plan (:meth:`Plan.stats`).

    Attributes
    ----------
    tasks, rectangles : int
        Number of tasks and of owned rectangles.
    max_task_tokens, min_task_tokens : int
        Largest / smallest task, in tokens (sum of segment lengths; query plus key tokens for
        cross-attention).
    pairs_needed : int
        (query, key) pairs the mask allows.
    pairs_computed : int
        Pairs inside the rectangles ("causal" ones counted below their diagonal only); the
        excess over ``pairs_needed`` is what a window leaves to be masked inside rectangles.
    tokens_moved : int
        Tokens loaded to run every task once (sum of task tokens).
    levels : int
        Deepest level of CQS Divide.
    """

    tasks: int
    rectangles: int
    max_task_tokens: int
    min_task_tokens: int
    pairs_needed: int
    pairs_computed: int
    tokens_moved: int
    levels: int


class Plan:
    """A validated decomposition plan (build with :func:`make_plan`).

    Three schedules share this class, the JSON format and :meth:`validate`: ``"cqs"`` (tasks of
    a cyclic difference set), ``"query_blocks"`` (task ``i`` = query block ``i`` against every
    key/value block) and ``"kv_blocks"`` (task ``j`` = key/value block ``j`` against every query
    block).

    Internally every rectangle is stored in *index form* (numpy arrays of indices into sorted
    boundary arrays, in the smallest integer type that fits), so plans with hundreds of millions
    of rectangles stay compact; :attr:`tasks` materialises :class:`Task` objects on first access
    and :meth:`arrays` gives token-coordinate arrays for executors.

    Attributes
    ----------
    seq_len, kv_len : int
        Queries and keys (``kv_len == seq_len`` for self-attention).
    causal : bool
    window : tuple of (int or None) or None
        ``(left, right)``: query ``i`` may attend key ``j`` iff
        ``i + off - left <= j <= i + off + right`` with ``off = kv_len - seq_len``.
    design : DifferenceSet or None
        The top-level design (None for the block schedules).
    levels : int
        Deepest level of CQS Divide (1 = one level).
    chosen_because : str
        Why this design (or these block sizes) was chosen (empty when a design was given).
    schedule : {"cqs", "query_blocks", "kv_blocks"}
        How the tasks were formed.
    block_q, block_kv : int or None
        Query and key/value block sizes of the block schedules (None for ``"cqs"``).
    """

    def __init__(self, *, seq_len: int, kv_len: int, causal: bool,
                 window: tuple[int | None, int | None] | None, design: DifferenceSet | None,
                 levels: int, arrays: dict[str, np.ndarray], ids: np.ndarray,
                 level: np.ndarray, segments: tuple[np.ndarray, ...] | None = None,
                 chosen_because: str = "", schedule: Schedule = "cqs",
                 block_q: int | None = None, block_kv: int | None = None) -> None:
        self.seq_len = seq_len
        self.kv_len = kv_len
        self.causal = causal
        self.window = window
        self.design = design
        self.levels = levels
        self.chosen_because = chosen_because
        self.schedule = schedule
        self.block_q = block_q
        self.block_kv = block_kv
        self._a = arrays  # qb, kb, q0, q1, k0, k1, kind, task
        self._ids = ids
        self._level = level
        self._segs = segments  # explicit (ptr, start, end) from JSON, else derived lazily
        self._cache: dict[str, tuple[np.ndarray, ...]] = {}

    # --- construction helpers -------------------------------------------------------------
    @classmethod
    def _from_coords(cls, meta: dict[str, Any], qs: np.ndarray, qe: np.ndarray,
                     ks: np.ndarray, ke: np.ndarray, kind: np.ndarray, task: np.ndarray,
                     ids: np.ndarray, level: np.ndarray,
                     segments: tuple[np.ndarray, ...] | None = None) -> Plan:
        qb = sorted_unique(np.concatenate([[0, meta["seq_len"]], qs, qe]).astype(_I64))
        kb = sorted_unique(np.concatenate([[0, meta["kv_len"]], ks, ke]).astype(_I64))
        it = index_dtype(max(len(qb), len(kb)))
        q0 = np.searchsorted(qb, qs).astype(it)
        k0 = np.searchsorted(kb, ks).astype(it)
        order = np.lexsort((k0, q0))
        arrays = {
            "qb": qb, "kb": kb, "q0": q0[order],
            "q1": np.searchsorted(qb, qe[order]).astype(it), "k0": k0[order],
            "k1": np.searchsorted(kb, ke[order]).astype(it),
            "kind": np.asarray(kind, dtype=np.int8)[order],
            "task": np.asarray(task)[order].astype(index_dtype(len(ids))),
        }
        return cls(arrays=arrays, ids=np.asarray(ids, dtype=_I64),
                   level=np.asarray(level, dtype=_I64), segments=segments, **meta)

    def _meta(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len, "kv_len": self.kv_len, "causal": self.causal,
                "window": self.window, "design": self.design, "levels": self.levels,
                "chosen_because": self.chosen_because, "schedule": self.schedule,
                "block_q": self.block_q, "block_kv": self.block_kv}

    @property
    def _mask(self) -> Mask:
        return Mask.of(self.seq_len, self.kv_len, causal=self.causal, window=self.window)

    # --- access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        how = (f"design={self.design!r}" if self.schedule == "cqs" else
               f"schedule={self.schedule!r}, block_q={self.block_q}, block_kv={self.block_kv}")
        return (f"Plan(seq_len={self.seq_len}, kv_len={self.kv_len}, causal={self.causal}, "
                f"window={self.window}, {how}, levels={self.levels}, "
                f"tasks={len(self)}, rectangles={self.num_rectangles})")

    @property
    def num_rectangles(self) -> int:
        """Number of owned rectangles over all tasks."""
        return len(self._a["q0"])

    @property
    def task_ids(self) -> tuple[int, ...]:
        """Task ids in plan order."""
        return tuple(int(i) for i in self._ids)

    def arrays(self) -> dict[str, np.ndarray]:
        """Token-coordinate int64 arrays ``q_start, q_end, k_start, k_end`` plus ``kind``
        (0 full, 1 causal) and ``task`` (index into :attr:`tasks`), sorted by
        ``(q_start, k_start)``.

        >>> make_plan(7, design=2).arrays()["q_end"][:3].tolist()
        [1, 1, 1]
        """
        return self._coords(0, self.num_rectangles)

    def _coords(self, s: int, e: int) -> dict[str, np.ndarray]:
        a = self._a
        return {"q_start": a["qb"][a["q0"][s:e]], "q_end": a["qb"][a["q1"][s:e]],
                "k_start": a["kb"][a["k0"][s:e]], "k_end": a["kb"][a["k1"][s:e]],
                "kind": a["kind"][s:e], "task": a["task"][s:e].astype(_I64)}

    @functools.cached_property
    def _by_task(self) -> tuple[np.ndarray, np.ndarray]:
        task = self._a["task"]
        order = np.argsort(task, kind="stable")
        ptr = np.concatenate([[0], np.cumsum(np.bincount(task, minlength=len(self)))])
        return order, ptr.astype(_I64)

    def _segments(self, which: Literal["all", "q", "k"] = "all") -> tuple[np.ndarray, ...]:
        """CSR ``(ptr, start, end)`` of merged per-task segments (explicit ones for "all")."""
        if which == "all" and self._segs is not None:
            return self._segs
        if which not in self._cache:
            self._cache[which] = self._derived_segments(which)
        return self._cache[which]

    def _derived_segments(self, which: str) -> tuple[np.ndarray, ...]:
        a = self._a
        mask = self._mask
        if (which == "all" and self.schedule == "cqs" and self.levels == 1
                and self.design is not None and self.seq_len == self.kv_len
                and len(self) == self.design.v and mask.left is None and mask.right is None
                and len(a["qb"]) == self.design.v + 1):
            # one self-attention level, full or causal: every task uses all k of its chunks
            # (causal keeps the lower of each off-diagonal pair), so the design gives them
            return design_segments(np.asarray(self.design.elements), a["qb"])
        fast = _bitmap_segments(a, len(self), which)
        if fast is not None:
            return fast
        task = a["task"].astype(_I64)
        parts = []
        if which in ("all", "q"):
            parts.append(_unique_intervals(task, a["q0"], a["q1"], a["qb"]))
        if which in ("all", "k"):
            parts.append(_unique_intervals(task, a["k0"], a["k1"], a["kb"]))
        t = np.concatenate([p[0] for p in parts])
        s = np.concatenate([p[1] for p in parts])
        e = np.concatenate([p[2] for p in parts])
        return _merge_intervals(t, s, e, len(self), max(self.seq_len, self.kv_len) + 1)

    def task_arrays(self, index: int) -> dict[str, np.ndarray]:
        """The task at position ``index`` as numpy arrays (no Python objects per rectangle).

        Keys as in :meth:`arrays` (rectangles sorted by ``(q_start, k_start)``) plus
        ``segments``, an ``(n, 2)`` int64 array.

        >>> make_plan(14, design=2).task_arrays(0)["segments"].shape[1]
        2
        """
        if not 0 <= index < len(self):
            raise IndexError(f"task index {index} out of range: the plan has {len(self)} tasks")
        order, ptr = self._by_task
        sel = order[ptr[index]:ptr[index + 1]]
        a = self._a
        sp, ss, se = self._segments("all")
        return {"q_start": a["qb"][a["q0"][sel]], "q_end": a["qb"][a["q1"][sel]],
                "k_start": a["kb"][a["k0"][sel]], "k_end": a["kb"][a["k1"][sel]],
                "kind": a["kind"][sel], "task": np.full(len(sel), index, dtype=_I64),
                "segments": np.stack([ss[sp[index]:sp[index + 1]],
                                      se[sp[index]:sp[index + 1]]], axis=1)}

    def task(self, index: int) -> Task:
        """The task at position ``index`` of the plan (materialised on demand)."""
        t = self.task_arrays(index)
        cols = [t[n].tolist() for n in ("q_start", "q_end", "k_start", "k_end", "kind")]
        rects = tuple(Rect(w, x, y, z, _KINDS[c]) for w, x, y, z, c in zip(*cols, strict=True))
        segs = tuple((s, e) for s, e in t["segments"].tolist())
        return Task(int(self._ids[index]), segs, rects, int(self._level[index]))

    @functools.cached_property
    def tasks(self) -> tuple[Task, ...]:
        """All tasks as :class:`Task` objects (built on first access; huge plans: use
        :meth:`task` or :meth:`arrays`)."""
        return tuple(self.task(i) for i in range(len(self)))

    def _index_of(self, task_id: int) -> int:
        hit = np.flatnonzero(self._ids == task_id)
        if len(hit) == 0:
            raise PlanError(f"no task with id {task_id}: ids run from {int(self._ids.min())} "
                            f"to {int(self._ids.max())}")
        return int(hit[0])

    # --- checks ----------------------------------------------------------------------------
    def _describe(self, r: int) -> str:
        t = int(self._a["task"][r])
        return f"rectangle #{r} of task {int(self._ids[t])}"

    def validate(self) -> Plan:
        """Prove that the plan is an exact cover; return ``self`` or raise :class:`PlanError`.

        Checks, all vectorised over rectangles (:mod:`cqs_design.plans.check`): every allowed
        ``(i, j)`` lies in exactly one rectangle (else the error names the first uncovered or
        doubly covered position), "full" rectangles of a causal plan contain no masked position,
        "causal" rectangles occur only in causal plans, no rectangle lies entirely outside the
        mask, every task owns a rectangle and no rectangle leaves its task's segments.

        >>> plan = make_plan(7, design=2)
        >>> plan.validate().num_rectangles
        49
        """
        a = self._a
        mask = self._mask
        n_tasks = len(self)
        if len(sorted_unique(self._ids)) != n_tasks:
            raise PlanError("task ids are not unique")
        counts = np.bincount(a["task"], minlength=n_tasks) if n_tasks else np.zeros(0)
        if len(counts) > n_tasks:
            raise PlanError("a rectangle refers to a task that does not exist")
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise PlanError(f"task {int(self._ids[empty[0]])} owns no rectangle; tasks the mask "
                            "empties must be dropped")
        problem = check_cover(mask, a["qb"], a["kb"], a["q0"], a["q1"], a["k0"], a["k1"],
                              self._describe)
        if problem is not None:
            raise PlanError(problem.message)
        found: list[CoverProblem] = []
        if mask.trivial:  # only the kinds can be wrong; no coordinates needed
            bad_kind = np.flatnonzero(a["kind"] != 0)
            if len(bad_kind):
                raise PlanError(f"{self._describe(int(bad_kind[0]))} has kind 'causal' but the "
                                "plan is not causal")
        for s, e in ([] if mask.trivial else _blocks(self.num_rectangles)):
            c = self._coords(s, e)
            bad = check_rectangles(mask, c["q_start"], c["q_end"], c["k_start"], c["k_end"],
                                   c["kind"], lambda r, s=s: self._describe(s + r))
            if isinstance(bad, str):
                raise PlanError(bad)
            if bad is not None:
                found.append(bad)
        if found:
            raise PlanError(min(found, key=lambda p: (p.i, p.j)).message)
        if self._segs is not None:
            ptr, ss, se = self._segs
            seg_task = np.repeat(np.arange(n_tasks, dtype=_I64), np.diff(ptr))
            width = max(self.seq_len, self.kv_len) + 1
            for s, e in _blocks(self.num_rectangles):
                c = self._coords(s, e)
                for lo, hi, what in (("q_start", "q_end", "query"), ("k_start", "k_end", "key")):
                    r = check_segments(c["task"], c[lo], c[hi], seg_task, ss, se, width)
                    if r is not None:
                        raise PlanError(f"{self._describe(s + r)} has {what} range "
                                        f"[{int(c[lo][r])}, {int(c[hi][r])}) outside the "
                                        "segments of its task")
        return self

    def side_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """Per task (plan order): query tokens and key tokens its CQS Divide would split.

        For self-attention both are the task's segment lengths (queries and keys are split
        together); for cross-attention the query and key segment lengths.
        :meth:`refine` needs both to be at least the new design's ``v``.

        >>> q, k = make_plan(70, design=2).side_tokens()
        >>> q.tolist() == k.tolist() == [30] * 7
        True
        """
        if self.seq_len == self.kv_len:
            ptr, ss, se = self._segments("all")
            tok = _per_task(ptr, se - ss)
            return tok, tok
        ptr, ss, se = self._segments("q")
        kptr, kss, kse = self._segments("k")
        return _per_task(ptr, se - ss), _per_task(kptr, kse - kss)

    # --- summaries -------------------------------------------------------------------------
    def stats(self) -> PlanStats:
        """Counts for comparing plans: tasks, task sizes, pairs and tokens.

        >>> s = make_plan(70, design=2).stats()
        >>> s.tasks, s.max_task_tokens, s.pairs_needed == s.pairs_computed == 70 * 70
        (7, 30, True)
        """
        qt, kt = self.side_tokens()
        tok = qt if self.kv_len == self.seq_len else qt + kt
        computed = 0
        for s, e in _blocks(self.num_rectangles):
            c = self._coords(s, e)
            h = c["q_end"] - c["q_start"]
            w = c["k_end"] - c["k_start"]
            causal = c["kind"] == 1
            computed += exact_sum_products(h[~causal], w[~causal])
            if causal.any():
                cols = [c[n][causal] for n in ("q_start", "q_end", "k_start", "k_end")]
                if max(int(h[causal].max()), int(w[causal].max())) >= 1 << 30:
                    cols = [x.astype(object) for x in cols]  # exact Python integers
                computed += exact_sum(causal_pairs(*cols, self.kv_len - self.seq_len))
        return PlanStats(
            tasks=len(self), rectangles=self.num_rectangles,
            max_task_tokens=int(tok.max()) if len(tok) else 0,
            min_task_tokens=int(tok.min()) if len(tok) else 0,
            pairs_needed=self._mask.count(), pairs_computed=computed,
            tokens_moved=exact_sum(tok), levels=self.levels)

    # --- refinement ------------------------------------------------------------------------
    def refine(self, task_ids: Iterable[int] | None, design: DifferenceSet | int) -> Plan:
        """Apply CQS Divide with ``design`` again inside the tasks ``task_ids`` (None: all).

        Each chosen task's query tokens (and key tokens) are split into ``design.v`` sub-chunks;
        sub-task ``j`` owns the parts of the parent's rectangles that fall in its sub-chunk pairs
        (same ownership rule as level one), so ownership is inherited and the cover stays exact.
        Untouched tasks keep their ids; sub-tasks get fresh ids after the largest one, in order.

        >>> plan = make_plan(70, design=2)
        >>> hybrid = plan.refine([0, 3], 2)
        >>> len(hybrid), hybrid.levels, hybrid.validate() is hybrid
        (19, 2, True)
        """
        ds = _resolve_design(design, "design")
        if task_ids is None:
            sel_idx = np.arange(len(self))
        else:
            sel_idx = np.array(sorted({self._index_of(plan_int(t, "task id"))
                                       for t in task_ids}), dtype=_I64)
        return _refine(self, sel_idx, ds)

    # --- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The plan as plain JSON-ready data (schema in ``docs/plans.md``)."""
        return plan_to_dict(self)

    def to_json(self, *, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string.

        >>> Plan.from_json(make_plan(7, design=2).to_json()).num_rectangles
        49
        """
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        """Load and fully validate untrusted plan data (raises :class:`PlanError`)."""
        return plan_from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """Parse untrusted JSON (nothing is executed), check every field and the cover."""
        return cls.from_dict(loads(text))


# --- the public constructor -----------------------------------------------------------------
def make_plan(
    seq_len: int,
    *,
    kv_len: int | None = None,
    schedule: Schedule = "cqs",
    block_q: int | None = None,
    block_kv: int | None = None,
    causal: bool = False,
    window: tuple[int | None, int | None] | None = None,
    design: DifferenceSet | int | None = None,
    levels: int = 1,
    max_task_tokens: int | None = None,
    sub_design: DifferenceSet | int | None = None,
) -> Plan:
    """Build the decomposition plan of a ``seq_len x kv_len`` attention matrix.

    Parameters
    ----------
    seq_len : int
        Number of queries (>= the design's ``v`` for ``schedule="cqs"``).
    kv_len : int, optional
        Number of keys (cross-attention); default ``seq_len``.
    schedule : {"cqs", "query_blocks", "kv_blocks"}
        ``"cqs"``: tasks of a cyclic difference set (the arguments below).  ``"query_blocks"``
        (query-stationary): task ``i`` owns query block ``i`` against every key/value block the
        mask leaves non-empty.  ``"kv_blocks"`` (key/value-stationary, for the backward): task
        ``j`` owns every query block against key/value block ``j``.
    block_q, block_kv : int, optional
        Block sizes of the block schedules: query block ``i`` is rows
        ``[i*block_q, min((i+1)*block_q, seq_len))`` (the last one shorter), likewise for keys.
        Default ``min(length, DEFAULT_MAX_TASK_TOKENS)``.  Refused for ``"cqs"``.
    causal : bool
        Drop rectangles above the diagonal; rectangles the diagonal crosses become kind
        "causal".
    window : (left, right), optional
        Sliding window ``i + off - left <= j <= i + off + right`` (``off = kv_len - seq_len``);
        rectangles entirely outside it are dropped.
    design : DifferenceSet or int or None
        ``"cqs"`` only.  A cyclic ``(v, k, 1)`` difference set, a prime power ``q`` (Singer
        design, ``v = q^2 + q + 1``), or None: the smallest Singer design whose tasks fit
        ``max_task_tokens`` (default :data:`DEFAULT_MAX_TASK_TOKENS`) among those whose plan
        stays under ``DEFAULT_MAX_RECTANGLES`` (2^25; ``DEFAULT_MAX_REFINED_RECTANGLES`` = 2^22
        with ``levels > 1``).  When none does, the default takes the largest of those (coarser
        tasks than asked), while an explicit ``max_task_tokens`` raises; see
        :attr:`Plan.chosen_because`.  So ``make_plan(n)`` stays bounded for every ``n`` up to
        ``MAX_TOKENS`` = 2^40.
    levels : int
        ``"cqs"`` only.  Levels of CQS Divide; level ``l > 1`` re-divides every task with
        ``sub_design``.
    max_task_tokens : int, optional
        ``"cqs"`` only.  Upper bound on a task's tokens (query plus key tokens for
        cross-attention) used to choose the design; ignored when ``design`` is given.
    sub_design : DifferenceSet or int, optional
        ``"cqs"`` only.  Design of levels 2 and deeper; default the top-level design.

    Returns
    -------
    Plan

    Raises
    ------
    PlanError
        Bad values, CQS arguments with a block schedule, a sequence shorter than the design
        (the error names the largest usable design), or a plan over the rectangle limits:
        ``MAX_RECTANGLES`` for one level; ``MAX_REFINED_RECTANGLES`` for ``levels > 1``,
        estimated before anything is built (the error names a design that fits) and checked
        exactly before each level is built.
    TypeError
        Non-integer lengths.

    Examples
    --------
    >>> p = make_plan(100, max_task_tokens=50)
    >>> p.design.v, p.stats().max_task_tokens <= 50
    (7, True)
    >>> make_plan(20, design=4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cqs_design.plans.PlanError: seq_len=20 is shorter than the design's v=21 chunks; ...q=3 (v=13)
    >>> qb = make_plan(10, schedule="query_blocks", block_q=4, block_kv=5, causal=True)
    >>> qb.task_ids, qb.task(1).segments
    ((0, 1, 2), ((0, 10),))
    >>> [(r.q_start, r.q_end, r.k_start, r.k_end, r.kind) for r in qb.task(1).rectangles]
    [(4, 8, 0, 5, 'full'), (4, 8, 5, 10, 'causal')]
    """
    seq_len = plan_int(seq_len, "seq_len", 1, MAX_TOKENS)
    kv_len = seq_len if kv_len is None else plan_int(kv_len, "kv_len", 1, MAX_TOKENS)
    levels = plan_int(levels, "levels", 1)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    win = _check_window(window)
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise PlanError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, "
                        f"got {schedule!r}")
    if schedule != "cqs":
        given = [name for name, val, unset in (
            ("design", design, None), ("levels", levels, 1), ("sub_design", sub_design, None),
            ("max_task_tokens", max_task_tokens, None)) if val != unset]
        if given:
            raise PlanError(f"{given[0]} applies to schedule='cqs' only, not to "
                            f"schedule={schedule!r} (its tasks are set by block_q and block_kv)")
        bq = (min(seq_len, DEFAULT_MAX_TASK_TOKENS) if block_q is None
              else plan_int(block_q, "block_q", 1))
        bk = (min(kv_len, DEFAULT_MAX_TASK_TOKENS) if block_kv is None
              else plan_int(block_kv, "block_kv", 1))
        return _block_plan(seq_len, kv_len, schedule, bq, bk, bool(causal), win,
                           given_q=block_q is not None, given_kv=block_kv is not None)
    for name, val in (("block_q", block_q), ("block_kv", block_kv)):
        if val is not None:
            raise PlanError(f"{name} applies to the block schedules ('query_blocks', "
                            "'kv_blocks') only, not to schedule='cqs'")
    reason = ""
    mask = Mask.of(seq_len, kv_len, causal=causal, window=win)
    sub = None if sub_design is None else _resolve_design(sub_design, "sub_design")
    if design is None:
        explicit = max_task_tokens is not None
        budget = (DEFAULT_MAX_TASK_TOKENS if max_task_tokens is None
                  else plan_int(max_task_tokens, "max_task_tokens", 1))
        ds, reason = _choose_design(seq_len, kv_len, budget, levels, explicit, mask,
                                    None if sub is None else (sub.v, sub.k))
    else:
        ds = _resolve_design(design, "design")
    sub = ds if sub is None else sub
    for what, n in (("seq_len", seq_len), ("kv_len", kv_len)):
        if n < ds.v:
            raise _too_short(what, n, ds.v)
    check_size(mask, ds, levels, sub)
    return _make_plan(seq_len, kv_len, ds, levels, bool(causal), win, sub, reason)


def _block_plan(seq_len: int, kv_len: int, schedule: str, block_q: int, block_kv: int,
                causal: bool, window: tuple[int | None, int | None] | None, *,
                given_q: bool, given_kv: bool) -> Plan:
    mask = Mask.of(seq_len, kv_len, causal=causal, window=window)
    stationary = "query" if schedule == "query_blocks" else "kv"
    try:
        arrays = block_rectangles(mask, block_q, block_kv, stationary)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    present = arrays.pop("present")
    ids = np.flatnonzero(present).astype(_I64)
    what = "query-stationary" if stationary == "query" else "key/value-stationary"
    src = {True: "given", False: f"default min(length, {DEFAULT_MAX_TASK_TOKENS})"}
    reason = (f"{what} blocks: block_q={block_q} query rows ({src[given_q]}) x "
              f"block_kv={block_kv} key/value rows ({src[given_kv]})")
    return Plan(arrays=arrays, ids=ids, level=np.ones(len(ids), dtype=_I64),
                seq_len=seq_len, kv_len=kv_len, causal=causal, window=window, design=None,
                levels=1, chosen_because=reason, schedule=schedule,  # type: ignore[arg-type]
                block_q=block_q, block_kv=block_kv)


def _make_plan(seq_len: int, kv_len: int, ds: DifferenceSet, levels: int, causal: bool,
               window: tuple[int | None, int | None] | None, sub: DifferenceSet,
               reason: str) -> Plan:
    mask = Mask.of(seq_len, kv_len, causal=causal, window=window)
    try:
        arrays = level_one(mask, ds.v, ds.elements)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    present = np.bincount(arrays["task"], minlength=ds.v) > 0
    if not present.all():  # tasks the mask emptied disappear
        remap = np.cumsum(present) - 1
        arrays["task"] = remap[arrays["task"]].astype(arrays["task"].dtype)
    ids = np.flatnonzero(present).astype(_I64)
    meta = {"seq_len": seq_len, "kv_len": kv_len, "causal": causal, "window": window,
            "design": ds, "levels": 1, "chosen_because": reason}
    plan = Plan(arrays=arrays, ids=ids, level=np.ones(len(ids), dtype=_I64), **meta)
    for _ in range(levels - 1):
        plan = _refine(plan, np.arange(len(plan)), sub, renumber=True)
    return plan


def _refine_hint(plan: Plan, rects: dict[str, np.ndarray], qseg: tuple[np.ndarray, ...],
                 kseg: tuple[np.ndarray, ...], limit: int) -> str:
    """Name the largest Singer design whose refinement stays within ``limit`` pieces."""
    best = None
    for q in _prime_powers():
        v = q * q + q + 1
        if subdivide_count(plan._mask, rects, qseg, kseg, v) > limit:
            break
        best = q
    if best is None:
        return "refine fewer tasks"
    return f"use design={best} (v={best * best + best + 1}) or refine fewer tasks"


def _refine(plan: Plan, sel_idx: np.ndarray, ds: DifferenceSet, renumber: bool = False
            ) -> Plan:
    n = len(plan)
    self_attn = plan.seq_len == plan.kv_len
    qseg = plan._segments("all" if self_attn else "q")
    kseg = qseg if self_attn else plan._segments("k")
    for tok, what in zip(plan.side_tokens(), ("query", "key"), strict=True):
        small = np.flatnonzero(tok[sel_idx] < ds.v)
        if len(small):
            t = int(sel_idx[small[0]])
            raise _too_short(f"task {int(plan._ids[t])} {what} tokens", int(tok[t]), ds.v)
    c = plan.arrays()
    selected = np.zeros(n, dtype=bool)
    selected[sel_idx] = True
    in_sel = selected[c["task"]]
    rects = {"qs": c["q_start"][in_sel], "qe": c["q_end"][in_sel], "ks": c["k_start"][in_sel],
             "ke": c["k_end"][in_sel], "kind": c["kind"][in_sel], "task": c["task"][in_sel]}
    try:
        pieces = subdivide(plan._mask, rects, qseg, kseg, ds.v, ds.elements,
                           max_pieces=MAX_REFINED_RECTANGLES - int((~in_sel).sum()))
    except TooManyPieces as exc:
        hint = _refine_hint(plan, rects, qseg, kseg, exc.limit)
        raise PlanError(f"refining with the v={ds.v} design would give {exc.pieces:,} new "
                        f"rectangles, more than the {exc.limit:,} left under "
                        f"MAX_REFINED_RECTANGLES={MAX_REFINED_RECTANGLES:,}; {hint}") from None
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    # new task list: each task in order, selected ones replaced by their non-empty sub-tasks
    key_new = pieces["task"] * ds.v + pieces["sub"]
    uniq = sorted_unique(key_new)
    parent_of = uniq // ds.v
    keep_old = np.flatnonzero(~selected)
    # order: by parent position, sub-tasks in sub order
    pos = np.concatenate([keep_old * (ds.v + 1), parent_of * (ds.v + 1) + 1 + uniq % ds.v])
    order = np.argsort(pos, kind="stable")
    old_level = plan._level
    level_all = np.concatenate([old_level[keep_old], old_level[parent_of] + 1])[order]
    n_old = len(keep_old)
    if renumber:
        ids_all = np.arange(len(order), dtype=_I64)
    else:
        fresh = int(plan._ids.max()) + 1 + np.arange(len(uniq), dtype=_I64)
        ids_all = np.concatenate([plan._ids[keep_old], fresh])[order]
    inv = np.empty(len(order), dtype=_I64)
    inv[order] = np.arange(len(order), dtype=_I64)
    old_map = np.full(n, -1, dtype=_I64)
    old_map[keep_old] = inv[:n_old]
    new_task = inv[n_old + np.searchsorted(uniq, key_new)]
    out = ~in_sel
    meta = plan._meta()
    meta["levels"] = int(level_all.max())
    return Plan._from_coords(
        meta,
        np.concatenate([c["q_start"][out], pieces["qs"]]),
        np.concatenate([c["q_end"][out], pieces["qe"]]),
        np.concatenate([c["k_start"][out], pieces["ks"]]),
        np.concatenate([c["k_end"][out], pieces["ke"]]),
        np.concatenate([c["kind"][out], pieces["kind"]]),
        np.concatenate([old_map[c["task"][out]], new_task]),
        ids_all, level_all)
