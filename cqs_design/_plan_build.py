"""Building plan rectangles with numpy: chunking, ownership, one level of CQS Divide.

Ownership rule (the CQS mask).  With a cyclic ``(v, k, 1)`` difference set ``D`` (elements
sorted, ``D[0]`` the smallest) task ``i`` holds the chunks ``{i + d mod v : d in D}``.

* An off-diagonal chunk pair ``(a, b)``, ``a != b``, lies in exactly one task: ``a - b`` is
  ``d1 - d2`` for exactly one ordered pair ``d1 != d2`` of ``D``, and the task is ``a - d1``.
* The diagonal block ``(c, c)`` appears in ``k`` tasks; it is owned by task ``c - D[0]``, the
  task whose *base element* ``D[0]`` places it (for a normalized set, ``D[0] == 0`` and task
  ``c`` owns the diagonal of chunk ``c``).  Every chunk's diagonal is owned exactly once.

Both cases are ``owner(a, b) = a - t[(a - b) mod v] (mod v)`` with a table ``t`` of length ``v``:
``t[d1 - d2] = d1`` and ``t[0] = D[0]``.

>>> t = owner_table((0, 1, 3), 7)
>>> t.tolist()
[0, 1, 3, 3, 0, 1, 0]
>>> [int((a - t[(a - b) % 7]) % 7) for a, b in [(1, 0), (3, 1), (2, 2)]]
[0, 0, 2]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from cqs_design._plan_mask import Mask

__all__ = [
    "MAX_BLOCKS",
    "MAX_RECTANGLES",
    "block_bounds",
    "block_rectangles",
    "chunk_bounds",
    "index_dtype",
    "level_one",
    "mask_runs",
    "owner_table",
    "subdivide",
]

_I64 = np.int64

#: Largest number of rectangles one level may hold (about 7 bytes each in memory).
MAX_RECTANGLES = 1 << 30


def chunk_bounds(n: int, v: int) -> np.ndarray:
    """Boundaries of ``v`` chunks of ``n`` tokens whose sizes differ by at most one.

    >>> chunk_bounds(10, 3).tolist()
    [0, 3, 6, 10]
    """
    return (np.arange(v + 1, dtype=_I64) * n) // v


def index_dtype(n: int) -> type[np.signedinteger]:
    """Smallest signed integer type holding ``0 .. n`` (keeps huge plans small)."""
    if n < 2**15:
        return np.int16
    if n < 2**31:
        return np.int32
    return np.int64


def owner_table(elements: Sequence[int], v: int) -> np.ndarray:
    """``t[delta]`` = the ``d1`` of the unique ``d1 - d2 == delta``; ``t[0] = min(D)``."""
    d = np.asarray(sorted(elements), dtype=_I64)
    t = np.full(v, -1, dtype=_I64)
    t[(d[:, None] - d[None, :]) % v] = np.broadcast_to(d[:, None], (len(d), len(d)))
    t[0] = d[0]
    if (t < 0).any():  # pragma: no cover - DifferenceSet guarantees lambda == 1
        raise ValueError(f"{tuple(elements)} is not a (v, k, 1) difference set mod {v}")
    return t


def mask_runs(mask: Mask, qb: np.ndarray, kb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query cell ``[qb[a], qb[a+1])``: the first key cell ``b_lo[a]`` of the run of key cells
    ``[kb[b], kb[b+1])`` the mask leaves non-empty, and the run's length ``cnt[a]`` (0: none).

    The allowed keys of consecutive rows overlap, so the non-empty key cells of one query cell
    are always one contiguous run.

    >>> m = Mask(6, 6, causal=True)
    >>> b = np.array([0, 2, 4, 6])
    >>> [x.tolist() for x in mask_runs(m, b, b)]
    [[0, 0, 0], [1, 2, 3]]
    """
    off, kv = mask.off, mask.kv_len
    ia = qb[:-1].copy()
    ib = qb[1:] - 1
    if mask.causal:
        ia = np.maximum(ia, -off)
    if mask.right is not None:
        ia = np.maximum(ia, -off - mask.right)
    if mask.left is not None:
        ib = np.minimum(ib, kv - off + mask.left - 1)
    has = ia <= ib
    lo = mask.lo(ia)
    hi = mask.hi(ib)
    b_lo = np.searchsorted(kb, lo, side="right") - 1
    b_hi = np.searchsorted(kb, np.maximum(hi - 1, 0), side="right") - 1
    cnt = np.where(has, b_hi - b_lo + 1, 0)
    return np.where(has, b_lo, 0), cnt


