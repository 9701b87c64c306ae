"""The necessary conditions, one function each: exclude an order with a certificate, or not.

Every ``*_criterion(n)`` returns a :class:`~cqs_design.ppc.certificate.Certificate` when the
condition fails for ``n`` (no cyclic projective plane of order ``n`` exists) and None when it
does not apply or holds.  None of them ever excludes a prime power (the tests check every
prime power up to 10^5).  Cheapest first:

* :func:`brc_criterion` -- Bruck-Ryser-Chowla;
* :func:`mann_criterion` -- Mann's test: a multiplier congruent to -1 modulo a prime divisor
  of ``v`` forces ``n`` to be a square;
* :func:`baer_criterion` -- a square order ``m^2`` needs a cyclic plane of order ``m``;
* :func:`orbit_criterion` -- counting points of a line in the cosets of a subgroup of prime
  index ``w``, which multiplier orbits of size ``|M_w|`` permute;
* :func:`~cqs_design.ppc.multipliers.cover_criterion` -- a point of the line brings its whole
  multiplier orbit into the subgroup of its additive order;
* :func:`subplane_criterion` -- the points a multiplier fixes must form a subplane;
* :func:`~cqs_design.ppc.multipliers.hall_criterion` -- Hall's collisions of multipliers.

:func:`certify` runs them in that order; :func:`decide` also says what was tried.

>>> brc_criterion(6).to_dict()
{'test': 'brc', 'n': 6, 'q': 3, 'e': 1}
>>> mann_criterion(10).to_dict()
{'test': 'mann', 'n': 10, 'p': 2, 'w': 3, 'j': 1}
>>> decide(24).certificate.test, decide(25).status
('orbit', 'prime-power')
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cqs_design.ppc.certificate import Certificate
from cqs_design.ppc.multipliers import cover_criterion, hall_criterion
from cqs_design.ppc.numbers import (
    cube_roots_of_unity,
    factorize,
    jacobi,
    multiplicative_order,
    primes_up_to,
    sidon_bound,
)
from cqs_design.ppc.order import Order, as_order

__all__ = [
    "CRITERIA",
    "ORBIT_MAX_CANDIDATES",
    "Verdict",
    "baer_criterion",
    "brc_criterion",
    "certify",
    "decide",
    "mann_criterion",
    "orbit_criterion",
    "subplane_criterion",
]

#: ``orbit`` tries a prime ``w | v`` only when ``F(v/w)`` (the candidates for the number of
#: points of a line in the subgroup of index ``w``) is at most this.
ORBIT_MAX_CANDIDATES = 200_000
_SMALL_W = np.array([w for w in primes_up_to(2000).tolist() if w == 3 or w % 3 == 1])
_SMALL_ROOTS = np.array([(cube_roots_of_unity(w) * 2)[:2] for w in _SMALL_W.tolist()]).T

Status = Literal["prime-power", "excluded", "open"]


# --------------------------------------------------------------------------------------------
# Bruck-Ryser-Chowla
# --------------------------------------------------------------------------------------------
def brc_criterion(n: int | Order) -> Certificate | None:
    """Bruck-Ryser-Chowla: ``n = 1, 2 (mod 4)`` must be a sum of two squares.

    Fails exactly when some prime ``q = 3 (mod 4)`` divides ``n`` to an odd power; the
    certificate names the smallest such ``q`` and its exponent.

    >>> brc_criterion(21).to_dict(), brc_criterion(10)
    ({'test': 'brc', 'n': 21, 'q': 3, 'e': 1}, None)
    """
    o = as_order(n)
    if o.n % 4 not in (1, 2):
        return None
    for q, e in sorted(o.n_factors.items()):
        if q % 4 == 3 and e % 2:
            return Certificate("brc", o.n, {"q": q, "e": e})
    return None


# --------------------------------------------------------------------------------------------
# Mann
# --------------------------------------------------------------------------------------------
def _minus_one_exponent(p: int, w: int) -> int | None:
    """``j`` with ``p^j = -1 (mod w)`` (``w`` an odd prime not dividing p), or None."""
    u = w - 1
    while u % 2 == 0:
        u //= 2
    x = pow(p, u, w)
    if x == 1:
        return None  # odd order
    j = u
    while x != w - 1:
        x = x * x % w
        j *= 2
    return j


def _small_v_primes(o: Order) -> list[int]:
    """Prime divisors ``w < 2000`` of ``v``, found from ``n mod w`` (no factoring)."""
    r = o.n % _SMALL_W
    return _SMALL_W[(r == _SMALL_ROOTS[0]) | (r == _SMALL_ROOTS[1])].tolist()


def _mann_with(o: Order, ws: list[int]) -> Certificate | None:
    for w in ws:
        for p in o.primes:
            j = _minus_one_exponent(p, w)
            if j is not None:
                return Certificate("mann", o.n, {"p": p, "w": w, "j": j})
    return None


def _mann_jacobi(o: Order, c: int) -> Certificate | None:
    """Mann's test through a Jacobi symbol: ``(p / c) = -1`` for an odd ``c | v`` means ``p``
    is a non-residue, so of even order, modulo some prime divisor of ``c``."""
    if c < 3:
        return None
    for p in o.primes:
        if jacobi(p, c) == -1:
            return Certificate("mann", o.n, {"p": p, "w": c, "jacobi": -1})
    return None


def mann_criterion(n: int | Order) -> Certificate | None:
    """Mann's test: a multiplier ``t = -1 (mod w)`` with ``w | v`` forces ``n`` to be a square.

    Every prime ``p | n`` is a multiplier (Hall), so for non-square ``n`` no ``p | n`` may have
    even order modulo a prime ``w | v``.  The certificate gives ``p``, ``w`` and ``j`` with
    ``p^j = -1 (mod w)``.  Small ``w`` are tried first, found from ``n mod w``; then, before
    factoring the rest ``c`` of ``v``, the Jacobi symbols ``(p / c)``: ``-1`` shows that ``p``
    is a non-residue modulo some prime factor of ``c`` without naming it (the certificate then
    gives ``w = c`` and ``jacobi = -1``); then ``v`` is factored.

    >>> mann_criterion(15).to_dict(), mann_criterion(36)    # 36 is a square
    ({'test': 'mann', 'n': 15, 'p': 3, 'w': 241, 'j': 60}, None)
    >>> mann_criterion(2_000_000_001).to_dict()
    {'test': 'mann', 'n': 2000000001, 'p': 3, 'w': 4000000006000000003, 'jacobi': -1}
    """
    o = as_order(n)
    if o.is_square:
        return None
    small = _small_v_primes(o)
    cert = _mann_with(o, small)
    if cert is not None:
        return cert
    if "v_factors" not in o.__dict__:  # not factored yet: try the cofactor's Jacobi symbols
        c = o.v
        for w in small:
            while c % w == 0:
                c //= w
        cert = _mann_jacobi(o, c)
        if cert is not None:
            return cert
    return _mann_with(o, list(o.v_primes))


# --------------------------------------------------------------------------------------------
# Baer subplanes of square orders
# --------------------------------------------------------------------------------------------
def baer_criterion(n: int | Order) -> Certificate | None:
    """A cyclic plane of order ``m^2`` contains a cyclic plane of order ``m``.

    The multiplier ``m^3`` fixes exactly the ``m^2 + m + 1`` points of the subgroup of that
    order, and they form a subplane (see :func:`subplane_criterion`).  So ``n = m^2`` is
    excluded when ``m`` is: the certificate nests the one for ``m``.

    >>> c = baer_criterion(144)
    >>> c.witness["m"], c.witness["sub"]["test"]
    (12, 'mann')
    """
    o = as_order(n)
    if not o.is_square or o.is_prime_power:
        return None
    m = math.isqrt(o.n)
    sub = certify(m)
    return None if sub is None else Certificate("baer", o.n, {"m": m, "sub": sub.to_dict()})


# --------------------------------------------------------------------------------------------
# orbit counting modulo a prime divisor w of v
# --------------------------------------------------------------------------------------------
def _orbit_ruled_out(o: Order, w: int) -> bool:
    """Whether every candidate ``a0`` is ruled out for the prime ``w | v`` (see criterion)."""
    n, s = o.n, o.v // w
    top = sidon_bound(s)
    if top > ORBIT_MAX_CANDIDATES:
        return False
    if top > 64:
        e = _orbit_size(o, w)
        if e is not None:  # a0 is possible iff E divides n + 1 - a0 and n + v/w - a0^2
            a0 = np.arange((n + 1) % e, top + 1, e, dtype=object)
            return not any((n + s - a0 * a0) % e == 0)
    # each distinct h = gcd(n + 1 - a0, n + v/w - a0^2, w - 1) is tried once
    lam = w - 1
    hs = {math.gcd(math.gcd(n + 1 - a, n + s - a * a), lam) for a in range(top + 1)}
    return not any(all(pow(p, h, w) == 1 for p in o.primes) for h in sorted(hs))


def _orbit_size(o: Order, w: int) -> int | None:
    """``|M_w|``: the lcm of the orders of the ``p | n`` modulo the prime ``w`` (None if
    ``w - 1`` does not factor within the budget)."""
    lam = factorize(w - 1, budget=1 << 14)
    if any(q < 0 for q in lam):
        return None
    e = 1
    for p in o.primes:
        e = math.lcm(e, multiplicative_order(p, w, lam))
    return e


def orbit_criterion(n: int | Order) -> Certificate | None:
    """Count the points of a line ``D`` in the cosets of the subgroup of prime index ``w | v``.

    Take the translate ``D`` fixed by every multiplier.  Let ``a_r`` count its points
    ``= r (mod w)``.  Multipliers permute the classes ``r != 0`` in orbits of size
    ``E = |M_w|`` (the order of the group generated by the primes of ``n`` modulo ``w``), so
    ``E`` divides ``n + 1 - a_0`` and ``n + v/w - a_0^2`` (the sum of the ``a_r`` and of their
    squares), and ``a_0 <= F(v/w)``.  As ``E`` divides ``w - 1``, every ``p | n`` satisfies
    ``p^h = 1 (mod w)`` with ``h = gcd(n + 1 - a_0, n + v/w - a_0^2, w - 1)``.  The criterion
    fails when every ``a_0`` is ruled out by some ``p``; no factoring of ``w - 1`` is needed.
    Large ``w`` (few candidates ``a_0``) are tried first.

    >>> orbit_criterion(12).to_dict()
    {'test': 'orbit', 'n': 12, 'w': 157, 'primes': [2, 3]}
    """
    o = as_order(n)
    for w in sorted(o.v_primes, reverse=True):
        if w > 3 and _orbit_ruled_out(o, w):
            return Certificate("orbit", o.n, {"w": w, "primes": list(o.primes)})
    return None


# --------------------------------------------------------------------------------------------
# fixed points of a multiplier
# --------------------------------------------------------------------------------------------
def subplane_verdict(n: int, fixed: int) -> Literal["impossible", "possible", "sub"]:
    """Whether a multiplier fixing ``fixed`` points of a cyclic plane of order ``n`` can exist.

    ``"impossible"``: ``fixed >= 4`` is not ``m^2 + m + 1`` for an ``m`` with ``m^2 = n`` or
    ``m^2 + m <= n`` (Bruck); ``"sub"``: it is, for a non-prime-power ``m`` (the fixed points
    form a cyclic plane of order ``m``, so excluding ``m`` excludes ``n``); else ``"possible"``.

    >>> subplane_verdict(100, 43), subplane_verdict(100, 57), subplane_verdict(100, 31)
    ('sub', 'possible', 'possible')
    """
    if fixed < 4:
        return "possible"
    m = (math.isqrt(4 * fixed - 3) - 1) // 2
    if m * m + m + 1 != fixed or (m * m != n and m * m + m > n):
        return "impossible"
    return "possible" if Order(m).is_prime_power else "sub"


def _subplane_certificate(o: Order, t: list[list[int]], fixed: int) -> Certificate | None:
    if fixed >= o.v:  # t = 1 (mod v): the identity fixes everything
        return None
    verdict = subplane_verdict(o.n, fixed)
    if verdict == "impossible":
        return Certificate("subplane", o.n, {"t": t})
    if verdict == "sub":
        m = (math.isqrt(4 * fixed - 3) - 1) // 2
        sub = certify(m)
        if sub is not None:
            return Certificate("subplane", o.n, {"t": t, "sub": sub.to_dict()})
    return None


def subplane_criterion(n: int | Order, *, max_group: int = 1 << 21) -> Certificate | None:
    """The points fixed by a multiplier ``t`` form a subplane (or at most 3 points).

    They are the ``F = gcd(t - 1, v)`` points of a subgroup ``H``, which acts regularly on
    them; with ``F >= 4`` the fixed configuration contains a quadrangle, so it is a subplane
    of order ``m`` (``F = m^2 + m + 1``), cyclic under ``H``, with ``m^2 = n`` or
    ``m^2 + m <= n`` (Bruck).  Tried first: each prime ``p | n``, each ratio ``p/q`` of two
    of them (``F = gcd(p - q, v)``) and each ``p^phi(w^a)`` for ``w^a || v`` (which fixes
    the subgroup of order ``w^a`` at least); then every element of the multiplier group, when it
    has at most ``max_group`` elements (:meth:`~cqs_design.ppc.order.Order.multiplier_group`).

    >>> subplane_criterion(10) is None
    True
    """
    o = as_order(n)
    cands: list[tuple[list[list[int]], int]] = [([[p, 1]], math.gcd(p - 1, o.v))
                                                for p in o.primes]
    if o.v_complete:
        lam = 1
        for w, a in o.v_factors.items():
            lam = math.lcm(lam, w ** (a - 1) * (w - 1))
        for p in o.primes:
            for q in o.primes:
                if p != q:
                    cands.append(([[p, 1], [q, lam - 1]], math.gcd(p - q, o.v)))
        # p^phi(w^a) is 1 modulo w^a: it fixes at least the subgroup of order w^a
        for w, a in o.v_factors.items():
            e = w ** (a - 1) * (w - 1)
            for p in o.primes:
                cands.append(([[p, e]], math.gcd(pow(p, e, o.v) - 1, o.v)))
    for t, fixed in cands:
        cert = _subplane_certificate(o, t, fixed)
        if cert is not None:
            return cert
    group = o.multiplier_group(max_group)
    if group is None:
        return None
    elems, exps = group
    fixed_all = np.gcd(elems.astype(np.int64) - 1, np.int64(o.v))
    for f in np.unique(fixed_all[(fixed_all >= 4) & (fixed_all < o.v)]):
        i = int(np.flatnonzero(fixed_all == f)[0])
        t = [[p, int(e)] for p, e in zip(o.primes, exps[i], strict=True) if e]
        cert = _subplane_certificate(o, t, int(f))
        if cert is not None:
            return cert
    return None


# --------------------------------------------------------------------------------------------
# all criteria
# --------------------------------------------------------------------------------------------
#: name -> criterion, in the order :func:`certify` tries them.
CRITERIA: dict[str, Callable[[int | Order], Certificate | None]] = {
    "brc": brc_criterion,
    "mann": mann_criterion,
    "baer": baer_criterion,
    "orbit": orbit_criterion,
    "cover": cover_criterion,
    "subplane": subplane_criterion,
    "hall": hall_criterion,
}


@dataclass(frozen=True)
class Verdict:
    """The outcome for one order: ``status``, the ``certificate`` (if excluded) and the
    criteria ``tried`` (for an open order: every criterion, none of which excluded it)."""

    n: int
    status: Status
    certificate: Certificate | None = None
    tried: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "status": self.status, "tried": list(self.tried),
                "certificate": None if self.certificate is None else self.certificate.to_dict()}


def decide(n: int | Order, *, skip: tuple[str, ...] = ()) -> Verdict:
    """Run the criteria on ``n`` (cheapest first, leaving out ``skip``) until one excludes it.

    >>> d = decide(10).to_dict()
    >>> d["status"], d["tried"], d["certificate"]
    ('excluded', ['brc', 'mann'], {'test': 'mann', 'n': 10, 'p': 2, 'w': 3, 'j': 1})
    """
    o = as_order(n)
    if o.is_prime_power:
        return Verdict(o.n, "prime-power")
    tried = []
    for name, crit in CRITERIA.items():
        if name in skip:
            continue
        tried.append(name)
        cert = crit(o)
        if cert is not None:
            return Verdict(o.n, "excluded", cert, tuple(tried))
    return Verdict(o.n, "open", None, tuple(tried))


@functools.lru_cache(maxsize=4096)
def certify(n: int) -> Certificate | None:
    """The first certificate :func:`decide` finds for ``n`` (None: prime power or open).

    >>> certify(6).test, certify(7)
    ('brc', None)
    """
    return decide(n).certificate
