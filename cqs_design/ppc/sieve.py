"""The segmented sieve: every order in a block, cheap tests vectorised, survivors one by one.

For a block of orders ``lo <= n < hi`` (:func:`sieve_block`):

1. **Factor n** by sieving with the primes up to ``sqrt(hi)``: each hit is a pair
   ``(n, p)``; exponents by repeated division; what is left is 1 or one prime.
2. **Factor v = n^2 + n + 1 without factoring v**: a prime ``w`` divides ``v`` exactly when
   ``n`` is a root of ``x^2 + x + 1`` modulo ``w`` (``w = 3`` or ``w = 1 (mod 3)``), so sieving
   with the roots of the primes ``w <= W`` gives the pairs ``(n, w)``; dividing them out
   leaves a cofactor with no prime factor up to ``W`` (1 or a prime when ``W^2 > v``).
3. **Cheap tests on whole arrays**: prime powers, Bruck-Ryser-Chowla, and Mann's test for
   every triple ``(n, p | n, w | v)`` (the parity of the order of ``p`` modulo ``w``); for
   the cofactor ``c`` of ``v``, the Jacobi symbols ``(p / c)`` first (``-1`` is Mann's test
   without factoring ``c``), then a primality test, and Pollard-Brent only if ``c`` is
   composite.
4. **Survivors** (and squares, for the Baer test) go to
   :func:`cqs_design.ppc.criteria.decide` with both factorizations, which runs the
   remaining criteria in the same order as for a single order.

The outcome per order is the first criterion that excludes it (the same as
:func:`~cqs_design.ppc.criteria.decide` gives), so the counts by test agree with the
per-order functions.  A :class:`BlockResult` keeps the counts, the certificates of the orders
that needed one of the expensive tests (:data:`STORED_TESTS`) and any open order; every other
certificate is regenerated on demand by :func:`~cqs_design.ppc.criteria.decide`.

>>> r = sieve_block(2, 1000)
>>> r.counts["prime-power"], r.counts["brc"], r.counts["open"]
(193, 266, 0)
>>> sum(r.counts.values()) == 998
True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cqs_design.ppc.certificate import TESTS
from cqs_design.ppc.criteria import decide
from cqs_design.ppc.numbers import (
    cube_roots_of_unity,
    factorize,
    is_prime,
    jacobi,
    primes_up_to,
)
from cqs_design.ppc.order import FACTOR_BUDGET, Order
from cqs_design.ppc.roots import LargeDivisors

__all__ = ["STORED_TESTS", "BlockResult", "needs_large_divisors", "sieve_block",
           "v_sieve_limit"]

#: Tests whose certificates a block result stores (the rest are regenerated in microseconds
#: to milliseconds by :func:`~cqs_design.ppc.criteria.decide`).
STORED_TESTS = ("cover", "subplane", "hall")
#: Outcomes counted per block: prime powers, each test, open orders.
OUTCOMES = ("prime-power", *TESTS, "open")
#: Largest prime ``W`` the ``v``-sieve uses by default (the roots of its 1.06 million primes
#: = 1 mod 3 take about 2 s to compute once per process).
MAX_V_SIEVE = 1 << 24


def v_sieve_limit(hi: int) -> int:
    """The default ``W``: enough to factor every ``v`` of orders below ``hi`` completely
    (``W >= sqrt(v)``), capped at :data:`MAX_V_SIEVE`.

    >>> v_sieve_limit(1000), v_sieve_limit(10**9)
    (1000, 16777216)
    """
    return int(min(MAX_V_SIEVE, max(100, hi)))


def needs_large_divisors(lo: int, hi: int, w_limit: int | None = None) -> bool:
    """Whether some ``v`` of an order in ``[lo, hi)`` can keep two prime factors above the
    block sieve's ``W`` (then :class:`~cqs_design.ppc.roots.LargeDivisors` completes it).

    >>> needs_large_divisors(2, 10**6), needs_large_divisors(10**8, 10**8 + 10)
    (False, True)
    """
    w = v_sieve_limit(hi) if w_limit is None else w_limit
    return (w + 1) ** 2 <= (hi - 1) ** 2 + hi


@dataclass
class BlockResult:
    """Outcome of the orders ``lo <= n < hi``: counts by outcome, stored certificates of the
    orders that needed an expensive test, the open orders (with what was tried), seconds."""

    lo: int
    hi: int
    counts: dict[str, int]
    certificates: list[dict[str, Any]] = field(default_factory=list)
    open: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: with ``sieve_block(..., keep_outcomes=True)``: the outcome of each order (not saved)
    outcomes: list[str] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "counts": self.counts,
                "certificates": self.certificates, "open": self.open,
                "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockResult:
        return cls(int(d["lo"]), int(d["hi"]), {k: int(x) for k, x in d["counts"].items()},
                   list(d.get("certificates", [])), list(d.get("open", [])),
                   float(d.get("seconds", 0.0)))


# --------------------------------------------------------------------------------------------
# vectorised helpers
# --------------------------------------------------------------------------------------------
def _hits(lo: int, size: int, moduli: np.ndarray,
          residues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ``i in [0, size)`` with ``lo + i = residue (mod modulus)``: ``(i, which)``."""
    first = (residues - lo) % moduli
    cnt = np.where(first < size, (size - 1 - first) // moduli + 1, 0)
    which = np.repeat(np.arange(len(moduli)), cnt)
    start = np.cumsum(cnt) - cnt
    step = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(start, cnt)
    return first[which] + step * moduli[which], which


def _exponents(values: np.ndarray, primes: np.ndarray) -> np.ndarray:
    """The exponent of ``primes[i]`` in ``values[i]`` (each pair on its own)."""
    e = np.zeros(len(values), dtype=np.int64)
    x = values.copy()
    live = np.flatnonzero(x % primes == 0)
    while len(live):
        x[live] //= primes[live]
        e[live] += 1
        live = live[x[live] % primes[live] == 0]
    return e


def _int_pow(base: np.ndarray, exp: np.ndarray, mod: np.ndarray) -> np.ndarray:
    """``base ** exp % mod`` elementwise for moduli below ``2**31`` (plain int64)."""
    result = np.ones(len(base), dtype=np.int64)
    b = base % mod
    e = exp.copy()
    while e.any():
        odd = (e & 1).astype(bool)
        result[odd] = result[odd] * b[odd] % mod[odd]
        e >>= 1
        b = b * b % mod
    return result


def _odd_part(x: np.ndarray) -> np.ndarray:
    low = x & -x
    return x // low


@dataclass
class _Factored:
    """Sieve output for a block: pairs (index, prime, exponent) for n and for v."""

    n_idx: np.ndarray
    n_p: np.ndarray
    n_e: np.ndarray
    v_idx: np.ndarray
    v_w: np.ndarray
    v_e: np.ndarray
    v_rest: np.ndarray  # v / (product of the sieved prime powers)
    #: whether every ``v_rest`` is 1 or a prime (every prime up to ``sqrt(v)`` was sieved)
    complete: bool = False


_W_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _v_moduli(limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The primes ``w <= limit`` dividing some ``n^2 + n + 1`` (once per root) and the roots."""
    if limit not in _W_CACHE:
        ws = primes_up_to(limit)
        ws = ws[ws % 3 == 1]
        # a nontrivial cube root of unity g^((w-1)/3), for the first g that is not a cube
        r = np.ones(len(ws), dtype=np.int64)
        for g in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
            todo = np.flatnonzero(r == 1)
            if not len(todo):
                break
            r[todo] = _int_pow(np.full(len(todo), g, dtype=np.int64), (ws[todo] - 1) // 3,
                               ws[todo])
        for i in np.flatnonzero(r == 1):  # pragma: no cover - needs a non-cube above 47
            r[i] = cube_roots_of_unity(int(ws[i]))[0]
        r2 = r * r % ws
        lo_root, hi_root = np.minimum(r, r2), np.maximum(r, r2)
        mod = np.concatenate([[3], np.repeat(ws, 2)]).astype(np.int64)
        res = np.concatenate([[1], np.stack([lo_root, hi_root], axis=1).ravel()])
        _W_CACHE[limit] = (mod, res.astype(np.int64))
    return _W_CACHE[limit]


def _factor_block(lo: int, hi: int, w_limit: int,
                  large: LargeDivisors | None = None) -> _Factored:
    size = hi - lo
    n = np.arange(lo, hi, dtype=np.int64)
    ps = primes_up_to(math.isqrt(hi - 1))
    idx, which = _hits(lo, size, ps, np.zeros(len(ps), dtype=np.int64))
    p = ps[which]
    e = _exponents(n[idx], p)
    order = np.argsort(idx, kind="stable")
    idx, p, e = idx[order], p[order], e[order]
    prod = np.ones(size, dtype=np.int64)
    np.multiply.at(prod, idx, p**e)
    rest = n // prod  # 1 or a prime above sqrt(hi)
    big = np.flatnonzero(rest > 1)
    n_idx = np.concatenate([idx, big])
    n_p = np.concatenate([p, rest[big]])
    n_e = np.concatenate([e, np.ones(len(big), dtype=np.int64)])
    order = np.argsort(n_idx, kind="stable")
    n_idx, n_p, n_e = n_idx[order], n_p[order], n_e[order]

    v = n * n + n + 1
    mod, res = _v_moduli(w_limit)
    vidx, which = _hits(lo, size, mod, res)
    w = mod[which]
    ve = _exponents(v[vidx], w)
    v_max = (hi - 1) ** 2 + hi
    complete = not needs_large_divisors(lo, hi, w_limit)
    if large is not None and not complete:
        if large.w_min > w_limit or large.w_max < math.isqrt(v_max):
            raise ValueError(f"large divisors ({large.w_min}, {large.w_max}] do not complete "
                             f"w_limit = {w_limit} for orders below {hi}")
        bidx, bw = large.block(lo, hi)
        keep = bw > w_limit
        bidx, bw = bidx[keep], bw[keep]
        vidx = np.concatenate([vidx, bidx])
        w = np.concatenate([w, bw])
        ve = np.concatenate([ve, _exponents(v[bidx], bw)])
        complete = True
    vprod = np.ones(size, dtype=np.int64)
    np.multiply.at(vprod, vidx, w**ve)
    order = np.lexsort((w, vidx))
    return _Factored(n_idx, n_p, n_e, vidx[order], w[order], ve[order], v // vprod, complete)


# --------------------------------------------------------------------------------------------
# a block
# --------------------------------------------------------------------------------------------
def sieve_block(lo: int, hi: int, *, w_limit: int | None = None,
                keep_outcomes: bool = False,
                large: LargeDivisors | None = None) -> BlockResult:
    """Decide every order ``n`` with ``lo <= n < hi`` (``2 <= lo < hi <= 2^31``).

    ``w_limit`` is the largest prime the block sieves ``v`` with (default
    :func:`v_sieve_limit`).  ``large`` gives the prime divisors of ``v`` above it, up to
    ``sqrt(v)``, sieved for a whole segment (:class:`~cqs_design.ppc.roots.LargeDivisors`);
    then what is left of each ``v`` is 1 or a prime.  Without it, cofactors of ``v`` left
    composite are settled by Jacobi symbols or factored one by one (Pollard-Brent).
    ``keep_outcomes`` also returns each order's outcome (``BlockResult.outcomes``).

    >>> sieve_block(10, 20).counts["mann"]
    4
    >>> sieve_block(10, 16, keep_outcomes=True).outcomes
    ['mann', 'prime-power', 'mann', 'prime-power', 'brc', 'mann']
    """
    if not 2 <= lo < hi <= 1 << 31:
        raise ValueError(f"need 2 <= lo < hi <= 2**31, got lo = {lo}, hi = {hi}")
    start = time.perf_counter()
    w_limit = v_sieve_limit(hi) if w_limit is None else w_limit
    size = hi - lo
    f = _factor_block(lo, hi, w_limit, large)
    n = np.arange(lo, hi, dtype=np.int64)

    nprimes = np.bincount(f.n_idx, minlength=size)
    prime_power = nprimes == 1
    odd_exp = np.zeros(size, dtype=bool)
    odd_exp[f.n_idx[f.n_e % 2 == 1]] = True
    square = ~odd_exp
    brc = np.zeros(size, dtype=bool)
    bad = f.n_idx[(f.n_p % 4 == 3) & (f.n_e % 2 == 1)]
    brc[bad] = True
    brc &= np.isin(n % 4, (1, 2))

    # Mann over every triple (n, p | n, w | v) with w from the sieve and the cofactor, for the
    # orders still open after the prime-power and BRC tests
    # (in stages, cheapest first; each stage only for the orders the earlier ones left)
    todo = ~prime_power & ~brc & ~square
    keep = todo[f.v_idx] & (f.v_w <= _EVEN_TABLE_W)
    mann = _mann_lookup(f, f.v_idx[keep], f.v_w[keep], size=size)
    keep = (todo & ~mann)[f.v_idx] & (f.v_w > _EVEN_TABLE_W)
    mann |= _mann_triples(f, f.v_idx[keep], f.v_w[keep], size=size)
    n_start = np.searchsorted(f.n_idx, np.arange(size))
    if f.complete:  # the cofactor of v is 1 or a prime
        cofactor_prime = f.v_rest > 1
    else:
        # the cofactor c of v: a Jacobi symbol (p / c) = -1 is Mann's test without factoring c
        for i in np.flatnonzero((f.v_rest > 1) & todo & ~mann):
            c = int(f.v_rest[i])
            k0 = int(n_start[i])
            if any(jacobi(int(p), c) == -1 for p in f.n_p[k0:k0 + nprimes[i]]):
                mann[i] = True
        # ... else c is 1 or a prime below W^2; above, a prime or a product of primes > W
        cofactor_prime = (f.v_rest > 1) & (f.v_rest < np.int64(w_limit) ** 2)
        for i in np.flatnonzero((f.v_rest >= np.int64(w_limit) ** 2) & todo & ~mann):
            cofactor_prime[i] = is_prime(int(f.v_rest[i]))
    rest_idx = np.flatnonzero(cofactor_prime & todo & ~mann)
    mann |= _mann_cofactor(f, rest_idx, size=size)

    outcome = np.full(size, -1, dtype=np.int64)
    codes = {name: i for i, name in enumerate(OUTCOMES)}
    outcome[prime_power] = codes["prime-power"]
    outcome[(outcome < 0) & brc] = codes["brc"]
    outcome[(outcome < 0) & mann] = codes["mann"]

    stored: list[dict[str, Any]] = []
    opened: list[dict[str, Any]] = []
    v_start = np.searchsorted(f.v_idx, np.arange(size + 1))
    for i in np.flatnonzero(outcome < 0):
        i = int(i)
        k0, k1 = int(n_start[i]), int(n_start[i] + nprimes[i])
        nf = {int(p): int(e) for p, e in zip(f.n_p[k0:k1], f.n_e[k0:k1], strict=True)}
        vf = {int(w): int(e) for w, e in zip(f.v_w[v_start[i]:v_start[i + 1]],
                                              f.v_e[v_start[i]:v_start[i + 1]], strict=True)}
        rest = int(f.v_rest[i])
        split = rest == 1 or bool(cofactor_prime[i]) or square[i]
        if rest > 1:
            for w, e in (factorize(rest, budget=FACTOR_BUDGET) if not cofactor_prime[i]
                         else {rest: 1}).items():
                vf[w] = vf.get(w, 0) + e
        order = Order(int(n[i]), n_factors=nf, v_factors=vf)
        skip = ("brc", "mann") if split else ("brc",)
        verdict = decide(order, skip=skip)
        if verdict.status == "open":
            outcome[i] = codes["open"]
            tried = [t for t in TESTS if t in skip or t in verdict.tried]
            opened.append({"n": verdict.n, "tried": tried})
            continue
        assert verdict.certificate is not None
        outcome[i] = codes[verdict.certificate.test]
        if verdict.certificate.test in STORED_TESTS:
            stored.append(verdict.certificate.to_dict())
    counts = np.bincount(outcome, minlength=len(OUTCOMES))
    tally = {name: int(c) for name, c in zip(OUTCOMES, counts, strict=True)}
    names = [OUTCOMES[c] for c in outcome.tolist()] if keep_outcomes else None
    return BlockResult(lo, hi, tally, stored, opened, time.perf_counter() - start, names)


#: Primes ``w <= _EVEN_TABLE_W`` (``w = 3`` or ``1 (mod 3)``) get a table of the residues of
#: even multiplicative order modulo ``w``.
_EVEN_TABLE_W = 4096
_EVEN_TABLE: list[tuple[np.ndarray, np.ndarray]] = []


def _even_order_table() -> tuple[np.ndarray, np.ndarray]:
    """``(offset, even)``: residue ``a`` modulo the prime ``w <= _EVEN_TABLE_W`` has even
    multiplicative order iff ``even[offset[w] + a]`` (``a = 0`` counts as odd, unused)."""
    if not _EVEN_TABLE:
        ws = primes_up_to(_EVEN_TABLE_W)
        ws = ws[(ws == 3) | (ws % 3 == 1)]
        offset = np.zeros(_EVEN_TABLE_W + 1, dtype=np.int64)
        offset[ws] = np.cumsum(ws) - ws
        w = np.repeat(ws, ws)
        a = np.arange(len(w), dtype=np.int64) - np.repeat(offset[ws], ws)
        even = _int_pow(a, _odd_part(w - 1), w) > 1
        _EVEN_TABLE.append((offset, even))
    return _EVEN_TABLE[0]


def _triples(f: _Factored, idx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """Every ``(i, p, w)`` for the pairs ``(idx[k], w[k])`` and the primes ``p | n_i``:
    ``(k, p, w)`` arrays (``k`` indexes the pairs)."""
    n_start = np.searchsorted(f.n_idx, idx)
    n_stop = np.searchsorted(f.n_idx, idx, side="right")
    cnt = n_stop - n_start
    rep = np.repeat(np.arange(len(idx)), cnt)
    start = np.cumsum(cnt) - cnt
    pos = np.repeat(n_start, cnt) + np.arange(int(cnt.sum())) - np.repeat(start, cnt)
    return rep, f.n_p[pos], w[rep]


def _mann_lookup(f: _Factored, idx: np.ndarray, w: np.ndarray, *, size: int) -> np.ndarray:
    """:func:`_mann_triples` for ``w <= _EVEN_TABLE_W``, by table lookup."""
    hit = np.zeros(size, dtype=bool)
    if not len(idx):
        return hit
    offset, even = _even_order_table()
    rep, p, ww = _triples(f, idx, w)
    hit[idx[rep[even[offset[ww] + p % ww]]]] = True
    return hit


def _mann_triples(f: _Factored, idx: np.ndarray, w: np.ndarray, *,
                  size: int) -> np.ndarray:
    """``hit[i]``: some prime ``p | n_i`` has even order modulo some listed ``w | v_i``
    (``w < 2^31``)."""
    hit = np.zeros(size, dtype=bool)
    if not len(idx):
        return hit
    rep, p, ww = _triples(f, idx, w)
    even = _int_pow(p % ww, _odd_part(ww - 1), ww) != 1
    hit[idx[rep[even]]] = True
    return hit


def _mann_cofactor(f: _Factored, idx: np.ndarray, *, size: int) -> np.ndarray:
    """:func:`_mann_triples` for the prime cofactors ``c = v_rest[i]`` (up to ``2^62``), one
    order at a time: Python's ``pow``, stopping at the first ``p`` of even order."""
    hit = np.zeros(size, dtype=bool)
    if not len(idx):
        return hit
    n_start = np.searchsorted(f.n_idx, idx).tolist()
    n_stop = np.searchsorted(f.n_idx, idx, side="right").tolist()
    n_p = f.n_p.tolist()
    for i, c, a, b in zip(idx.tolist(), f.v_rest[idx].tolist(), n_start, n_stop, strict=True):
        u = c - 1
        u //= u & -u
        for p in n_p[a:b]:
            if pow(p, u, c) != 1:
                hit[i] = True
                break
    return hit
