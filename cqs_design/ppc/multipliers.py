"""Criteria on the whole multiplier group: orbit cover, Hall's collisions, fixed subplanes.

The multiplier group ``M`` of a cyclic plane of order ``n`` contains every prime divisor of
``n`` (Hall's multiplier theorem) and fixes a translate ``D`` of the line (the one whose
elements sum to 0 mod ``v``: ``gcd(n + 1, v) = 1``).  ``D`` is then a union of ``M``-orbits.

* :func:`cover_criterion` -- an element of ``D`` of additive order ``delta`` brings its whole
  orbit, of size ``|M_delta|``, into the subgroup of order ``delta``, which holds at most
  ``F(delta)`` points of ``D``.  Lower bounds for ``|M_delta|`` come from prime powers
  ``q^c`` dividing the orders of the ``p | n`` modulo the prime powers dividing ``delta``.
  When the subgroups that pass hold fewer than ``n + 1`` points, ``n`` is excluded.
* :func:`hall_criterion` -- Hall (1947): multipliers with ``t1 - t2 = t3 - t4 (mod v)`` force
  every point ``d`` of ``D`` into ``{x: (t1 - t2)x = 0}`` or ``{x: (t1 - t3)x = 0}``, since
  ``(t1 - t2)d`` would otherwise be a difference of ``D`` in two ways.

The group itself is enumerated by :meth:`cqs_design.ppc.order.Order.multiplier_group`.

>>> cover_criterion(45151) is None, cover_criterion(2443).test
(True, 'cover')
>>> hall_criterion(45151).test
'hall'
"""

from __future__ import annotations

import math

import numpy as np

from cqs_design.ppc.certificate import Certificate
from cqs_design.ppc.numbers import factorize, order_witnesses, sidon_bound
from cqs_design.ppc.order import Order, as_order

__all__ = [
    "HALL_MAX_GROUP",
    "HALL_MAX_WORK",
    "cover_criterion",
    "hall_criterion",
]

#: Largest multiplier group :func:`hall_criterion` enumerates.
HALL_MAX_GROUP = 1 << 21
#: Element comparisons :func:`hall_criterion` may spend looking for a collision.
HALL_MAX_WORK = 1 << 27
#: Divisors of ``v`` :func:`cover_criterion` is willing to enumerate.
COVER_MAX_DIVISORS = 1 << 16
#: Pollard-Brent steps spent factoring ``w - 1`` for the order claims.
ORDER_FACTOR_BUDGET = 1 << 16


# --------------------------------------------------------------------------------------------
# cover
# --------------------------------------------------------------------------------------------
def _order_claims(o: Order) -> list[list[int]]:
    """``[m, p, q, c]``: ``q^c`` divides the order of ``p`` modulo ``m = w^j`` (``m | v``)."""
    claims = []
    for w, a in sorted(o.v_factors.items()):
        lam_f = {q: e for q, e in factorize(w - 1, budget=ORDER_FACTOR_BUDGET).items() if q > 0}
        best: dict[int, tuple[int, int]] = {}
        for p in o.primes:
            for q, c in order_witnesses(p, w, w - 1, lam_f):
                if c > best.get(q, (0, 0))[0]:
                    best[q] = (c, p)
        claims += [[w, p, q, c] for q, (c, p) in sorted(best.items())]
        for j in range(2, a + 1):
            m = w**j
            lam = w ** (j - 1) * (w - 1)
            got = [(c, p) for p in o.primes for q, c in order_witnesses(p, m, lam, [w])]
            if got:
                c, p = max(got)
                claims.append([m, p, w, c])
    return claims


def _cover_total(n: int, exps: dict[int, int], claims: list[list[int]]) -> int:
    """Points of a line the admissible subgroups can hold (see :func:`cover_criterion`)."""
    need = {w: [1] * (a + 1) for w, a in exps.items()}
    for m, _p, q, c in claims:
        w = next(r for r in exps if m % r == 0)
        j = round(math.log(m, w))
        for jj in range(j, exps[w] + 1):
            need[w][jj] = math.lcm(need[w][jj], q**c)
    primes = list(exps)
    shape = [exps[w] + 1 for w in primes]
    ndiv = math.prod(shape)
    allowed = np.zeros(ndiv, dtype=bool)
    deltas = []
    for idx in range(ndiv):
        rest, delta, lower = idx, 1, 1
        for w in primes:
            rest, k = divmod(rest, exps[w] + 1)
            delta *= w**k
            lower = math.lcm(lower, need[w][k])
        deltas.append(delta)
        allowed[idx] = lower <= sidon_bound(delta)
    covered = np.zeros(ndiv, dtype=bool)
    strides = np.cumprod([1, *shape[:-1]])
    total = 0
    for idx in range(ndiv - 1, -1, -1):
        rest = idx
        for w, stride in zip(primes, strides, strict=True):
            rest, k = divmod(rest, exps[w] + 1)
            j = idx + int(stride)
            if k < exps[w] and (allowed[j] or covered[j]):
                covered[idx] = True
                break
        if allowed[idx] and not covered[idx]:
            total += sidon_bound(deltas[idx])
    return total


