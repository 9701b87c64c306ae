"""Exhaustive search for cyclic difference sets, with a reproducible certificate.

Two exact engines:

* **backtracking** over residues in increasing order with a bitset (a Python ``int``) of the
  differences already used.  For ``lam == 1`` every translation class has exactly one member
  containing ``{0, 1}`` (the difference 1 occurs exactly once), so fixing ``0, 1`` visits each
  class exactly once;
* **multiplier orbits** (Hall's multiplier theorem): every prime ``p`` dividing ``n = k - lam``
  with ``p > lam`` and ``gcd(p, v) = 1`` is a multiplier, and when ``gcd(k, v) = 1`` some
  translate of every difference set is fixed by all multipliers (McFarland and Rice), so it is a
  union of orbits of the group they generate acting on ``Z_v``.  Searching unions of orbits of
  total size ``k`` is far smaller and the answer is still complete (each translation class has a
  fixed translate, so nothing is lost even up to translation).

Every search returns a :class:`SearchResult` carrying :class:`SearchStats` (nodes visited, time,
whether the search space was exhausted), so a "none exist" answer is a certificate a reader can
re-run.  ``Ctrl-C`` raises :class:`SearchInterrupted` holding the partial result.

>>> [ds.elements for ds in find_difference_sets(7, 3)]
[(0, 1, 3), (0, 1, 5)]
>>> search_difference_sets(43, 7, use_multiplier_theorem=True).stats.complete
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cqs_design._checks import check_int
from cqs_design.bitsets import new_differences, rotate

__all__ = [
    "MAX_SEARCH_V",
    "SearchInterrupted",
    "SearchParameterError",
    "SearchResult",
    "SearchStats",
    "check_parameters",
    "equivalence_canonical",
    "find_difference_sets",
    "multiplier_orbits",
    "multiplier_primes",
    "reference_find_difference_sets",
    "search_difference_sets",
    "translation_canonical",
]

#: Largest group order the searches accept (anything bigger is hopeless for exhaustive search).
MAX_SEARCH_V = 100_000

UpTo = Literal["translation", "equivalence"] | None


class SearchParameterError(ValueError):
    """The parameters cannot describe a difference set (or the search would be absurd)."""


class SearchInterrupted(KeyboardInterrupt):
    """A search was interrupted (``Ctrl-C``); ``.partial`` holds what was found so far.

    Subclasses :class:`KeyboardInterrupt` so code that stops on Ctrl-C still stops.
    """

    def __init__(self, partial: SearchResult) -> None:
        self.partial = partial
        st = partial.stats
        super().__init__(
            f"search for ({st.v},{st.k},{st.lam}) difference sets interrupted after "
            f"{st.nodes} nodes and {st.seconds:.2f} s; {len(partial.sets)} set(s) found so far "
            f"(INCOMPLETE: a missing set proves nothing)"
        )


@dataclass(frozen=True)
class SearchStats:
    """Statistics of one search: the certificate of its answer.

    ``complete`` is True only when the whole search space was exhausted; ``stopped`` says why a
    search ended early (``"limit"``, ``"time_limit"`` or ``"interrupted"``).
    """

    v: int
    k: int
    lam: int
    method: Literal["backtrack", "multiplier-orbits"]
    nodes: int
    seconds: float
    complete: bool
    found: int
    stopped: str | None = None
    multipliers: tuple[int, ...] = ()
    orbit_sizes: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        d = asdict(self)
        d["multipliers"] = list(self.multipliers)
        d["orbit_sizes"] = list(self.orbit_sizes)
        return d


@dataclass(frozen=True)
class SearchResult:
    """Sets found (sorted, as :class:`~cqs_design.difference_sets.DifferenceSet`) and stats."""

    sets: tuple[Any, ...]
    stats: SearchStats
    up_to: UpTo = "translation"
    raw: tuple[tuple[int, ...], ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary: parameters, sets (element lists) and statistics."""
        return {
            "v": self.stats.v,
            "k": self.stats.k,
            "lam": self.stats.lam,
            "up_to": self.up_to,
            "count": len(self.sets),
            "sets": [list(s.elements) for s in self.sets],
            "stats": self.stats.to_dict(),
        }


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def check_parameters(v: int, k: int, lam: int = 1) -> None:
    """Raise :class:`SearchParameterError` unless ``(v, k, lam)`` passes the counting conditions.

    A (v, k, lam) difference set counts each of the ``v - 1`` nonzero residues ``lam`` times
    among its ``k (k - 1)`` ordered differences, so ``k (k - 1) = lam (v - 1)``.

    >>> check_parameters(13, 4, 1)
    >>> try:
    ...     check_parameters(12, 4, 1)
    ... except SearchParameterError as exc:
    ...     print(str(exc)[:40])
    counting condition k(k-1) = lam(v-1) fai
    """
    check_int(v, "v", minimum=2, error=SearchParameterError)
    check_int(k, "k", minimum=2, error=SearchParameterError)
    check_int(lam, "lam", minimum=1, error=SearchParameterError)
    if v > MAX_SEARCH_V:
        raise SearchParameterError(
            f"v = {v} is too large for exhaustive search (at most {MAX_SEARCH_V})"
        )
    if k > v:
        raise SearchParameterError(f"k = {k} exceeds v = {v}: a subset of Z_v has at most v "
                                   "elements")
    if k * (k - 1) != lam * (v - 1):
        raise SearchParameterError(
            f"counting condition k(k-1) = lam(v-1) fails for (v, k, lam) = ({v}, {k}, {lam}): "
            f"{k}*{k - 1} = {k * (k - 1)} but {lam}*{v - 1} = {lam * (v - 1)}"
        )


