"""Tests for cqs_design.quorum (relaxed cyclic quorum sets = difference covers)."""

from __future__ import annotations

import hashlib
import json
from itertools import combinations
from pathlib import Path

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
    assert len(find_cyclic_quorum_sets(v, row["minimum_size"], limit=1)[0]) == row[
        "minimum_size"]


def test_stored_table_base_sets_cover() -> None:
    table = stored_quorum_table()
    assert set(table) == set(range(2, 112))
    for v, row in table.items():
        base = row["base_set"]
        assert len(base) == row["minimum_size"]
        assert is_cyclic_quorum_set(base, v), v
        assert row["minimum_size"] >= minimum_size_lower_bound(v)
        assert row["status"] in ("proven here", "upper bound only")
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
    with pytest.raises(ValueError, match=r"v must be an integer in \[2, 4096\], got 1"):
        minimum_size(1)
    with pytest.raises(ValueError, match="k must"):
        search_cyclic_quorum_sets(10, 11)


# --- lower bounds for every v <= 111 -------------------------------------------------------------
# Every row is proven minimal by an exhaustive C search of each size between the counting bound
# and the minimum, run by scripts/prove_quorum_lower_bounds.py; its certificate is
# benchmarks/results/quorum_lower_bounds.json.  CI has no C compiler, so these tests check that
# the table cites the certificate consistently, and re-run the same search method in pure
# Python on small cases.

ROOT = Path(__file__).resolve().parents[2]
CERTIFICATE = ROOT / "benchmarks" / "results" / "quorum_lower_bounds.json"
C_SOURCE = ROOT / "scripts" / "quorum_lower_bound.c"


def _certificate() -> dict:
    return json.loads(CERTIFICATE.read_text())


