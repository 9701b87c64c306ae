"""Tests of :mod:`cqs_design.singer`: Singer difference sets for every prime power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sympy import factorint

from cqs_design import (
    DifferenceSet,
    NotADifferenceSetError,
    is_prime_power,
    singer_difference_set,
)
from cqs_design.singer import SINGER_MAX_Q, primitive_cubic
from cqs_design.singer.construction import (
    _singer_difference_set,
    _singer_exponents_bsgs,
    _singer_exponents_sequence,
)
from cqs_design.singer.cubic import (
    coefficient_sequence,
    coefficient_sequence_reference,
    cubic_of,
    field_of,
)

PRIME_POWERS_300 = [q for q in range(2, 301) if len(factorint(q)) == 1]
prime_powers = st.sampled_from(PRIME_POWERS_300)


def characteristic(q: int) -> int:
    return next(iter(factorint(q)))


# --- known values ---------------------------------------------------------------------------
def test_small_singer_sets_are_the_classical_ones() -> None:
    assert singer_difference_set(2) == DifferenceSet(7, [0, 1, 3])
    assert singer_difference_set(3) == DifferenceSet(13, [0, 1, 3, 9])
    assert singer_difference_set(4) == DifferenceSet(21, [0, 1, 4, 14, 16])


@pytest.mark.parametrize("q", [q for q in PRIME_POWERS_300 if q <= 64])
def test_every_small_prime_power(q: int) -> None:
    ds = singer_difference_set(q)
    assert (ds.v, ds.k, ds.lam, ds.order) == (q * q + q + 1, q + 1, 1, q)
    ds.verify()
    assert ds.normalized() == ds


@pytest.mark.parametrize("q", [243, 256, 343, 729, 1024, 2187])
def test_larger_prime_powers(q: int) -> None:
    ds = singer_difference_set(q)
    assert (ds.v, ds.k) == (q * q + q + 1, q + 1)
    ds.verify()
    assert ds.normalized() == ds
    assert ds.is_multiplier(characteristic(q))


def test_deterministic() -> None:
    first = [singer_difference_set(q) for q in (7, 16, 125)]
    _singer_difference_set.cache_clear()
    assert [singer_difference_set(q) for q in (7, 16, 125)] == first


# --- properties over random prime powers q <= 300 --------------------------------------------
@given(prime_powers)
def test_singer_verifies(q: int) -> None:
    ds = singer_difference_set(q)
    assert ds.v == q * q + q + 1
    assert ds.k == q + 1
    assert ds.verify().lam == 1
    assert ds.elements[:2] == (0, 1)  # normalized, and difference 1 occurs once
    assert ds.normalized() == ds


@given(prime_powers, st.data())
def test_paired_translates_and_multiples_are_equivalent(q: int, data: st.DataObject) -> None:
    ds = singer_difference_set(q)
    v = ds.v
    paired = ds.paired()
    paired.verify()
    assert paired.is_equivalent(ds)
    t = data.draw(st.integers(1, v - 1), label="shift")
    moved = ds.translate(t)
    moved.verify()
    assert moved.is_equivalent(ds)
    assert moved.normalized() == ds
    u = data.draw(st.integers(2, v - 1).filter(lambda u: math.gcd(u, v) == 1), label="unit")
    multiple = ds.multiply(u)
    multiple.verify()
    assert multiple.is_equivalent(ds)
    assert ds.is_equivalent(multiple.translate(t))


@given(prime_powers)
def test_characteristic_is_a_multiplier(q: int) -> None:
    ds = singer_difference_set(q)
    p = characteristic(q)
    assert ds.is_multiplier(p)
    multipliers = ds.multipliers()
    assert p in multipliers
    assert 1 in multipliers
    # the multipliers of a Singer set are exactly the powers of p (a group of order 3m)
    m = factorint(q)[p]
    assert sorted(multipliers) == sorted({pow(p, i, ds.v) for i in range(3 * m)})
    assert not ds.is_multiplier(ds.v - 1)  # -1 is never a multiplier (k > 1)


@given(prime_powers, st.data())
def test_single_element_perturbation_fails(q: int, data: st.DataObject) -> None:
    ds = singer_difference_set(q)
    if q == 2:  # {0,1,3} -> {0,1,5}: in v = 7 a perturbation can be the other (7,3,1) set
        return
    index = data.draw(st.integers(0, ds.k - 1), label="index")
    new = data.draw(st.integers(0, ds.v - 1).filter(lambda e: e not in ds), label="new")
    elements = list(ds.elements)
    elements[index] = new
    perturbed = DifferenceSet(ds.v, elements)
    with pytest.raises(NotADifferenceSetError, match=r"difference \d+ occurs \d+ times") as info:
        perturbed.verify()
    assert "occurs 1 times" not in str(info.value)
    assert not perturbed.is_valid()


def test_perturbations_exhaustive_small() -> None:
    for q in (3, 4, 5):
        ds = singer_difference_set(q)
        for index in range(ds.k):
            for new in set(range(ds.v)) - set(ds.elements):
                elements = list(ds.elements)
                elements[index] = new
                assert not DifferenceSet(ds.v, elements).is_valid()


# --- the construction against its slow twins ------------------------------------------------
@pytest.mark.parametrize("q", [2, 3, 4, 5, 7, 8, 9, 16, 25, 27, 32, 49])
def test_sequence_matches_reference(q: int) -> None:
    v = q * q + q + 1
    assert coefficient_sequence(q, v).tolist() == coefficient_sequence_reference(q, v)
    for length in (3, 4, 5, 9, 17):
        assert coefficient_sequence(q, length).tolist() == coefficient_sequence_reference(
            q, length
        )


@given(prime_powers, st.data())
def test_bsgs_matches_sequence(q: int, data: st.DataObject) -> None:
    v = q * q + q + 1
    baby = data.draw(st.integers(max(1, v // 32), v), label="baby steps")  # <= 32 giant steps
    assert _singer_exponents_bsgs(q, baby).tolist() == _singer_exponents_sequence(q).tolist()


def test_bsgs_tiny_baby_steps() -> None:
    for q in (2, 3, 4, 5, 7):
        for baby in (1, 2, 3, 5):
            assert _singer_exponents_bsgs(q, baby).tolist() == _singer_exponents_sequence(
                q
            ).tolist()


def test_bsgs_default_matches_sequence_large() -> None:
    for q in (509, 512, 625):
        assert _singer_exponents_bsgs(q).tolist() == _singer_exponents_sequence(q).tolist()


@pytest.mark.parametrize("q", [2, 3, 4, 5])
def test_primitive_cubic_generates(q: int) -> None:
    field = field_of(q)
    f = primitive_cubic(field)
    assert f == cubic_of(q)
    assert f[3] == 1
    power, order = [1, 0, 0], None
    for i in range(1, q**3):
        power = field.poly_mulmod(power, [0, 1, 0], f)
        if power == [1, 0, 0]:
            order = i
            break
    assert order == q**3 - 1


def test_trace_zero_definition_small() -> None:
    """Independent of the recurrence: D = exponents i with x^i in span{1, x} (brute force)."""
    for q in (2, 3, 4, 5, 7, 8, 9):
        field = field_of(q)
        f = cubic_of(q)
        v = q * q + q + 1
        power, exponents = [1, 0, 0], []
        for i in range(v):
            if power[2] == 0:
                exponents.append(i)
            power = field.poly_mulmod(power, [0, 1, 0], f)
        assert power[1:] == [0, 0]  # x^v lies in GF(q)
        ds = DifferenceSet(v, exponents)
        assert ds.is_valid()
        assert ds.is_equivalent(singer_difference_set(q))


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "match"),
    [
        (6, "q = 6 is not a prime power; the nearest prime powers are 5 .below. and 7 .above."),
        (10, "9 .below. and 11 .above."),
        (1000, "997 .below. and 1009 .above."),
        (1, "smallest prime power is 2"),
        (0, "smallest prime power is 2"),
        (-5, "smallest prime power is 2"),
        (65537, "exceeds SINGER_MAX_Q = 65536"),
    ],
)
def test_bad_q(q: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        singer_difference_set(q)


@pytest.mark.parametrize("q", [2.0, "4", True, None])
def test_q_must_be_int(q: object) -> None:
    with pytest.raises(TypeError, match="q must be an integer"):
        singer_difference_set(q)  # type: ignore[arg-type]


def test_limit_is_a_prime_power_boundary() -> None:
    assert is_prime_power(SINGER_MAX_Q)
    assert SINGER_MAX_Q == 65536


def test_is_prime_power() -> None:
    expected = [n for n in range(-5, 2000) if n >= 2 and len(factorint(n)) == 1]
    assert [n for n in range(-5, 2000) if is_prime_power(n)] == expected
    assert is_prime_power(2**61 - 1)
    assert is_prime_power(3**40)
    assert not is_prime_power(6**20)
    assert is_prime_power(np.int64(49))
    with pytest.raises(TypeError, match="n must be an integer"):
        is_prime_power(4.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        is_prime_power(True)


def test_perturbation_of_a_large_set_names_a_missing_difference() -> None:
    ds = singer_difference_set(2048)  # v = 4,196,353: above the full-count limit
    elements = list(ds.elements)
    elements[5] += 1
    assert elements[5] not in ds
    with pytest.raises(NotADifferenceSetError, match=r"difference \d+ occurs 0 times"):
        DifferenceSet(ds.v, elements).verify()
