"""Finite-field arithmetic GF(p^m) needed by the Singer construction.

Elements of GF(q), ``q = p^m``, are the integers ``0 .. q-1``: the base-``p`` digits of an
integer are the coefficients (constant term first) of a polynomial of degree ``< m`` over
GF(p), taken modulo a fixed *primitive* polynomial found deterministically (the first in
lexicographic order) with sympy. ``x`` is then a generator of the multiplicative group, and
multiplication uses log / antilog tables; addition is digit-wise mod ``p`` (XOR when
``p = 2``). Every operation has a scalar form (Python ints) and a vectorised numpy form.

>>> from cqs_design.fields import GaloisField
>>> F = GaloisField(4)
>>> F.p, F.m, F.modulus
(2, 2, (1, 1, 1))
>>> F.mul(2, 3), F.add(2, 3), F.inv(2)
(1, 1, 3)
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
from sympy import factorint
from sympy.polys.domains import ZZ
from sympy.polys.galoistools import gf_irreducible_p, gf_pow_mod

__all__ = ["GaloisField", "primitive_polynomial"]

#: Largest field order supported (log tables have q entries).
MAX_FIELD_ORDER = 1 << 24


def primitive_polynomial(p: int, m: int) -> tuple[int, ...]:
    """The first monic primitive polynomial of degree ``m`` over GF(p), lexicographically.

    Coefficients are returned constant term first and end with the leading 1.
    Irreducibility and the order of ``x`` are checked with sympy's ``galoistools``.

    Examples
    --------
    >>> primitive_polynomial(2, 3)
    (1, 0, 1, 1)
    >>> primitive_polynomial(3, 1)
    (1, 1)
    """
    if m < 1:
        raise ValueError(f"degree m must be >= 1, got {m}")
    return _primitive_polynomial(int(p), int(m))


@functools.lru_cache(maxsize=128)
def _primitive_polynomial(p: int, m: int) -> tuple[int, ...]:
    order = p**m - 1
    primes = list(factorint(order)) if order > 1 else []
    one = [ZZ(1)]
    x = [ZZ(1), ZZ(0)]
    # sympy's dense representation is highest degree first.
    for low in itertools.product(range(p), repeat=m):  # constant term first
        if low[0] == 0:
            continue
        if m == 1:
            # f = x + c: x ≡ -c, primitive iff -c generates GF(p)*
            root = (-low[0]) % p
            if any(pow(root, order // r, p) == 1 for r in primes):
                continue
            return (*low, 1)
        f = [ZZ(1), *(ZZ(c) for c in reversed(low))]  # sympy: highest degree first
        if not gf_irreducible_p(f, p, ZZ):
            continue
        if any(gf_pow_mod(x, order // r, f, p, ZZ) == one for r in primes):
            continue
        return (*low, 1)
    raise AssertionError(f"no primitive polynomial of degree {m} over GF({p})")  # impossible


class GaloisField:
    """The finite field GF(q), ``q = p^m`` a prime power, with log/antilog tables.

    Parameters
    ----------
    q : int
        A prime power, ``2 <= q <= 2**24``.

    Attributes
    ----------
    q, p, m : int
        Order, characteristic and degree over GF(p).
    modulus : tuple of int
        The primitive polynomial (constant term first) defining the field; ``x`` (the
        element ``p`` when ``m > 1``, or a primitive root when ``m = 1``) generates GF(q)*.
    exp : numpy.ndarray
        ``exp[i] = g**i`` for ``0 <= i < 2(q-1)`` (doubled so sums of logs need no mod).
    log : numpy.ndarray
        ``log[a]`` for ``a != 0``; ``log[0] = -1``.

    Examples
    --------
    >>> F = GaloisField(9)
    >>> F.p, F.m
    (3, 2)
    >>> a = 5
    >>> F.mul(a, F.inv(a))
    1
    >>> import numpy as np
    >>> F.add_vec(np.array([1, 5]), np.array([2, 7])).tolist()
    [0, 0]
    """

    def __init__(self, q: int) -> None:
        factors = factorint(q) if isinstance(q, int) and q >= 2 else {}
        if isinstance(q, bool) or not isinstance(q, int) or len(factors) != 1:
            raise ValueError(f"q must be a prime power >= 2, got {q!r}")
        if q > MAX_FIELD_ORDER:
            raise ValueError(f"q = {q} exceeds the supported field order {MAX_FIELD_ORDER}")
        ((p, m),) = factors.items()
        self.q, self.p, self.m = int(q), int(p), int(m)
        self.modulus = _primitive_polynomial(self.p, self.m)
        self._build_tables()

    def _build_tables(self) -> None:
        q, p, m = self.q, self.p, self.m
        n = q - 1
        exp = np.zeros(2 * n, dtype=np.int64)
        if m == 1:
            g = (-self.modulus[0]) % p
            value = 1
            for i in range(n):
                exp[i] = value
                value = value * g % p
        else:
            # multiply by x: shift digits up, reduce the top digit with the modulus.
            digits = [1] + [0] * (m - 1)
            reduce_by = [(-c) % p for c in self.modulus[:m]]  # x^m = -(lower terms)
            weights = [p**j for j in range(m)]
            for i in range(n):
                exp[i] = sum(d * w for d, w in zip(digits, weights, strict=True))
                top = digits[-1]
                digits = [0, *digits[:-1]]
                if top:
                    digits = [(d + top * r) % p for d, r in zip(digits, reduce_by, strict=True)]
        exp[n:] = exp[:n]
        log = np.full(q, -1, dtype=np.int64)
        log[exp[:n]] = np.arange(n, dtype=np.int64)
        if (log[1:] < 0).any():  # pragma: no cover - would mean the modulus is not primitive
            raise AssertionError(f"modulus {self.modulus} does not generate GF({q})*")
        exp.setflags(write=False)
        log.setflags(write=False)
        self.exp, self.log = exp, log
        self._exp_list = exp.tolist()
        self._log_list = log.tolist()
        self._weights = np.array([p**j for j in range(m)], dtype=np.int64)

    def __repr__(self) -> str:
        return f"GaloisField({self.q})"

    # --- scalar arithmetic (Python ints) -------------------------------------------------
    def add(self, a: int, b: int) -> int:
        """``a + b`` in GF(q)."""
        p = self.p
        if p == 2:
            return a ^ b
        if self.m == 1:
            return (a + b) % p
        result, w = 0, 1
        while a or b:
            result += ((a % p + b % p) % p) * w
            a //= p
            b //= p
            w *= p
        return result

    def neg(self, a: int) -> int:
        """``-a`` in GF(q)."""
        p = self.p
        if p == 2:
            return a
        if self.m == 1:
            return (-a) % p
        result, w = 0, 1
        while a:
            result += ((-(a % p)) % p) * w
            a //= p
            w *= p
        return result

    def sub(self, a: int, b: int) -> int:
        """``a - b`` in GF(q)."""
        return self.add(a, self.neg(b))

    def mul(self, a: int, b: int) -> int:
        """``a · b`` in GF(q)."""
        if a == 0 or b == 0:
            return 0
        return self._exp_list[self._log_list[a] + self._log_list[b]]

    def inv(self, a: int) -> int:
        """``a⁻¹`` in GF(q); ``a`` must be non-zero."""
        if a == 0:
            raise ZeroDivisionError("0 has no inverse in a field")
        return self._exp_list[(self.q - 1 - self._log_list[a]) % (self.q - 1)]

    def power(self, a: int, e: int) -> int:
        """``a**e`` in GF(q) (``e`` may be negative for non-zero ``a``)."""
        if a == 0:
            if e < 0:
                raise ZeroDivisionError("0 has no inverse in a field")
            return 1 if e == 0 else 0
        return self._exp_list[(self._log_list[a] * e) % (self.q - 1)]

    # --- vectorised arithmetic (numpy integer arrays) ------------------------------------
    def add_vec(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Element-wise ``a + b`` for integer arrays of field elements."""
        p = self.p
        if p == 2:
            return np.bitwise_xor(a, b)
        if self.m == 1:
            s = np.add(a, b)
            np.subtract(s, p, out=s, where=s >= p)
            return s
        result = np.zeros(np.broadcast(a, b).shape, dtype=np.result_type(a, b))
        for w in self._weights.tolist():
            result += ((a // w + b // w) % p) * w
        return result

    def neg_vec(self, a: np.ndarray) -> np.ndarray:
        """Element-wise ``-a`` for an integer array of field elements."""
        p = self.p
        a = np.asarray(a)
        if p == 2:
            return a.copy()
        if self.m == 1:
            return (p - a) % p
        result = np.zeros_like(a)
        for w in self._weights.tolist():
            result += ((p - (a // w) % p) % p) * w
        return result

    def mul_vec(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Element-wise ``a · b`` for integer arrays of field elements."""
        a = np.asarray(a)
        b = np.asarray(b)
        la, lb = self.log[a], self.log[b]
        out = self.exp[np.maximum(la, 0) + np.maximum(lb, 0)]
        return np.where((la < 0) | (lb < 0), 0, out)

    def mul_table(self, c: int) -> np.ndarray:
        """The table ``t`` with ``t[a] = c · a`` for every element ``a`` (length ``q``)."""
        if c == 0:
            return np.zeros(self.q, dtype=np.int64)
        table = np.zeros(self.q, dtype=np.int64)
        table[1:] = self.exp[self.log[1:] + self._log_list[c]]
        return table

    def elements(self) -> np.ndarray:
        """All ``q`` elements, ``0 .. q-1``."""
        return np.arange(self.q, dtype=np.int64)

    # --- polynomials over GF(q), coefficient lists constant term first -------------------
    def poly_mulmod(self, a: Sequence[int], b: Sequence[int], f: Sequence[int]) -> list[int]:
        """``a · b mod f`` for polynomials over GF(q); ``f`` monic, constant term first."""
        deg = len(f) - 1
        prod = [0] * (len(a) + len(b) - 1)
        for i, x in enumerate(a):
            if x:
                for j, y in enumerate(b):
                    if y:
                        prod[i + j] = self.add(prod[i + j], self.mul(x, y))
        for top in range(len(prod) - 1, deg - 1, -1):
            c = prod[top]
            if c:
                prod[top] = 0
                for j in range(deg):
                    prod[top - deg + j] = self.sub(prod[top - deg + j], self.mul(c, f[j]))
        prod = prod[:deg] + [0] * max(0, deg - len(prod))
        return prod

    def poly_powmod(self, a: Sequence[int], e: int, f: Sequence[int]) -> list[int]:
        """``a**e mod f`` by square-and-multiply (``e >= 0``)."""
        deg = len(f) - 1
        result = [1] + [0] * (deg - 1)
        base = list(a) + [0] * max(0, deg - len(a))
        base = self.poly_mulmod(base, result, f)
        while e:
            if e & 1:
                result = self.poly_mulmod(result, base, f)
            base = self.poly_mulmod(base, base, f)
            e >>= 1
        return result

    def poly_eval_vec(self, f: Sequence[int], x: np.ndarray) -> np.ndarray:
        """Evaluate ``f`` (constant term first) at every element of ``x`` (Horner)."""
        acc = np.full(np.shape(x), f[-1], dtype=np.int64)
        for c in reversed(f[:-1]):
            acc = self.add_vec(self.mul_vec(acc, x), np.full(np.shape(x), c, dtype=np.int64))
        return acc
