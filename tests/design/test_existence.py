"""Tests for cqs_design.existence."""

from __future__ import annotations

import json

import pytest

from cqs_design import is_prime_power
from cqs_design.existence import (
    bruck_ryser_chowla,
    existence,
    existence_table,
    format_table,
    sum_of_two_squares,
)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 8, 9, 11, 13, 16])
def test_prime_powers_exist_with_verified_set(n: int) -> None:
    r = existence(n)
    assert r.status == "exists"
    assert r.method == "singer"
    assert r.computed
    elements = r.evidence["elements"]
    v = n * n + n + 1
    diffs = sorted((a - b) % v for a in elements for b in elements if a != b)
    assert diffs == list(range(1, v))


@pytest.mark.parametrize("n", [6, 14, 21, 22])
def test_brc_exclusions(n: int) -> None:
    r = existence(n)
    assert r.status == "impossible"
    assert r.method == "bruck-ryser-chowla"
    assert r.evidence["n_mod_4"] in (1, 2)
    assert r.evidence["two_squares"] is None
    assert r.evidence["odd_primes_3_mod_4"]


@pytest.mark.parametrize("n", [10, 12, 15, 18, 20])
def test_exhaustive_nonexistence(n: int) -> None:
    r = existence(n)
    assert r.status == "impossible"
    assert r.method == "exhaustive-multiplier-search"
    assert r.evidence["complete"] is True
    assert r.evidence["found"] == 0
    assert r.evidence["nodes"] >= 1
    assert r.seconds >= 0
    assert not r.evidence["brc"]["excluded"]


def test_open_beyond_search_bound_cites_publication() -> None:
    r = existence(24)
    assert r.status == "open"
    assert not r.computed
    assert "Baumert" in r.published
    assert "2*10^9" in r.published
    assert existence(24, search_max_order=30).status == "impossible"


def test_sum_of_two_squares_matches_brute_force() -> None:
    for n in range(0, 300):
        brute = any(a * a + b * b == n for a in range(20) for b in range(20))
        got = sum_of_two_squares(n)
        assert (got is not None) == brute
        if got:
            assert got[0] ** 2 + got[1] ** 2 == n


def test_brc_matches_two_squares_rule() -> None:
    for n in range(2, 200):
        r = bruck_ryser_chowla(n)
        assert r["excluded"] == (n % 4 in (1, 2) and sum_of_two_squares(n) is None)


def test_table_statuses_and_formats() -> None:
    recs = existence_table(30)
    assert [r.order for r in recs] == list(range(2, 31))
    for r in recs:
        if is_prime_power(r.order):
            assert r.status == "exists"
        else:
            assert r.status in ("impossible", "open")
        if r.order <= 20:
            assert r.status != "open"
    md = format_table(recs, "md")
    assert md.count("\n") == len(recs) + 2
    csv = format_table(recs, "csv")
    assert csv.splitlines()[0].startswith("order,v,k,status")
    data = json.loads(format_table(recs, "json"))
    assert data[8]["order"] == 10
    assert data[8]["status"] == "impossible"
    with pytest.raises(ValueError, match="fmt"):
        format_table(recs, "xml")  # type: ignore[arg-type]


def test_bad_orders() -> None:
    with pytest.raises(ValueError, match="between 2"):
        existence(1)
    with pytest.raises(TypeError):
        existence(2.0)  # type: ignore[arg-type]
