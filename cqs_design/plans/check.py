"""Vectorised proof that a plan's rectangles cover the attended region exactly once.

Rectangles are held in *index form*: two sorted boundary arrays ``qb`` (query token
boundaries, starting at 0 and ending at ``seq_len``) and ``kb`` (key boundaries), and per
rectangle the indices ``q0 < q1`` into ``qb`` and ``k0 < k1`` into ``kb``; the rectangle is
``[qb[q0], qb[q1]) x [kb[k0], kb[k1])`` in token coordinates.

The proof (:func:`check_cover`):

1. Split every rectangle along ``qb`` into *row cells* ``[qb[c], qb[c+1])`` (a no-op when the
   query intervals of all rectangles are already equal-or-disjoint, e.g. one level of CQS).
   Inside one row cell every row sees the same rectangles.
2. Sort the pieces by (row cell, first key) -- skipped when already sorted -- and walk each row
   cell left to right with a running maximum of key ends: a piece starting before the running
   maximum overlaps an earlier one (a doubly covered position); a piece starting after it leaves a
   gap, and so does the space after the last piece and a row cell without pieces.
3. A gap is harmless only if the mask empties it for every row of the cell; that is one closed
   form per gap (:meth:`cqs_design.plans.mask.Mask.first_hit`), which also names the first
   uncovered position.

Everything is numpy over arrays of rectangles, gaps and row cells: time about the number of
rectangles, never the number of tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cqs_design.plans.mask import Mask

__all__ = ["CoverProblem", "check_cover", "check_rectangles", "check_segments"]

_I64 = np.int64


@dataclass(frozen=True)
class CoverProblem:
    """The first position where a cover fails: ``(i, j)`` and a sentence saying why."""

    i: int
    j: int
    message: str


def _add_uncovered(problems: list, hit: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> None:
    """Append the first allowed-but-uncovered position among ``first_hit``'s answers."""
    if bool(hit.any()):
        ii, jj = ii[hit], jj[hit]
        f = _first(ii, jj)
        problems.append(CoverProblem(int(ii[f]), int(jj[f]), _uncovered(int(ii[f]), int(jj[f]))))


def _first(i: np.ndarray, j: np.ndarray) -> int:
    """Index of the lexicographically smallest ``(i, j)`` (arrays non-empty)."""
    mi = i.min()
    cand = np.flatnonzero(i == mi)
    return int(cand[np.argmin(j[cand])])


#: Rectangles processed per numpy block (bounds temporaries of huge plans to ~100 MB).
BLOCK = 1 << 22


def _blocks(n: int, block: int = BLOCK) -> list[tuple[int, int]]:
    return [(s, min(s + block, n)) for s in range(0, n, block)]


def check_cover(
    mask: Mask,
    qb: np.ndarray,
    kb: np.ndarray,
    q0: np.ndarray,
    q1: np.ndarray,
    k0: np.ndarray,
    k1: np.ndarray,
    describe: Callable[[int], str] = lambda r: f"rectangle #{r}",
    block: int = BLOCK,
) -> CoverProblem | None:
    """Return the first position not covered exactly once, or ``None`` when the cover is exact.

    Kinds do not matter here (a "causal" rectangle is only used in causal plans, where the mask
    already removes what it drops); :func:`check_rectangles` does the per-rectangle checks.
    ``describe(r)`` names rectangle ``r`` in error messages.  Work is done in blocks of whole
    row cells so temporaries stay small for plans of hundreds of millions of rectangles.
    """
    n = len(q0)
    nq = len(qb) - 1  # number of row cells
    if n == 0:
        if mask.count() > 0:
            _hit, i, j = mask.first_hit(_arr(0), _arr(mask.seq_len), _arr(0), _arr(mask.kv_len))
            return CoverProblem(int(i[0]), int(j[0]), _uncovered(int(i[0]), int(j[0])))
        return None

    # 1. split into row cells (only when some rectangle spans several)
    unit = all(bool((q1[s:e] - q0[s:e] == 1).all()) for s, e in _blocks(n, block))
    if unit:
        fast = _fast_cover(mask, qb, kb, q0, k0, k1, block)
        if fast is not False:
            return fast
    rid: np.ndarray | None = None
    if unit:
        cq, ck0, ck1 = q0, k0, k1
    else:
        span = q1.astype(_I64) - q0
        rid = np.repeat(np.arange(n, dtype=_I64), span)
        starts = np.cumsum(span) - span
        cq = q0[rid].astype(_I64) + (np.arange(len(rid), dtype=_I64) - np.repeat(starts, span))
        ck0 = k0[rid]
        ck1 = k1[rid]

    # 2. sort by (row cell, first key) unless already sorted
    m = len(cq)
    ordered = True
    for s, e in _blocks(m, block):
        e2 = min(e + 1, m)
        a, b = cq[s:e2].astype(_I64), ck0[s:e2].astype(_I64)
        dq = np.diff(a)
        if not bool(((dq > 0) | ((dq == 0) & (np.diff(b) >= 0))).all()):
            ordered = False
            break
    if not ordered:
        order = np.lexsort((ck0, cq))
        cq, ck0, ck1 = cq[order], ck0[order], ck1[order]
        rid = order if rid is None else rid[order]

    problems: list[CoverProblem] = []
    present = np.zeros(nq, dtype=bool)
    s = 0
    while s < m:
        e = min(s + block, m)
        if e < m:  # end the block at a row-cell boundary
            e2 = int(np.searchsorted(cq, cq[e], side="left"))
            e = e2 if e2 > s else int(np.searchsorted(cq, cq[s], side="right"))
        p = _cover_block(mask, qb, kb, cq[s:e], ck0[s:e], ck1[s:e], s, rid, describe)
        present[cq[s:e]] = True
        if p is not None:
            problems.append(p)
            break  # later blocks hold later rows only
        s = e

    # rows with no rectangle at all
    empty = np.flatnonzero(~present).astype(_I64)
    if len(empty) and mask.kv_len > 0:
        _add_uncovered(problems, *mask.first_hit(qb[empty], qb[empty + 1], 0, mask.kv_len))
    if not problems:
        return None
    return min(problems, key=lambda p: (p.i, p.j))