def cover_criterion(n: int | Order) -> Certificate | None:
    """Exclude ``n`` when the points of a line cannot all lie in subgroups with small orbits.

    A point of additive order ``delta`` (a divisor of ``v``) comes with its multiplier orbit,
    ``|M_delta|`` points of the subgroup of order ``delta``, which meets the line in at most
    ``F(delta)`` points.  ``|M_delta|`` is a multiple of every order of a ``p | n`` modulo a
    prime power dividing ``delta``; the certificate lists the prime powers ``q^c`` of those
    orders it uses.  Needs the full factorization of ``v``.

    >>> cover_criterion(674).to_dict()["factors"]
    [[7, 1], [103, 1], [631, 1]]
    """
    o = as_order(n)
    if not o.v_complete:
        return None
    exps = dict(sorted(o.v_factors.items()))
    if math.prod(a + 1 for a in exps.values()) > COVER_MAX_DIVISORS:
        return None
    claims = _order_claims(o)
    if _cover_total(o.n, exps, claims) >= o.n + 1:
        return None
    return Certificate("cover", o.n, {"factors": [[w, a] for w, a in exps.items()],
                                      "orders": claims})


# --------------------------------------------------------------------------------------------
# the multiplier group, Hall's collisions, fixed points
# --------------------------------------------------------------------------------------------
def _multiplier(primes: tuple[int, ...], row: np.ndarray) -> list[list[int]]:
    return [[p, int(e)] for p, e in zip(primes, row, strict=True) if e]


def hall_criterion(n: int | Order, *, max_group: int = HALL_MAX_GROUP,
                   max_work: int = HALL_MAX_WORK, seed: int = 0) -> Certificate | None:
    """Search the multiplier group for Hall's collision ``a - b = c - 1 (mod v)``.

    With ``t = (a, b, c, 1)`` every point of the fixed line lies in the subgroup of order
    ``gcd(a - b, v)`` or in that of order ``gcd(a - c, v)``; if together they hold fewer than
    ``n + 1`` points (``F(g1) + F(g2) < n + 1``), ``n`` is excluded.  The group is enumerated
    (:meth:`~cqs_design.ppc.order.Order.multiplier_group`: at most ``max_group`` elements,
    ``v < 2^62``).  ``max_work`` bounds the comparisons; ``seed`` orders the elements tried
    as ``a``.

    >>> hall_criterion(7) is None    # a prime: the group <7> mod 57 has 3 elements
    True
    """
    o = as_order(n)
    group = o.multiplier_group(max_group)
    if group is None:
        return None
    elems, exps = group
    v = o.v
    size = len(elems)
    if size < 3:
        return None
    rng = np.random.default_rng(seed)
    tries = max(1, min(size, max_work // size))
    one = np.uint64(1)
    vv = np.uint64(v)
    for ia in rng.permutation(size)[:tries]:
        a = elems[ia]
        c = (a + one + vv - elems) % vv  # c = a + 1 - b for every b
        pos = np.minimum(np.searchsorted(elems, c), size - 1)
        hit = np.flatnonzero((elems[pos] == c) & (elems != a) & (elems != one))
        for ib in hit:
            ic = int(pos[ib])
            a_i, b_i, c_i = int(a), int(elems[ib]), int(elems[ic])
            g1, g2 = math.gcd(a_i - b_i, v), math.gcd(a_i - c_i, v)
            if sidon_bound(g1) + sidon_bound(g2) < o.n + 1:
                ts = [_multiplier(o.primes, exps[i]) for i in (int(ia), int(ib), ic)]
                return Certificate("hall", o.n, {"t": [*ts, []]})
    return None
