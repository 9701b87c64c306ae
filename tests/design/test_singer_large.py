"""The O(sqrt(v))-memory Singer route (cqs_design.singer.trace) and windowed verification."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sympy import factorint

from cqs_design import DifferenceSet, NotADifferenceSetError, singer_difference_set
from cqs_design import difference_sets as ds_module
from cqs_design.singer import SINGER_MAX_Q
from cqs_design.singer.construction import (
    _TRACE_MIN_Q,
    _singer_difference_set,
    _singer_exponents_bsgs,
    _singer_exponents_sequence,
)
from cqs_design.singer.trace import singer_exponents_trace

PRIME_POWERS_8192 = [q for q in range(2, 8193) if len(factorint(q)) == 1]


def normalized_singer(v: int, exponents: np.ndarray) -> DifferenceSet:
    """The same normal form :func:`singer_difference_set` returns (min of D and -D)."""
    d = DifferenceSet._unchecked(v, exponents)
    return min(d.normalized(), d._multiply(-1).normalized(), key=lambda x: x.elements)


def old_path(q: int) -> DifferenceSet:
    v = q * q + q + 1
    exps = _singer_exponents_sequence(q) if v < 1 << 15 else _singer_exponents_bsgs(q)
    return normalized_singer(v, exps)


@pytest.mark.parametrize("q", [q for q in PRIME_POWERS_8192 if q <= 64])
def test_trace_route_equals_old_route_small(q: int) -> None:
    v = q * q + q + 1
    new = singer_exponents_trace(q)
    assert len(new) == q + 1
    got = normalized_singer(v, new)
    assert got == old_path(q)
    assert got.is_valid()


@settings(max_examples=8)
@given(st.sampled_from(PRIME_POWERS_8192), st.data())
def test_trace_route_equals_old_route(q: int, data: st.DataObject) -> None:
    """Every prime power q <= 8192 is a possible example (8 sampled, about 1 s each)."""
    v = q * q + q + 1
    baby = data.draw(st.integers(max(1, v // 256), v) | st.none(), label="baby steps")
    new = normalized_singer(v, singer_exponents_trace(q, baby))
    old = old_path(q)
    assert new == old


def test_trace_route_tiny_baby_tables() -> None:
    for q in (2, 3, 4, 5, 7, 8, 9, 16, 27):
        v = q * q + q + 1
        for baby in (1, 2, 3, 7):
            assert normalized_singer(v, singer_exponents_trace(q, baby)) == old_path(q)


def test_dispatch_uses_the_trace_route_past_8192() -> None:
    assert _TRACE_MIN_Q == 8193
    d = singer_difference_set(8209)
    assert (d.v, d.k) == (8209**2 + 8209 + 1, 8210)
    assert d == normalized_singer(d.v, singer_exponents_trace(8209))
    assert 0 in d


def test_construction_memory_is_o_sqrt_v() -> None:
    """q = 16384: the baby table has 64 q entries; the old route would hold q^1.5 = 2.1M."""
    _singer_difference_set.cache_clear()
    tracemalloc.start()
    try:
        d = singer_difference_set(16384)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert d.k == 16385
    assert peak < 4000 * 16384  # about 2.1 kB per unit of q, far below v = 2.7e8 bytes


def test_huge_q_is_refused_at_once() -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match="exceeds SINGER_MAX_Q = 65536"):
        singer_difference_set(10**1000 + 1)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("q", [65537, 2**17, 65538])
def test_past_the_limit(q: int) -> None:
    assert SINGER_MAX_Q == 1 << 16
    with pytest.raises(ValueError, match=r"exceeds SINGER_MAX_Q = 65536: v = q²\+q\+1 = "):
        singer_difference_set(q)


# --- windowed verification ----------------------------------------------------------------
@given(st.integers(3, 60), st.data())
def test_windowed_count_matches_full_count(v: int, data: st.DataObject) -> None:
    elements = data.draw(st.sets(st.integers(0, v - 1), min_size=2, max_size=v), label="D")
    lam = data.draw(st.integers(1, 3), label="lam")
    window = data.draw(st.integers(1, v), label="window")
    d = DifferenceSet(v, elements)
    counts = d.difference_counts()
    bad = [r for r in range(1, v) if counts[r] != lam]
    expected = (bad[0], int(counts[bad[0]])) if bad else None
    assert d._first_bad_difference(lam, window) == expected


@pytest.mark.parametrize("q", [2, 3, 4, 5, 7, 8, 9, 11, 16, 64])
def test_windowed_accepts_singer_sets(q: int) -> None:
    d = singer_difference_set(q)
    assert d._first_bad_difference(1, 3) is None
    assert d._first_bad_difference(1) is None


def test_verify_switches_to_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds_module, "_WINDOWED_V", 10)
    monkeypatch.setattr(ds_module, "_WINDOW", 7)
    good = singer_difference_set(5)
    assert good.verify() is good
    assert DifferenceSet(11, [1, 3, 4, 5, 9]).verify().lam == 2
    with pytest.raises(NotADifferenceSetError, match=r"difference 1 occurs 2 times"):
        DifferenceSet(13, [0, 1, 2, 5]).verify()
    broken = list(good.elements)
    broken[-1] = (broken[-1] + 1) % good.v
    if broken[-1] not in good.elements:
        with pytest.raises(NotADifferenceSetError, match="occurs"):
            DifferenceSet(good.v, broken).verify()


@given(st.integers(2, 2**45), st.integers(-(2**40), 2**40), st.data())
def test_mulmod_has_no_overflow(v: int, t: int, data: st.DataObject) -> None:
    from cqs_design.difference_sets import _mulmod

    a = data.draw(st.lists(st.integers(0, v - 1), min_size=1, max_size=20), label="a")
    got = _mulmod(np.array(a, dtype=np.int64), t, v).tolist()
    assert got == [x * t % v for x in a]


def test_multiply_past_2_to_the_32() -> None:
    """v = q²+q+1 for q = 65536 is above 2^32: -D must not overflow int64 (it did)."""
    v = 65536**2 + 65536 + 1
    d = DifferenceSet(v, [0, 1, 3, v - 2])
    assert d._multiply(-1).elements == (0, 2, v - 3, v - 1)
    assert d.multiply(v - 1).elements == d._multiply(-1).elements
