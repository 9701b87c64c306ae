"""Singer sets for large ``q`` in ``O(q) = O(sqrt(v))`` memory (the route past ``q = 8192``).

:func:`cqs_design.singer.construction._singer_exponents_bsgs` finds the line ``span{1, x}`` by a
baby-step giant-step search with ``q^1.5`` baby steps: ``O(v^0.75)`` memory, about 0.06 GB at
``q = 8192`` but 4 GB at ``q = 65536``.  This module finds a *different* line of the same
cyclic plane, the kernel ``T`` of the trace ``Tr: GF(q³) -> GF(q)``, with a baby table of only
``_BABY_PER_Q * q`` entries:

* every line of the cyclic plane is a translate of every other (multiplication by ``x`` acts
  regularly on lines as well as points), so ``T`` gives the same normalized difference set
  as ``span{1, x}``;
* ``Tr(y^p) = Tr(y)^p``, so ``T`` is fixed by the Frobenius map ``y -> y^p`` and its exponent
  set by ``i -> p i mod v``.  The ``q + 1`` points of ``T`` fall into Frobenius orbits of
  length dividing ``3m`` (``q = p^m``), and only one logarithm per orbit is searched for
  (about ``q / (3m)`` targets; the others are ``L p^j mod v``);
* the giant steps then cost about ``(q / 3m) * (v / baby) / 2`` point look-ups.

Memory is a few arrays of ``_BABY_PER_Q * q`` integers (about 40 MB at ``q = 65536``); time is
dominated by the giant steps for prime ``q`` (``m = 1``) and by the baby table otherwise.
"""

from __future__ import annotations

import numpy as np

from cqs_design.fields import GaloisField
from cqs_design.singer.cubic import (
    canonical_keys,
    coefficient_sequence,
    cubic_of,
    field_of,
    giant_steps,
)

__all__ = ["singer_exponents_trace"]

#: Baby steps per unit of q: the baby table has ``_BABY_PER_Q * q`` entries.
_BABY_PER_Q = 64

#: Entries of the baby table computed at a time (caps the temporaries).
_BLOCK = 1 << 18


