"""Interval arithmetic on plan arrays (numpy, CSR per task), for :mod:`cqs_design.plans.plan`."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cqs_design.plans.check import _blocks

__all__ = ["causal_pairs", "design_segments", "exact_sum", "exact_sum_products",
           "merge_ranges", "ranges_overlap", "sorted_unique"]

_I64 = np.int64


def _per_task(ptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    csum = np.concatenate([[0], np.cumsum(values)]).astype(_I64)
    return csum[ptr[1:]] - csum[ptr[:-1]]


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted union of half-open ranges ``(start, end)``; empty ones are dropped, touching
    ones joined.

    >>> merge_ranges([(4, 6), (0, 2), (2, 3), (5, 8), (9, 9)])
    ((0, 3), (4, 8))
    """
    out: list[list[int]] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((s, e) for s, e in out)


def ranges_overlap(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> bool:
    """Whether some half-open range of ``a`` shares a position with some range of ``b``.

    >>> ranges_overlap([(0, 2)], [(2, 4)]), ranges_overlap([(0, 3), (8, 9)], [(2, 4)])
    (False, True)
    """
    b = list(b)
    return any(s < e2 and s2 < e for s, e in a for s2, e2 in b)


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """``np.unique(x)`` by sorting a copy (numpy 2's hash-based unique is many times slower on
    the large integer arrays of plans).

    >>> sorted_unique(np.array([3, 1, 3, 2])).tolist()
    [1, 2, 3]
    """
    x = np.sort(np.asarray(x).reshape(-1))
    keep = np.ones(len(x), dtype=bool)
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


def exact_sum(x: np.ndarray) -> int:
    """Exact sum of non-negative int64 values below ``2**62`` (numpy's sum could overflow).

    >>> exact_sum(np.array([2**61, 2**61, 2**61], dtype=np.int64)) == 3 * 2**61
    True
    """
    x = np.asarray(x)
    if x.dtype == object:
        return int(sum(x.tolist()))
    total = 0
    for s, e in _blocks(len(x)):
        part = x[s:e].astype(_I64)
        total += (int((part >> 31).sum()) << 31) + int((part & ((1 << 31) - 1)).sum())
    return total


def exact_sum_products(h: np.ndarray, w: np.ndarray) -> int:
    """Exact ``sum(h * w)`` of non-negative int64 arrays with values below ``2**41``.

    >>> n = np.array([10**12], dtype=np.int64)
    >>> exact_sum_products(n, n) == 10**24
    True
    """
    h = np.asarray(h, dtype=_I64)
    w = np.asarray(w, dtype=_I64)
    if len(h) == 0:
        return 0
    if int(h.max()) * int(w.max()) * len(h) < 1 << 62:  # no overflow possible: one pass
        return int((h * w).sum())
    return (exact_sum(h * (w >> 21)) << 21) + exact_sum(h * (w & ((1 << 21) - 1)))


def causal_pairs(qs: np.ndarray, qe: np.ndarray, ks: np.ndarray, ke: np.ndarray,
                 off: int) -> np.ndarray:
    """Pairs with ``k <= q + off`` in each rectangle ``[qs, qe) x [ks, ke)`` (closed form).

    Vectorised over numpy arrays of rectangle coordinates; used for work estimates.  Exact in
    int64 while rectangle sides stay below ``2**30``; pass ``dtype=object`` arrays beyond.

    >>> import numpy as np
    >>> causal_pairs(np.array([0]), np.array([4]), np.array([0]), np.array([4]), 0).tolist()
    [10]
    """
    w = ke - ks

    def s(m: np.ndarray) -> np.ndarray:  # sum of clip(x, 0, w) for x < m
        m = np.maximum(m, 0)
        return np.where(m <= w + 1, m * (m - 1) // 2, w * (w + 1) // 2 + (m - w - 1) * w)

    x0 = qs + off + 1 - ks
    return s(x0 + (qe - qs)) - s(x0)


def design_segments(elements: np.ndarray, bounds: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR ``(ptr, start, end)`` of the merged chunks ``{i + d mod v : d in D}`` of every task
    ``i`` of one CQS level (chunk ``c`` = tokens ``[bounds[c], bounds[c+1])``): the segments of
    a one-level plan whose tasks use all their chunks.  Time about ``v * k``.

    >>> ptr, s, e = design_segments(np.array([0, 1, 3]), np.arange(8) * 2)
    >>> [(int(a), int(b)) for a, b in zip(s[ptr[0]:ptr[1]], e[ptr[0]:ptr[1]])]
    [(0, 4), (6, 8)]
    """
    v = len(bounds) - 1
    chunks = np.sort((np.arange(v, dtype=_I64)[:, None] + np.asarray(elements, _I64)) % v,
                     axis=1)
    k = chunks.shape[1]
    start = np.ones((v, k), dtype=bool)
    start[:, 1:] = chunks[:, 1:] != chunks[:, :-1] + 1
    end = np.ones((v, k), dtype=bool)
    end[:, :-1] = start[:, 1:]
    ptr = np.concatenate([[0], np.cumsum(start.sum(axis=1))]).astype(_I64)
    return ptr, bounds[chunks[start]].astype(_I64), bounds[chunks[end] + 1].astype(_I64)


def _bitmap_segments(a: dict[str, np.ndarray], n: int, which: str
                     ) -> tuple[np.ndarray, ...] | None:
    """Segments of unit-cell plans (one level) from a tasks x cells bitmap; None if not
    applicable (cells of several sizes, different query/key boundaries, or too large)."""
    same_grid = len(a["qb"]) == len(a["kb"]) and bool((a["qb"] == a["kb"]).all())
    if which == "all" and not same_grid:
        return None
    b = a["kb"] if which == "k" else a["qb"]
    cells = len(b) - 1
    parts = [("q0", "q1")] if which == "q" else [("k0", "k1")] if which == "k" else \
        [("q0", "q1"), ("k0", "k1")]
    for lo, hi in parts:
        for s, e in _blocks(len(a[lo])):
            if not bool((a[hi][s:e] - a[lo][s:e] == 1).all()):
                return None
    if n * (cells + 2) > 400_000_000:
        return _sparse_cell_segments(a, n, parts, b)
    grid = np.zeros((n, cells + 2), dtype=bool)
    for lo, _ in parts:
        for s, e in _blocks(len(a[lo])):
            grid[a["task"][s:e], a[lo][s:e].astype(_I64) + 1] = True
    step = np.diff(grid.view(np.int8), axis=1)  # +1: a run starts, -1: a run ends
    t_s, c_s = np.nonzero(step == 1)
    _, c_e = np.nonzero(step == -1)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(t_s, minlength=n))]).astype(_I64)
    return ptr, b[c_s], b[c_e]


def _sparse_cell_segments(a: dict[str, np.ndarray], n: int, parts: list[tuple[str, str]],
                          b: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`_bitmap_segments` without the bitmap: the distinct (task, cell) codes, sorted,
    and their runs of consecutive cells (time about the number of rectangles)."""
    w = len(b)  # cells + 1: a code never runs into the next task's
    codes = sorted_unique(np.concatenate([a["task"].astype(_I64) * w + a[lo] for lo, _ in parts]))
    t, c = codes // w, codes % w
    start = np.ones(len(codes), dtype=bool)
    start[1:] = (t[1:] != t[:-1]) | (c[1:] != c[:-1] + 1)
    end = np.ones(len(codes), dtype=bool)
    end[:-1] = start[1:]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(t[start], minlength=n))]).astype(_I64)
    return ptr, b[c[start]], b[c[end] + 1]


