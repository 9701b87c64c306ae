"""Tests of :mod:`cqs_design.difference_sets`: the DifferenceSet value type and verification."""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from itertools import combinations

import networkx as nx
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cqs_design import DifferenceSet, NotADifferenceSetError, is_difference_set

KNOWN = [
    (7, (0, 1, 3)),
    (13, (0, 1, 3, 9)),
    (21, (0, 1, 4, 14, 16)),
    (11, (1, 3, 4, 5, 9)),  # quadratic residues mod 11: (11, 5, 2)
    (15, (0, 1, 2, 4, 5, 8, 10)),  # Singer PG(3, 2) hyperplane: (15, 7, 3)
]


def naive_counts(v: int, elements: tuple[int, ...]) -> list[int]:
    counts = Counter((a - b) % v for a in elements for b in elements if a != b)
    return [counts[r] for r in range(v)]


def naive_is_difference_set(v: int, elements: tuple[int, ...]) -> bool:
    counts = naive_counts(v, elements)[1:]
    return len(set(counts)) == 1


def naive_normalized(v: int, elements: tuple[int, ...]) -> tuple[int, ...]:
    return min(tuple(sorted((x - d) % v for x in elements)) for d in elements)


def units(v: int) -> list[int]:
    return [t for t in range(1, v) if math.gcd(t, v) == 1]


@st.composite
def residue_sets(draw: st.DrawFn, max_v: int = 60) -> DifferenceSet:
    v = draw(st.integers(2, max_v))
    elements = draw(st.sets(st.integers(0, v - 1), min_size=1, max_size=v))
    return DifferenceSet(v, elements)


@st.composite
def planar_sized_sets(draw: st.DrawFn) -> DifferenceSet:
    """Random k-subsets of Z_v with v = k² - k + 1 (a few of them are difference sets)."""
    k = draw(st.integers(3, 6))
    v = k * k - k + 1
    elements = draw(st.sets(st.integers(0, v - 1), min_size=k, max_size=k))
    return DifferenceSet(v, elements)


# --- known sets -----------------------------------------------------------------------------
@pytest.mark.parametrize(("v", "elements"), KNOWN)
def test_known_sets_verify(v: int, elements: tuple[int, ...]) -> None:
    ds = DifferenceSet(v, reversed(elements))
    assert ds.elements == elements
    assert ds.verify() is ds
    assert ds.is_valid()
    k = len(elements)
    assert ds.k == k
    assert ds.lam * (v - 1) == k * (k - 1)
    assert ds.order == k - ds.lam
    assert is_difference_set(elements, v)
    assert is_difference_set(elements, v, lam=ds.lam)
    assert not is_difference_set(elements, v, lam=ds.lam + 1)
    assert ds.difference_counts().tolist() == naive_counts(v, elements)


def test_known_parameters() -> None:
    assert (DifferenceSet(21, [0, 1, 4, 14, 16]).lam, DifferenceSet(21, [0, 1, 4, 14, 16]).order) \
        == (1, 4)
    assert DifferenceSet(11, [1, 3, 4, 5, 9]).lam == 2
    assert DifferenceSet(15, [0, 1, 2, 4, 5, 8, 10]).lam == 3


def test_verify_names_difference_and_multiplicity() -> None:
    with pytest.raises(NotADifferenceSetError, match=r"difference 1 occurs 2 times.*λ = 1"):
        DifferenceSet(7, [0, 1, 2]).verify()
    with pytest.raises(NotADifferenceSetError, match=r"difference 2 occurs 0 times"):
        DifferenceSet(7, [0, 1, 4]).verify()
    with pytest.raises(NotADifferenceSetError, match=r"difference 1 occurs 3 times.*λ = 2"):
        DifferenceSet(11, [0, 1, 2, 3, 5]).verify()  # k(k-1) = 20 = 2·10, but not a set


def test_lambda_not_integral() -> None:
    ds = DifferenceSet(8, [0, 1, 3])
    with pytest.raises(NotADifferenceSetError, match="not divisible by v-1 = 7"):
        ds.lam
    with pytest.raises(NotADifferenceSetError):
        ds.verify()
    assert not ds.is_valid()
    assert not is_difference_set([0, 1, 3], 8)