def _fast_cover(mask: Mask, qb: np.ndarray, kb: np.ndarray, cq: np.ndarray, ck0: np.ndarray,
                ck1: np.ndarray, block: int) -> CoverProblem | Literal[False] | None:
    """Fast path for unit row cells: if, in array order, each piece starts exactly where the
    previous piece of its cell ends and cells increase, the only possible gaps are before the
    first and after the last piece of each cell and in cells with no piece.  Returns
    ``False`` when the arrays are not in that shape (the general walk then decides)."""
    m = len(cq)
    firsts = [np.zeros(1, dtype=_I64)]
    for s, e in _blocks(m, block):
        e2 = min(e + 1, m)
        a, b0, b1 = cq[s:e2], ck0[s:e2], ck1[s:e2]
        step = a[1:] != a[:-1]
        ok = (step & (a[1:] > a[:-1])) | (~step & (b0[1:] == b1[:-1]))
        if not bool(ok.all()):
            return False
        firsts.append(np.flatnonzero(step).astype(_I64) + (s + 1))
    first = np.concatenate(firsts)
    last = np.concatenate([first[1:] - 1, [m - 1]])
    cells = cq[first].astype(_I64)
    nk = len(kb) - 1
    present = np.zeros(len(qb) - 1, dtype=bool)
    present[cells] = True
    empty = np.flatnonzero(~present).astype(_I64)
    lo = ck0[first].astype(_I64)
    hi = ck1[last].astype(_I64)
    head = np.flatnonzero(lo > 0)
    tail = np.flatnonzero(hi < nk)
    gy = np.concatenate([cells[head], cells[tail], empty])
    g0 = np.concatenate([np.zeros(len(head), _I64), hi[tail], np.zeros(len(empty), _I64)])
    g1 = np.concatenate([lo[head], np.full(len(tail), nk, _I64), np.full(len(empty), nk, _I64)])
    if len(gy) and mask.kv_len > 0:
        hit, ii, jj = mask.first_hit(qb[gy], qb[gy + 1], kb[g0], kb[g1])
        if bool(hit.any()):
            ii, jj = ii[hit], jj[hit]
            f = _first(ii, jj)
            return CoverProblem(int(ii[f]), int(jj[f]), _uncovered(int(ii[f]), int(jj[f])))
    return None


