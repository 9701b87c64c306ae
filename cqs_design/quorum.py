"""Relaxed cyclic quorum sets (cyclic difference covers) for every group order ``v``.

A *cyclic quorum set* (Luk and Wong 1997) for ``v`` nodes is a base set ``B`` of residues mod
``v`` whose differences cover every nonzero residue at least once (a *difference cover* or
*difference basis* of ``Z_v``).  Its translates ``B + i`` then pairwise intersect, and every pair
of residues lies together in at least one translate -- the relaxation (lambda >= 1) of a planar
difference set that the attention planner needs when ``v`` is not ``k^2 - k + 1``.

The minimum size ``k`` satisfies ``k (k - 1) >= v - 1`` (counting) and equals ``q + 1`` when
``v = q^2 + q + 1`` for a prime power ``q`` (Singer).  :func:`minimum_size` finds it by exhaustive
search (every cover contains two elements at distance 1, so we fix ``{0, 1}``, and the
reflection ``d -> 1 - d`` halves the work).

>>> minimum_size(8)
4
>>> find_cyclic_quorum_sets(8, limit=1)
[(0, 1, 2, 4)]
>>> is_cyclic_quorum_set((0, 1, 3), 7)
True
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_QUORUM_V",
    "QuorumSearchStats",
    "find_cyclic_quorum_sets",
    "is_cyclic_quorum_set",
    "minimum_size",
    "minimum_size_lower_bound",
    "reference_minimum_size",
    "search_cyclic_quorum_sets",
    "stored_quorum_table",
]

MAX_QUORUM_V = 4096


@dataclass(frozen=True)
class QuorumSearchStats:
    """Work done by one quorum-set search (nodes visited, seconds, completeness)."""

    v: int
    k: int
    nodes: int
    seconds: float
    complete: bool
    found: int


def _check_v(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"v must be an int, got {v!r} ({type(v).__name__})")
    if v < 2 or v > MAX_QUORUM_V:
        raise ValueError(f"v must be between 2 and {MAX_QUORUM_V}, got {v}")
    return v


def is_cyclic_quorum_set(elements: Iterable[int], v: int) -> bool:
    """True iff the differences of ``elements`` cover every nonzero residue mod ``v``.

    >>> is_cyclic_quorum_set([0, 1, 2, 4], 8), is_cyclic_quorum_set([0, 1, 2], 8)
    (True, False)
    """
    _check_v(v)
    s = sorted({int(x) % v for x in elements})
    covered = {(a - b) % v for a in s for b in s}
    return len(covered) == v


def minimum_size_lower_bound(v: int) -> int:
    """Smallest ``k`` with ``k (k - 1) >= v - 1`` (the counting bound).

    >>> minimum_size_lower_bound(13), minimum_size_lower_bound(14)
    (4, 5)
    """
    _check_v(v)
    k = 1
    while k * (k - 1) < v - 1:
        k += 1
    return k


def _rot(x: int, s: int, v: int, full: int) -> int:
    s %= v
    return ((x << s) | (x >> (v - s))) & full


class _Timeout(Exception):
    pass


def _covers(v: int, k: int, counter: list[int],
            deadline: float | None = None) -> Iterator[tuple[int, ...]]:
    """Covers of size ``k`` containing {0, 1} with a3 + ak <= v + 1 (reflections omitted)."""
    full = (1 << v) - 1
    target = full & ~1  # nonzero residues
    if v == 2:
        if k >= 2:
            yield (0, 1)
        return
    if k == 2:
        if v <= 3:
            yield (0, 1)
        return
    chosen = [0, 1]

    def rec(s: int, r: int, covered: int, last: int, top: int) -> Iterator[tuple[int, ...]]:
        counter[0] += 1
        if deadline is not None and not (counter[0] & 1023) and time.perf_counter() > deadline:
            raise _Timeout
        size = len(chosen)
        need = k - size
        missing = (target & ~covered).bit_count()
        if missing == 0:
            # already a cover: any remaining elements will do
            for pad in combinations(range(last + 1, top + 1), need):
                yield (*chosen, *pad)
            return
        # each new element adds at most 2*(current size) differences
        if missing > need * (2 * size + need - 1):
            return
        for x in range(last + 1, top - need + 2):
            new = _rot(r, x, v, full) | _rot(s, v - x, v, full)
            gain = (new & ~covered).bit_count()
            if missing - gain > (need - 1) * (2 * (size + 1) + need - 2):
                continue
            chosen.append(x)
            yield from rec(s | (1 << x), r | (1 << ((v - x) % v)), covered | new, x, top)
            chosen.pop()

    for a3 in range(2, v):
        top = min(v - 1, v + 1 - a3)
        if top < a3 + (k - 3):
            break
        new = _rot(1 | (1 << (v - 1)), a3, v, full) | _rot(0b11, v - a3, v, full)
        chosen.append(a3)
        yield from rec(0b11 | (1 << a3), 1 | (1 << (v - 1)) | (1 << ((v - a3) % v)),
                       (1 << 1) | (1 << (v - 1)) | new, a3, top)
        chosen.pop()


def _canonical(elements: Sequence[int], v: int) -> tuple[int, ...]:
    return min(tuple(sorted((x - d) % v for x in elements)) for d in elements)


def search_cyclic_quorum_sets(v: int, k: int, *, limit: int | None = None,
                              time_limit: float | None = None
                              ) -> tuple[list[tuple[int, ...]], QuorumSearchStats]:
    """Cyclic quorum sets of size exactly ``k`` (up to translation) and the search statistics.

    ``stats.complete`` is False when ``limit`` or ``time_limit`` (seconds) stopped the search
    early; an empty incomplete answer proves nothing.

    >>> sets, stats = search_cyclic_quorum_sets(7, 3)
    >>> sets, stats.complete
    ([(0, 1, 3), (0, 1, 5)], True)
    """
    _check_v(v)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= v:
        raise ValueError(f"k must be an int between 1 and v = {v}, got {k!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    return _search(v, k, limit, time_limit)


def _search(v: int, k: int, limit: int | None, time_limit: float | None = None
            ) -> tuple[list[tuple[int, ...]], QuorumSearchStats]:
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit
    counter = [0]
    found: set[tuple[int, ...]] = set()
    complete = True
    if k * (k - 1) >= v - 1 and k >= 2:
        try:
            for sol in _covers(v, k, counter, deadline):
                for cand in (sol, tuple(sorted((1 - d) % v for d in sol))):
                    found.add(_canonical(cand, v))
                if limit is not None and len(found) >= limit:
                    complete = False
                    break
        except _Timeout:
            complete = False
    elif v == 1 or (k == 1 and v == 1):  # pragma: no cover - v >= 2 enforced
        found.add((0,))
    out = sorted(found)[:limit] if limit is not None else sorted(found)
    stats = QuorumSearchStats(v, k, counter[0], time.perf_counter() - start, complete, len(out))
    return out, stats


def minimum_size(v: int) -> int:
    """Minimum size of a cyclic quorum set (difference cover) of ``Z_v``, by exhaustive search.

    >>> [minimum_size(v) for v in (7, 13, 14, 21)]
    [3, 4, 5, 5]
    """
    _check_v(v)
    k = minimum_size_lower_bound(v)
    while True:
        sets, _ = _search(v, k, 1)
        if sets:
            return k
        k += 1


def find_cyclic_quorum_sets(v: int, k: int | None = None, *,
                            limit: int | None = None) -> list[tuple[int, ...]]:
    """Base sets of size ``k`` (minimum size when None) covering every nonzero residue mod v.

    Results are translation-canonical (lexicographically smallest translate), sorted; with
    ``limit`` at most that many are returned.

    >>> find_cyclic_quorum_sets(13)
    [(0, 1, 3, 9), (0, 1, 4, 6), (0, 1, 5, 11), (0, 1, 8, 10)]
    """
    _check_v(v)
    if k is None:
        k = minimum_size(v)
    sets, _ = search_cyclic_quorum_sets(v, k, limit=limit)
    return sets


def reference_minimum_size(v: int) -> int:
    """Obviously-right (slow) twin of :func:`minimum_size`: try every subset containing 0.

    >>> reference_minimum_size(10)
    4
    """
    _check_v(v)
    for k in range(1, v + 1):
        for rest in combinations(range(1, v), k - 1):
            if is_cyclic_quorum_set((0, *rest), v):
                return k
    raise AssertionError("unreachable: Z_v covers itself")  # pragma: no cover



_TABLE = Path(__file__).with_name("quorum_table.json")


@lru_cache(maxsize=1)
def _load_table() -> dict[int, dict[str, Any]]:
    import json

    if not _TABLE.exists():  # pragma: no cover - data file shipped with the package
        return {}
    return {int(r["v"]): r for r in json.loads(_TABLE.read_text())["rows"]}


def stored_quorum_table() -> dict[int, dict[str, Any]]:
    """The stored table of minimum cyclic quorum sets, ``{v: row}`` for ``2 <= v <= 111``.

    Written by ``scripts/gen_quorum_table.py`` (its docstring says how to regenerate).  Each row
    has ``minimum_size``, a ``base_set`` (verified to cover), ``status`` (``"proven here"``,
    ``"published"`` or ``"upper bound only"``), the ``proof`` statistics when proven here, the
    ``published`` value and a ``source`` sentence.

    >>> row = stored_quorum_table()[13]
    >>> row["minimum_size"], row["status"]
    (4, 'proven here')
    """
    return dict(_load_table())
