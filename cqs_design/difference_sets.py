"""Cyclic difference sets: the :class:`DifferenceSet` value type and its verification.

A subset ``D`` of the integers mod ``v`` with ``k`` elements is a cyclic ``(v, k, λ)``
difference set when every non-zero residue ``r`` mod ``v`` can be written as ``d1 - d2``
(``d1, d2`` in ``D``) in exactly ``λ`` ways. Counting the ``k(k-1)`` ordered differences
gives ``λ = k(k-1)/(v-1)``, and the *order* is ``n = k - λ``. With ``λ = 1`` and
``v = k² - k + 1`` the translates ``D + i`` are the lines of a projective plane of order
``n = k - 1``.

>>> from cqs_design import DifferenceSet
>>> d = DifferenceSet(7, [3, 0, 1])
>>> d.elements, d.k, d.lam, d.order
((0, 1, 3), 3, 1, 2)
>>> d.is_valid()
True
>>> DifferenceSet(7, [0, 1, 2]).is_valid()
False
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from cqs_design._checks import check_int

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx

__all__ = ["MAX_V", "DifferenceSet", "NotADifferenceSetError", "is_difference_set"]

#: Largest modulus a :class:`DifferenceSet` takes: residues are int64, and ``x + v`` for a
#: residue ``x`` must not overflow (every command of ``cqs-design`` has this one limit).
MAX_V = 1 << 62

#: Chunk of multiplier candidates checked at once by the brute-force fallbacks.
_CHUNK = 4096

#: Above this v a failed λ = 1 check reports a missing difference instead of counting all.
_COUNT_LIMIT = 1 << 22

#: From this v on, :meth:`DifferenceSet.verify` counts differences window by window in
#: ``O(k + _WINDOW)`` memory instead of one byte per residue.
_WINDOWED_V = 1 << 27

#: Residues per window of the windowed count (and about as many differences gathered at once).
_WINDOW = 1 << 20


class NotADifferenceSetError(ValueError):
    """A set of residues is not a (cyclic) difference set.

    The message names the reason, usually a non-zero difference whose multiplicity is wrong
    together with that multiplicity and the multiplicity ``λ`` it should have.
    """


def _check_v(v: Any) -> int:
    """``v`` as an int in ``[2, MAX_V]``.

    >>> _check_v(2**63 - 1)
    Traceback (most recent call last):
    ...
    ValueError: v must be an integer in [2, 4611686018427387904], got 9223372036854775807
    """
    return check_int(v, "v", minimum=2, maximum=MAX_V)


def _check_elements(elements: Any, v: int) -> tuple[int, ...]:
    if isinstance(elements, (str, bytes)) or not isinstance(elements, Iterable):
        raise TypeError(
            f"elements must be an iterable of integers in [0, {v}), got {elements!r}"
        )
    seen: set[int] = set()
    for raw in elements:
        e = check_int(raw, "every element")
        if not 0 <= e < v:
            raise ValueError(f"element {e} is out of range: elements must lie in [0, {v})")
        if e in seen:
            raise ValueError(f"element {e} appears more than once; elements must be distinct")
        seen.add(e)
    if not seen:
        raise ValueError("elements must not be empty")
    return tuple(sorted(seen))


def _mulmod(a: np.ndarray, t: int, v: int) -> np.ndarray:
    """``(a * t) % v`` for residues ``a`` without int64 overflow (v up to 2^46).

    One multiplication when ``(v - 1)² < 2^63``; otherwise Horner over the 16-bit digits of
    ``t mod v``, so every intermediate stays below ``v · 2^16``.
    """
    t %= v
    if (v - 1) * (v - 1) < 1 << 63:
        return (a * t) % v
    if v >= 1 << 46:  # pragma: no cover - far past SINGER_MAX_Q
        return np.array([int(x) * t % v for x in a.tolist()], dtype=np.int64)
    out = np.zeros_like(a)
    for shift in range((t.bit_length() - 1) // 16 * 16, -1, -16):
        out = (out * (1 << 16) + a * ((t >> shift) & 0xFFFF)) % v
    return out


def _min_rotation_start(gaps: np.ndarray) -> int:
    """Start of the lexicographically smallest rotation of ``gaps`` (first one on ties)."""
    k = len(gaps)
    candidates = np.flatnonzero(gaps == gaps.min())
    step = 1
    while len(candidates) > 1 and step < k:
        values = gaps[(candidates + step) % k]
        candidates = candidates[values == values.min()]
        step += 1
    return int(candidates[0])


class DifferenceSet:
    """An immutable, hashable set of residues mod ``v``, candidate cyclic difference set.

    Construction only checks that the input is a set of residues; call :meth:`verify` or
    :meth:`is_valid` to check the difference property.

    Parameters
    ----------
    v : int
        The modulus, ``v >= 2``.
    elements : iterable of int
        Distinct integers in ``[0, v)``; stored as the sorted tuple :attr:`elements`.

    Raises
    ------
    TypeError
        If ``v`` or an element is not an integer (bools are rejected too).
    ValueError
        If ``v < 2``, an element is out of range or repeated, or ``elements`` is empty.

    Examples
    --------
    >>> d = DifferenceSet(13, [9, 3, 1, 0])
    >>> d
    DifferenceSet(13, (0, 1, 3, 9))
    >>> d.translate(5).normalized() == d
    True
    >>> DifferenceSet(7, [0, 7])
    Traceback (most recent call last):
    ...
    ValueError: element 7 is out of range: elements must lie in [0, 7)
    """

    __slots__ = ("_array", "_elements", "_hash", "_v")

    _v: int
    _elements: tuple[int, ...]
    _array: np.ndarray
    _hash: int

    def __init__(self, v: int, elements: Iterable[int]) -> None:
        v = _check_v(v)
        elems = _check_elements(elements, v)
        self._init(v, elems)

    def _init(self, v: int, elements: tuple[int, ...]) -> None:
        array = np.array(elements, dtype=np.int64)
        array.setflags(write=False)
        object.__setattr__(self, "_v", v)
        object.__setattr__(self, "_elements", elements)
        object.__setattr__(self, "_array", array)
        object.__setattr__(self, "_hash", hash((v, elements)))

    @classmethod
    def _unchecked(cls, v: int, sorted_elements: Iterable[int]) -> DifferenceSet:
        """Build without validation from distinct, sorted residues (internal fast path)."""
        obj = cls.__new__(cls)
        if isinstance(sorted_elements, np.ndarray):
            elements = tuple(sorted_elements.tolist())
        else:
            elements = tuple(int(e) for e in sorted_elements)
        obj._init(int(v), elements)
        return obj

    # --- immutability, value semantics ---------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"DifferenceSet is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"DifferenceSet is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DifferenceSet):
            return NotImplemented
        return self._v == other._v and self._elements == other._elements

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        if len(self._elements) <= 12:
            shown = repr(self._elements)
        else:
            head = ", ".join(map(str, self._elements[:6]))
            shown = f"({head}, ... {len(self._elements) - 6} more)"
        return f"DifferenceSet({self._v}, {shown})"

    def __len__(self) -> int:
        return len(self._elements)

    def __iter__(self) -> Iterator[int]:
        return iter(self._elements)

    def __contains__(self, item: object) -> bool:
        return item in self._elements

    def __reduce__(self) -> tuple[Any, ...]:
        return (DifferenceSet, (self._v, self._elements))

    # --- parameters ----------------------------------------------------------------------
    @property
    def v(self) -> int:
        """The modulus ``v`` (number of points)."""
        return self._v

    @property
    def k(self) -> int:
        """The number of elements ``k``."""
        return len(self._elements)

    @property
    def elements(self) -> tuple[int, ...]:
        """The elements as a sorted tuple of ints in ``[0, v)``."""
        return self._elements

    @property
    def array(self) -> np.ndarray:
        """The elements as a read-only sorted ``int64`` numpy array."""
        return self._array

    @property
    def lam(self) -> int:
        """``λ = k(k-1)/(v-1)``, the multiplicity every non-zero difference must have.

        Raises
        ------
        NotADifferenceSetError
            If ``k(k-1)`` is not divisible by ``v-1`` (then no ``λ`` can work).

        Examples
        --------
        >>> DifferenceSet(21, [0, 1, 4, 14, 16]).lam
        1
        """
        k, v = self.k, self._v
        lam, rest = divmod(k * (k - 1), v - 1)
        if rest:
            raise NotADifferenceSetError(
                f"k(k-1) = {k * (k - 1)} is not divisible by v-1 = {v - 1}, so no λ exists "
                f"for k = {k}, v = {v}"
            )
        return lam

    @property
    def order(self) -> int:
        """The order ``n = k - λ`` (for ``λ = 1``, the order of the projective plane)."""
        return self.k - self.lam

    # --- verification --------------------------------------------------------------------
    def difference_counts(self) -> np.ndarray:
        """Multiplicity of every residue ``r`` as a difference ``d1 - d2`` with ``d1 != d2``.

        Returns an ``int64`` array of length ``v``; entry 0 is always 0.
        Vectorised: all ``k(k-1)`` differences are counted at once.

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).difference_counts().tolist()
        [0, 1, 1, 1, 1, 1, 1]
        """
        a, v = self._array, self._v
        k = len(a)
        counts = np.zeros(v, dtype=np.int64)
        # a few rows at a time in one reused buffer of about 2**20 entries
        rows = max(1, min(k, (1 << 20) // k))
        buf = np.empty((rows, k), dtype=np.int64)
        for start in range(0, k, rows):
            block = a[start : start + rows]
            diff = buf[: len(block)]
            np.subtract(block[:, None], a[None, :], out=diff)
            np.add(diff, v, out=diff, where=diff < 0)  # reduce mod v without a division
            counts += np.bincount(diff.ravel(), minlength=v)
        counts[0] -= k  # the k zero differences d - d
        return counts

    def verify(self) -> DifferenceSet:
        """Check the difference-set property; return ``self`` or raise.

        Raises
        ------
        NotADifferenceSetError
            Naming a non-zero difference whose multiplicity differs from ``λ``, that
            multiplicity and ``λ`` (or why no ``λ`` exists).

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).verify()
        DifferenceSet(7, (0, 1, 3))
        >>> DifferenceSet(7, [0, 1, 2]).verify()
        Traceback (most recent call last):
        ...
        cqs_design.difference_sets.NotADifferenceSetError: difference 1 occurs 2 times in \
