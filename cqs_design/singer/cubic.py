"""The arithmetic of GF(q³) that every Singer route shares.

``x`` is a root of the first primitive cubic ``f`` over GF(q) (:func:`primitive_cubic`); a
point of the plane is ``[a + b x + c x²]``.  Here: the field and the cubic of each ``q``
(cached), the coefficient sequence ``s_i`` of ``x^i`` (vectorised doubling, and its slow
twin), the integer key of a projective point, multiplication by a constant on vectors of
points, and the giant steps of baby-step giant-step, which both the table route
(:mod:`cqs_design.singer.construction`) and the ``O(sqrt(v))`` route
(:mod:`cqs_design.singer.trace`) run.

>>> coefficient_sequence(2, 7).tolist()
[0, 0, 1, 1, 1, 0, 1]
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
from sympy import factorint

from cqs_design.fields import GaloisField

__all__ = [
    "TimesConstant",
    "canonical_keys",
    "coefficient_sequence",
    "coefficient_sequence_reference",
    "cubic_of",
    "field_of",
    "giant_steps",
    "primitive_cubic",
]


def _prime_factors(n: int) -> list[int]:
    return sorted(factorint(n))


def primitive_cubic(field: GaloisField) -> tuple[int, int, int, int]:
    """The first primitive cubic ``x³ + c₂x² + c₁x + c₀`` over ``field`` (lexicographic).

    Returned as ``(c₀, c₁, c₂, 1)``, constant term first. Irreducible means no root in
    GF(q) (checked on all ``q`` elements at once); primitive means ``x^((q³-1)/r) ≠ 1`` for
    every prime ``r`` dividing ``q³ - 1`` (factored with sympy).

    Examples
    --------
    >>> primitive_cubic(GaloisField(2))
    (1, 0, 1, 1)
    """
    return cubic_of(field.q)


@functools.lru_cache(maxsize=64)
def field_of(q: int) -> GaloisField:
    """GF(q), built once per ``q``."""
    return GaloisField(q)


@functools.lru_cache(maxsize=64)
def cubic_of(q: int) -> tuple[int, int, int, int]:
    """:func:`primitive_cubic` of GF(q), found once per ``q``."""
    field = field_of(q)
    v = q * q + q + 1
    primes_v = _prime_factors(v)
    everything = field.elements()
    # x generates GF(q³)* iff (a) its norm x^v = -c0 generates GF(q)* and (b) its image in
    # GF(q³)*/GF(q)* has order v, i.e. x^(v/r) is not in GF(q) for each prime r | v:
    # the order o of x is a multiple of v by (b), and x^o = 1 forces (q-1) | o/v by (a).
    units = np.arange(1, q, dtype=np.int64)
    logs_of_neg = field.log[field.neg_vec(units)]
    good_c0 = units[np.gcd(logs_of_neg, q - 1) == 1].tolist()
    for c0, c1, c2 in itertools.product(good_c0, range(q), range(q)):  # c0 slowest
        f = (c0, c1, c2, 1)
        if not field.poly_eval_vec(f, everything).all():
            continue  # has a root, so reducible
        x = [0, 1, 0]
        if any(field.poly_powmod(x, v // r, f)[1:] == [0, 0] for r in primes_v):
            continue
        return f
    raise AssertionError(f"no primitive cubic over GF({q})")  # pragma: no cover


def coefficient_sequence(q: int, length: int) -> np.ndarray:
    """``s[0:length]``: the x² coefficients of ``x^i mod f`` (vectorised doubling)."""
    field = field_of(q)
    f = cubic_of(q)
    dtype = np.uint16 if 3 * q <= 1 << 16 else np.uint32  # sums of three terms fit
    s = np.zeros(max(length, 3), dtype=dtype)
    s[2] = 1
    n = 3
    if field.p == 2:
        combine = np.bitwise_xor
    elif field.m == 1:
        combine = np.add  # reduced mod p once per step, by a table look-up
        reduce_mod = (np.arange(3 * q) % q).astype(dtype)
    else:
        combine = None
    scratch = np.empty(min(length, (length + 1) // 2 + 2), dtype=dtype)
    # x·(x² + c2·x + c1) = -c0, so x^(-1) = -(x² + c2·x + c1)/c0
    minus_inv_c0 = field.neg(field.inv(f[0]))
    x_inv = [field.mul(minus_inv_c0, c) for c in (f[1], f[2], 1)]
    x_inv2 = field.poly_mulmod(x_inv, x_inv, f)
    u = field.poly_powmod([0, 1, 0], n, f)  # x^n
    while n < length:
        m = min(n - 2, length - n)
        t0, t1, t2 = (field.mul_table(c).astype(dtype) for c in u)
        out = s[n : n + m]
        if combine is None:
            acc = field.add_vec(t0[s[0:m]], t1[s[1 : m + 1]])
            out[:] = field.add_vec(acc, t2[s[2 : m + 2]])
        else:
            tmp = scratch[:m]
            np.take(t0, s[0:m], out=out)
            np.take(t1, s[1 : m + 1], out=tmp)
            combine(out, tmp, out=out)
            np.take(t2, s[2 : m + 2], out=tmp)
            combine(out, tmp, out=out)
            if combine is np.add:
                np.take(reduce_mod, out, out=out)
        n += m
        # next n is 2n - 2 (until the last, truncated, step): x^(2n-2) = (x^n)² · x^(-2)
        u = field.poly_mulmod(field.poly_mulmod(u, u, f), x_inv2, f)
    return s[:length]


def coefficient_sequence_reference(q: int, length: int) -> list[int]:
    """Slow, obviously right twin of :func:`coefficient_sequence`: step ``x^i`` one by one."""
    field = field_of(q)
    f = cubic_of(q)
    state = [1, 0, 0]  # x^0
    out = []
    for _ in range(length):
        out.append(state[2])
        state = field.poly_mulmod(state, [0, 1, 0], f)
    return out


def canonical_keys(field: GaloisField, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Integer key of the projective point ``[a + b x + c x²]`` (last non-zero coordinate 1).

    Scaling uses logarithms only: with ``log 0`` mapped to a sentinel whose antilog is 0,
    ``y / pivot = exp[log y - log pivot + (q - 1)]`` needs no special case for ``y = 0``.
    """
    q = field.q
    exp_ext, log_ext = _scaling_tables(q)
    la, lb, lc = log_ext[a], log_ext[b], log_ext[c]
    zero = 2 * (q - 1)
    pivot = np.where(lc != zero, lc, np.where(lb != zero, lb, la))
    pivot -= q - 1
    key = exp_ext[lc - pivot]
    key *= q
    key += exp_ext[lb - pivot]
    key *= q
    key += exp_ext[la - pivot]
    return key