def test_not_a_difference_set_error_is_value_error() -> None:
    assert issubclass(NotADifferenceSetError, ValueError)


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("v", "elements", "error", "match"),
    [
        (7, [0, 1, 1], ValueError, "element 1 appears more than once"),
        (7, [0, 1, 7], ValueError, "element 7 is out of range"),
        (7, [-1, 0, 1], ValueError, "element -1 is out of range"),
        (7, [0, 1.0, 3], TypeError, "got 1.0 of type float"),
        (7, [0, True, 3], TypeError, "got True of type bool"),
        (7, ["0", "1"], TypeError, "got '0' of type str"),
        (7, "013", TypeError, "iterable of integers"),
        (7, 3, TypeError, "iterable of integers"),
        (7, [], ValueError, "must not be empty"),
        (1, [0], ValueError, r"v must be an integer in \[2, 4611686018427387904\], got 1"),
        (0, [0], ValueError, r"v must be an integer in \[2, 4611686018427387904\], got 0"),
        (-7, [0], ValueError, "got -7"),
        (7.0, [0], TypeError, "v must be an integer"),
        (True, [0], TypeError, "v must be an integer"),
    ],
)
def test_bad_input(v: object, elements: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DifferenceSet(v, elements)  # type: ignore[arg-type]


def test_numpy_integers_accepted() -> None:
    ds = DifferenceSet(np.int64(7), np.array([3, 1, 0], dtype=np.int32))
    assert ds.elements == (0, 1, 3)
    assert all(type(e) is int for e in ds.elements)
    assert type(ds.v) is int


def test_is_difference_set_bad_lambda() -> None:
    with pytest.raises(ValueError, match="lam must be an integer >= 0"):
        is_difference_set([0, 1, 3], 7, lam=-1)
    with pytest.raises(TypeError, match="lam must be an integer"):
        is_difference_set([0, 1, 3], 7, lam=1.0)  # type: ignore[arg-type]


# --- value semantics --------------------------------------------------------------------------
def test_immutable_and_hashable() -> None:
    ds = DifferenceSet(7, [0, 1, 3])
    with pytest.raises(AttributeError, match="immutable"):
        ds.v = 8  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        ds._elements = (0,)  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        ds.array[0] = 5
    same = DifferenceSet(7, (3, 1, 0))
    assert ds == same
    assert hash(ds) == hash(same)
    assert ds != DifferenceSet(13, [0, 1, 3])
    assert len({ds, same, DifferenceSet(7, [0, 1, 5])}) == 2
    assert pickle.loads(pickle.dumps(ds)) == ds
    assert list(ds) == [0, 1, 3]
    assert len(ds) == 3
    assert 3 in ds
    assert 2 not in ds
    assert repr(ds) == "DifferenceSet(7, (0, 1, 3))"


def test_to_from_dict_roundtrip_json() -> None:
    ds = DifferenceSet(21, [0, 1, 4, 14, 16])
    data = json.loads(json.dumps(ds.to_dict()))
    assert data == {"v": 21, "k": 5, "elements": [0, 1, 4, 14, 16]}
    assert DifferenceSet.from_dict(data) == ds
    with pytest.raises(ValueError, match="missing key"):
        DifferenceSet.from_dict({"elements": [0, 1, 3]})
    with pytest.raises(ValueError, match="k = 4 but 3 elements"):
        DifferenceSet.from_dict({"v": 7, "k": 4, "elements": [0, 1, 3]})
    with pytest.raises(TypeError, match="mapping"):
        DifferenceSet.from_dict([7, 0, 1, 3])  # type: ignore[arg-type]


# --- transformations --------------------------------------------------------------------------
def test_paired_v7() -> None:
    assert DifferenceSet(7, [0, 1, 3]).paired() == DifferenceSet(7, [0, 2, 3])


def test_multiply_rejects_non_units() -> None:
    ds = DifferenceSet(21, [0, 1, 4, 14, 16])
    with pytest.raises(ValueError, match=r"t = 6 is not a unit mod v = 21 \(gcd = 3\)"):
        ds.multiply(6)
    with pytest.raises(ValueError, match="t = 0"):
        ds.multiply(0)
    with pytest.raises(TypeError, match="t must be an integer"):
        ds.multiply(2.0)  # type: ignore[arg-type]
    assert ds.multiply(-1) == ds.multiply(20)


@given(residue_sets(), st.integers(-200, 200))
def test_translate_and_normalized(ds: DifferenceSet, t: int) -> None:
    v = ds.v
    moved = ds.translate(t)
    assert moved.elements == tuple(sorted((e + t) % v for e in ds.elements))
    normal = ds.normalized()
    assert normal.elements == naive_normalized(v, ds.elements)
    assert normal == ds._normalized_reference()
    assert moved.normalized() == normal
    assert 0 in normal
    assert normal.normalized() == normal


@given(residue_sets())
def test_paired_properties(ds: DifferenceSet) -> None:
    paired = ds.paired()
    top = max(ds.elements)
    assert paired.elements == tuple(sorted(top - d for d in ds.elements))
    assert paired == ds.multiply(-1).translate(top)
    assert paired.paired() == ds.translate(-min(ds.elements))
    assert paired.is_valid() == ds.is_valid()


@given(residue_sets(max_v=40))
def test_difference_counts_and_verify_match_naive(ds: DifferenceSet) -> None:
    assert ds.difference_counts().tolist() == naive_counts(ds.v, ds.elements)
    assert ds.is_valid() == naive_is_difference_set(ds.v, ds.elements)


@given(planar_sized_sets())
def test_planar_fast_path_matches_naive(ds: DifferenceSet) -> None:
    expected = naive_is_difference_set(ds.v, ds.elements)
    assert ds.is_valid() == expected
    assert ds._covers_every_difference() == expected


def test_planar_sized_exhaustive_v13() -> None:
    found = [c for c in combinations(range(13), 4) if DifferenceSet(13, c).is_valid()]
    assert found == [c for c in combinations(range(13), 4) if naive_is_difference_set(13, c)]
    # the valid sets are whole translation classes of 13 sets each
    assert len(found) == 13 * len({DifferenceSet(13, c).normalized() for c in found})
    assert DifferenceSet(13, [0, 1, 3, 9]).normalized() in {
        DifferenceSet(13, c).normalized() for c in found
    }


# --- multipliers and equivalence ------------------------------------------------------------
def reference_multipliers(ds: DifferenceSet) -> tuple[int, ...]:
    base = naive_normalized(ds.v, ds.elements)
    return tuple(
        t for t in units(ds.v)
        if naive_normalized(ds.v, tuple((t * d) % ds.v for d in ds.elements)) == base
    )


@pytest.mark.parametrize(("v", "elements"), KNOWN)
def test_multipliers_known(v: int, elements: tuple[int, ...]) -> None:
    ds = DifferenceSet(v, elements)
    assert ds.multipliers() == reference_multipliers(ds)
    for t in units(v):
        assert ds.is_multiplier(t) == (t in ds.multipliers())


def test_multipliers_values() -> None:
    assert DifferenceSet(7, [0, 1, 3]).multipliers() == (1, 2, 4)
    assert DifferenceSet(21, [0, 1, 4, 14, 16]).multipliers() == (1, 2, 4, 8, 11, 16)


@given(residue_sets(max_v=30))
def test_multipliers_match_reference_on_any_set(ds: DifferenceSet) -> None:
    assert ds.multipliers() == reference_multipliers(ds)


@given(residue_sets(max_v=30), st.data())
def test_is_equivalent_matches_reference(ds: DifferenceSet, data: st.DataObject) -> None:
    v = ds.v
    t = data.draw(st.sampled_from(units(v)))
    s = data.draw(st.integers(0, v - 1))
    image = ds.multiply(t).translate(s)
    assert ds.is_equivalent(image)
    assert image.is_equivalent(ds)
    other = data.draw(st.sets(st.integers(0, v - 1), min_size=ds.k, max_size=ds.k))
    other_ds = DifferenceSet(v, other)
    target = naive_normalized(v, other_ds.elements)
    expected = any(
        naive_normalized(v, tuple((u * d) % v for d in ds.elements)) == target for u in units(v)
    )
    assert ds.is_equivalent(other_ds) == expected


def test_is_equivalent_other_parameters() -> None:
    ds = DifferenceSet(7, [0, 1, 3])
    assert not ds.is_equivalent(DifferenceSet(13, [0, 1, 3, 9]))
    assert not ds.is_equivalent(DifferenceSet(7, [0, 1]))
    with pytest.raises(TypeError, match="DifferenceSet"):
        ds.is_equivalent((0, 1, 3))  # type: ignore[arg-type]


# --- the design -----------------------------------------------------------------------------
@pytest.mark.parametrize(("v", "elements"), KNOWN)
def test_blocks_and_incidence_graph(v: int, elements: tuple[int, ...]) -> None:
    ds = DifferenceSet(v, elements)
    blocks = ds.blocks()
    assert len(blocks) == v
    for i, block in enumerate(blocks):
        assert block == tuple(sorted((i + d) % v for d in elements))
    pair_counts = Counter(pair for block in blocks for pair in combinations(block, 2))
    assert set(pair_counts.values()) == {ds.lam}
    assert len(pair_counts) == v * (v - 1) // 2
    graph = ds.incidence_graph()
    assert graph.number_of_nodes() == 2 * v
    assert graph.number_of_edges() == v * len(elements)
    assert nx.is_bipartite(graph)
    for i, block in enumerate(blocks):
        assert sorted(x for _, x in graph[("block", i)]) == list(block)
    assert {side for _, side in graph.nodes(data="bipartite")} == {0, 1}


@given(planar_sized_sets())
def test_blocks_pairwise_property_iff_valid(ds: DifferenceSet) -> None:
    assume(ds.v <= 31)
    pair_counts = Counter(pair for block in ds.blocks() for pair in combinations(block, 2))
    every_pair_once = len(pair_counts) == ds.v * (ds.v - 1) // 2 and set(pair_counts.values()) \
        == {1}
    assert every_pair_once == ds.is_valid()
