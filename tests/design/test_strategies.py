"""The public hypothesis strategies build what they promise and reject bad arguments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis.errors import InvalidArgument

from cqs_design import DifferenceSet
from cqs_design.plans import Plan
from cqs_design.singer import is_prime_power
from cqs_design.strategies import difference_sets, plans, prime_powers


@given(prime_powers(3, 50))
def test_prime_powers(q: int) -> None:
    assert 3 <= q <= 50
    assert is_prime_power(q)


@given(difference_sets(max_q=9))
def test_difference_sets_valid(ds: DifferenceSet) -> None:
    assert ds.is_valid()
    assert ds.lam == 1
    assert ds.v == ds.k * ds.k - ds.k + 1


@given(difference_sets(max_q=5, normalized=True))
def test_normalized_difference_sets(ds: DifferenceSet) -> None:
    assert ds == ds.normalized()


@given(plans(max_seq_len=120))
def test_plans_are_valid(plan: Plan) -> None:
    assert plan.validate() is plan
    assert plan.seq_len <= 120
    assert plan.kv_len <= 120


@given(plans(max_seq_len=100, cross=False, causal=True, window=True, refine=True))
def test_plan_flags_are_honoured(plan: Plan) -> None:
    assert plan.kv_len == plan.seq_len
    assert plan.causal


def test_plans_reach_every_feature() -> None:
    """Across examples the strategy produces cross, causal, windowed and multi-level plans."""
    seen: set[str] = set()

    @settings(max_examples=150, database=None)
    @given(plans(max_seq_len=150))
    def collect(plan: Plan) -> None:
        if plan.kv_len != plan.seq_len:
            seen.add("cross")
        if plan.causal:
            seen.add("causal")
        if plan.window is not None:
            seen.add("window")
        if plan.levels > 1:
            seen.add("levels")
            if len({t.level for t in plan.tasks}) > 1:
                seen.add("hybrid")

    collect()
    assert seen == {"cross", "causal", "window", "levels", "hybrid"}


@pytest.mark.parametrize(("strategy", "match"), [
    (prime_powers(24, 24), r"no prime power lies in \[24, 24\]"),
    (prime_powers("2", 5), "min_value must be an integer"),
    (difference_sets(max_q=1), "max_q must be an integer >= 2"),
    (difference_sets(max_q=3, normalized="yes"), "normalized must be a bool"),
    (plans(max_seq_len=6), "max_seq_len must be an integer >= 7"),
    (plans(causal=1), "causal must be None or a bool"),
])
def test_bad_arguments_raise_at_draw_time(strategy, match: str) -> None:
    @given(strategy)
    def draw(x) -> None:
        pass

    with pytest.raises(InvalidArgument, match=match):
        draw()


@pytest.mark.parametrize(("make", "match"), [
    (lambda: prime_powers(24, 24), r"^no prime power lies in \[24, 24\]"),
    (lambda: difference_sets(max_q=0), r"^max_q must be an integer >= 2, got 0\b"),
])
def test_bad_arguments_do_not_raise_at_definition(make, match: str) -> None:
    s = make()  # defining does not raise

    @given(s)
    def draw(x) -> None:
        pass

    with pytest.raises(InvalidArgument, match=match):  # drawing does, naming the argument
        draw()
