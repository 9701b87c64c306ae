"""The attention mask of a plan, as closed-form integer arithmetic on numpy arrays.

A plan attends query ``i`` (``0 <= i < seq_len``) to key ``j`` (``0 <= j < kv_len``) iff

* ``causal``: ``j <= i + off`` and
* ``window=(left, right)``: ``i + off - left <= j <= i + off + right`` (a ``None`` side is
  unbounded),

where ``off = kv_len - seq_len`` aligns queries with the END of the keys (bottom-right, like
flash-attn; ``off == 0`` for self-attention).  Both together are one band around the shifted
diagonal: ``i + off - lower_shift <= j <= i + off + upper_shift`` with ``upper_shift =
min(right, 0)`` under ``causal`` (:attr:`Mask.upper_shift`, :attr:`Mask.lower_shift`).  This
module is the one place that rule is written: the plans, the attention engine's block
classification and its mask tensors all read it from here.  For every row ``i`` the allowed
keys are the interval ``band(i) = [lo(i), hi(i))`` and both ``lo`` and ``hi`` never decrease
with ``i``; everything here exploits that monotonicity, so no per-token loop is ever needed.

>>> m = Mask(seq_len=4, kv_len=4, causal=True)
>>> m.dense().astype(int).tolist()
[[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
>>> m.count()
10
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Mask"]

_I64 = np.int64


@dataclass(frozen=True)
class Mask:
    """Causal / sliding-window mask of a ``seq_len x kv_len`` attention matrix.

    Parameters
    ----------
    seq_len, kv_len : int
        Number of queries and keys.
    causal : bool
        Key ``j`` allowed for query ``i`` only if ``j <= i + kv_len - seq_len``.
    left, right : int or None
        Sliding window: ``i + off - left <= j <= i + off + right``; ``None`` is unbounded.

    Examples
    --------
    >>> Mask(5, 5, causal=False, left=1, right=0).band(3)
    (2, 4)
    """

    seq_len: int
    kv_len: int
    causal: bool = False
    left: int | None = None
    right: int | None = None

    @classmethod
    def of(cls, seq_len: int, kv_len: int, *, causal: bool = False,
           window: tuple[int | None, int | None] | None = None) -> Mask:
        """The mask of a call or plan given as ``causal`` and ``window=(left, right)`` (None:
        no window).

        >>> Mask.of(5, 5, causal=True, window=(2, None))
        Mask(seq_len=5, kv_len=5, causal=True, left=2, right=None)
        """
        left, right = (None, None) if window is None else window
        return cls(seq_len, kv_len, bool(causal), left, right)

    @property
    def off(self) -> int:
        """Bottom-right alignment offset ``kv_len - seq_len``."""
        return self.kv_len - self.seq_len

    @property
    def trivial(self) -> bool:
        """True when every pair ``(i, j)`` is allowed."""
        return not self.causal and self.left is None and self.right is None

    @property
    def upper_shift(self) -> int | None:
        """Row ``i`` attends keys ``j <= i + off + upper_shift`` (None: no upper edge).

        >>> Mask(8, 8, causal=True, right=3).upper_shift, Mask(8, 8, right=3).upper_shift
        (0, 3)
        """
        if self.causal:
            return 0 if self.right is None else min(self.right, 0)
        return self.right

    @property
    def lower_shift(self) -> int | None:
        """Row ``i`` attends keys ``j >= i + off - lower_shift`` (None: no lower edge)."""
        return self.left

    def block_cuts(self, q0: Any, q1: Any, k0: Any, k1: Any) -> tuple[Any, Any, Any]:
        """How the band meets the blocks rows ``[q0, q1)`` x keys ``[k0, k1)`` (non-empty).

        The four bounds are ints or integer arrays (broadcast).  Returns ``(empty, upper,
        lower)``: ``empty`` where the band allows no pair of the block, ``upper`` / ``lower``
        where the band's upper / lower edge runs through the block (some pair of it is outside
        that edge; read them only where the block is not empty); each is a bool for int bounds
        and a bool array (or a plain ``False``, when that edge does not exist) for arrays.

        >>> Mask(8, 8, causal=True).block_cuts(4, 8, 0, 4)  # below the diagonal: full
        (False, False, False)
        >>> Mask(8, 8, causal=True).block_cuts(0, 4, 4, 8)[0]  # above it: empty
        True
        >>> Mask(8, 8, causal=True, left=2).block_cuts(4, 8, 0, 8)
        (False, True, True)
        """
        up, low, off = self.upper_shift, self.lower_shift, self.off
        empty: Any = False
        upper: Any = False
        lower: Any = False
        if up is not None:
            empty = empty | (q1 - 1 + off + up < k0)
            upper = q0 + off + up < k1 - 1
        if low is not None:
            empty = empty | (q0 + off - low > k1 - 1)
            lower = q1 - 1 + off - low > k0
        if up is not None and low is not None and up + low < 0:
            empty = empty | True
        return empty, upper, lower

    def block_offsets(self, q0: Any, k0: Any) -> tuple[Any, Any]:
        """The band's edges in the LOCAL coordinates of a block whose first row is ``q0`` and
        first key ``k0``: ``(upper, lower)`` such that local row ``a`` attends local key ``c``
        iff ``lower <= c - a <= upper`` (a None side has no edge).

        >>> Mask(8, 8, causal=True, left=2).block_offsets(4, 0)
        (4, 2)
        """
        up, low = self.upper_shift, self.lower_shift
        base = q0 - k0 + self.off
        return (None if up is None else base + up), (None if low is None else base - low)

    def band(self, i: int) -> tuple[int, int]:
        """Allowed keys ``[lo, hi)`` of query ``i`` (``lo >= hi`` means none)."""
        return int(self.lo(np.int64(i))), int(self.hi(np.int64(i)))

    def lo(self, i: np.ndarray) -> np.ndarray:
        """First allowed key of each row in ``i`` (vectorised)."""
        i = np.asarray(i, dtype=_I64)
        if self.left is None:
            return np.zeros_like(i)
        return np.maximum(0, i + (self.off - self.left))

    def hi(self, i: np.ndarray) -> np.ndarray:
        """One past the last allowed key of each row in ``i`` (vectorised; may be <= lo)."""
        i = np.asarray(i, dtype=_I64)
        h = np.full_like(i, self.kv_len)
        if self.upper_shift is not None:
            h = np.minimum(h, i + (self.off + self.upper_shift + 1))
        return h

    def first_hit(
        self, y0: np.ndarray, y1: np.ndarray, g0: np.ndarray, g1: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where does the box ``[y0, y1) x [g0, g1)`` meet the allowed region?

        All four arrays broadcast; boxes must be non-empty (``y0 < y1``, ``g0 < g1``).
        Returns ``(hit, i, j)``: ``hit`` is True where some allowed ``(i, j)`` lies in the box, and
        then ``(i, j)`` is the first such position in row-major order.

        ``[g0, g1)`` meets ``band(i)`` iff ``lo(i) < g1``, ``hi(i) > g0`` and ``lo(i) < hi(i)``;
        with windows of non-negative sides each condition is a prefix or a suffix of the rows, so
        the rows that hit form one interval ``[ia, ib]`` given by a few maxima and minima.
        """
        y0 = np.asarray(y0, dtype=_I64)
        g0 = np.asarray(g0, dtype=_I64)
        ia = y0
        if self.upper_shift is not None:
            ia = np.maximum(ia, g0 - (self.off + self.upper_shift))
        ib = np.asarray(y1, dtype=_I64) - 1
        if self.left is not None:
            ib = np.minimum(ib, np.asarray(g1, dtype=_I64) - (self.off - self.left + 1))
        hit = ia <= ib
        j = np.maximum(g0, self.lo(ia))
        return hit, ia, j

    def row_count(self, y0: int, y1: int) -> int:
        """Number of allowed pairs in rows ``[y0, y1)`` (exact, closed form)."""
        return _band_count(self, y0, y1)

    def count(self) -> int:
        """Number of allowed pairs ``(i, j)`` in the whole matrix."""
        return _band_count(self, 0, self.seq_len)

    def dense(self) -> np.ndarray:
        """Boolean ``(seq_len, kv_len)`` matrix of allowed pairs (reference; small sizes only)."""
        i = np.arange(self.seq_len, dtype=_I64)[:, None]
        j = np.arange(self.kv_len, dtype=_I64)[None, :]
        ok = np.ones((self.seq_len, self.kv_len), dtype=bool)
        if self.upper_shift is not None:
            ok &= j <= i + self.off + self.upper_shift
        if self.lower_shift is not None:
            ok &= j >= i + self.off - self.lower_shift
        return ok