def _waste_search(v: int, k: int, *, all_covers: bool = False
                  ) -> tuple[list[tuple[int, ...]], int]:
    """Pure-Python twin of scripts/quorum_lower_bound.c: (covers found, nodes visited).

    Covers {0, 1, a3 < ... < ak} with a3 + ak <= v + 1; a partial set is pruned as soon as more
    than k(k-1)/2 - floor(v/2) of its pairs repeat a difference class {d, -d}.
    """
    classes = v // 2
    slack = k * (k - 1) // 2 - classes
    cls = [min(d, v - d) for d in range(v)]
    full = sum(1 << c for c in range(1, classes + 1))
    elems = [0, 1]
    found: list[tuple[int, ...]] = []
    nodes = 0

    def rec(covered: int, waste: int, top: int) -> None:
        nonlocal nodes
        nodes += 1
        j = len(elems)
        if j == k:
            if covered == full:
                found.append(tuple(elems))
            return
        for x in range(elems[-1] + 1, top - (k - j) + 2):
            m, w = covered, waste
            for e in elems:
                b = 1 << cls[x - e]
                w += bool(m & b)
                m |= b
            if w > slack:
                continue
            elems.append(x)
            rec(m, w, min(v - 1, v + 1 - x) if j == 2 else top)
            elems.pop()
            if found and not all_covers:
                return

    if slack >= 0:
        rec(1 << 1, 0, (v + 1) // 2 if k == 3 else v - 1)
    return found, nodes


@pytest.mark.parametrize("v", range(4, 14))
def test_waste_search_counts_match_brute_force(v: int) -> None:
    for k in range(3, min(v, 6) + 1):
        covers, _ = _waste_search(v, k, all_covers=True)
        brute = [(0, 1, *rest) for rest in combinations(range(2, v), k - 2)
                 if rest[0] + rest[-1] <= v + 1 and is_cyclic_quorum_set((0, 1, *rest), v)]
        assert sorted(covers) == brute, (v, k)


def test_waste_search_refutes_and_finds_like_c_search() -> None:
    """The method refutes k = minimum - 1 and finds k = minimum, with the C node counts."""
    table = stored_quorum_table()
    c_refutes = {(c["v"], c["k"]): c for c in _certificate()["cases"]
                 if c["complete"] and c["found"] is None}
    small = [key for key in c_refutes if key[0] <= 72]
    assert len(small) >= 5
    for v, k in small:
        assert table[v]["minimum_size"] == k + 1
        covers, nodes = _waste_search(v, k)
        assert covers == []
        assert nodes == c_refutes[v, k]["nodes"] > 0, (v, k)
        found, _ = _waste_search(v, k + 1)
        assert len(found) == 1
        assert is_cyclic_quorum_set(found[0], v)


# the device runs used the C source of the commit before the a3 option (same search)
DEVICE_RUNS = ROOT / "benchmarks" / "results" / "quorum_lower_bounds_device_runs.json"


def test_every_row_is_proven_by_the_certificate() -> None:
    cert = _certificate()
    current = hashlib.sha256(C_SOURCE.read_bytes()).hexdigest()
    assert cert["search_source_sha256"] == current, (
        "scripts/quorum_lower_bound.c changed: rerun scripts/prove_quorum_lower_bounds.py")
    allowed = {current, json.loads(DEVICE_RUNS.read_text())["search_source_sha256"]}
    cases = {(c["v"], c["k"]): c for c in cert["cases"]}
    assert all(c["search_source_sha256"] in allowed for c in cases.values())
    rows = {r["v"]: r for r in cert["rows"]}
    table = stored_quorum_table()
    assert set(rows) == set(table) == set(range(2, 112))
    for v, row in table.items():
        c = rows[v]
        k = row["minimum_size"]
        assert row["status"] == c["status"] == "proven here", v
        assert row["minimum_proven_here"] is True
        assert c["minimum_size"] == k == len(row["base_set"]) == len(c["cover"])
        assert is_cyclic_quorum_set(row["base_set"], v)
        # every size below k: the counting bound or a complete search that found nothing
        assert k - 1 < minimum_size_lower_bound(v) or set(
            range(minimum_size_lower_bound(v), k)) == set(c["refuted_by_search"])
        for size in c["refuted_by_search"]:
            case = cases[v, size]
            assert case["complete"] is True
            assert case["found"] is None
            assert case["nodes"] > 0
            assert case["slack"] == size * (size - 1) // 2 - v // 2 >= 0
            assert case["timed_out"] is False
        assert row["proof"]["refuted_sizes"] == c["refuted_by_search"]
        assert row["proof"]["nodes"] == sum(cases[v, s]["nodes"] for s in c["refuted_by_search"])
        if c["refuted_by_search"]:
            assert "benchmarks/results/quorum_lower_bounds.json" in row["proof"]["method"]
        assert row["proof"]["method"] in row["source"]
        if row["published"] is not None:
            assert row["published_agrees"] == (row["published"] == k)
    # a published value never decides a row
    assert {row["status"] for row in table.values()} == {"proven here"}


ISSUE_16_COVERS = {
    93: (0, 1, 2, 5, 14, 20, 24, 31, 52, 60, 68),
    95: (0, 1, 2, 5, 8, 17, 28, 39, 53, 63, 82),
}


@pytest.mark.parametrize("v", [93, 95])
def test_regression_93_and_95_are_11(v: int) -> None:
    """OEIS A283297 (and the old table) said 12; 11-element covers exist (issue 16)."""
    assert is_cyclic_quorum_set(ISSUE_16_COVERS[v], v)
    assert minimum_size_lower_bound(v) == 11  # so 11 is the minimum
    row = stored_quorum_table()[v]
    assert row["minimum_size"] == 11
    assert is_cyclic_quorum_set(row["base_set"], v)
    assert row["published"] == 12
    assert row["published_agrees"] is False
    cert = {r["v"]: r for r in _certificate()["rows"]}[v]
    assert tuple(cert["cover"]) == ISSUE_16_COVERS[v]  # the C search found the same set
    assert {d["v"] for d in _certificate()["published_comparison"]["disagreements"]} == {93, 95}


@pytest.mark.parametrize("v", [94, 96, 97, 98, 99, 100])
def test_neighbours_of_93_and_95_are_12(v: int) -> None:
    row = stored_quorum_table()[v]
    assert row["minimum_size"] == 12
    assert row["proof"]["refuted_sizes"] == [11]


# --- issue 16: instant answers from the table, bounded searches past it ---------------------
def test_minimum_quorum_size_reads_the_table_at_once() -> None:
    import time

    from cqs_design import minimum_quorum_size

    start = time.perf_counter()
    answers = [minimum_quorum_size(v) for v in range(2, 112)]
    assert time.perf_counter() - start < 0.5
    assert [a.minimum_size for a in answers] == [
        stored_quorum_table()[v]["minimum_size"] for v in range(2, 112)]
    r = minimum_quorum_size(111)
    assert (r.minimum_size, r.status) == (12, "proven here")
    assert r.row is not None
    assert "certificate" in r.source
    assert r == 12
    assert minimum_size(111) == 12


@pytest.mark.parametrize("v", [7, 13, 20, 21, 31])
def test_search_agrees_with_the_table(v: int) -> None:
    from cqs_design import minimum_quorum_size

    computed = minimum_quorum_size(v, use_table=False)
    assert computed.minimum_size == stored_quorum_table()[v]["minimum_size"]
    assert is_cyclic_quorum_set(computed.base_set, v)
    assert computed.row is None


def test_minimum_quorum_size_time_limit_names_the_bounds() -> None:
    import time

    from cqs_design.quorum import QuorumTimeout, minimum_quorum_size

    start = time.perf_counter()
    with pytest.raises(QuorumTimeout, match=r"12 <= minimum <= 21") as info:
        minimum_quorum_size(112, time_limit=0.5)
    assert time.perf_counter() - start < 10
    assert (info.value.lower, info.value.upper) == (12, 21)


def test_search_returns_a_result_object() -> None:
    from cqs_design.quorum import QuorumSearchResult

    res = search_cyclic_quorum_sets(13, 4)
    assert isinstance(res, QuorumSearchResult)
    assert res.sets == ((0, 1, 3, 9), (0, 1, 4, 6), (0, 1, 5, 11), (0, 1, 8, 10))
    sets, stats = res  # the old tuple form still unpacks
    assert sets == list(res.sets)
    assert stats.complete
    assert res.to_dict()["count"] == 4