@functools.lru_cache(maxsize=8)
def _scaling_tables(q: int) -> tuple[np.ndarray, np.ndarray]:
    """``exp`` padded with zeros and ``log`` with ``log[0] = 2(q-1)`` (see canonical_keys)."""
    field = field_of(q)
    exp_ext = np.zeros(3 * q, dtype=np.int64)
    exp_ext[: 2 * (q - 1)] = field.exp
    log_ext = field.log.copy()
    log_ext[0] = 2 * (q - 1)
    return exp_ext, log_ext


class TimesConstant:
    """``Y ↦ Y · g mod f`` on vectors ``Y = y₀ + y₁x + y₂x²``: a 3 x 3 matrix over GF(q).

    The nine products are table look-ups; for a prime field the three terms of each output
    coordinate are added as integers and reduced mod ``p`` by one more look-up.
    """

    def __init__(self, field: GaloisField, g: list[int], f: tuple[int, ...]) -> None:
        images = [g, field.poly_mulmod(g, [0, 1, 0], f), field.poly_mulmod(g, [0, 0, 1], f)]
        self.field = field
        self.tables = [[field.mul_table(image[r]) for image in images] for r in range(3)]
        self.reduce = np.arange(3 * field.q) % field.q if field.m == 1 else None

    def __call__(self, coords: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        out = []
        for row in self.tables:
            if self.reduce is not None:
                acc = row[0][coords[0]]
                acc += row[1][coords[1]]
                acc += row[2][coords[2]]
                acc = self.reduce[acc]
            else:
                acc = row[0][coords[0]]
                for table, y in zip(row[1:], coords[1:], strict=True):
                    acc = self.field.add_vec(acc, table[y])
            out.append(acc)
        return tuple(out)


def giant_steps(field: Any, f: Any, q: int, m: int, coords: tuple[np.ndarray, ...],
                 order: np.ndarray, lookup: Any) -> np.ndarray:
    """The giant steps of baby-step giant-step: the discrete logarithms (base ``x``, modulo
    ``v``) of the points ``coords``, given a baby table of ``m`` steps whose ``lookup(keys)``
    returns ``(positions, hit)`` and whose ``order[position]`` is the baby step. Shared by the
    table route of :mod:`cqs_design.singer.construction` and the O(q)-memory route of
    :mod:`cqs_design.singer.trace`."""
    v = q * q + q + 1
    pending = np.arange(len(coords[0]))
    found = np.full(len(coords[0]), -1, dtype=np.int64)
    times_x_inv = TimesConstant(field, field.poly_powmod([0, 1, 0], q**3 - 1 - m, f), f)
    for t in range(-(-v // m)):
        pos, hit = lookup(canonical_keys(field, *coords))
        found[pending[hit]] = t * m + order[pos[hit]].astype(np.int64)
        keep = ~hit
        pending = pending[keep]
        if not len(pending):
            break
        coords = times_x_inv(tuple(y[keep] for y in coords))  # times x^(-m)
    if len(pending):  # pragma: no cover - would be a bug
        raise AssertionError(f"baby-step giant-step missed {len(pending)} logarithms for q={q}")
    return found
