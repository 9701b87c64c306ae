"""Tests for cqs_design.plane_existence (the existence of cyclic planes by order)."""

from __future__ import annotations

import json

import pytest

from cqs_design import is_prime_power
from cqs_design.plane_existence import (
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
    r = existence(24, search_max_order=20, gordon_tests=False)
    assert r.status == "open"
    assert not r.computed
    assert "Baumert" in r.published
    assert "2*10^9" in r.published
    assert existence(24, search_max_order=30).status == "impossible"
    assert existence(24).status == "impossible"  # the default bound is 315 since issue 16
    # past the search bound the necessary conditions decide it; the citation stays
    r = existence(24, search_max_order=20)
    assert (r.status, r.method, r.computed) == ("impossible", "gordon-tests", True)
    assert r.evidence["checked"] is True
    assert "Baumert" in r.published


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
    with pytest.raises(ValueError, match=r"n must be an integer in \[2, 1000000000000\], got 1"):
        existence(1)
    with pytest.raises(ValueError, match=r"got 1000000000001"):
        existence(10**12 + 1)
    with pytest.raises(TypeError):
        existence(2.0)  # type: ignore[arg-type]


# --- issue 16: any order, never raises --------------------------------------------------------
def test_search_that_cannot_run_is_open_with_the_reason() -> None:
    from cqs_design.plane_existence import existence as ex

    r = ex(316, search_max_order=316, gordon_tests=False)  # v = 100173 > MAX_SEARCH_V
    assert r.status == "open"
    assert "cannot run" in r.reason
    assert "too large" in r.evidence["search_error"]
    assert r.published is not None
    r = ex(316, search_max_order=316)  # the necessary conditions take over
    assert (r.status, r.method) == ("impossible", "gordon-tests")
    assert "too large" in r.evidence["search_error"]


@pytest.mark.parametrize("n", [70000, 99998, 10**6])
def test_large_non_prime_powers_never_raise(n: int) -> None:
    from cqs_design.plane_existence import existence as ex

    r = ex(n, search_max_order=10**6)
    assert r.status in ("open", "impossible")


def test_singer_past_the_construction_limit_is_not_constructed() -> None:
    from cqs_design.plane_existence import existence as ex

    r = ex(131072)
    assert (r.status, r.method, r.computed) == ("exists", "singer", False)
    assert "not constructed here" in r.reason
    assert "elements" not in r.evidence
    # past the old limit 8192, inside the new one: built and verified when asked for (the
    # default builds only up to 4096, answering larger orders by Singer's theorem at once)
    built = ex(8209, verify_singer=True)
    assert built.computed
    assert len(built.evidence["elements"]) == 8210
    quick = ex(8209)
    assert (quick.status, quick.computed) == ("exists", False)
    assert "verify_singer=True" in quick.reason


def test_existence_of_a_large_prime_power_is_quick_by_default() -> None:
    """Issue 23: existence(65536) spent 22 s building a set of 4.3e9 points in silence."""
    import time

    from cqs_design.plane_existence import existence as ex

    t0 = time.perf_counter()
    r = ex(65536)
    assert time.perf_counter() - t0 < 5
    assert (r.status, r.method, r.computed) == ("exists", "singer", False)
    assert ex(4096).computed  # small enough to build by default


def test_default_search_decides_orders_up_to_315() -> None:
    from cqs_design.plane_existence import DEFAULT_SEARCH_MAX_ORDER, existence_table

    assert DEFAULT_SEARCH_MAX_ORDER == 315
    table = existence_table(100, verify_singer=False)
    assert not [r.order for r in table if r.status == "open"]
    assert {r.method for r in table if r.status == "impossible"} == {
        "bruck-ryser-chowla", "exhaustive-multiplier-search"}


def test_iter_table_streams_and_checks_arguments() -> None:
    from cqs_design.plane_existence import iter_existence_table

    it = iter_existence_table(10**6, verify_singer=0, search_max_order=0)
    first = [next(it) for _ in range(3)]
    assert [r.order for r in first] == [2, 3, 4]
    with pytest.raises(ValueError, match="search_max_order must be an integer >= 0"):
        iter_existence_table(10, search_max_order=-1)
    with pytest.raises(ValueError, match="verify_singer must be an integer >= 0"):
        iter_existence_table(10, verify_singer=-3)


# --- the module is reachable next to the function of the same name ---------------------------
def test_module_and_function_are_both_reachable() -> None:
    import importlib
    import types

    import cqs_design
    import cqs_design.plane_existence as by_import

    module = importlib.import_module("cqs_design.plane_existence")
    assert isinstance(module, types.ModuleType)
    assert by_import is module
    assert isinstance(cqs_design.existence, types.FunctionType)
    assert cqs_design.existence is module.existence
    assert cqs_design.existence_table is module.existence_table