# --------------------------------------------------------------------------------------------
# canonical forms
# --------------------------------------------------------------------------------------------
def translation_canonical(elements: Sequence[int], v: int) -> tuple[int, ...]:
    """Lexicographically smallest sorted translate of ``elements`` (a translation-class key).

    >>> translation_canonical((1, 2, 4), 7)
    (0, 1, 3)
    """
    best: tuple[int, ...] | None = None
    for d in set(elements):
        cand = tuple(sorted((x - d) % v for x in elements))
        if best is None or cand < best:
            best = cand
    assert best is not None
    return best


def equivalence_canonical(elements: Sequence[int], v: int) -> tuple[int, ...]:
    """Smallest :func:`translation_canonical` over all multiples ``u * elements``, gcd(u, v)=1.

    >>> equivalence_canonical((0, 1, 5), 7)
    (0, 1, 3)
    """
    best: tuple[int, ...] | None = None
    for u in range(1, v):
        if math.gcd(u, v) != 1:
            continue
        cand = translation_canonical([(u * x) % v for x in elements], v)
        if best is None or cand < best:
            best = cand
    assert best is not None
    return best


# --------------------------------------------------------------------------------------------
# multiplier orbits
# --------------------------------------------------------------------------------------------
def multiplier_primes(v: int, k: int, lam: int = 1) -> tuple[int, ...]:
    """Primes that Hall's first multiplier theorem makes numerical multipliers.

    The primes ``p`` dividing ``n = k - lam`` with ``p > lam`` and ``gcd(p, v) = 1``.

    >>> multiplier_primes(111, 11)
    (2, 5)
    """
    n = k - lam
    primes = []
    m, p = n, 2
    while p * p <= m:
        if m % p == 0:
            primes.append(p)
            while m % p == 0:
                m //= p
        p += 1
    if m > 1:
        primes.append(m)
    return tuple(p for p in primes if p > lam and math.gcd(p, v) == 1)


def multiplier_orbits(v: int, generators: Sequence[int]) -> list[tuple[int, ...]]:
    """Orbits of the multiplicative group generated by ``generators`` acting on ``Z_v``.

    Orbits are sorted tuples, listed by smallest element.

    >>> multiplier_orbits(7, [2])
    [(0,), (1, 2, 4), (3, 5, 6)]
    """
    seen = [False] * v
    orbits = []
    for x in range(v):
        if seen[x]:
            continue
        orbit = {x}
        frontier = [x]
        while frontier:
            y = frontier.pop()
            for g in generators:
                z = (g * y) % v
                if z not in orbit:
                    orbit.add(z)
                    frontier.append(z)
        for z in orbit:
            seen[z] = True
        orbits.append(tuple(sorted(orbit)))
    return orbits


