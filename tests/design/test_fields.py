"""Tests of :mod:`cqs_design.fields`: GF(p^m) arithmetic against the field axioms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sympy import factorint
from sympy.polys.domains import ZZ
from sympy.polys.galoistools import gf_irreducible_p

from cqs_design.fields import GaloisField, primitive_polynomial

SMALL_Q = [q for q in range(2, 260) if len(factorint(q)) == 1]


@st.composite
def field_and_elements(draw: st.DrawFn, n: int = 3) -> tuple[GaloisField, list[int]]:
    q = draw(st.sampled_from(SMALL_Q))
    field = _cached_field(q)
    return field, [draw(st.integers(0, q - 1)) for _ in range(n)]


_FIELDS: dict[int, GaloisField] = {}


def _cached_field(q: int) -> GaloisField:
    if q not in _FIELDS:
        _FIELDS[q] = GaloisField(q)
    return _FIELDS[q]


@given(field_and_elements())
def test_field_axioms(data: tuple[GaloisField, list[int]]) -> None:
    field, (a, b, c) = data
    add, mul = field.add, field.mul
    assert add(a, b) == add(b, a)
    assert mul(a, b) == mul(b, a)
    assert add(add(a, b), c) == add(a, add(b, c))
    assert mul(mul(a, b), c) == mul(a, mul(b, c))
    assert mul(a, add(b, c)) == add(mul(a, b), mul(a, c))
    assert add(a, 0) == a
    assert mul(a, 1) == a
    assert mul(a, 0) == 0
    assert add(a, field.neg(a)) == 0
    assert field.sub(add(a, b), b) == a
    if a:
        assert mul(a, field.inv(a)) == 1
        assert field.power(a, field.q - 1) == 1
        assert field.power(a, -1) == field.inv(a)
    # characteristic p: p·a = 0
    total = 0
    for _ in range(field.p):
        total = add(total, a)
    assert total == 0


@given(field_and_elements(n=0), st.data())
def test_vectorised_matches_scalar(
    data: tuple[GaloisField, list[int]], more: st.DataObject
) -> None:
    field, _ = data
    q = field.q
    a = np.array(more.draw(st.lists(st.integers(0, q - 1), min_size=1, max_size=20)))
    b = np.array(more.draw(st.lists(st.integers(0, q - 1), min_size=len(a), max_size=len(a))))
    c = more.draw(st.integers(0, q - 1))
    pairs = [(int(x), int(y)) for x, y in zip(a, b, strict=True)]
    assert field.add_vec(a, b).tolist() == [field.add(x, y) for x, y in pairs]
    assert field.mul_vec(a, b).tolist() == [field.mul(x, y) for x, y in pairs]
    assert field.neg_vec(a).tolist() == [field.neg(int(x)) for x in a]
    assert field.mul_table(c)[a].tolist() == [field.mul(c, int(x)) for x in a]


@pytest.mark.parametrize("q", [2, 3, 4, 8, 9, 25, 27, 49, 64, 81, 125, 243, 256, 729, 1024])
def test_tables_are_bijective_and_modulus_primitive(q: int) -> None:
    field = GaloisField(q)
    p, m = field.p, field.m
    assert p**m == q
    n = q - 1
    assert sorted(field.exp[:n].tolist()) == list(range(1, q))
    assert field.exp[n:].tolist() == field.exp[:n].tolist()
    assert field.log[field.exp[:n]].tolist() == list(range(n))
    assert field.log[0] == -1
    modulus = field.modulus
    assert len(modulus) == m + 1
    assert modulus[-1] == 1
    if m > 1:
        assert gf_irreducible_p([ZZ(c) for c in reversed(modulus)], p, ZZ)
    # the generator has order exactly q - 1
    g = int(field.exp[1])
    assert [field.power(g, e) for e in range(1, q)].index(1) == q - 2


def test_primitive_polynomial_examples() -> None:
    assert primitive_polynomial(2, 2) == (1, 1, 1)
    assert primitive_polynomial(2, 3) == (1, 0, 1, 1)
    assert primitive_polynomial(3, 1) == (1, 1)  # x + 1: root -1 = 2 generates GF(3)*
    with pytest.raises(ValueError, match="degree m must be >= 1"):
        primitive_polynomial(2, 0)


@pytest.mark.parametrize("q", [0, 1, 6, 12, 2.0, True, -4])
def test_bad_field_orders(q: object) -> None:
    with pytest.raises(ValueError, match="prime power"):
        GaloisField(q)  # type: ignore[arg-type]


def test_inverse_of_zero() -> None:
    field = GaloisField(9)
    with pytest.raises(ZeroDivisionError):
        field.inv(0)
    with pytest.raises(ZeroDivisionError):
        field.power(0, -1)
    assert field.power(0, 0) == 1
    assert field.power(0, 3) == 0


@given(field_and_elements(n=4), st.integers(0, 60))
def test_polynomial_arithmetic(data: tuple[GaloisField, list[int]], e: int) -> None:
    field, (a0, a1, b0, b1) = data
    f = [1, 1, 0, 1] if field.p == 2 and field.m == 1 else [1, 0, 1, 1]  # any monic cubic
    a, b = [a0, a1, 0], [b0, b1, 0]
    # (a0 + a1 x)(b0 + b1 x) has degree <= 2: no reduction needed
    expected = [field.mul(a0, b0), field.add(field.mul(a0, b1), field.mul(a1, b0)),
                field.mul(a1, b1)]
    assert field.poly_mulmod(a, b, f) == expected
    power = [1, 0, 0]
    for _ in range(e):
        power = field.poly_mulmod(power, a, f)
    assert field.poly_powmod(a, e, f) == power
    xs = field.elements()
    values = field.poly_eval_vec(f, xs)
    for x in (0, 1, field.q - 1):
        acc = 0
        for coeff in reversed(f):
            acc = field.add(field.mul(acc, x), coeff)
        assert values[x] == acc
