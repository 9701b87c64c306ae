"""The public Singer functions, the two table routes, and the choice of route by ``q``.

* ``v < 2**15``: the whole coefficient sequence (:func:`_singer_exponents_sequence`);
* ``q < 8193``: baby-step giant-step with ``q^1.5`` baby steps (:func:`_singer_exponents_bsgs`);
* else the ``O(sqrt(v))``-memory trace route of :mod:`cqs_design.singer.trace`.

See :mod:`cqs_design.singer` for the construction.

>>> singer_difference_set(5).elements
(0, 1, 3, 10, 14, 26)
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from sympy import isprime, perfect_power

from cqs_design._checks import check_int
from cqs_design.difference_sets import DifferenceSet
from cqs_design.singer.cubic import (
    canonical_keys,
    coefficient_sequence,
    cubic_of,
    field_of,
    giant_steps,
)
from cqs_design.singer.trace import singer_exponents_trace

__all__ = ["SINGER_MAX_Q", "is_prime_power", "singer_difference_set"]

#: Largest q accepted by :func:`singer_difference_set` (v = 4,295,032,833; see the module
#: docstring of :mod:`cqs_design.singer` for why: the work, not the memory, grows as q²).
SINGER_MAX_Q = 1 << 16

#: From this q on, the O(sqrt(v))-memory route of :mod:`cqs_design.singer.trace` is used.
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


def _singer_exponents_sequence(q: int) -> np.ndarray:
    """``{i in [0, v) : s_i = 0}`` from the whole coefficient sequence (``O(v)`` work)."""
    v = q * q + q + 1
    return np.flatnonzero(coefficient_sequence(q, v) == 0)


def _singer_exponents_bsgs(q: int, baby: int | None = None) -> np.ndarray:
    """The same set as discrete logarithms, by baby-step giant-step (``O(q^1.5)`` work).

    The line ``span{1, x}`` has the points ``[1]`` (exponent 0) and ``[c + x]``,
    ``c ∈ GF(q)``; ``D`` holds their logarithms base ``x`` in GF(q³)*/GF(q)* (order ``v``).
    Baby steps: the keys of ``x^j``, ``0 <= j < M``, read off the coefficient sequence
    (``x^j = a_j + b_j x + s_j x²`` with ``b_j = s_{j+1} + c₂s_j`` and
    ``a_j = s_{j+2} + c₂s_{j+1} + c₁s_j``). Giant steps: all ``q`` targets at once are
    multiplied by ``x^(-M)`` and looked up (``searchsorted``) until every one is found.
    """
    field = field_of(q)
    f = cubic_of(q)
    v = q * q + q + 1
    m = min(v, baby if baby is not None else max(64, int(q**1.5)))
    s = coefficient_sequence(q, m + 2).astype(np.int64)
    c1, c2 = f[1], f[2]
    t_c1, t_c2 = field.mul_table(c1), field.mul_table(c2)
    b = field.add_vec(s[1 : m + 1], t_c2[s[:m]])
    a = field.add_vec(field.add_vec(s[2 : m + 2], t_c2[s[1 : m + 1]]), t_c1[s[:m]])
    keys = canonical_keys(field, a, b, s[:m])
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

    found = giant_steps(field, f, q, m, coords, order, lookup)
    return np.unique(np.concatenate([[0], found % v]))


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
        elements = singer_exponents_trace(q)
    if len(elements) != q + 1:  # pragma: no cover - would be a bug, never return it
        raise AssertionError(f"Singer construction for q = {q} gave {len(elements)} elements")
    ds = DifferenceSet._unchecked(v, elements)
    # D and -D are both Singer sets (-1 is never a multiplier); take the smaller normal form.
    return min(ds.normalized(), ds._multiply(-1).normalized(), key=lambda d: d.elements)
