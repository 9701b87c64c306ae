"""Large prime divisors of ``v = n^2 + n + 1``, found by sieving with roots, never by factoring.

A prime ``w`` divides ``v`` exactly when ``n`` is a root of ``x^2 + x + 1`` modulo ``w``
(``w = 3`` or ``w = 1 (mod 3)``; the two roots are ``r`` and ``w - 1 - r``).  The per-block sieve
(:mod:`cqs_design.ppc.sieve`) uses the primes up to ``W = 2^24``; above that a block of
``2.5 * 10^5`` orders is too short for a per-block pass over tens of millions of roots, so
:class:`LargeDivisors` handles a whole **segment** of orders (``10^7`` or more) at once:

* :func:`primes_1mod3` -- the primes ``w = 1 (mod 3)`` in a range (a segmented sieve of the
  numbers ``6k + 1``);
* :func:`cube_root_of_unity` -- for each such ``w``, the smaller root ``r`` of ``x^2 + x + 1``
  (``g^((w - 1)/3)`` for a non-cube ``g``, vectorised; products stay below ``2^62`` because
  ``w < 2^31``);
* :class:`LargeDivisors` -- every pair ``(n, w)`` with ``lo <= n < hi``, ``w_min < w <= w_max``
  and ``w | v(n)``, sorted by ``n``; :meth:`LargeDivisors.block` hands out a block's pairs.

With every prime ``w <= sqrt(v)`` sieved, what is left of ``v`` is 1 or a prime: no
Pollard-Brent, no primality test.  For ``n < 2^31`` the roots table up to ``2^31`` has 5.2*10^7
primes (about 25 s to build once per process, 420 MB as ``uint32``); a segment of
``2.5 * 10^7`` orders near ``2 * 10^9`` has about 6.4 million pairs (2-3 s).

>>> ws = primes_1mod3(0, 50)
>>> ws.tolist(), cube_root_of_unity(ws).tolist()
([7, 13, 19, 31, 37, 43], [2, 3, 7, 5, 10, 6])
>>> d = LargeDivisors(1000, 1010, w_min=50)
>>> [(int(i), int(w)) for i, w in zip(*d.block(1000, 1010))]
[(3, 79), (3, 607), (5, 97), (8, 727)]
"""

from __future__ import annotations

import math

import numpy as np

from cqs_design.ppc.numbers import primes_up_to

__all__ = ["MAX_ROOT_PRIME", "LargeDivisors", "cube_root_of_unity", "primes_1mod3",
           "root_table"]

#: Largest prime the roots table holds: ``w < 2^31`` keeps ``w^2 < 2^62`` (int64 products).
MAX_ROOT_PRIME = (1 << 31) - 1
_CHUNK = 1 << 22


def primes_1mod3(a: int, b: int) -> np.ndarray:
    """The primes ``w = 1 (mod 3)`` with ``a < w <= b``, ascending (``int64``).

    A segmented sieve of Eratosthenes over the numbers ``6k + 1``: the prime ``p`` divides
    ``6k + 1`` for ``k = -6^(-1) (mod p)``.

    >>> primes_1mod3(100, 200).tolist()
    [103, 109, 127, 139, 151, 157, 163, 181, 193, 199]
    """
    a, b = max(int(a), 0), int(b)
    if b < 7 or b <= a:
        return np.zeros(0, dtype=np.int64)
    ps = primes_up_to(math.isqrt(b))
    ps = ps[ps >= 5]
    neg_inv6 = np.array([(-pow(6, -1, p)) % p for p in ps.tolist()], dtype=np.int64)
    k_lo, k_hi = a // 6, (b - 1) // 6 + 1  # k in [k_lo, k_hi): 6k + 1 covers (a, b]
    out = []
    chunk = 1 << 24
    for k0 in range(k_lo, k_hi, chunk):
        k1 = min(k0 + chunk, k_hi)
        s = np.ones(k1 - k0, dtype=bool)
        starts = (neg_inv6 - k0) % ps
        for p, st in zip(ps.tolist(), starts.tolist(), strict=True):
            if p % 6 == 1 and k0 + st == (p - 1) // 6:
                st += p  # p itself is prime
            s[st::p] = False
        w = 6 * (np.flatnonzero(s).astype(np.int64) + k0) + 1
        out.append(w[(w > max(a, 1)) & (w <= b)])
    return np.concatenate(out)