def _band_count(mask: Mask, y0: int, y1: int) -> int:
    """Sum over rows ``i`` in ``[y0, y1)`` of ``max(0, hi(i) - lo(i))``.

    ``hi - lo`` is piecewise affine with slope -1, 0 or 1 between the breakpoints where one of the
    clamps switches; on each piece the clipped sum is an arithmetic series.
    """
    if y1 <= y0:
        return 0
    off, kv = mask.off, mask.kv_len
    cuts = {y0, y1}
    cand = []
    up, low = mask.upper_shift, mask.lower_shift
    if up is not None:
        cand += [kv - off - up - 1, -off - up - 1, -off - up]
    if low is not None:
        cand += [low - off, low - off + 1, kv + low - off]
    for c in cand:
        for x in (c, c + 1):
            if y0 < x < y1:
                cuts.add(int(x))
    pts = sorted(cuts)
    total = 0
    for a, b in itertools.pairwise(pts):
        fa = int(mask.hi(np.int64(a))) - int(mask.lo(np.int64(a)))
        if b - a == 1:
            total += max(0, fa)
            continue
        fb = int(mask.hi(np.int64(a + 1))) - int(mask.lo(np.int64(a + 1)))
        slope = fb - fa  # affine on [a, b): no breakpoint inside
        total += _clipped_series(fa, slope, b - a)
    return total


def _clipped_series(f0: int, slope: int, n: int) -> int:
    """Sum of ``max(0, f0 + slope * t)`` for ``t = 0 .. n-1`` with ``slope`` in {-1, 0, 1}."""
    if slope == 0:
        return max(0, f0) * n
    if slope == 1:
        # terms f0, f0+1, ..., f0+n-1; skip the non-positive ones
        start = max(f0, 1)
        end = f0 + n - 1
        return 0 if end < start else (start + end) * (end - start + 1) // 2
    if slope == -1:
        end = f0
        start = max(f0 - n + 1, 1)
        return 0 if end < start else (start + end) * (end - start + 1) // 2
    raise AssertionError(f"unexpected slope {slope}")  # pragma: no cover
