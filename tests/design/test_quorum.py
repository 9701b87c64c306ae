"""Tests for cqs_design.quorum (relaxed cyclic quorum sets = difference covers)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cqs_design.quorum import (
    find_cyclic_quorum_sets,
    is_cyclic_quorum_set,
    minimum_size,
    minimum_size_lower_bound,
    reference_minimum_size,
    search_cyclic_quorum_sets,
    stored_quorum_table,
)


@pytest.mark.parametrize("v", range(2, 16))
def test_minimum_matches_reference(v: int) -> None:
    assert minimum_size(v) == reference_minimum_size(v)


@pytest.mark.parametrize("v", [7, 13, 20, 21, 31, 40, 43])
def test_minimum_matches_stored_table(v: int) -> None:
    row = stored_quorum_table()[v]
    assert minimum_size(v) == row["minimum_size"]


def test_stored_table_base_sets_cover() -> None:
    table = stored_quorum_table()
    assert set(table) == set(range(2, 112))
    for v, row in table.items():
        base = row["base_set"]
        assert len(base) == row["minimum_size"]
        assert is_cyclic_quorum_set(base, v), v
        assert row["minimum_size"] >= minimum_size_lower_bound(v)
        assert row["status"] in ("proven here", "published", "upper bound only")
        if row["published"] is not None:
            assert row["published"] == row["minimum_size"]
        if row["status"] == "proven here":
            assert row["proof"] is not None


def test_find_lists_translation_classes() -> None:
    sets = find_cyclic_quorum_sets(13)
    assert len(sets) == 4
    assert all(len(s) == 4 for s in sets)
    bigger = find_cyclic_quorum_sets(9, 5, limit=3)
    assert len(bigger) == 3
    assert all(is_cyclic_quorum_set(s, 9) for s in bigger)


def test_none_below_minimum() -> None:
    sets, stats = search_cyclic_quorum_sets(20, 5)
    assert sets == []
    assert stats.complete
    assert stats.nodes > 0


@given(st.integers(2, 40), st.sets(st.integers(0, 39), min_size=1, max_size=10))
def test_is_cover_matches_definition(v: int, elems: set[int]) -> None:
    elems = {x % v for x in elems}
    diffs = {(a - b) % v for a in elems for b in elems}
    assert is_cyclic_quorum_set(elems, v) == (diffs == set(range(v)))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="between 2"):
        minimum_size(1)
    with pytest.raises(ValueError, match="k must"):
        search_cyclic_quorum_sets(10, 11)
