"""Number theory the prime power conjecture tests need: primes, factoring, orders, roots.

Everything works on Python integers of any size; the few vectorised helpers (``mulmod``,
``powmod``) take numpy ``uint64`` arrays with moduli below ``2**62``.

* :func:`is_prime` -- Miller-Rabin: seven bases below ``2**64`` (Sinclair), the first 13
  primes below ``3.3 * 10**24`` (Sorenson and Webster 2015), both proofs; larger ``n`` get
  24 bases.
* :func:`factorize` -- trial division, then Pollard-Brent; ``budget`` bounds the work and
  leaves an unsplit composite as ``-m`` (a negative key) instead of looping for long.
* :func:`sidon_bound` -- ``F(h)``, the largest ``s`` with ``s(s - 1) <= h - 1``: a planar
  difference set meets any coset of a subgroup of order ``h`` in at most ``F(h)`` points.
* :func:`cube_roots_of_unity` -- the roots of ``x^2 + x + 1`` modulo a prime ``w``: ``w``
  divides ``n^2 + n + 1`` exactly when ``n`` is one of them modulo ``w``.
* :func:`order_witnesses` -- prime powers ``q^c`` that divide the multiplicative order of
  ``a`` modulo ``m``, each shown by one modular power (the checker repeats it).

>>> is_prime(2**61 - 1), factorize(2**32 + 1)
(True, {641: 1, 6700417: 1})
>>> sidon_bound(7), sidon_bound(8), cube_roots_of_unity(7)
(3, 3, (2, 4))
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterable

import numpy as np

__all__ = [
    "cube_roots_of_unity",
    "factorize",
    "is_prime",
    "is_square",
    "jacobi",
    "mulmod",
    "multiplicative_order",
    "order_witnesses",
    "powmod",
    "prime_power",
    "primes_up_to",
    "sidon_bound",
]

_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
_MR_EXTRA = (43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97)
#: Seven bases that make Miller-Rabin a proof for every n < 2^64 (J. Sinclair, 2011).
_MR_BASES_64 = (2, 325, 9375, 28178, 450775, 9780504, 1795265022)
#: Miller-Rabin with :data:`_MR_BASES` is a proof below this bound.
MR_PROVEN_BELOW = 3_317_044_064_679_887_385_961_981


@functools.lru_cache(maxsize=8)
def primes_up_to(limit: int) -> np.ndarray:
    """All primes ``<= limit`` as an ``int64`` array (sieve of Eratosthenes).

    >>> primes_up_to(20).tolist()
    [2, 3, 5, 7, 11, 13, 17, 19]
    """
    if limit < 2:
        return np.zeros(0, dtype=np.int64)
    sieve = np.ones(limit + 1, dtype=bool)
    sieve[:2] = False
    for p in range(2, math.isqrt(limit) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    out = np.flatnonzero(sieve).astype(np.int64)
    out.flags.writeable = False
    return out


_SMALL = tuple(int(p) for p in primes_up_to(1000))


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime (a proof for ``n < 3.3 * 10**24``).

    >>> [m for m in range(30) if is_prime(m)]
    [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    """
    if n < 2:
        return False
    for p in _SMALL[:25]:
        if n % p == 0:
            return n == p
    if n < 97 * 97:
        return True
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    if n < 1 << 64:
        bases: tuple[int, ...] = _MR_BASES_64
    else:
        bases = _MR_BASES if n < MR_PROVEN_BELOW else _MR_BASES + _MR_EXTRA
    for a in bases:
        a %= n
        if a == 0:
            continue
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def is_square(n: int) -> bool:
    """Whether ``n >= 0`` is a perfect square.

    >>> is_square(144), is_square(145)
    (True, False)
    """
    return n >= 0 and math.isqrt(n) ** 2 == n


def sidon_bound(h: int) -> int:
    """``F(h)``: the largest ``s`` with ``s(s - 1) <= h - 1`` (``h >= 1``).

    A planar difference set ``D`` meets every coset ``x + H`` of a subgroup ``H`` of order
    ``h`` in at most ``F(h)`` points: the differences of those points are distinct nonzero
    elements of ``H``.  ``F(n^2 + n + 1) = n + 1``.

    >>> [sidon_bound(h) for h in (1, 2, 3, 7, 13, 21)]
    [1, 1, 2, 3, 4, 5]
    """
    if h < 1:
        raise ValueError(f"h must be >= 1, got {h}")
    return (1 + math.isqrt(4 * h - 3)) // 2