def _unique_intervals(task: np.ndarray, i0: np.ndarray, i1: np.ndarray, b: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((i1, i0, task))
    t, x0, x1 = task[order], i0[order], i1[order]
    keep = np.ones(len(t), dtype=bool)
    keep[1:] = (t[1:] != t[:-1]) | (x0[1:] != x0[:-1]) | (x1[1:] != x1[:-1])
    return t[keep], b[x0[keep]], b[x1[keep]]


def _merge_intervals(t: np.ndarray, s: np.ndarray, e: np.ndarray, n: int, width: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge intervals per task into CSR ``(ptr, start, end)`` (touching intervals merge).

    The per-task running maximum of the ends uses ``task * W + rank(end)`` with ``W`` the
    number of distinct ends, so it stays in int64 whatever the coordinates (``width`` is only
    kept for the callers' convenience).
    """
    order = np.lexsort((s, t))
    t, s, e = t[order], s[order], e[order]
    ends, e_rank = np.unique(e, return_inverse=True)
    w = len(ends) + 1
    base = t.astype(_I64) * w
    run = ends[np.maximum.accumulate(base + e_rank.reshape(-1)) - base]
    new = np.ones(len(t), dtype=bool)
    new[1:] = (t[1:] != t[:-1]) | (s[1:] > run[:-1])
    starts = np.flatnonzero(new)
    ends_at = np.concatenate([starts[1:], [len(t)]]) - 1
    seg_t = t[starts]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(seg_t, minlength=n))]).astype(_I64)
    return ptr, s[starts].astype(_I64), run[ends_at].astype(_I64)