DifferenceSet(7, (0, 1, 2)), but every non-zero difference must occur λ = 1 times
        """
        lam = self.lam
        if self._v >= _WINDOWED_V:
            bad = self._first_bad_difference(lam)
            if bad is None:
                return self
            r, count = bad
            raise NotADifferenceSetError(
                f"difference {r} occurs {count} times in {self!r}, but every non-zero "
                f"difference must occur λ = {lam} times"
            )
        if lam == 1:
            missing = self._first_uncovered()
            if missing is None:
                return self  # k(k-1) = v-1 differences hit all v-1 residues: each exactly once
            if self._v > _COUNT_LIMIT:  # skip the int64 count array; 0 is a wrong multiplicity
                raise NotADifferenceSetError(
                    f"difference {missing} occurs 0 times in {self!r}, but every non-zero "
                    f"difference must occur λ = 1 times"
                )
        counts = self.difference_counts()
        bad = np.flatnonzero(counts[1:] != lam)
        if len(bad):
            r = int(bad[0]) + 1
            raise NotADifferenceSetError(
                f"difference {r} occurs {int(counts[r])} times in {self!r}, but every "
                f"non-zero difference must occur λ = {lam} times"
            )
        return self

    def _first_bad_difference(self, lam: int, window: int | None = None
                              ) -> tuple[int, int] | None:
        """Smallest non-zero residue whose multiplicity is not ``lam``, with that multiplicity.

        ``O(k + window)`` memory for any ``v``: the residues ``1 .. v // 2`` are taken a
        window ``[lo, hi)`` at a time (``r`` and ``v - r`` have the same multiplicity, so the
        smallest bad residue, if any, is in that half).  For each element ``a``, the ``d`` with
        ``d - a mod v`` in the window form one run of the sorted doubled array ``D ∪ (D + v)``
        (two ``searchsorted``); the runs are gathered and counted with ``bincount``.  The work
        is one pass over the ``k(k-1)/2`` differences, whatever the window.
        """
        a, v = self._array, self._v
        k = len(a)
        window = window or _WINDOW
        doubled = np.concatenate([a, a + v])
        half = v // 2
        cap = max(window, 4 * k)  # differences gathered at once
        start = np.searchsorted(doubled, a + 1)
        for lo in range(1, half + 1, window):
            hi = min(half + 1, lo + window)
            stop = np.searchsorted(doubled, a + hi)
            sizes = stop - start
            counts = np.zeros(hi - lo, dtype=np.int64)
            ends = np.cumsum(sizes)
            row = 0
            while row < k:  # rows in groups of at most `cap` gathered differences
                base = ends[row - 1] if row else 0
                last = max(row + 1, int(np.searchsorted(ends, base + cap, side="right")))
                n = sizes[row:last]
                total = int(n.sum())
                if total:
                    offsets = np.repeat(np.cumsum(n) - n, n)
                    idx = np.repeat(start[row:last], n) + (np.arange(total) - offsets)
                    diff = doubled[idx] - np.repeat(a[row:last], n) - lo
                    counts += np.bincount(diff, minlength=hi - lo)
                row = last
            bad = np.flatnonzero(counts != lam)
            if len(bad):
                return int(bad[0]) + lo, int(counts[bad[0]])
            start = stop
        return None

    def _covers_every_difference(self) -> bool:
        """``True`` if every non-zero residue is some ``d1 - d2``."""
        return self._first_uncovered() is None

    def _first_uncovered(self) -> int | None:
        """The smallest non-zero residue that is no ``d1 - d2``, or ``None`` (vectorised).

        Uses one byte per residue.

        Only the pairs ``d1 > d2`` (and a few more) are computed: the rest are their
        negatives. A difference in ``(-v, v)`` indexes the length-``v`` array directly
        (negative indices wrap around, which is reduction mod ``v``).
        """
        a, v = self._array, self._v
        k = len(a)
        seen = np.zeros(v, dtype=bool)
        rows = max(1, min(k, (1 << 20) // k))
        buf = np.empty(rows * k, dtype=np.int64)
        for start in range(0, k, rows):
            stop = min(k, start + rows)
            out = buf[: (stop - start) * stop].reshape(stop - start, stop)
            np.subtract(a[start:stop, None], a[None, :stop], out=out)
            seen[out] = True
        seen[1:] |= seen[:0:-1]  # r is a difference iff v - r is
        missing = np.flatnonzero(~seen[1:])
        return int(missing[0]) + 1 if len(missing) else None

    def is_valid(self) -> bool:
        """``True`` if this is a cyclic difference set (see :meth:`verify`).

        Examples
        --------
        >>> DifferenceSet(13, [0, 1, 3, 9]).is_valid()
        True
        """
        try:
            self.verify()
        except NotADifferenceSetError:
            return False
        return True

    # --- transformations -----------------------------------------------------------------
    def translate(self, t: int) -> DifferenceSet:
        """The translate ``D + t = {d + t mod v}`` (any integer ``t``).

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).translate(5)
        DifferenceSet(7, (1, 5, 6))
        """
        t = check_int(t, "t")
        return DifferenceSet._unchecked(self._v, np.sort((self._array + t) % self._v))

    def multiply(self, t: int) -> DifferenceSet:
        """The multiple ``tD = {t·d mod v}``; ``t`` must be a unit mod ``v``.

        Raises
        ------
        ValueError
            If ``gcd(t, v) != 1`` (then ``tD`` would collapse elements).

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).multiply(2)
        DifferenceSet(7, (0, 2, 6))
        >>> DifferenceSet(7, [0, 1, 3]).multiply(14)
        Traceback (most recent call last):
        ...
        ValueError: t = 14 is not a unit mod v = 7 (gcd = 7); multipliers must be coprime to v
        """
        t = check_int(t, "t")
        g = math.gcd(t, self._v)
        if g != 1:
            raise ValueError(
                f"t = {t} is not a unit mod v = {self._v} (gcd = {g}); multipliers must be "
                f"coprime to v"
            )
        return self._multiply(t)

    def _multiply(self, t: int) -> DifferenceSet:
        return DifferenceSet._unchecked(self._v, np.sort(_mulmod(self._array, t, self._v)))

    def normalized(self) -> DifferenceSet:
        """The canonical translate: among translates containing 0, the lexicographically
        smallest sorted tuple.

        Computed in ``O(k)`` from the cyclic gap sequence (the sorted tuple of ``D - d`` is the
        running sum of the gaps starting at ``d``, so the smallest tuple is the smallest
        rotation of the gaps).

        Examples
        --------
        >>> DifferenceSet(7, [2, 3, 5]).normalized()
        DifferenceSet(7, (0, 1, 3))
        >>> DifferenceSet(7, [0, 2, 3]).normalized()
        DifferenceSet(7, (0, 1, 5))
        """
        a, v = self._array, self._v
        gaps = np.diff(a, append=a[0] + v)
        start = _min_rotation_start(gaps)
        return DifferenceSet._unchecked(v, np.sort((a - a[start]) % v))

    def _normalized_reference(self) -> DifferenceSet:
        """Slow, obviously right :meth:`normalized` (used by the tests)."""
        v = self._v
        best = min(tuple(sorted((x - d) % v for x in self._elements)) for d in self._elements)
        return DifferenceSet._unchecked(v, best)

    def paired(self) -> DifferenceSet:
        """The paired set ``{max(D) - d : d in D}`` (``-D`` translated by ``max(D)``).

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).paired()
        DifferenceSet(7, (0, 2, 3))
        """
        m = self._elements[-1]
        return DifferenceSet._unchecked(self._v, (m - self._array)[::-1])

    # --- multipliers and equivalence -----------------------------------------------------
    def _sum_zero_translate(self) -> DifferenceSet | None:
        """The unique translate with element sum ≡ 0 (mod v), if ``gcd(k, v) = 1``."""
        v, k = self._v, self.k
        if math.gcd(k, v) != 1:
            return None
        s = (-int(self._array.sum()) * pow(k, -1, v)) % v
        return self.translate(s)

    def _units(self) -> np.ndarray:
        t = np.arange(1, self._v, dtype=np.int64)
        return t[np.gcd(t, self._v) == 1]

    def _maps_onto(self, target: DifferenceSet, candidates: np.ndarray) -> np.ndarray:
        """Those ``t`` in ``candidates`` with ``t·self == target`` as sets (chunked, vectorised)."""
        v = self._v
        member = np.zeros(v, dtype=bool)
        member[target._array] = True
        hits = []
        for start in range(0, len(candidates), _CHUNK):
            t = candidates[start : start + _CHUNK]
            image = (t[:, None] * self._array[None, :]) % v
            hits.append(t[member[image].all(axis=1)])
        return np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)

    def _candidates(self, source: DifferenceSet, target: DifferenceSet) -> np.ndarray:
        """Units ``t`` that could map ``source`` onto ``target`` (as sets)."""
        v = self._v
        units_in_source = [x for x in source._elements if math.gcd(x, v) == 1]
        if not units_in_source:
            return self._units()
        x_inv = pow(units_in_source[0], -1, v)
        t = np.unique((target._array * x_inv) % v)
        return t[(t > 0) & (np.gcd(t, v) == 1)]

    def is_multiplier(self, t: int) -> bool:
        """``True`` if ``tD`` is a translate of ``D`` (``t`` must be a unit mod ``v``).

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).is_multiplier(2)
        True
        >>> DifferenceSet(7, [0, 1, 3]).is_multiplier(3)
        False
        """
        return self.multiply(t).normalized() == self.normalized()

    def multipliers(self) -> tuple[int, ...]:
        """The numerical multipliers: units ``1 <= t < v`` with ``tD`` a translate of ``D``.

        When ``gcd(k, v) = 1`` (always for ``λ = 1``) the translate ``D'`` with element sum
        ``≡ 0`` is fixed by every multiplier, so ``t`` is a multiplier iff ``tD' = D'``; if
        ``D'`` holds a unit ``x`` then ``t ∈ D'·x⁻¹``, leaving only ``k`` candidates
        (``O(k²)`` work). Otherwise every unit is tried (``O(φ(v)·k log k)``).

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).multipliers()
        (1, 2, 4)
        >>> DifferenceSet(13, [0, 1, 3, 9]).multipliers()
        (1, 3, 9)
        """
        fixed = self._sum_zero_translate()
        if fixed is not None:
            found = fixed._maps_onto(fixed, self._candidates(fixed, fixed))
            return tuple(sorted(int(t) for t in found))
        base = self.normalized()
        return tuple(
            int(t) for t in self._units() if self._multiply(int(t)).normalized() == base
        )

    def is_equivalent(self, other: DifferenceSet) -> bool:
        """``True`` if ``other = tD + s`` for some unit ``t`` and shift ``s``.

        Examples
        --------
        >>> d = DifferenceSet(13, [0, 1, 3, 9])
        >>> d.is_equivalent(d.multiply(2).translate(7))
        True
        >>> d.is_equivalent(DifferenceSet(13, [0, 1, 2, 5]))
        False
        """
        if not isinstance(other, DifferenceSet):
            raise TypeError(f"other must be a DifferenceSet, got {type(other).__name__}")
        if other.v != self._v or other.k != self.k:
            return False
        a, b = self._sum_zero_translate(), other._sum_zero_translate()
        if a is not None and b is not None:
            return len(a._maps_onto(b, self._candidates(a, b))) > 0
        target = other.normalized()
        return any(self._multiply(int(t)).normalized() == target for t in self._units())

    # --- the design ----------------------------------------------------------------------
    def blocks(self) -> list[tuple[int, ...]]:
        """The development: the ``v`` translates, block ``i`` = sorted ``{i + d mod v}``.

        For a ``(k² - k + 1, k, 1)`` set these are the lines of a projective plane.

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).blocks()[:3]
        [(0, 1, 3), (1, 2, 4), (2, 3, 5)]
        """
        v = self._v
        rows = np.sort((np.arange(v, dtype=np.int64)[:, None] + self._array[None, :]) % v, axis=1)
        return [tuple(r) for r in rows.tolist()]

    def incidence_graph(self) -> nx.Graph:
        """The bipartite Levi graph: points ``("point", x)``, blocks ``("block", i)``.

        Point ``x`` is joined to block ``i`` when ``x ∈ D + i``. Nodes carry ``bipartite``
        = 0 (points) or 1 (blocks).

        Examples
        --------
        >>> g = DifferenceSet(7, [0, 1, 3]).incidence_graph()
        >>> g.number_of_nodes(), g.number_of_edges()
        (14, 21)
        """
        import networkx as nx

        v = self._v
        graph = nx.Graph()
        graph.add_nodes_from((("point", x) for x in range(v)), bipartite=0)
        graph.add_nodes_from((("block", i) for i in range(v)), bipartite=1)
        graph.add_edges_from(
            (("point", (i + d) % v), ("block", i)) for i in range(v) for d in self._elements
        )
        return graph

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict ``{"v": v, "k": k, "elements": [...]}``.

        Examples
        --------
        >>> DifferenceSet(7, [0, 1, 3]).to_dict()
        {'v': 7, 'k': 3, 'elements': [0, 1, 3]}
        """
        return {"v": self._v, "k": self.k, "elements": list(self._elements)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DifferenceSet:
        """Inverse of :meth:`to_dict` (``k``, if present, must match).

        Examples
        --------
        >>> DifferenceSet.from_dict({"v": 7, "elements": [0, 1, 3]})
        DifferenceSet(7, (0, 1, 3))
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"from_dict needs a mapping, got {type(data).__name__}")
        missing = [key for key in ("v", "elements") if key not in data]
        if missing:
            raise ValueError(f"from_dict: missing key(s) {missing}; need 'v' and 'elements'")
        ds = cls(data["v"], data["elements"])
        if "k" in data and data["k"] != ds.k:
            raise ValueError(f"from_dict: k = {data['k']!r} but {ds.k} elements were given")
        return ds


def is_difference_set(elements: Iterable[int], v: int, lam: int | None = None) -> bool:
    """``True`` if ``elements`` form a cyclic ``(v, k, λ)`` difference set.

    Parameters
    ----------
    elements : iterable of int
        Distinct residues in ``[0, v)``.
    v : int
        The modulus.
    lam : int, optional
        Required multiplicity; ``None`` accepts any ``λ``.

    Raises
    ------
    TypeError, ValueError
        For malformed input (non-integers, duplicates, out-of-range elements, ``v < 2``).

    Examples
    --------
    >>> is_difference_set([0, 1, 3], 7)
    True
    >>> is_difference_set([0, 1, 3], 7, lam=2)
    False
    >>> is_difference_set([0, 1, 4], 7)
    False
    """
    ds = DifferenceSet(v, elements)
    if lam is not None:
        lam = check_int(lam, "lam", minimum=0)
    if not ds.is_valid():
        return False
    return lam is None or ds.lam == lam
