"""The Singer construction: a cyclic ``(q²+q+1, q+1, 1)`` difference set for every prime power q.

Let ``f`` be a primitive cubic over GF(q) and ``x`` a root, so ``x`` generates GF(q³)*.
Write ``x^i = a_i + b_i x + s_i x²`` with coefficients in GF(q). Because ``x^v ∈ GF(q)`` for
``v = q² + q + 1``, the set

    D = { i in [0, v) : s_i = 0 }   (the exponents with ``x^i`` in the plane span{1, x})

is a line of the projective plane PG(2, q), and multiplication by ``x`` (a collineation that
cycles all ``v`` points) turns it into a cyclic difference set with ``k = q + 1``, ``λ = 1``.

The coefficient sequence ``s`` is a linear recurring sequence of order 3. Since
``s_{j+n} = u_0 s_j + u_1 s_{j+1} + u_2 s_{j+2}`` where ``x^n = u_0 + u_1 x + u_2 x²``, the
known prefix ``s[0:n]`` gives the next ``n - 2`` terms in one vectorised step (three table
look-ups and two GF(q) additions over numpy arrays), so ``log2(v)`` steps build all ``v`` terms.

For ``v >= 2**15`` the construction does not even touch all ``v`` exponents: ``D`` is ``{0}``
plus the discrete logarithms of the ``q`` points ``[c + x]`` of the line, found together by a
vectorised baby-step giant-step search in ``O(q^1.5)`` time and memory (see
:func:`_singer_exponents_bsgs`).  Past ``q = 8192`` (``_TRACE_MIN_Q``) that memory, ``O(v^0.75)``,
grows too fast, and :mod:`cqs_design._singer_large` takes over: the line ``ker Tr`` of the same
plane, one logarithm per Frobenius orbit, and a baby table of ``64 q`` entries, so memory is
``O(q) = O(sqrt(v))``.  All routes give the same normalized set; the tests compare them with
each other and with a scalar reference.

The limit :data:`SINGER_MAX_Q` = 65536 (``v`` about 4.3·10^9) is set by time, not memory:
the giant steps cost about ``q² / (3m · 64 · 2)`` point look-ups (``q = p^m``) and checking the
result (:meth:`DifferenceSet.verify`) touches all ``v - 1`` differences; at the limit that
measured 18 s to build and 5 minutes to verify on a loaded 2-core machine
(docs/difference_sets.md has the table).

>>> from cqs_design import singer_difference_set
>>> singer_difference_set(3)
DifferenceSet(13, (0, 1, 3, 9))
>>> singer_difference_set(4).verify().elements
(0, 1, 4, 14, 16)
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
from sympy import factorint, isprime, perfect_power

from cqs_design._checks import check_int
from cqs_design.difference_sets import DifferenceSet
from cqs_design.fields import GaloisField

__all__ = ["SINGER_MAX_Q", "is_prime_power", "primitive_cubic", "singer_difference_set"]

#: Largest q accepted by :func:`singer_difference_set` (v = 4,295,032,833; see the module
#: docstring for why: the work, not the memory, grows as q²).
SINGER_MAX_Q = 1 << 16

#: From this q on, the O(sqrt(v))-memory route of :mod:`cqs_design._singer_large` is used.
_TRACE_MIN_Q = 8193


def is_prime_power(n: int) -> bool:
    """``True`` if ``n = p^m`` for a prime ``p`` and ``m >= 1``.

    Raises
    ------
    TypeError
        If ``n`` is not an integer (bools are rejected).

    Examples
    --------
    >>> [n for n in range(1, 30) if is_prime_power(n)]
    [2, 3, 4, 5, 7, 8, 9, 11, 13, 16, 17, 19, 23, 25, 27, 29]
    """
    n = check_int(n, "n")
    return _is_prime_power(n)


def _is_prime_power(n: int) -> bool:
    if n < 2:
        return False
    if isprime(n):
        return True
    pp = perfect_power(n)
    return bool(pp) and isprime(int(pp[0]))


def _nearest_prime_powers(q: int) -> tuple[int | None, int]:
    below = next((n for n in range(q - 1, 1, -1) if _is_prime_power(n)), None)
    above = next(n for n in itertools.count(max(q + 1, 2)) if _is_prime_power(n))
    return below, above


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
    return _primitive_cubic(field.q)


@functools.lru_cache(maxsize=64)
def _field(q: int) -> GaloisField:
    return GaloisField(q)


@functools.lru_cache(maxsize=64)
def _primitive_cubic(q: int) -> tuple[int, int, int, int]:
    field = _field(q)
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


def _coefficient_sequence(q: int, length: int) -> np.ndarray:
    """``s[0:length]``: the x² coefficients of ``x^i mod f`` (vectorised doubling)."""
    field = _field(q)
    f = _primitive_cubic(q)
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


def _coefficient_sequence_reference(q: int, length: int) -> list[int]:
    """Slow, obviously right twin of :func:`_coefficient_sequence`: step ``x^i`` one by one."""
    field = _field(q)
    f = _primitive_cubic(q)
    state = [1, 0, 0]  # x^0
    out = []
    for _ in range(length):
        out.append(state[2])
        state = field.poly_mulmod(state, [0, 1, 0], f)
    return out


def singer_difference_set(q: int) -> DifferenceSet:
    """The Singer ``(q² + q + 1, q + 1, 1)`` cyclic difference set, normalized.

    Deterministic: the field modulus and the primitive cubic are the first ones in a fixed
    lexicographic order; of the set ``D`` they give and its negative ``-D`` (also a Singer
    set), the result is the one whose :meth:`DifferenceSet.normalized` tuple is smaller.
    So ``q = 2, 3, 4`` give the classical ``{0, 1, 3}``, ``{0, 1, 3, 9}``,
    ``{0, 1, 4, 14, 16}``.

    Parameters
    ----------
    q : int
        A prime power, ``2 <= q <= SINGER_MAX_Q`` (65536, ``v`` about 4.3·10^9; memory is
        ``O(q)``, but the work grows as ``q²``, see the module docstring).

    Raises
    ------
    TypeError
        If ``q`` is not an integer.
    ValueError
        If ``q`` exceeds :data:`SINGER_MAX_Q` (checked first, so a huge number is refused at
        once) or is not a prime power (the message names the nearest prime powers below and
        above).

    Examples
    --------
    >>> singer_difference_set(2)
    DifferenceSet(7, (0, 1, 3))
    >>> d = singer_difference_set(8)
    >>> d.v, d.k, d.lam, d.is_valid()
    (73, 9, 1, True)
    >>> singer_difference_set(6)
    Traceback (most recent call last):
    ...
    ValueError: q = 6 is not a prime power; the nearest prime powers are 5 (below) and 7 (above)
    """
    q = check_int(q, "q")
    if q > SINGER_MAX_Q:
        size = f"{q * q + q + 1:,}" if q.bit_length() <= 64 else f"about 2^{2 * q.bit_length()}"
        raise ValueError(
            f"q = {_short(q)} exceeds SINGER_MAX_Q = {SINGER_MAX_Q}: v = q²+q+1 = {size}; "
            f"building and verifying the set takes O(q²) work; use q <= {SINGER_MAX_Q}"
        )
    if not _is_prime_power(q):
        below, above = _nearest_prime_powers(q)
        if below is None:
            raise ValueError(
                f"q = {q} is not a prime power; the smallest prime power is {above}"
            )
        raise ValueError(
            f"q = {q} is not a prime power; the nearest prime powers are {below} (below) "
            f"and {above} (above)"
        )
    return _singer_difference_set(q)


def _short(n: int) -> str:
    """``n`` in decimal, or its size when it has more than 30 digits."""
    return str(n) if n.bit_length() <= 100 else f"<a {n.bit_length()}-bit number>"


def _canonical_keys(field: GaloisField, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
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
    """``exp`` padded with zeros and ``log`` with ``log[0] = 2(q-1)`` (see _canonical_keys)."""
    field = _field(q)
    exp_ext = np.zeros(3 * q, dtype=np.int64)
    exp_ext[: 2 * (q - 1)] = field.exp
    log_ext = field.log.copy()
    log_ext[0] = 2 * (q - 1)
    return exp_ext, log_ext


class _TimesConstant:
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


def _singer_exponents_sequence(q: int) -> np.ndarray:
    """``{i in [0, v) : s_i = 0}`` from the whole coefficient sequence (``O(v)`` work)."""
    v = q * q + q + 1
    return np.flatnonzero(_coefficient_sequence(q, v) == 0)


def _singer_exponents_bsgs(q: int, baby: int | None = None) -> np.ndarray:
    """The same set as discrete logarithms, by baby-step giant-step (``O(q^1.5)`` work).

    The line ``span{1, x}`` has the points ``[1]`` (exponent 0) and ``[c + x]``,
    ``c ∈ GF(q)``; ``D`` holds their logarithms base ``x`` in GF(q³)*/GF(q)* (order ``v``).
    Baby steps: the keys of ``x^j``, ``0 <= j < M``, read off the coefficient sequence
    (``x^j = a_j + b_j x + s_j x²`` with ``b_j = s_{j+1} + c₂s_j`` and
    ``a_j = s_{j+2} + c₂s_{j+1} + c₁s_j``). Giant steps: all ``q`` targets at once are
    multiplied by ``x^(-M)`` and looked up (``searchsorted``) until every one is found.
    """
    field = _field(q)
    f = _primitive_cubic(q)
    v = q * q + q + 1
    m = min(v, baby if baby is not None else max(64, int(q**1.5)))
    s = _coefficient_sequence(q, m + 2).astype(np.int64)
    c1, c2 = f[1], f[2]
    t_c1, t_c2 = field.mul_table(c1), field.mul_table(c2)
    b = field.add_vec(s[1 : m + 1], t_c2[s[:m]])
    a = field.add_vec(field.add_vec(s[2 : m + 2], t_c2[s[1 : m + 1]]), t_c1[s[:m]])
    keys = _canonical_keys(field, a, b, s[:m])
    shift = max(1, int(m - 1).bit_length())
    if 3 * int(q - 1).bit_length() + shift <= 62:
        # sort (key, j) pairs packed in one int64 (key < q³): one sort, no index array
        keys <<= shift
        keys |= np.arange(m, dtype=np.int64)
        keys.sort()
        order = keys & ((1 << shift) - 1)
        sorted_keys = keys >> shift
    else:
        order = np.argsort(keys)
        sorted_keys = keys[order]
        del keys
    # targets c + x, c in GF(q)
    coords = (field.elements(), np.ones(q, dtype=np.int64), np.zeros(q, dtype=np.int64))

    def lookup(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.minimum(np.searchsorted(sorted_keys, target), m - 1)
        return pos, sorted_keys[pos] == target

    found = _giant_steps(field, f, q, m, coords, order, lookup)
    return np.unique(np.concatenate([[0], found % v]))


def _giant_steps(field: Any, f: Any, q: int, m: int, coords: tuple[np.ndarray, ...],
                 order: np.ndarray, lookup: Any) -> np.ndarray:
    """The giant steps of baby-step giant-step: the discrete logarithms (base ``x``, modulo
    ``v``) of the points ``coords``, given a baby table of ``m`` steps whose ``lookup(keys)``
    returns ``(positions, hit)`` and whose ``order[position]`` is the baby step. Shared by the
    table route here and the O(q)-memory route of :mod:`cqs_design._singer_large`."""
    v = q * q + q + 1
    pending = np.arange(len(coords[0]))
    found = np.full(len(coords[0]), -1, dtype=np.int64)
    times_x_inv = _TimesConstant(field, field.poly_powmod([0, 1, 0], q**3 - 1 - m, f), f)
    for t in range(-(-v // m)):
        pos, hit = lookup(_canonical_keys(field, *coords))
        found[pending[hit]] = t * m + order[pos[hit]].astype(np.int64)
        keep = ~hit
        pending = pending[keep]
        if not len(pending):
            break
        coords = times_x_inv(tuple(y[keep] for y in coords))  # times x^(-m)
    if len(pending):  # pragma: no cover - would be a bug
        raise AssertionError(f"baby-step giant-step missed {len(pending)} logarithms for q={q}")
    return found


#: Below this v the whole sequence is cheaper than baby-step giant-step.
_BSGS_MIN_V = 1 << 15


@functools.lru_cache(maxsize=32)
def _singer_difference_set(q: int) -> DifferenceSet:
    v = q * q + q + 1
    if v < _BSGS_MIN_V:
        elements = _singer_exponents_sequence(q)
    elif q < _TRACE_MIN_Q:
        elements = _singer_exponents_bsgs(q)
    else:
        # imported here: cqs_design._singer_large imports this module
        from cqs_design._singer_large import singer_exponents_trace

        elements = singer_exponents_trace(q)
    if len(elements) != q + 1:  # pragma: no cover - would be a bug, never return it
        raise AssertionError(f"Singer construction for q = {q} gave {len(elements)} elements")
    ds = DifferenceSet._unchecked(v, elements)
    # D and -D are both Singer sets (-1 is never a multiplier); take the smaller normal form.
    return min(ds.normalized(), ds._multiply(-1).normalized(), key=lambda d: d.elements)