# --------------------------------------------------------------------------------------------
# engines (unchecked; they yield raw sorted tuples)
# --------------------------------------------------------------------------------------------
class _Progress:
    """Estimated fraction of the search tree done, shown as a tqdm bar (per mille).

    The engines report the first levels of their tree: ``enter(n)`` when a node with ``n``
    branches starts, ``step()`` when one branch is finished, ``leave()`` at its end.  With
    ``(i_d, n_d)`` the finished and total branches at depth ``d``, the estimate is
    ``sum_d i_d / (n_1 ... n_d)`` (Knuth's uniform-tree estimate): it reaches 1 exactly when
    the search is complete and never goes back.  Nodes and nodes per second are shown too.
    """

    DEPTH = 3

    def __init__(self, desc: str, time_limit: float | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=1000, desc=desc, unit="‰", leave=False)
        self.levels: list[list[int]] = []
        self.start = time.perf_counter()
        self.time_limit = time_limit

    def enter(self, n: int) -> None:
        self.levels.append([0, max(1, n)])

    def step(self) -> None:
        self.levels[-1][0] += 1

    def leave(self) -> None:
        self.levels.pop()

    def fraction(self) -> float:
        done, weight = 0.0, 1.0
        for i, n in self.levels:
            weight /= n
            done += i * weight
        return min(1.0, done)

    def update(self, nodes: int) -> None:
        elapsed = time.perf_counter() - self.start
        self.bar.n = max(self.bar.n, int(1000 * self.fraction()))
        post = {"nodes": nodes, "nodes/s": int(nodes / max(elapsed, 1e-9))}
        if self.time_limit is not None:
            post["left_s"] = round(max(0.0, self.time_limit - elapsed), 1)
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class _Budget:
    """Node counter with an optional deadline (checked every 4096 nodes) and progress."""

    __slots__ = ("deadline", "nodes", "progress", "timed_out")

    def __init__(self, time_limit: float | None, progress: _Progress | None = None) -> None:
        self.nodes = 0
        self.deadline = None if time_limit is None else time.perf_counter() + time_limit
        self.timed_out = False
        self.progress = progress

    def tick(self) -> bool:
        self.nodes += 1
        if not (self.nodes & 4095):
            if self.deadline is not None and time.perf_counter() > self.deadline:
                self.timed_out = True
            if self.progress is not None and not (self.nodes & 65535):
                self.progress.update(self.nodes)
        return self.timed_out


