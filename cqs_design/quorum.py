"""Relaxed cyclic quorum sets (cyclic difference covers) for every group order ``v``.

A *cyclic quorum set* (Luk and Wong 1997) for ``v`` nodes is a base set ``B`` of residues mod
``v`` whose differences cover every nonzero residue at least once (a *difference cover* or
*difference basis* of ``Z_v``).  Its translates ``B + i`` then pairwise intersect, and every pair
of residues lies together in at least one translate -- the relaxation (lambda >= 1) of a planar
difference set that the attention planner needs when ``v`` is not ``k^2 - k + 1``.

The minimum size ``k`` satisfies ``k (k - 1) >= v - 1`` (counting) and equals ``q + 1`` when
``v = q^2 + q + 1`` for a prime power ``q`` (Singer).  :func:`minimum_quorum_size` reads it from
the stored table for ``v <= 111`` (every row proven here) and otherwise finds it by exhaustive
search (every cover contains two elements at distance 1, so we fix ``{0, 1}``, and the
reflection ``d -> 1 - d`` halves the work), with a time limit on request.

>>> minimum_size(8)
4
>>> find_cyclic_quorum_sets(8, limit=1)
[(0, 1, 2, 4)]
>>> is_cyclic_quorum_set((0, 1, 3), 7)
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

from cqs_design._checks import check_int
from cqs_design.bitsets import new_differences

__all__ = [
    "MAX_QUORUM_V",
    "MinimumQuorumSize",
    "QuorumSearchResult",
    "QuorumSearchStats",
    "QuorumTimeout",
    "find_cyclic_quorum_sets",
    "is_cyclic_quorum_set",
    "minimum_quorum_size",
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


@dataclass(frozen=True)
class QuorumSearchResult:
    """Quorum sets found by :func:`search_cyclic_quorum_sets` and the search statistics.

    Unpacks like the ``(sets, stats)`` tuple it replaces: ``sets, stats = result``.
    """

    sets: tuple[tuple[int, ...], ...]
    stats: QuorumSearchStats

    def __iter__(self) -> Iterator[Any]:
        return iter((list(self.sets), self.stats))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {"v": self.stats.v, "k": self.stats.k, "count": len(self.sets),
                "sets": [list(s) for s in self.sets],
                "stats": {"nodes": self.stats.nodes, "seconds": self.stats.seconds,
                          "complete": self.stats.complete}}


@dataclass(frozen=True)
class MinimumQuorumSize:
    """The answer of :func:`minimum_quorum_size`: the size, a base set, and where they come from.

    ``status`` is ``"proven here"`` (stored table or a completed search), ``source`` a sentence
    naming the proof; ``row`` is the stored table row (None past the table).  Compares equal to
    its ``int`` value and converts with ``int()``.
    """

    v: int
    minimum_size: int
    base_set: tuple[int, ...]
    status: str
    source: str
    seconds: float
    row: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __int__(self) -> int:
        return self.minimum_size

    def __index__(self) -> int:
        return self.minimum_size

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int) and not isinstance(other, bool):
            return self.minimum_size == other
        if isinstance(other, MinimumQuorumSize):
            return (self.v, self.minimum_size) == (other.v, other.minimum_size)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.minimum_size)


class QuorumTimeout(TimeoutError):
    """:func:`minimum_quorum_size` ran out of time; ``lower``/``upper`` are the known bounds.

    ``upper`` is None when no cover of any size was found yet (``v`` itself always works).
    """

    def __init__(self, v: int, lower: int, upper: int | None, seconds: float) -> None:
        self.v, self.lower, self.upper, self.seconds = v, lower, upper, seconds
        known = f"{lower} <= minimum <= {upper}" if upper is not None else f"minimum >= {lower}"
        super().__init__(f"minimum cyclic quorum size of Z_{v} not decided in {seconds:.1f} s: "
                         f"{known} (smaller sizes excluded by counting or refuted by search);"
                         f" raise the time limit")


def _check_v(v: object) -> int:
    return check_int(v, "v", minimum=2, maximum=MAX_QUORUM_V)


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


class _Timeout(Exception):
    pass


class _NodeProgress:
    """A tqdm status line on stderr for one size being searched: nodes, nodes per second and,
    with a deadline, the seconds left. Shown at once (so a long search is never silent) and
    refreshed from the search loop every 1024 nodes (tqdm throttles the redraws)."""

    def __init__(self, v: int, k: int, deadline: float | None) -> None:
        import sys

        from tqdm.auto import tqdm

        self.deadline = deadline
        self.bar = tqdm(desc=f"v = {v}, size {k}", unit=" nodes", unit_scale=True,
                        leave=False, file=sys.stderr, mininterval=0.5)
        self._set_left()

    def _set_left(self) -> None:
        if self.deadline is not None:
            left = max(0.0, self.deadline - time.perf_counter())
            self.bar.set_postfix_str(f"{left:.0f} s left", refresh=False)

    def __call__(self, nodes: int) -> None:
        self._set_left()
        self.bar.update(nodes - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _covers(v: int, k: int, counter: list[int], deadline: float | None = None,
            tick: Callable[[int], None] | None = None) -> Iterator[tuple[int, ...]]:
    """Covers of size ``k`` containing {0, 1} with a3 + ak <= v + 1 (reflections omitted).

    Every 1024 nodes the deadline is checked and ``tick(nodes)`` called (progress)."""
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
        if not (counter[0] & 1023):
            if tick is not None:
                tick(counter[0])
            if deadline is not None and time.perf_counter() > deadline:
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
            new = new_differences(s, r, x, v, full)
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
        new = new_differences(0b11, 1 | (1 << (v - 1)), a3, v, full)
        chosen.append(a3)
        yield from rec(0b11 | (1 << a3), 1 | (1 << (v - 1)) | (1 << ((v - a3) % v)),
                       (1 << 1) | (1 << (v - 1)) | new, a3, top)
        chosen.pop()


def _canonical(elements: Sequence[int], v: int) -> tuple[int, ...]:
    return min(tuple(sorted((x - d) % v for x in elements)) for d in elements)


def search_cyclic_quorum_sets(v: int, k: int, *, limit: int | None = None,
                              time_limit: float | None = None,
                              progress: bool = False) -> QuorumSearchResult:
    """Cyclic quorum sets of size exactly ``k`` (up to translation) and the search statistics.

    ``stats.complete`` is False when ``limit`` or ``time_limit`` (seconds) stopped the search
    early; an empty incomplete answer proves nothing.  The result unpacks as ``(sets, stats)``.
    ``progress`` shows a status line on stderr (nodes, nodes per second, seconds left) from
    the start of the search.

    >>> res = search_cyclic_quorum_sets(7, 3)
    >>> res.sets, res.stats.complete
    (((0, 1, 3), (0, 1, 5)), True)
    >>> sets, stats = res
    """
    _check_v(v)
    check_int(k, "k", minimum=1, maximum=v)
    if limit is not None:
        check_int(limit, "limit", minimum=1)
    _check_time_limit(time_limit)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    sets, stats = _search(v, k, limit, time_limit, progress=progress)
    return QuorumSearchResult(tuple(sets), stats)


def _check_time_limit(time_limit: float | None) -> None:
    if time_limit is not None and (isinstance(time_limit, bool) or not time_limit > 0):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")


def _search(v: int, k: int, limit: int | None, time_limit: float | None = None, *,
            progress: bool = False) -> tuple[list[tuple[int, ...]], QuorumSearchStats]:
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit
    counter = [0]
    found: set[tuple[int, ...]] = set()
    complete = True
    if k * (k - 1) >= v - 1 and k >= 2:
        tick = _NodeProgress(v, k, deadline) if progress else None
        try:
            for sol in _covers(v, k, counter, deadline, tick):
                for cand in (sol, tuple(sorted((1 - d) % v for d in sol))):
                    found.add(_canonical(cand, v))
                if limit is not None and len(found) >= limit:
                    complete = False
                    break
        except _Timeout:
            complete = False
        finally:
            if tick is not None:
                tick.close()
    elif v == 1 or (k == 1 and v == 1):  # pragma: no cover - v >= 2 enforced
        found.add((0,))
    out = sorted(found)[:limit] if limit is not None else sorted(found)
    stats = QuorumSearchStats(v, k, counter[0], time.perf_counter() - start, complete, len(out))
    return out, stats


def minimum_quorum_size(v: int, *, time_limit: float | None = None, progress: bool = False,
                        use_table: bool = True) -> MinimumQuorumSize:
    """Minimum size of a cyclic quorum set (difference cover) of ``Z_v``, with its provenance.

    For ``v <= 111`` the answer comes from the stored proven table at once (microseconds;
    ``status``, ``source`` and the table ``row`` say how it was proven).  Past the table (or
    with ``use_table=False``) it searches sizes from the counting bound up, each exhaustively.

    Parameters
    ----------
    v : int
        ``2 <= v <= MAX_QUORUM_V``.
    time_limit : float, optional
        Seconds for the whole search; past it :class:`QuorumTimeout` says which bounds are
        known (it never hangs silently).  None: no limit (can take hours past v = 80).
    progress : bool
        Show a status line while each size is searched (nodes, nodes per second, seconds
        left), from the first second, and print one line per size tried (to stderr): refuted
        or found, nodes and seconds.

    Examples
    --------
    >>> r = minimum_quorum_size(95)
    >>> r.minimum_size, r.status, r == 11
    (11, 'proven here', True)
    >>> minimum_quorum_size(14, use_table=False).minimum_size
    5
    """
    _check_v(v)
    _check_time_limit(time_limit)
    start = time.perf_counter()
    row = _load_table().get(v) if use_table else None
    if row is not None and row["status"] == "proven here":
        return MinimumQuorumSize(v, row["minimum_size"], tuple(row["base_set"]), row["status"],
                                 row["source"], time.perf_counter() - start, row)
    deadline = None if time_limit is None else start + time_limit
    k = minimum_size_lower_bound(v)
    upper = len(_simple_cover(v)) if row is None else row["minimum_size"]
    while True:
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0:
            raise QuorumTimeout(v, k, upper, time.perf_counter() - start)
        sets, stats = _search(v, k, 1, left, progress=progress)
        if progress:
            import sys

            verdict = "found" if sets else ("refuted" if stats.complete else "timed out")
            print(f"v = {v}, size {k}: {verdict} ({stats.nodes} nodes, {stats.seconds:.2f} s)",
                  file=sys.stderr, flush=True)
        if sets:
            proof = ("counting bound k(k-1) >= v-1" if k == minimum_size_lower_bound(v) else
                     f"exhaustive search (cqs_design.quorum) refuted sizes "
                     f"{minimum_size_lower_bound(v)}..{k - 1}")
            return MinimumQuorumSize(v, k, sets[0], "proven here",
                                     f"computed now (cover found by search; minimality by "
                                     f"{proof})", time.perf_counter() - start)
        if not stats.complete:
            raise QuorumTimeout(v, k, upper, time.perf_counter() - start)
        k += 1


def _simple_cover(v: int) -> tuple[int, ...]:
    """A cover of about ``2 sqrt(v)`` elements: ``{0 .. a-1}`` and the multiples of ``a``.

    Every ``r`` in ``1 .. v-1`` is ``a j - i`` with ``0 <= i < a`` and ``1 <= j <= ceil(r/a)``.

    >>> _simple_cover(10), is_cyclic_quorum_set(_simple_cover(10), 10)
    ((0, 1, 2, 3, 6, 9), True)
    """
    import math

    a = max(1, math.isqrt(v - 1))
    return tuple(sorted({*range(a), *(a * j % v for j in range(1, -(-(v - 1) // a) + 1))}))


def minimum_size(v: int, *, time_limit: float | None = None) -> int:
    """Minimum size of a cyclic quorum set of ``Z_v`` (alias of :func:`minimum_quorum_size`).

    >>> [minimum_size(v) for v in (7, 13, 14, 21)]
    [3, 4, 5, 5]
    """
    return minimum_quorum_size(v, time_limit=time_limit).minimum_size


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

    Public: a reference implementation to check the fast search against (the tests compare
    the two for every v <= 15); exponential in ``v``.

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

    Written by ``scripts/gen_quorum_table.py`` from the certificate of
    ``scripts/prove_quorum_lower_bounds.py``.  Each row has ``minimum_size``, a ``base_set``
    (verified to cover), ``status`` (``"proven here"`` or ``"upper bound only"``), the
    ``proof`` (refuted sizes, nodes, seconds), the OEIS A283297 value ``published`` with
    ``published_agrees`` (compared, never trusted) and a ``source`` sentence.

    >>> row = stored_quorum_table()[13]
    >>> row["minimum_size"], row["status"]
    (4, 'proven here')
    """
    return dict(_load_table())
