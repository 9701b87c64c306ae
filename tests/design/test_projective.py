"""Tests of :func:`cqs_design.verify_projective_plane`, the graph-based second check."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sympy import factorint

from cqs_design import DifferenceSet, singer_difference_set, verify_projective_plane
from cqs_design.projective import PROJECTIVE_MAX_V, NotAProjectivePlaneError

SMALL_Q = [q for q in range(2, 32) if len(factorint(q)) == 1]


def agrees(ds: DifferenceSet) -> bool:
    try:
        verify_projective_plane(ds)
    except NotAProjectivePlaneError:
        graph_says = False
    else:
        graph_says = True
    assert graph_says == ds.is_valid()
    return graph_says


@pytest.mark.parametrize("q", SMALL_Q)
def test_singer_sets_are_planes(q: int) -> None:
    assert verify_projective_plane(singer_difference_set(q)) is True


@given(st.sampled_from([q for q in SMALL_Q if q <= 13]), st.data())
def test_agrees_with_verify_on_perturbations(q: int, data: st.DataObject) -> None:
    ds = singer_difference_set(q)
    index = data.draw(st.integers(0, ds.k - 1))
    new = data.draw(st.integers(0, ds.v - 1).filter(lambda e: e not in ds))
    elements = list(ds.elements)
    elements[index] = new
    agrees(DifferenceSet(ds.v, elements))
    agrees(ds.translate(new))


@given(st.integers(3, 6).flatmap(
    lambda k: st.sets(st.integers(0, k * k - k), min_size=k, max_size=k).map(
        lambda s: DifferenceSet(k * k - k + 1, s))))
def test_agrees_with_verify_on_random_sets(ds: DifferenceSet) -> None:
    agrees(ds)


def test_agrees_exhaustively_v7_v13() -> None:
    # phi(v) / (number of multipliers) translation classes of v sets each: 6/3 = 2 for v = 7,
    # 12/3 = 4 for v = 13
    for v, k, classes in ((7, 3, 2), (13, 4, 4)):
        valid = [c for c in combinations(range(v), k) if agrees(DifferenceSet(v, c))]
        assert len(valid) == classes * v


def test_rejects_non_planar_parameters() -> None:
    with pytest.raises(NotAProjectivePlaneError, match=r"v = 11, k = 5"):
        verify_projective_plane(DifferenceSet(11, [1, 3, 4, 5, 9]))  # a (11, 5, 2) set
    with pytest.raises(NotAProjectivePlaneError, match="k >= 3"):
        verify_projective_plane(DifferenceSet(3, [0, 1]))


def test_failure_names_the_4_cycle() -> None:
    with pytest.raises(NotAProjectivePlaneError, match="points 1 and 2 lie on 2 common blocks"):
        verify_projective_plane(DifferenceSet(13, [0, 1, 2, 9]))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="DifferenceSet"):
        verify_projective_plane((0, 1, 3))  # type: ignore[arg-type]
    big = DifferenceSet(PROJECTIVE_MAX_V + 1, [0, 1, 3])
    with pytest.raises(ValueError, match="too large"):
        verify_projective_plane(big)
