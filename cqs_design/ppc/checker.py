"""The checker: re-verify a :class:`~cqs_design.ppc.certificate.Certificate` from its numbers.

It never calls the tests of :mod:`cqs_design.ppc.criteria`; it uses only ``math`` and its own
Miller-Rabin (a proof below ``3.3 * 10**24``, i.e. for every order up to ``1.8 * 10**12``).
Each test's claim is re-derived by elementary arithmetic (divisibility, ``gcd``, modular
powers) and a :class:`~cqs_design.ppc.certificate.CertificateError` names the first check that
fails.  As a last guard a certificate for a prime-power order is always refused: Singer's
construction gives a cyclic plane of every prime-power order, so such a certificate could only
come from a wrong test.

>>> check_certificate({"test": "brc", "n": 6, "q": 3, "e": 1})
>>> is_valid_certificate({"test": "brc", "n": 6, "q": 3, "e": 2})
False
>>> check_certificate({"test": "mann", "n": 10, "p": 5, "w": 3, "j": 2})
Traceback (most recent call last):
...
cqs_design.ppc.certificate.CertificateError: mann (n = 10): 5^2 = 1 (mod 3), not -1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cqs_design.ppc.certificate import Certificate, CertificateError

__all__ = ["check_certificate", "is_valid_certificate"]

#: Largest number of ``a0`` candidates an ``orbit`` certificate may ask the checker to try,
#: and of divisors of ``v`` a ``cover`` certificate may make it enumerate.
MAX_ORBIT_CANDIDATES = 2_000_000
MAX_COVER_DIVISORS = 1 << 16
_MAX_DEPTH = 64


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in small:
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


def _sidon(h: int) -> int:
    """F(h): the largest s with s(s - 1) <= h - 1."""
    return (1 + math.isqrt(4 * h - 3)) // 2


def _jacobi(a: int, n: int) -> int:
    """The Jacobi symbol (a / n), odd n > 0, by quadratic reciprocity."""
    a, sign = a % n, 1
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


def _is_prime_power(n: int) -> bool:
    for k in range(1, n.bit_length() + 1):
        r = round(n ** (1.0 / k))
        for c in (r - 1, r, r + 1):
            if c >= 2 and c**k == n and _is_prime(c):
                return True
    return False


def _int(w: Mapping[str, Any], key: str, fail: Any, minimum: int = 0) -> int:
    x = w.get(key)
    if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
        fail(f"field {key!r} must be an integer >= {minimum}, got {x!r}")
    return x


def _multiplier(t: Any, n: int, v: int, fail: Any) -> int:
    """The residue mod v of a multiplier given as [[p, e], ...] with primes p | n."""
    if not isinstance(t, list):
        fail(f"a multiplier must be a list of [p, e] pairs, got {t!r}")
    value = 1
    for pair in t:
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in pair)):
            fail(f"a multiplier factor must be [p, e], got {pair!r}")
        p, e = pair
        if e < 0 or not _is_prime(p) or n % p:
            fail(f"{p}^{e} is not a power of a prime divisor of n")
        value = value * pow(p, e, v) % v
    return value


def check_certificate(cert: Certificate | Mapping[str, Any], *, _depth: int = 0) -> None:
    """Verify ``cert``; return None if it proves its order impossible, else raise.

    Raises
    ------
    CertificateError
        Naming the test, the order and the first check that fails.
    """
    c = cert if isinstance(cert, Certificate) else Certificate.from_dict(cert)
    n, w = c.n, c.witness
    v = n * n + n + 1

    def fail(msg: str) -> None:
        raise CertificateError(f"{c.test} (n = {n}): {msg}")

    if _depth > _MAX_DEPTH:
        fail("nested certificates too deep")
    if _is_prime_power(n):
        fail("n is a prime power: Singer's construction gives a cyclic plane of this order")
    getattr(_Checks, c.test)(n, v, w, fail, _depth)


def is_valid_certificate(cert: Certificate | Mapping[str, Any]) -> bool:
    """``True`` when :func:`check_certificate` accepts ``cert``."""
    try:
        check_certificate(cert)
    except CertificateError:
        return False
    return True


def _check_sub(sub: Any, m: int, fail: Any, depth: int) -> None:
    if not isinstance(sub, Mapping) or sub.get("n") != m:
        fail(f"the sub-certificate must be for order {m}, got {sub!r}")
    try:
        check_certificate(sub, _depth=depth + 1)
    except CertificateError as exc:
        fail(f"sub-certificate for order {m} fails: {exc}")


class _Checks:
    """One static method per test: ``(n, v, witness, fail, depth) -> None``."""

    @staticmethod
    def brc(n: int, v: int, w: Mapping[str, Any], fail: Any, depth: int) -> None:
        q, e = _int(w, "q", fail, 2), _int(w, "e", fail, 1)
        if n % 4 not in (1, 2):
            fail(f"n = {n % 4} (mod 4); the theorem needs n = 1 or 2 (mod 4)")
        if not _is_prime(q) or q % 4 != 3:
            fail(f"q = {q} is not a prime = 3 (mod 4)")
        if e % 2 == 0:
            fail(f"the exponent e = {e} is even")
        if n % q**e or n % q ** (e + 1) == 0:
            fail(f"{q}^{e} does not divide n exactly")

    @staticmethod
    def mann(n: int, v: int, w: Mapping[str, Any], fail: Any, depth: int) -> None:
        p, ww = _int(w, "p", fail, 2), _int(w, "w", fail, 2)
        if math.isqrt(n) ** 2 == n:
            fail("n is a square; the test needs a non-square n")
        if not _is_prime(p) or n % p:
            fail(f"p = {p} is not a prime divisor of n")
        if "jacobi" in w:  # (p / w) = -1: p is a non-residue modulo some prime factor of w
            if w["jacobi"] != -1 or ww < 3 or ww % 2 == 0 or v % ww:
                fail(f"jacobi form needs jacobi = -1 and an odd divisor w >= 3 of v = {v}")
            if _jacobi(p, ww) != -1:
                fail(f"the Jacobi symbol ({p} / {ww}) is {_jacobi(p, ww)}, not -1")
            return
        j = _int(w, "j", fail, 1)
        if not _is_prime(ww) or v % ww:
            fail(f"w = {ww} is not a prime divisor of v = {v}")
        if pow(p, j, ww) != ww - 1:
            fail(f"{p}^{j} = {pow(p, j, ww)} (mod {ww}), not -1")

    @staticmethod
    def baer(n: int, v: int, w: Mapping[str, Any], fail: Any, depth: int) -> None:
        m = _int(w, "m", fail, 2)
        if m * m != n:
            fail(f"{m}^2 = {m * m} is not n")
        _check_sub(w.get("sub"), m, fail, depth)

    @staticmethod
    def orbit(n: int, v: int, w: Mapping[str, Any], fail: Any, depth: int) -> None:
        ww = _int(w, "w", fail, 3)
        primes = w.get("primes")
        if not _is_prime(ww) or v % ww:
            fail(f"w = {ww} is not a prime divisor of v = {v}")
        if not isinstance(primes, list) or not primes:
            fail("field 'primes' must be a nonempty list of prime divisors of n")
        for p in primes:
            if isinstance(p, bool) or not isinstance(p, int) or not _is_prime(p) or n % p:
                fail(f"{p!r} is not a prime divisor of n")
        s = v // ww
        top = _sidon(s)
        if top > MAX_ORBIT_CANDIDATES:
            fail(f"{top + 1} candidates a0 exceed the checker's limit {MAX_ORBIT_CANDIDATES}")
        for a0 in range(top + 1):
            h = math.gcd(math.gcd(n + 1 - a0, n + s - a0 * a0), ww - 1)
            if all(pow(p, h, ww) == 1 for p in primes):
                fail(f"a0 = {a0} points in the subgroup of index {ww} is not ruled out "
                     f"(every listed p satisfies p^{h} = 1 mod {ww})")

    @staticmethod
    def subplane(n: int, v: int, w: Mapping[str, Any], fail: Any, depth: int) -> None:
        t = _multiplier(w.get("t"), n, v, fail)
        if t == 1:
            fail("the multiplier is 1 modulo v")
        f = math.gcd(t - 1, v)
        if f < 4:
            fail(f"it fixes {f} points; 1 or 3 fixed points are always possible")
        m = (math.isqrt(4 * f - 3) - 1) // 2
        if m * m + m + 1 != f:
            return  # no subplane has f points
        if m * m != n and m * m + m > n:
            return  # Bruck: a proper subplane of order m has m^2 = n or m^2 + m <= n
        _check_sub(w.get("sub"), m, fail, depth)

    @staticmethod
    def cover(n: int, v: int, w: Mapping[str, Any], fail: Any, depth: int) -> None:
        factors, orders = w.get("factors"), w.get("orders")
        if not isinstance(factors, list) or not isinstance(orders, list):
            fail("fields 'factors' and 'orders' must be lists")
        exps: dict[int, int] = {}
        prod = 1
        for pair in factors:
            if not (isinstance(pair, list) and len(pair) == 2 and all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in pair)):
                fail(f"a factor must be [w, a] with a >= 1, got {pair!r}")
            p, a = pair
            if not _is_prime(p) or p in exps:
                fail(f"{p} is not a new prime")
            exps[p] = a
            prod *= p**a
        if prod != v:
            fail(f"the factors multiply to {prod}, not v = {v}")
        ndiv = math.prod(a + 1 for a in exps.values())
        if ndiv > MAX_COVER_DIVISORS:
            fail(f"v has {ndiv} divisors, more than the checker's limit {MAX_COVER_DIVISORS}")
        # need[w][j]: lcm of the proven order divisors modulo w^j (j <= exponent of w in delta)
        need = {p: [1] * (a + 1) for p, a in exps.items()}
        for claim in orders:
            if not (isinstance(claim, list) and len(claim) == 4 and all(
                    isinstance(x, int) and not isinstance(x, bool) for x in claim)):
                fail(f"an order claim must be [m, p, q, c], got {claim!r}")
            m, p, q, cc = claim
            base = next((r for r in exps if m > 1 and m % r == 0), None)
            j = 0
            while base is not None and m % base ** (j + 1) == 0:
                j += 1
            if base is None or base**j != m or j > exps[base]:
                fail(f"m = {m} is not a prime power dividing v")
            if not _is_prime(p) or n % p or not _is_prime(q) or cc < 1:
                fail(f"claim {claim}: p must be a prime divisor of n, q a prime, c >= 1")
            lam = base ** (j - 1) * (base - 1)
            b = 0
            while lam % q ** (b + 1) == 0:
                b += 1
            if b < cc or pow(p, lam // q ** (b - cc + 1), m) == 1:
                fail(f"claim {claim}: {q}^{cc} does not divide the order of {p} mod {m}")
            for jj in range(j, exps[base] + 1):
                need[base][jj] = math.lcm(need[base][jj], q**cc)
        primes = list(exps)
        strides, size = [], 1
        for p in primes:
            strides.append(size)
            size *= exps[p] + 1
        allowed = [False] * ndiv
        for idx in range(ndiv):
            rest, delta, lower = idx, 1, 1
            for p in primes:
                rest, k = divmod(rest, exps[p] + 1)
                delta *= p**k
                lower = math.lcm(lower, need[p][k])
            allowed[idx] = lower <= _sidon(delta)
        # covered[idx]: some proper multiple of this divisor is admissible
        covered = [False] * ndiv
        total = 0
        for idx in range(ndiv - 1, -1, -1):
            rest, delta = idx, 1
            for p, stride in zip(primes, strides, strict=True):
                rest, k = divmod(rest, exps[p] + 1)
                delta *= p**k
                if k < exps[p] and (allowed[idx + stride] or covered[idx + stride]):
                    covered[idx] = True
            if allowed[idx] and not covered[idx]:
                total += _sidon(delta)
        if total >= n + 1:
            fail(f"the admissible subgroups hold up to {total} >= n + 1 points")

    @staticmethod
    def hall(n: int, v: int, w: Mapping[str, Any], fail: Any, depth: int) -> None:
        ts = w.get("t")
        if not isinstance(ts, list) or len(ts) != 4:
            fail("field 't' must list four multipliers")
        t1, t2, t3, t4 = (_multiplier(t, n, v, fail) for t in ts)
        if (t1 - t2 - t3 + t4) % v:
            fail("t1 - t2 != t3 - t4 (mod v)")
        g1, g2 = math.gcd(t1 - t2, v), math.gcd(t1 - t3, v)
        if _sidon(g1) + _sidon(g2) >= n + 1:
            fail(f"F({g1}) + F({g2}) = {_sidon(g1) + _sidon(g2)} >= n + 1")