def _pollard_brent(n: int, budget: int, rng: random.Random) -> int | None:
    """A nontrivial factor of the odd composite ``n``, or None once ``budget`` steps ran."""
    steps = 0
    while steps < budget:
        y, c, m = rng.randrange(1, n), rng.randrange(1, n), 128
        g = r = q = 1
        x = ys = y
        while g == 1 and steps < budget:
            x = y
            for _ in range(r):
                y = (y * y + c) % n
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(m, r - k)):
                    y = (y * y + c) % n
                    q = q * abs(x - y) % n
                g = math.gcd(q, n)
                k += m
            steps += r
            r *= 2
        if g == n:
            g = 1
            while g == 1:
                ys = (ys * ys + c) % n
                g = math.gcd(abs(x - ys), n)
        if 1 < g < n:
            return g
    return None


def factorize(n: int, *, budget: int | None = None, seed: int = 0) -> dict[int, int]:
    """The prime factorization ``{p: e}`` of ``n >= 1``.

    With ``budget`` (Pollard-Brent steps per composite), a composite that does not split in
    time is kept whole under the negative key ``-m``; without it the call always completes.

    >>> factorize(1), factorize(360), factorize(10**12 + 39)
    ({}, {2: 3, 3: 2, 5: 1}, {1000000000039: 1})
    >>> factorize((2**61 - 1) * (2**31 - 1), budget=0)
    {-4951760154835678088235319297: 1}
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out: dict[int, int] = {}
    for p in _SMALL:
        if p * p > n:
            break
        if n % p == 0:
            e = 0
            while n % p == 0:
                n //= p
                e += 1
            out[p] = e
    rng: random.Random | None = None
    stack = [n] if n > 1 else []
    while stack:
        m = stack.pop()
        if is_prime(m):
            out[m] = out.get(m, 0) + 1
            continue
        r = math.isqrt(m)
        if r * r == m:
            stack += [r, r]
            continue
        rng = rng or random.Random(seed)
        d = _pollard_brent(m, budget if budget is not None else 1 << 62, rng)
        if d is None:
            out[-m] = out.get(-m, 0) + 1
            continue
        stack += [d, m // d]
    return dict(sorted(out.items(), key=lambda kv: abs(kv[0])))


def prime_power(n: int) -> tuple[int, int] | None:
    """``(p, m)`` with ``n = p**m`` (``p`` prime, ``m >= 1``), or None.

    >>> prime_power(2**20), prime_power(12), prime_power(1)
    ((2, 20), None, None)
    """
    if n < 2:
        return None
    f = factorize(n)
    if len(f) != 1:
        return None
    ((p, m),) = f.items()
    return p, m


@functools.lru_cache(maxsize=1 << 16)
def cube_roots_of_unity(w: int) -> tuple[int, ...]:
    """The roots of ``x^2 + x + 1`` modulo the prime ``w``, ascending.

    ``(1,)`` for ``w = 3``, two roots for ``w = 1 (mod 3)``, none otherwise.

    >>> cube_roots_of_unity(3), cube_roots_of_unity(13), cube_roots_of_unity(5)
    ((1,), (3, 9), ())
    """
    if w == 3:
        return (1,)
    if w % 3 != 1:
        return ()
    # a nontrivial cube root of unity: g^((w-1)/3) for a non-cube g
    for g in range(2, w):
        r = pow(g, (w - 1) // 3, w)
        if r != 1:
            return tuple(sorted((r, r * r % w)))
    raise AssertionError("unreachable")  # pragma: no cover


def jacobi(a: int, n: int) -> int:
    """The Jacobi symbol ``(a / n)`` for odd ``n > 0`` (quadratic reciprocity, no factoring).

    >>> jacobi(2, 7), jacobi(3, 7), jacobi(2, 15)
    (1, -1, 1)
    """
    if n <= 0 or n % 2 == 0:
        raise ValueError(f"n must be odd and positive, got {n}")
    a %= n
    sign = 1
    while a:
        while a % 2 == 0:
            a //= 2
            if n % 8 in (3, 5):
                sign = -sign
        a, n = n, a
        if a % 4 == 3 and n % 4 == 3:
            sign = -sign
        a %= n
    return sign if n == 1 else 0


def multiplicative_order(a: int, m: int, lam_factors: dict[int, int]) -> int:
    """The order of ``a`` modulo ``m``, given the factorization of a multiple ``lam`` of it.

    >>> multiplicative_order(2, 7, {2: 1, 3: 1}), multiplicative_order(3, 7, {2: 1, 3: 1})
    (3, 6)
    """
    order = 1
    for q, e in lam_factors.items():
        order *= q**e
    for q, e in lam_factors.items():
        for _ in range(e):
            if pow(a, order // q, m) == 1:
                order //= q
            else:
                break
    return order


def order_witnesses(a: int, m: int, lam: int, primes: Iterable[int]) -> list[tuple[int, int]]:
    """``[(q, c)]``: ``q^c`` divides the order of ``a`` modulo ``m``, for each given prime q.

    ``lam`` is a multiple of the order (``phi(m)``); for each prime ``q`` dividing ``lam``
    exactly ``b`` times, ``c`` is the exponent of ``q`` in the order, found and shown by
    ``pow(a, lam // q**(b - c + 1), m) != 1``.  Primes with ``c = 0`` are left out.

    >>> order_witnesses(2, 31, 30, [2, 3, 5])    # the order of 2 mod 31 is 5
    [(5, 1)]
    """
    out = []
    for q in primes:
        b = 0
        rest = lam
        while rest % q == 0:
            rest //= q
            b += 1
        c = 0
        for cand in range(b, 0, -1):
            if pow(a, lam // q ** (b - cand + 1), m) != 1:
                c = cand
                break
        if c:
            out.append((q, c))
    return out


# --------------------------------------------------------------------------------------------
# vectorised modular arithmetic (moduli < 2**62)
# --------------------------------------------------------------------------------------------
def mulmod(a: np.ndarray, b: np.ndarray | int, m: np.ndarray | int) -> np.ndarray:
    """``a * b mod m`` elementwise for ``uint64`` arrays, entries ``< m < 2**62``.

    ``m`` is one modulus or one per element.  The quotient comes from 64-bit-mantissa
    ``longdouble`` arithmetic and is off by at most one; the remainder is computed exactly in
    wrapping 64-bit arithmetic and corrected.

    >>> mulmod(np.array([3, 2**61], dtype=np.uint64), 5, 2**61 + 1).tolist()
    [15, 2305843009213693948]
    """
    mm = np.asarray(m, dtype=np.uint64)
    if mm.size and (int(mm.min()) < 1 or int(mm.max()) >= 1 << 62):
        raise ValueError(f"moduli must be in [1, 2**62), got {m}")
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    q = np.floor(a.astype(np.longdouble) * b.astype(np.longdouble) / mm.astype(np.longdouble))
    with np.errstate(over="ignore"):
        r = (a * b - q.astype(np.uint64) * mm).view(np.int64)
    mi = mm.astype(np.int64)
    r = np.where(r < 0, r + mi, r)
    r = np.where(r >= mi, r - mi, r)
    return r.astype(np.uint64)


def powmod(a: np.ndarray, e: np.ndarray | int, m: np.ndarray | int) -> np.ndarray:
    """``a ** e mod m`` elementwise (``uint64`` arrays, moduli ``< 2**62``, ``e >= 0``).

    >>> powmod(np.array([2, 3], dtype=np.uint64), np.array([10, 4]), 1000).tolist()
    [24, 81]
    >>> powmod(np.array([2, 2], dtype=np.uint64), 10, np.array([1000, 7])).tolist()
    [24, 2]
    """
    a = np.asarray(a, dtype=np.uint64)
    mm = np.broadcast_to(np.asarray(m, dtype=np.uint64), a.shape).copy()
    a = a % mm
    e = np.broadcast_to(np.asarray(e, dtype=np.uint64), a.shape).copy()
    result = np.ones(a.shape, dtype=np.uint64) % mm
    while e.any():
        odd = (e & np.uint64(1)).astype(bool)
        if odd.any():
            result[odd] = mulmod(result[odd], a[odd], mm[odd])
        e >>= np.uint64(1)
        live = e > 0
        a[live] = mulmod(a[live], a[live], mm[live])
    return result