def _cover_block(
    mask: Mask,
    qb: np.ndarray,
    kb: np.ndarray,
    cq: np.ndarray,
    ck0: np.ndarray,
    ck1: np.ndarray,
    base: int,
    rid: np.ndarray | None,
    describe: Callable[[int], str],
) -> CoverProblem | None:
    """Overlaps and gaps of whole row cells ``cq`` (sorted by cell, then first key)."""
    m = len(cq)
    nk = len(kb)
    problems: list[CoverProblem] = []
    cq64 = cq.astype(_I64)
    ck0 = ck0.astype(_I64)
    ck1 = ck1.astype(_I64)
    local = cq64 - cq64[0]
    new = np.empty(m, dtype=bool)
    new[0] = True
    np.not_equal(cq64[1:], cq64[:-1], out=new[1:])
    enc = local * nk
    run = np.maximum.accumulate(enc + ck1) - enc  # running max of key ends per cell
    del enc
    prev = np.empty(m, dtype=_I64)
    prev[0] = 0
    prev[1:] = run[:-1]
    prev[new] = 0

    over = np.flatnonzero(ck0 < prev)
    if len(over):
        ii = qb[cq64[over]]
        jj = kb[ck0[over]]
        f = _first(ii, jj)
        r = int(over[f])
        # the earlier piece of the same row cell that contains the position
        cell = np.flatnonzero(cq64[:r] == cq64[r])
        other = cell[(ck0[cell] <= ck0[r]) & (ck1[cell] > ck0[r])]
        a, b = _rect_id(rid, base + int(other[0])), _rect_id(rid, base + r)
        problems.append(CoverProblem(int(ii[f]), int(jj[f]),
                                     f"position ({int(ii[f])}, {int(jj[f])}) is covered twice "
                                     f"({describe(a)} and {describe(b)})"))

    # gaps: before a piece, and after the last piece of a cell
    gap = np.flatnonzero(ck0 > prev)
    last = np.empty(m, dtype=bool)
    last[:-1] = new[1:]
    last[-1] = True
    lr = run[last]
    tail = np.flatnonzero(lr < nk - 1)
    gy = np.concatenate([cq64[gap], cq64[last][tail]])
    g0 = np.concatenate([prev[gap], lr[tail]])
    g1 = np.concatenate([ck0[gap], np.full(len(tail), nk - 1, dtype=_I64)])
    if len(gy):
        _add_uncovered(problems, *mask.first_hit(qb[gy], qb[gy + 1], kb[g0], kb[g1]))
    if not problems:
        return None
    return min(problems, key=lambda p: (p.i, p.j))


def check_rectangles(
    mask: Mask,
    qs: np.ndarray,
    qe: np.ndarray,
    ks: np.ndarray,
    ke: np.ndarray,
    kind: np.ndarray,
    describe: Callable[[int], str] = lambda r: f"rectangle #{r}",
) -> CoverProblem | str | None:
    """Per-rectangle checks, in token coordinates (``describe(r)`` names rectangle ``r``).

    * a "causal" rectangle only in a causal plan;
    * in a causal plan a "full" rectangle must not contain a masked position ``j > i + off``
      (the executor would attend it): returns that position as a :class:`CoverProblem`;
    * every rectangle meets the allowed region (rectangles the mask empties are dropped).
    """
    if not mask.causal:
        bad = np.flatnonzero(kind != 0)
        if len(bad):
            return f"{describe(int(bad[0]))} has kind 'causal' but the plan is not causal"
    else:
        full = kind == 0
        # first masked position of a full rectangle: row qs, key max(ks, qs + off + 1)
        bad = np.flatnonzero(full & (ke - 1 > qs + mask.off))
        if len(bad):
            ii = qs[bad]
            jj = np.maximum(ks[bad], ii + mask.off + 1)
            f = _first(ii, jj)
            return CoverProblem(int(ii[f]), int(jj[f]),
                                f"position ({int(ii[f])}, {int(jj[f])}) is masked by causality "
                                f"but lies in 'full' {describe(int(bad[f]))}")
    if not mask.trivial:
        hit, _, _ = mask.first_hit(qs, qe, ks, ke)
        bad = np.flatnonzero(~hit)
        if len(bad):
            r = int(bad[0])
            return (f"{describe(r)} [{int(qs[r])}, {int(qe[r])}) x "
                    f"[{int(ks[r])}, {int(ke[r])}) lies entirely outside the mask and should "
                    "have been dropped")
    return None


def check_segments(
    task: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    seg_task: np.ndarray,
    seg_s: np.ndarray,
    seg_e: np.ndarray,
    width: int,
) -> int | None:
    """Index of the first interval ``[lo, hi)`` not inside one segment of its task, or ``None``.

    Segments must be sorted by ``(seg_task, seg_s)``; ``width`` exceeds every coordinate (kept
    for the callers; the keys use coordinate ranks, so they never overflow).
    """
    if len(task) == 0:
        return None
    # task * W + rank(coordinate): the same order as task * width + coordinate, in int64
    coords, rank = np.unique(np.concatenate([seg_s, lo]), return_inverse=True)
    rank = rank.reshape(-1)
    w = len(coords) + 1
    key_s = seg_task.astype(_I64) * w + rank[:len(seg_s)]
    key = task.astype(_I64) * w + rank[len(seg_s):]
    j = np.searchsorted(key_s, key, side="right") - 1
    jc = np.maximum(j, 0)
    ok = (j >= 0) & (seg_task[jc] == task) & (hi <= seg_e[jc])
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else None


def _rect_id(rid: np.ndarray | None, r: int) -> int:
    return r if rid is None else int(rid[r])


def _arr(x: int) -> np.ndarray:
    return np.array([x], dtype=_I64)


def _uncovered(i: int, j: int) -> str:
    return f"position ({i}, {j}) is attended but covered by no rectangle"