def _trace_kernel_points(field: GaloisField, f: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Coordinates ``(a, b, c)`` of the ``q + 1`` projective points of ``ker Tr``.

    With ``f = x³ + c₂x² + c₁x + c₀`` and roots ``x, x^q, x^(q²)``:
    ``Tr(1) = 3``, ``Tr(x) = -c₂``, ``Tr(x²) = c₂² - 2c₁`` (Newton), so
    ``Tr(a + b x + c x²) = 3a - c₂ b + (c₂² - 2c₁) c``: one linear form ``t`` over GF(q).
    Its kernel is spanned by two vectors ``e1, e2``; the points are ``e1`` and
    ``u e1 + e2`` for ``u`` in GF(q).
    """
    q = field.q
    c1, c2 = f[1], f[2]
    three = field.add(field.add(1, 1), 1)
    t = [three, field.neg(c2), field.sub(field.mul(c2, c2), field.add(c1, c1))]
    pivot = max(i for i in range(3) if t[i])  # Tr is onto, so t != 0
    others = [i for i in range(3) if i != pivot]
    basis = []
    for i in others:  # e_i - (t_i / t_pivot) e_pivot
        e = [0, 0, 0]
        e[i] = 1
        e[pivot] = field.neg(field.mul(t[i], field.inv(t[pivot])))
        basis.append(e)
    e1, e2 = basis
    u = field.elements()
    coords = []
    for j in range(3):
        col = field.add_vec(field.mul_table(e1[j])[u], np.full(q, e2[j], dtype=np.int64))
        coords.append(np.concatenate([[e1[j]], col]).astype(np.int64))
    return tuple(coords)


def _frobenius(field: GaloisField, f: tuple[int, ...], coords: tuple[np.ndarray, ...]
               ) -> tuple[np.ndarray, ...]:
    """``y -> y^p`` on coordinates: ``a^p + b^p x^p + c^p x^(2p)`` (semilinear)."""
    p, q = field.p, field.q
    power = np.zeros(q, dtype=np.int64)
    power[1:] = field.exp[(field.log[1:] * p) % (q - 1)]
    a, b, c = (power[y] for y in coords)
    xp = field.poly_powmod([0, 1, 0], p, f)
    x2p = field.poly_mulmod(xp, xp, f)
    out = []
    for r in range(3):
        acc = field.add_vec(field.mul_table(xp[r])[b], field.mul_table(x2p[r])[c])
        out.append(field.add_vec(acc, a) if r == 0 else acc)
    return tuple(out)


def _orbit_representatives(keys: np.ndarray, image: np.ndarray, length: int) -> np.ndarray:
    """Indices of the smallest-key point of each cycle of the permutation ``image``."""
    best = keys.copy()
    cur = image.copy()
    for _ in range(length - 1):
        np.minimum(best, keys[cur], out=best)
        cur = image[cur]
    if not (cur == np.arange(len(keys))).all():  # pragma: no cover - would be a bug
        raise AssertionError("the Frobenius map does not have order dividing 3m on the line")
    return np.flatnonzero(best == keys)


class _BucketIndex:
    """Positions of keys in a sorted array of distinct keys, found through buckets.

    A bucket is ``key >> shift``, with about one key per bucket; ``starts[b]`` is the first
    position of bucket ``b``.  A look-up reads ``starts`` and then the few keys of its bucket,
    about two cache misses instead of the ~22 of a binary search over millions of keys.
    """

    def __init__(self, sorted_keys: np.ndarray) -> None:
        n = len(sorted_keys)
        top = int(sorted_keys[-1]) + 1
        self.shift = max(0, top.bit_length() - max(1, n.bit_length()))
        buckets = (top >> self.shift) + 1
        counts = np.bincount(sorted_keys >> self.shift, minlength=buckets)
        self.starts = np.zeros(buckets + 1, dtype=np.int32 if n < 1 << 31 else np.int64)
        np.cumsum(counts, out=self.starts[1:])
        self.keys = sorted_keys

    def find(self, target: np.ndarray) -> np.ndarray:
        """Position of each target key, or -1 where it is absent."""
        b = np.minimum(target >> self.shift, len(self.starts) - 2)
        lo = self.starts[b].astype(np.int64)
        hi = self.starts[b + 1]
        pos = np.full(len(target), -1, dtype=np.int64)
        idx = np.arange(len(target))
        while len(idx):
            live = lo < hi
            idx, lo, hi = idx[live], lo[live], hi[live]
            hit = self.keys[lo] == target[idx]
            pos[idx[hit]] = lo[hit]
            miss = ~hit
            idx, lo, hi = idx[miss], lo[miss] + 1, hi[miss]
        return pos


def _baby_table(q: int, baby: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys of ``x^j``, ``0 <= j < baby``, and the exponent ``j`` of each."""
    field = field_of(q)
    f = cubic_of(q)
    s = coefficient_sequence(q, baby + 2)
    t_c1, t_c2 = field.mul_table(f[1]), field.mul_table(f[2])
    shift = max(1, int(baby - 1).bit_length())
    key_bits = int(2 * q * q - 1).bit_length()  # a canonical key is below 2q² (see below)
    packed = key_bits + shift <= 62
    keys = np.empty(baby, dtype=np.int64)
    for lo in range(0, baby, _BLOCK):
        hi = min(baby, lo + _BLOCK)
        s0 = s[lo:hi].astype(np.int64)
        s1 = s[lo + 1 : hi + 1].astype(np.int64)
        s2 = s[lo + 2 : hi + 2].astype(np.int64)
        # x^j = a + b x + s_j x² with b = s_{j+1} + c₂ s_j, a = s_{j+2} + c₂ s_{j+1} + c₁ s_j
        b = field.add_vec(s1, t_c2[s0])
        a = field.add_vec(field.add_vec(s2, t_c2[s1]), t_c1[s0])
        keys[lo:hi] = canonical_keys(field, a, b, s0)
    del s
    if packed:
        keys <<= shift
        keys |= np.arange(baby, dtype=np.int64)
        keys.sort()
        order = (keys & ((1 << shift) - 1)).astype(np.uint32 if shift <= 32 else np.int64)
        keys >>= shift
        return keys, order
    order = np.argsort(keys)  # pragma: no cover - only past SINGER_MAX_Q
    return keys[order], order  # pragma: no cover


def singer_exponents_trace(q: int, baby: int | None = None) -> np.ndarray:
    """The exponents ``{i in [0, v) : Tr(x^i) = 0}``: a Singer difference set, sorted.

    ``baby`` (default ``_BABY_PER_Q * q``, at most ``v``) is the size of the baby table.
    A canonical key (last non-zero coordinate 1) is ``c q² + b q + a`` with ``c`` in
    ``{0, 1}``, so it is below ``2q²`` and packs with ``j`` into one int64 for ``q <= 2^16``.
    """
    field = field_of(q)
    f = cubic_of(q)
    v = q * q + q + 1
    m = min(v, baby if baby is not None else max(64, _BABY_PER_Q * q))
    sorted_keys, order = _baby_table(q, m)
    points = _trace_kernel_points(field, f)
    keys = canonical_keys(field, *points)
    image_keys = canonical_keys(field, *_frobenius(field, f, points))
    by_key = np.argsort(keys)
    image = by_key[np.searchsorted(keys, image_keys, sorter=by_key)]
    if not (keys[image] == image_keys).all():  # pragma: no cover - would be a bug
        raise AssertionError("the Frobenius image of a point of ker Tr is not in ker Tr")
    reps = _orbit_representatives(keys, image, 3 * field.m)
    coords = tuple(y[reps] for y in points)
    index = _BucketIndex(sorted_keys)

    def lookup(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = index.find(target)
        return pos, pos >= 0

    logs = giant_steps(field, f, q, m, coords, order, lookup) % v
    orbit = [logs]
    for _ in range(3 * field.m - 1):
        orbit.append(orbit[-1] * field.p % v)  # < v p < 2^63 for q <= 2^20
    return np.unique(np.concatenate(orbit))