def block_bounds(n: int, block: int) -> np.ndarray:
    """Boundaries of blocks of ``block`` tokens over ``n`` tokens (the last one shorter).

    >>> block_bounds(10, 4).tolist()
    [0, 4, 8, 10]
    """
    return np.append(np.arange(0, n, block, dtype=_I64), _I64(n))


#: Most query (or key/value) blocks a block schedule may have.
MAX_BLOCKS = 1 << 24


def block_rectangles(mask: Mask, block_q: int, block_kv: int,
                     stationary: Literal["query", "kv"]) -> dict[str, np.ndarray]:
    """All non-empty (query block) x (key/value block) rectangles, in index form, row-major.

    Returns the arrays of :func:`level_one` plus ``present`` (bool per query block for
    ``stationary="query"``, per key/value block for ``"kv"``: which tasks own something).
    ``task`` numbers the present blocks in order.  ``kind`` is 1 where the causal diagonal
    crosses the rectangle.
    """
    for what, n, b in (("block_q", mask.seq_len, block_q), ("block_kv", mask.kv_len, block_kv)):
        nb = -(-n // b)
        if nb > MAX_BLOCKS:
            raise ValueError(f"{what}={b} cuts {n} tokens into {nb} blocks, more than "
                             f"MAX_BLOCKS={MAX_BLOCKS}; use {what} >= {-(-n // MAX_BLOCKS)}")
    qb = block_bounds(mask.seq_len, block_q)
    kb = block_bounds(mask.kv_len, block_kv)
    b_lo, cnt = mask_runs(mask, qb, kb)
    total = int(cnt.sum())
    if total > MAX_RECTANGLES:
        raise ValueError(f"blocks of block_q={block_q} x block_kv={block_kv} give {total} "
                         f"rectangles, more than MAX_RECTANGLES={MAX_RECTANGLES}; use larger "
                         "blocks")
    it = index_dtype(max(len(qb), len(kb)))
    q0 = np.repeat(np.arange(len(qb) - 1, dtype=_I64), cnt)
    k0 = np.arange(total, dtype=_I64) - np.repeat(np.cumsum(cnt) - cnt - b_lo, cnt)
    kind = np.zeros(total, dtype=np.int8)
    if mask.causal:  # full iff kb[b + 1] - 1 <= qb[a] + off  <=>  b < thr[a]
        thr = np.searchsorted(kb, qb[:-1] + mask.off + 1, side="right") - 1
        kind[:] = k0 >= thr[q0]
    own = q0 if stationary == "query" else k0
    present = np.zeros(len(qb) - 1 if stationary == "query" else len(kb) - 1, dtype=bool)
    present[own] = True
    remap = np.cumsum(present) - 1
    task = remap[own].astype(index_dtype(max(len(present), 1)))
    q0 = q0.astype(it)
    k0 = k0.astype(it)
    return {"qb": qb, "kb": kb, "q0": q0, "q1": q0 + it(1), "k0": k0, "k1": k0 + it(1),
            "kind": kind, "task": task, "present": present}


def level_one(mask: Mask, v: int, elements: Sequence[int], block: int = 1 << 22
              ) -> dict[str, np.ndarray]:
    """All rectangles of one CQS level over the whole matrix, in index form, row-major sorted.

    Returns ``qb, kb`` (chunk boundaries) and per rectangle ``q0, q1, k0, k1`` (chunk indices,
    ``q1 = q0 + 1``), ``kind`` (0 full, 1 causal) and ``task`` (0 .. v-1).  Only the chunk pairs
    the mask leaves non-empty are generated: for query chunk ``a`` they are one contiguous run
    of key chunks, because the allowed keys of consecutive rows overlap.
    """
    qb = chunk_bounds(mask.seq_len, v)
    kb = chunk_bounds(mask.kv_len, v)
    off = mask.off
    b_lo, cnt = mask_runs(mask, qb, kb)
    total = int(cnt.sum())
    if total > MAX_RECTANGLES:
        raise ValueError(f"a v={v} plan of this mask has {total} rectangles, more than "
                         f"MAX_RECTANGLES={MAX_RECTANGLES}; use a smaller design (or levels)")
    small = index_dtype(v)
    out = {"q0": np.empty(total, dtype=small), "k0": np.empty(total, dtype=small),
           "kind": np.zeros(total, dtype=np.int8), "task": np.empty(total, dtype=small)}
    wide = np.int32 if v < 2**30 else _I64
    tw = owner_table(elements, v).astype(wide)
    thr = np.searchsorted(kb, qb[:-1] + off + 1, side="right") - 1 if mask.causal else None
    ends = np.cumsum(cnt)
    size = min(total, block + int(cnt.max(initial=0)))
    buf_a, buf_b, buf_d, buf_t = (np.empty(size, dtype=wide) for _ in range(4))
    buf_m = np.empty(size, dtype=bool)
    row = 0
    while row < v:  # blocks of whole rows, about `block` rectangles each; buffers reused
        last = max(int(np.searchsorted(ends, ends[row] - cnt[row] + block, side="right")),
                   row + 1)
        rows = np.arange(row, min(last, v))
        c = cnt[rows]
        lo_out = int(ends[rows[0]] - c[0])
        hi_out = int(ends[rows[-1]])
        n = hi_out - lo_out
        a, b, d, task, neg = buf_a[:n], buf_b[:n], buf_d[:n], buf_t[:n], buf_m[:n]
        a[:] = np.repeat(rows.astype(wide), c)
        b[:] = np.arange(n, dtype=wide)
        b -= np.repeat((ends[rows] - c - lo_out - b_lo[rows]).astype(wide), c)
        np.subtract(a, b, out=d)  # (a - b) mod v without a division
        np.less(d, 0, out=neg)
        np.add(d, v, out=d, where=neg)
        np.take(tw, d, out=task)
        np.subtract(a, task, out=task)
        np.less(task, 0, out=neg)
        np.add(task, v, out=task, where=neg)
        sl = slice(lo_out, hi_out)
        out["q0"][sl] = a
        out["k0"][sl] = b
        out["task"][sl] = task
        if thr is not None:
            # full iff kb[b + 1] - 1 <= qb[a] + off  <=>  b < thr[a]
            out["kind"][sl] = b >= np.repeat(thr[rows].astype(wide), c)
        row = int(rows[-1]) + 1
    q0, k0 = out["q0"], out["k0"]
    return {
        "qb": qb, "kb": kb, "q0": q0, "q1": q0 + small(1), "k0": k0, "k1": k0 + small(1),
        "kind": out["kind"], "task": out["task"],
    }


def _local(key_s: np.ndarray, seg_s: np.ndarray, loff: np.ndarray, task: np.ndarray,
           x: np.ndarray, width: int) -> np.ndarray:
    """Task-local coordinate of global token ``x`` (which lies in a segment of ``task``)."""
    j = np.searchsorted(key_s, task * width + x, side="right") - 1
    return x - seg_s[j] + loff[j]


def _seg_tables(ptr: np.ndarray, s: np.ndarray, e: np.ndarray, width: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(encoded starts, local offsets, tokens per task) of a CSR segment list."""
    n = len(ptr) - 1
    counts = np.diff(ptr)
    seg_task = np.repeat(np.arange(n, dtype=_I64), counts)
    csum = np.concatenate([[0], np.cumsum(e - s)]).astype(_I64)
    loff = csum[:-1] - np.repeat(csum[ptr[:-1]], counts)
    total = csum[ptr[1:]] - csum[ptr[:-1]]
    return seg_task * width + s, loff, total


def subdivide(
    mask: Mask,
    rects: dict[str, np.ndarray],
    qseg: tuple[np.ndarray, np.ndarray, np.ndarray],
    kseg: tuple[np.ndarray, np.ndarray, np.ndarray],
    v2: int,
    elements2: Sequence[int],
) -> dict[str, np.ndarray]:
    """Apply CQS Divide with a ``(v2, k2, 1)`` design inside tasks, inheriting ownership.

    ``rects`` holds token-coordinate arrays ``qs, qe, ks, ke, kind, task`` (task = index into the
    CSR segment lists ``qseg``/``kseg`` = ``(ptr, start, end)``).  Each task's query tokens (its
    query segments, concatenated in order) are split into ``v2`` sub-chunks, and so are its key
    tokens; sub-task ``j`` owns sub-chunk pair ``(s, t)`` by the same rule as level one.  Every
    parent rectangle is cut along the sub-chunk boundaries and each piece goes to the owner of
    its sub-chunk pair, so the pieces tile exactly what the parent owned.  Pieces the mask
    empties are dropped.  Returns the pieces with ``task`` (parent index) and ``sub`` (0..v2-1).
    """
    width = max(mask.seq_len, mask.kv_len) + 1
    qks, qloff, tq = _seg_tables(*qseg, width)
    kks, kloff, tk = _seg_tables(*kseg, width)
    task = rects["task"].astype(_I64)
    qs, qe, ks, ke = (rects[n].astype(_I64) for n in ("qs", "qe", "ks", "ke"))
    lq0 = _local(qks, qseg[1], qloff, task, qs, width)
    lk0 = _local(kks, kseg[1], kloff, task, ks, width)
    lq1 = lq0 + (qe - qs)
    lk1 = lk0 + (ke - ks)
    tq_r, tk_r = tq[task], tk[task]
    s0 = ((lq0 + 1) * v2 - 1) // tq_r
    s1 = (lq1 * v2 - 1) // tq_r
    t0 = ((lk0 + 1) * v2 - 1) // tk_r
    t1 = (lk1 * v2 - 1) // tk_r
    ns, nt = s1 - s0 + 1, t1 - t0 + 1
    rep = ns * nt
    idx = np.repeat(np.arange(len(qs), dtype=_I64), rep)
    within = np.arange(len(idx), dtype=_I64) - np.repeat(np.cumsum(rep) - rep, rep)
    s = s0[idx] + within // nt[idx]
    t = t0[idx] + within % nt[idx]
    tqi, tki = tq_r[idx], tk_r[idx]
    pq0 = np.maximum(lq0[idx], s * tqi // v2)
    pq1 = np.minimum(lq1[idx], (s + 1) * tqi // v2)
    pk0 = np.maximum(lk0[idx], t * tki // v2)
    pk1 = np.minimum(lk1[idx], (t + 1) * tki // v2)
    shift_q = (qs - lq0)[idx]
    shift_k = (ks - lk0)[idx]
    out_qs, out_qe = pq0 + shift_q, pq1 + shift_q
    out_ks, out_ke = pk0 + shift_k, pk1 + shift_k
    own = owner_table(elements2, v2)
    sub = (s - own[(s - t) % v2]) % v2
    kind = rects["kind"][idx].astype(np.int8)
    keep = np.ones(len(idx), dtype=bool)
    if mask.causal:
        c = kind == 1
        kind = np.where(c & (out_ke - 1 <= out_qs + mask.off), 0, kind).astype(np.int8)
    if not mask.trivial:
        keep, _, _ = mask.first_hit(out_qs, out_qe, out_ks, out_ke)
    return {
        "qs": out_qs[keep], "qe": out_qe[keep], "ks": out_ks[keep], "ke": out_ke[keep],
        "kind": kind[keep], "task": task[idx][keep], "sub": sub[keep],
    }