def _backtrack_planar(v: int, k: int, budget: _Budget, progress: bool) -> Iterator[tuple]:
    """All (v, k, 1) difference sets containing {0, 1} (one per translation class).

    Elements are added in increasing order.  A residue ``x`` can join the chosen set ``S`` iff
    no difference ``x - d`` (d in S) is already used, i.e. ``x`` avoids ``S + used``, and the new
    differences do not collide among themselves, i.e. ``2x`` avoids ``S + S`` (v is odd).
    Both forbidden sets are bitsets, so a node costs ``|S|`` rotations instead of a scan.
    Reflection ``d -> 1 - d`` maps representatives to representatives, so only sets with
    ``a3 + ak <= v + 1`` (a3 the third-smallest element, ak the largest) are searched and
    reflections are added back.  The first level (choosing ``a3``) is the same node as the
    others with two differences: ``a3`` runs up to ``(v + 4 - k) // 2`` (beyond, ``top = v + 1 -
    a3`` leaves no room for the ``k - 3`` larger elements), and each ``a3`` sets the ``top`` of
    its subtree, so the count of candidates left bounds nothing there.
    """
    full = (1 << v) - 1
    if k == 2:  # only v = 3: {0, 1}
        if v == 3:
            yield (0, 1)
        return
    if v % 2 == 0:  # k(k-1) = v-1 forces v odd; guard anyway
        return
    inv2 = (v + 1) // 2
    chosen = [0, 1]
    tracker = budget.progress

    def reflect(sol: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted((1 - d) % v for d in sol))

    def rec(s: int, r: int, half: int, halfsums: int, used: int, last: int,
            top: int) -> Iterator[tuple]:
        # s: chosen set; r: -chosen; half: inv2*chosen; halfsums: inv2*(d+d'); used: diffs
        if budget.tick():
            return
        need = k - len(chosen)
        first = len(chosen) == 2  # choosing a3
        forbidden = halfsums | s
        for d in chosen:
            forbidden |= rotate(used, d, v, full)
        allowed = ~forbidden & full & ~((1 << (last + 1)) - 1) & ((1 << (top + 1)) - 1)
        if not first and allowed.bit_count() < need:
            return
        tracked = tracker is not None and len(chosen) < 3 + _Progress.DEPTH - 1
        if tracked:
            tracker.enter(allowed.bit_count())
            try:
                yield from branches(s, r, half, halfsums, used, allowed, need, top, first, True)
            finally:
                tracker.leave()
        else:
            yield from branches(s, r, half, halfsums, used, allowed, need, top, first, False)

    def branches(s: int, r: int, half: int, halfsums: int, used: int, allowed: int, need: int,
                 top: int, first: bool, tracked: bool) -> Iterator[tuple]:
        while allowed:
            low = allowed & -allowed
            x = low.bit_length() - 1
            allowed ^= low
            if first:
                top = v + 1 - x  # a3 + ak <= v + 1 bounds every later element
            elif allowed.bit_count() < need - 1:
                return
            new = new_differences(s, r, x, v, full)
            chosen.append(x)
            if need == 1:
                sol = tuple(chosen)
                yield sol
                yield reflect(sol)
            else:
                hx = (inv2 * x) % v
                yield from rec(s | low, r | (1 << ((v - x) % v)), half | (1 << hx),
                               halfsums | rotate(half, hx, v, full), used | new, x, top)
            chosen.pop()
            if tracked:
                tracker.step()
            if budget.timed_out:
                return

    # S = {0, 1}: -S = {0, v - 1}, S/2 = {0, inv2}, (S + S)/2 without the doubles = {inv2},
    # differences used = {1, v - 1}
    yield from rec(0b11, 1 | (1 << (v - 1)), 1 | (1 << inv2), 1 << inv2,
                   (1 << 1) | (1 << (v - 1)), 1, (v + 4 - k) // 2)


def _backtrack_general(v: int, k: int, lam: int, budget: _Budget,
                       progress: bool) -> Iterator[tuple]:
    """All (v, k, lam) difference sets containing 0 (every translation class appears)."""
    counts = [0] * v
    chosen = [0]

    def rec(last: int) -> Iterator[tuple]:
        if budget.tick():
            return
        if len(chosen) == k:
            yield tuple(chosen)
            return
        need = k - len(chosen)
        for x in range(last + 1, v - need + 1):
            ok = True
            touched = []
            for d in chosen:
                for e in ((x - d) % v, (d - x) % v):
                    counts[e] += 1
                    touched.append(e)
                    if counts[e] > lam:
                        ok = False
                if not ok:
                    break
            if ok:
                chosen.append(x)
                yield from rec(x)
                chosen.pop()
            for e in touched:
                counts[e] -= 1
            if budget.timed_out:
                return

    yield from rec(0)


def _orbit_search(v: int, k: int, lam: int, orbits: Sequence[tuple[int, ...]],
                  budget: _Budget) -> Iterator[tuple]:
    """Unions of ``orbits`` with total size ``k`` that are (v, k, lam) difference sets."""
    full = (1 << v) - 1
    m = len(orbits)
    # suffix sums of sizes for the subset-sum bound
    sizes = [len(o) for o in orbits]
    suffix = [0] * (m + 1)
    for i in range(m - 1, -1, -1):
        suffix[i] = suffix[i + 1] + sizes[i]
    chosen: list[int] = []

    if lam == 1:
        def add_orbit(s: int, r: int, used: int, orbit: tuple[int, ...]):
            for x in orbit:
                new = new_differences(s, r, x, v, full)
                if new & used or new.bit_count() != 2 * s.bit_count():
                    return None
                s |= 1 << x
                r |= 1 << ((v - x) % v)
                used |= new
            return s, r, used

        def rec(i: int, s: int, r: int, used: int, size: int) -> Iterator[tuple]:
            if budget.tick():
                return
            if size == k:
                yield tuple(sorted(chosen))
                return
            if i == m or size + suffix[i] < k:
                return
            for j in range(i, m):
                if size + sizes[j] > k:
                    continue
                if size + suffix[j] < k:
                    break
                st = add_orbit(s, r, used, orbits[j])
                if st is None:
                    continue
                chosen.extend(orbits[j])
                yield from rec(j + 1, *st, size + sizes[j])
                del chosen[len(chosen) - sizes[j]:]
                if budget.timed_out:
                    return

        yield from rec(0, 0, 0, 0, 0)
        return

    # lam > 1: enumerate unions of the right size, verify with difference counts
    def rec_general(i: int, size: int, counts: list[int]) -> Iterator[tuple]:
        if budget.tick():
            return
        if size == k:
            yield tuple(sorted(chosen))
            return
        for j in range(i, m):
            if size + sizes[j] > k:
                continue
            if size + suffix[j] < k:
                break
            new_counts = counts[:]
            ok = True
            members = list(chosen)
            for x in orbits[j]:
                for d in members:
                    for e in ((x - d) % v, (d - x) % v):
                        new_counts[e] += 1
                        if new_counts[e] > lam:
                            ok = False
                members.append(x)
            if not ok:
                continue
            chosen.extend(orbits[j])
            yield from rec_general(j + 1, size + sizes[j], new_counts)
            del chosen[len(chosen) - sizes[j]:]
            if budget.timed_out:
                return

    yield from rec_general(0, 0, [0] * v)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def _wrap(v: int, elements: Sequence[int]) -> Any:
    from cqs_design.difference_sets import DifferenceSet

    return DifferenceSet(v, elements)


def _finish(raw: set[tuple[int, ...]], v: int, up_to: UpTo) -> tuple[tuple[int, ...], ...]:
    """Reduce raw sets to the requested classes; return sorted element tuples."""
    if up_to is None:
        every = set()
        for s in raw:
            for t in range(v):
                every.add(tuple(sorted((x + t) % v for x in s)))
        return tuple(sorted(every))
    key = translation_canonical if up_to == "translation" else equivalence_canonical
    classes = {key(s, v) for s in raw}
    return tuple(sorted(classes))


def search_difference_sets(
    v: int,
    k: int,
    lam: int = 1,
    *,
    up_to: UpTo = "translation",
    limit: int | None = None,
    progress: bool = False,
    use_multiplier_theorem: bool = False,
    time_limit: float | None = None,
) -> SearchResult:
    """Search all cyclic (v, k, lam) difference sets; return them with the search statistics.

    Parameters
    ----------
    v, k, lam : int
        Group order, set size and multiplicity; must satisfy ``k (k - 1) = lam (v - 1)``.
    up_to : {"translation", "equivalence", None}
        One representative per translation class (the lexicographically smallest sorted
        translate), per class under translations *and* multiplication by units, or every set.
    limit : int, optional
        Stop after this many raw solutions (``stats.complete`` is then False).
    progress : bool
        Show a tqdm bar: the estimated fraction of the search tree done (from the first three
        branching levels; 1000 per mille means complete), nodes, nodes per second and, with
        ``time_limit``, the seconds left.
    use_multiplier_theorem : bool
        Search unions of multiplier orbits (see module docstring); requires a multiplier prime
        and ``gcd(k, v) = 1``.
    time_limit : float, optional
        Seconds after which the search stops with ``stats.complete = False``,
        ``stats.stopped = "time_limit"``.

    Returns
    -------
    SearchResult
        ``sets`` sorted by elements; ``stats`` with nodes, seconds and ``complete``.

    Raises
    ------
    SearchParameterError
        When the counting condition fails, ``k > v``, ``k < 2`` or ``v > MAX_SEARCH_V``.
    SearchInterrupted
        On Ctrl-C, with ``.partial`` (a result flagged incomplete).

    Examples
    --------
    >>> res = search_difference_sets(13, 4)
    >>> [s.elements for s in res.sets], res.stats.complete
    ([(0, 1, 3, 9), (0, 1, 4, 6), (0, 1, 5, 11), (0, 1, 8, 10)], True)
    """
    check_parameters(v, k, lam)
    if up_to not in ("translation", "equivalence", None):
        raise SearchParameterError(
            f"up_to must be 'translation', 'equivalence' or None, got {up_to!r}"
        )
    if limit is not None:
        check_int(limit, "limit", minimum=1, error=SearchParameterError)
    if time_limit is not None and not time_limit > 0:
        raise SearchParameterError(f"time_limit must be a positive number, got {time_limit!r}")
    multipliers: tuple[int, ...] = ()
    orbits: list[tuple[int, ...]] = []
    if use_multiplier_theorem:
        multipliers = multiplier_primes(v, k, lam)
        if not multipliers:
            raise SearchParameterError(
                f"the multiplier theorem gives no multiplier for (v, k, lam) = ({v}, {k}, {lam}):"
                f" no prime p divides n = k - lam = {k - lam} with p > lam and gcd(p, v) = 1"
            )
        if math.gcd(k, v) != 1:
            raise SearchParameterError(
                f"use_multiplier_theorem needs gcd(k, v) = 1 (a translate fixed by all "
                f"multipliers); gcd({k}, {v}) = {math.gcd(k, v)}"
            )
        orbits = multiplier_orbits(v, multipliers)
    return _search(v, k, lam, up_to=up_to, limit=limit, progress=progress,
                   multipliers=multipliers, orbits=orbits, time_limit=time_limit)


def _search(v: int, k: int, lam: int, *, up_to: UpTo, limit: int | None, progress: bool,
            multipliers: tuple[int, ...], orbits: list[tuple[int, ...]],
            time_limit: float | None) -> SearchResult:
    tracker = (_Progress(f"search ({v},{k},{lam})", time_limit)
               if progress and not orbits and lam == 1 else None)
    budget = _Budget(time_limit, tracker)
    if progress and tracker is None:  # other engines: nodes and rate only
        budget.progress = _Progress(f"search ({v},{k},{lam})", time_limit)
    start = time.perf_counter()
    raw: set[tuple[int, ...]] = set()
    stopped: str | None = None
    if orbits:
        engine = _orbit_search(v, k, lam, orbits, budget)
        method = "multiplier-orbits"
    elif lam == 1:
        engine = _backtrack_planar(v, k, budget, progress)
        method = "backtrack"
    else:
        engine = _backtrack_general(v, k, lam, budget, progress)
        method = "backtrack"

    def result(complete: bool) -> SearchResult:
        tuples = _finish(raw, v, up_to)
        stats = SearchStats(
            v=v, k=k, lam=lam, method=method, nodes=budget.nodes,
            seconds=time.perf_counter() - start, complete=complete, found=len(tuples),
            stopped=stopped, multipliers=multipliers,
            orbit_sizes=tuple(len(o) for o in orbits),
        )
        return SearchResult(sets=tuple(_wrap(v, t) for t in tuples), stats=stats, up_to=up_to,
                            raw=tuples)

    try:
        for sol in engine:
            raw.add(sol)
            if limit is not None and len(raw) >= limit:
                stopped = "limit"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise SearchInterrupted(result(False)) from None
    finally:
        if budget.progress is not None:
            if stopped is None and not budget.timed_out:
                budget.progress.levels = [[1, 1]]  # the whole tree was searched
            budget.progress.update(budget.nodes)
            budget.progress.close()
    if budget.timed_out:
        stopped = "time_limit"
    return result(stopped is None)


def find_difference_sets(
    v: int,
    k: int,
    lam: int = 1,
    *,
    up_to: UpTo = "translation",
    limit: int | None = None,
    progress: bool = False,
    use_multiplier_theorem: bool = False,
) -> list[Any]:
    """List the cyclic (v, k, lam) difference sets (sorted, deterministic).

    Same arguments as :func:`search_difference_sets`, which also returns the statistics.
    With ``limit`` the list holds at most ``limit`` classes and is not claimed complete.

    >>> [ds.elements for ds in find_difference_sets(21, 5)]
    [(0, 1, 4, 14, 16), (0, 1, 6, 8, 18)]
    >>> find_difference_sets(43, 7, use_multiplier_theorem=True)
    []
    """
    res = search_difference_sets(v, k, lam, up_to=up_to, limit=limit, progress=progress,
                                 use_multiplier_theorem=use_multiplier_theorem)
    return list(res.sets)


def reference_find_difference_sets(v: int, k: int, lam: int = 1) -> list[tuple[int, ...]]:
    """Obviously-right (slow) twin: every k-subset containing 0, checked by counting.

    Public: a reference implementation to check :func:`find_difference_sets` against (the
    tests compare the two); exponential in ``k``.

    Returns translation-class representatives (:func:`translation_canonical`), sorted.

    >>> reference_find_difference_sets(7, 3)
    [(0, 1, 3), (0, 1, 5)]
    """
    from itertools import combinations

    check_parameters(v, k, lam)
    classes = set()
    for rest in combinations(range(1, v), k - 1):
        s = (0, *rest)
        counts = [0] * v
        for a in s:
            for b in s:
                if a != b:
                    counts[(a - b) % v] += 1
        if all(c == lam for c in counts[1:]):
            classes.add(translation_canonical(s, v))
    return sorted(classes)
