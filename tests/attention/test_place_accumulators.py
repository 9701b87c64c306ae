"""Where accumulators live decides which footprint model sizes the plan (api.place_accumulators)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cqs_attention.api import place_accumulators, resolve_plan
from cqs_attention.errors import MemoryBudgetError
from cqs_attention.executor import estimate_plan_bytes
from cqs_attention.masks import make_mask_spec

L, H, D = 2048, 4, 64


def _estimate_for(causal):
    spec = make_mask_spec(L, L, batch=1, heads=H, causal=causal)

    def estimate_for(host):
        def estimate(plan):
            return estimate_plan_bytes(plan, batch=1, heads=H, kv_heads=H, head_dim=D,
                                       dtype=torch.bfloat16, mask=spec, tasks_alive=2,
                                       merge_on_device=not host, query_streamed=host)
        return estimate
    return estimate_for


ACC = 1 * H * L * (D + 1) * 4  # float32 out + lse


def _fits(estimate, causal, room):
    """Whether some plan's estimate fits ``room`` bytes."""
    if room <= 0:
        return False
    try:
        resolve_plan(None, L, L, causal=causal, window=None, memory_budget=room,
                     estimate=estimate)
    except MemoryBudgetError:
        return False
    return True


@settings(max_examples=15, deadline=None)
@given(frac=st.floats(0.02, 3.0), causal=st.booleans())
def test_streaming_choice_is_consistent_with_its_model(frac, causal):
    qkv = 3 * H * L * D * 2
    budget = int(frac * qkv)
    est = _estimate_for(causal)
    device_room = budget - ACC if 2 * ACC <= budget else 0
    fits_host = _fits(est(True), causal, budget)
    if not fits_host and not _fits(est(False), causal, device_room):
        with pytest.raises(MemoryBudgetError, match=str(budget)):
            place_accumulators(None, L, L, causal=causal, window=None, budget=budget,
                               acc_bytes=ACC, streams=True, estimate_for=est)
        return
    plan, source, host = place_accumulators(None, L, L, causal=causal, window=None,
                                            budget=budget, acc_bytes=ACC, streams=True,
                                            estimate_for=est)
    assert source == "budget"
    if host:
        assert est(True)(plan) <= budget
        assert not _fits(est(False), causal, device_room)  # device accumulators: no plan
    else:
        assert est(False)(plan) + ACC <= budget


def test_accumulators_larger_than_the_budget_stay_on_the_host():
    est = _estimate_for(True)
    _plan, _src, host = place_accumulators(None, L, L, causal=True, window=None,
                                           budget=ACC // 2, acc_bytes=ACC, streams=True,
                                           estimate_for=est)
    assert host


def test_without_streaming_or_budget_accumulators_stay_on_the_device():
    est = _estimate_for(False)
    for streams, budget in ((False, 10 * ACC), (True, None)):
        _p, _s, host = place_accumulators(None, L, L, causal=False, window=None,
                                          budget=budget, acc_bytes=ACC, streams=streams,
                                          estimate_for=est)
        assert not host


@pytest.mark.parametrize("design", [2, 8])
def test_a_given_design_keeps_accumulators_where_they_fit_beside_it(design):
    est = _estimate_for(False)
    plan, source, host = place_accumulators(design, L, L, causal=False, window=None,
                                            budget=10 * ACC, acc_bytes=ACC, streams=True,
                                            estimate_for=est)
    assert source == "design"
    assert host == (est(False)(plan) + ACC > 10 * ACC)
    tight = est(False)(plan) + ACC - 1
    assert place_accumulators(design, L, L, causal=False, window=None, budget=tight,
                              acc_bytes=ACC, streams=True, estimate_for=est)[2]


def test_a_hopeless_budget_stops_before_huge_designs_and_says_so():
    from cqs_attention import attention
    from cqs_attention.api import _MAX_SCAN_RECTANGLES, _plan_rectangles

    q = torch.randn(1, 2, 1 << 13, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(MemoryBudgetError, match=r"were not tried: pass plan=") as info:
        attention(q, q, q, memory_budget=1000)
    smallest = int(str(info.value).split("pass memory_budget >= ")[1].split(";")[0])
    assert smallest > 1000
    order = int(str(info.value).split("finer than q=")[1].split(" ")[0])
    assert _plan_rectangles(order) > _MAX_SCAN_RECTANGLES
    assert "design q=" in str(info.value)  # the finest design tried is named