def cube_root_of_unity(ws: np.ndarray) -> np.ndarray:
    """For primes ``w = 1 (mod 3)`` below ``2^31``: the smaller root of ``x^2 + x + 1`` mod ``w``.

    ``g^((w - 1)/3)`` is a nontrivial cube root of unity for the first ``g`` that is not a cube
    modulo ``w``; the other root is ``w - 1 - r``.

    >>> cube_root_of_unity(np.array([7, 13, 2147483029])).tolist()
    [2, 3, 618384523]
    """
    ws = np.asarray(ws, dtype=np.int64)
    out = np.empty(len(ws), dtype=np.int64)
    for c in range(0, len(ws), _CHUNK):
        w = ws[c:c + _CHUNK]
        r = np.ones(len(w), dtype=np.int64)
        todo = np.arange(len(w))
        for g in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61):
            if not len(todo):
                break
            wt = w[todo]
            e = (wt - 1) // 3
            res = np.ones(len(wt), dtype=np.int64)
            base = np.full(len(wt), g, dtype=np.int64) % wt
            for bit in range(int(e.max()).bit_length()):
                odd = ((e >> bit) & 1).astype(bool)
                res = np.where(odd, res * base % wt, res)
                base = base * base % wt
            r[todo] = res
            todo = todo[res == 1]
        if len(todo):  # pragma: no cover - every prime below 2^31 has a non-cube below 61
            raise AssertionError(f"no non-cube found modulo {w[todo[:3]].tolist()}")
        out[c:c + _CHUNK] = np.minimum(r, r * r % w)
    return out


_TABLES: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}


def root_table(w_min: int, w_max: int) -> tuple[np.ndarray, np.ndarray]:
    """``(w, r)`` as ``uint32`` arrays for the primes ``w = 1 (mod 3)``, ``w_min < w <= w_max``.

    Built once per process and ``w_min``, extended when a larger ``w_max`` is asked for
    (about 25 s and 420 MB to ``2^31``); slices of it are returned.
    """
    if w_max > MAX_ROOT_PRIME:
        raise ValueError(f"w_max must be <= 2^31 - 1, got {w_max}")
    top, w, r = _TABLES.get(w_min, (w_min, np.zeros(0, np.uint32), np.zeros(0, np.uint32)))
    if w_max > top:
        new_w = primes_1mod3(top, w_max)
        new_r = cube_root_of_unity(new_w)
        w = np.concatenate([w, new_w.astype(np.uint32)])
        r = np.concatenate([r, new_r.astype(np.uint32)])
        top = w_max
        _TABLES[w_min] = (top, w, r)
    stop = int(np.searchsorted(w, w_max, side="right"))
    return w[:stop], r[:stop]


class LargeDivisors:
    """Every pair ``(n, w)``: ``lo <= n < hi``, ``w`` a prime in ``(w_min, w_max]``, ``w | v``.

    ``w_max`` defaults to ``isqrt(v(hi - 1))``: then together with the primes up to ``w_min``
    every prime divisor of ``v`` but at most one (the cofactor) is found.  Needs
    ``w_max < 2^31`` (``hi <= 2^31``).
    """

    def __init__(self, lo: int, hi: int, *, w_min: int, w_max: int | None = None) -> None:
        if not 0 <= lo < hi:
            raise ValueError(f"need 0 <= lo < hi, got {lo}, {hi}")
        top = math.isqrt((hi - 1) ** 2 + hi) if w_max is None else w_max
        self.lo, self.hi, self.w_min, self.w_max = lo, hi, w_min, min(top, MAX_ROOT_PRIME)
        if top > MAX_ROOT_PRIME:
            raise ValueError(f"w_max = {top} is above 2^31 - 1 (hi = {hi} too large)")
        self.n, self.w = self._pairs()

    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        size = self.hi - self.lo
        if self.w_max <= self.w_min:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        ws, rs = root_table(self.w_min, self.w_max)
        idxs, wss = [], []
        for c in range(0, len(ws), _CHUNK):
            wc = ws[c:c + _CHUNK].astype(np.int64)
            rc = rs[c:c + _CHUNK].astype(np.int64)
            for root in (rc, wc - 1 - rc):
                first = (root - self.lo) % wc
                hit = first < size
                f, w = first[hit], wc[hit]
                if len(w) and int(w[0]) < size:  # w ascending: several hits for small w
                    cnt = (size - 1 - f) // w + 1
                    rep = np.repeat(np.arange(len(f)), cnt)
                    start = np.cumsum(cnt) - cnt
                    step = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(start, cnt)
                    f, w = f[rep] + step * w[rep], w[rep]
                idxs.append(f)
                wss.append(w)
        idx = np.concatenate(idxs)
        w = np.concatenate(wss)
        order = np.argsort(idx, kind="stable")
        return idx[order] + self.lo, w[order]

    def block(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """The pairs with ``lo <= n < hi`` (inside this segment): ``(n - lo, w)``."""
        if not self.lo <= lo <= hi <= self.hi:
            raise ValueError(f"block [{lo}, {hi}) is not inside [{self.lo}, {self.hi})")
        a, b = np.searchsorted(self.n, [lo, hi])
        return self.n[a:b] - lo, self.w[a:b]
