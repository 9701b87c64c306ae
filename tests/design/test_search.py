"""Tests for cqs_design.search: counts, completeness, reference agreement, bad input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cqs_design import DifferenceSet, singer_difference_set
from cqs_design.search import (
    SearchInterrupted,
    SearchParameterError,
    equivalence_canonical,
    find_difference_sets,
    multiplier_orbits,
    reference_find_difference_sets,
    search_difference_sets,
    translation_canonical,
)

# translation classes of cyclic planar difference sets (phi(v) / (3m) for n = p^m)
PLANAR = {2: 2, 3: 4, 4: 2, 5: 10, 7: 12, 8: 8}
PRIME_POWER = {2: (2, 1), 3: (3, 1), 4: (2, 2), 5: (5, 1), 7: (7, 1), 8: (2, 3)}


def _phi(v: int) -> int:
    return sum(1 for u in range(1, v) if math.gcd(u, v) == 1)


@pytest.mark.parametrize("n", sorted(PLANAR))
@pytest.mark.parametrize("multiplier", [False, True])
def test_planar_translation_class_counts(n: int, multiplier: bool) -> None:
    v, k = n * n + n + 1, n + 1
    res = search_difference_sets(v, k, use_multiplier_theorem=multiplier)
    assert res.stats.complete
    assert len(res.sets) == PLANAR[n]
    _, m = PRIME_POWER[n]
    assert len(res.sets) == _phi(v) // (3 * m)
    for ds in res.sets:
        assert isinstance(ds, DifferenceSet)
        assert ds.is_valid()
        assert ds == ds.normalized()  # normalized representatives
    assert [s.elements for s in res.sets] == sorted(s.elements for s in res.sets)
    # pairwise inequivalent under translation
    assert len({s.normalized() for s in res.sets}) == len(res.sets)


def test_singer_set_is_among_the_classes() -> None:
    for q in (2, 3, 4, 5, 7):
        v, k = q * q + q + 1, q + 1
        assert singer_difference_set(q).normalized() in find_difference_sets(v, k)


def test_order_six_has_none_with_and_without_multiplier() -> None:
    for mult in (False, True):
        res = search_difference_sets(43, 7, use_multiplier_theorem=mult)
        assert res.sets == ()
        assert res.stats.complete
        assert res.stats.nodes > 0


@pytest.mark.parametrize("n", [10, 12, 15, 18, 20])
def test_nonexistence_by_multiplier_search(n: int) -> None:
    res = search_difference_sets(n * n + n + 1, n + 1, use_multiplier_theorem=True)
    assert res.stats.complete
    assert res.sets == ()
    assert res.stats.method == "multiplier-orbits"
    assert all(n % p == 0 for p in res.stats.multipliers)
    assert sum(res.stats.orbit_sizes) == n * n + n + 1


@pytest.mark.parametrize(("v", "k", "lam"), [(7, 3, 1), (13, 4, 1), (21, 5, 1), (11, 5, 2),
                                             (15, 7, 3), (16, 6, 2), (19, 9, 4), (7, 4, 2)])
def test_agrees_with_reference(v: int, k: int, lam: int) -> None:
    fast = [s.elements for s in find_difference_sets(v, k, lam)]
    assert fast == reference_find_difference_sets(v, k, lam)


def test_general_lambda_multiplier_agrees() -> None:
    # (11,5,2): n = 3 is a multiplier, gcd(5, 11) = 1
    a = find_difference_sets(11, 5, 2)
    b = find_difference_sets(11, 5, 2, use_multiplier_theorem=True)
    assert a == b
    assert len(a) == 2


def test_up_to_modes_are_consistent() -> None:
    v, k = 31, 6
    trans = find_difference_sets(v, k)
    equiv = find_difference_sets(v, k, up_to="equivalence")
    every = find_difference_sets(v, k, up_to=None)
    assert len(equiv) == 1
    assert len(every) == v * len(trans)
    assert {translation_canonical(s.elements, v) for s in every} == {s.elements for s in trans}
    assert {equivalence_canonical(s.elements, v) for s in trans} == {s.elements for s in equiv}


def test_limit_marks_incomplete() -> None:
    res = search_difference_sets(57, 8, limit=1)
    assert len(res.sets) == 1
    assert not res.stats.complete
    assert res.stats.stopped == "limit"


def test_time_limit_marks_incomplete() -> None:
    res = search_difference_sets(183, 14, time_limit=0.05)
    assert not res.stats.complete
    assert res.stats.stopped == "time_limit"


def test_interrupt_raises_with_partial(monkeypatch: pytest.MonkeyPatch) -> None:
    import cqs_design.search as search_mod

    calls = {"n": 0}
    real = search_mod._Budget.tick

    def tick(self: search_mod._Budget) -> bool:
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(search_mod._Budget, "tick", tick)
    with pytest.raises(SearchInterrupted) as info:
        search_difference_sets(57, 8)
    assert not info.value.partial.stats.complete
    assert info.value.partial.stats.stopped == "interrupted"
    assert "INCOMPLETE" in str(info.value)


@pytest.mark.parametrize(("v", "k", "lam", "match"), [
    (12, 4, 1, "counting condition"),
    (13, 14, 1, "exceeds"),
    (13, 1, 1, ">= 2"),
    (13, 4, 0, ">= 1"),
    (10**7, 4, 1, "too large"),
])
def test_bad_parameters(v: int, k: int, lam: int, match: str) -> None:
    with pytest.raises(SearchParameterError, match=match):
        search_difference_sets(v, k, lam)


def test_bad_types_and_options() -> None:
    with pytest.raises(TypeError):
        search_difference_sets(13.0, 4)  # type: ignore[arg-type]
    with pytest.raises(SearchParameterError, match="up_to"):
        search_difference_sets(13, 4, up_to="rotation")  # type: ignore[arg-type]
    with pytest.raises(SearchParameterError, match="no multiplier"):
        search_difference_sets(7, 4, 2, use_multiplier_theorem=True)


@given(st.sampled_from([2, 3, 4, 5]), st.integers(0, 10**6), st.integers(1, 10**6))
def test_canonical_forms_are_invariant(n: int, t: int, u: int) -> None:
    v = n * n + n + 1
    ds = singer_difference_set(n)
    while math.gcd(u, v) != 1:
        u += 1
    moved = [(u * x + t) % v for x in ds.elements]
    assert equivalence_canonical(moved, v) == equivalence_canonical(ds.elements, v)
    shifted = [(x + t) % v for x in ds.elements]
    assert translation_canonical(shifted, v) == ds.normalized().elements


@given(st.integers(3, 60), st.sets(st.integers(2, 59), min_size=1, max_size=3))
def test_orbits_partition(v: int, gens: set[int]) -> None:
    gens = {g % v for g in gens if math.gcd(g, v) == 1 and g % v > 1} or {1}
    orbits = multiplier_orbits(v, sorted(gens))
    flat = sorted(x for o in orbits for x in o)
    assert flat == list(range(v))
    for o in orbits:
        assert {(g * x) % v for g in gens for x in o} <= set(o)


# --- issue 16: real progress, bounded by time_limit ------------------------------------------
def test_progress_is_a_real_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools

    from cqs_design import search as search_module

    seen: list[float] = []
    original = search_module._Progress.update

    def record(self: search_module._Progress, nodes: int) -> None:
        original(self, nodes)
        seen.append(self.fraction())

    monkeypatch.setattr(search_module._Progress, "update", record)
    res = search_module.search_difference_sets(91, 10, progress=True)  # 570k nodes
    assert res.stats.complete
    assert len(seen) >= 3  # updated during the search, not only at the end
    assert 0 < seen[0] < 1
    assert seen[-1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(seen))


def test_time_limit_ends_a_hopeless_search() -> None:
    import time

    from cqs_design.search import search_difference_sets

    start = time.perf_counter()
    res = search_difference_sets(993, 32, time_limit=1.0, progress=True)
    assert time.perf_counter() - start < 10
    assert res.stats.stopped == "time_limit"
    assert not res.stats.complete
