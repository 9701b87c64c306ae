"""The engine's promises that hold on any device, tested on the CPU (their GPU twins are in
``test_engine_gpu.py``): host memory beyond the inputs and outputs, the budget that runs the
backward too, one report per run, the out-of-memory guard's splits, and answers that stay
right for odd inputs (a non-finite value row in one head, a scale that is 0 in float32).

``device=torch.device("cpu", 0)`` is a compute device other than the inputs' ``"cpu"``: it
takes the streamed branch a CUDA device with host inputs takes.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cqs_attention import attention, last_run_stats, reference_attention
from cqs_attention.errors import MemoryBudgetError
from cqs_attention.testing import call_hook, fail_calls, force_placement
from cqs_design.plans import make_plan

SHIM = torch.device("cpu", 0)


def _qkv(b, h, lq, d, *, hkv=None, lk=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hkv = h if hkv is None else hkv
    lk = lq if lk is None else lk
    return (torch.randn(b, h, lq, d, generator=g, dtype=dtype),
            torch.randn(b, hkv, lk, d, generator=g, dtype=dtype),
            torch.randn(b, hkv, lk, d, generator=g, dtype=dtype))


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# -- host memory: inputs, outputs, and no float32 copy of the output ------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_query_block_forward_never_allocates_a_float32_output_at_home(home_allocations,
                                                                       causal):
    q, k, v = _qkv(1, 2, 96, 8, dtype=torch.float32)
    plan = make_plan(96, schedule="query_blocks", block_q=32, block_kv=24, causal=causal)
    with force_placement("host"):
        out = attention(q, k, v, causal=causal, plan=plan, device=SHIM,
                        memory_budget=1 << 24)
    assert last_run_stats().accumulators == "host"
    assert _rel(out, reference_attention(q, k, v, causal=causal)[0]) < 1e-5
    # every row went straight to the output on its last visit: the (1, 2, 96, 8) float32
    # accumulator of `out` was never allocated at home
    assert home_allocations == []


def test_cqs_forward_allocates_the_home_accumulator_only_when_rows_come_back():
    # a CQS plan visits rows in several tasks: rows written back need the home accumulator,
    # and the result is still exact
    q, k, v = _qkv(1, 2, 91, 8)
    with force_placement("host"):
        out = attention(q, k, v, causal=True, plan=make_plan(91, design=3, causal=True),
                        device=SHIM, memory_budget=1 << 24)
    assert _rel(out, reference_attention(q, k, v, causal=True)[0]) < 1e-10


def test_key_value_block_backward_writes_dk_dv_straight_into_the_gradients(home_allocations):
    q, k, v = _qkv(1, 2, 80, 8, hkv=1)
    plan = make_plan(80, schedule="kv_blocks", block_q=16, block_kv=32, causal=True)
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    with force_placement("host"):
        out = attention(qg, kg, vg, causal=True, plan=plan, device=SHIM, memory_budget=1 << 24)
        del home_allocations[:]  # the forward's
        out.backward(torch.ones_like(out))
    assert last_run_stats().direction == "backward"
    assert last_run_stats().accumulators == "host"
    # only dq (1, 2, 80, 8) had a float32 accumulator at home; dk and dv had none
    assert home_allocations == [(0, (1, 2, 80, 8))]
    q2, k2, v2 = (t.clone().requires_grad_(True) for t in (q, k, v))
    ref, _ = reference_attention(q2, k2, v2, causal=True)
    ref.backward(torch.ones_like(ref))
    for a, b in ((qg.grad, q2.grad), (kg.grad, k2.grad), (vg.grad, v2.grad)):
        assert _rel(a, b) < 1e-10


# -- the budget names what runs both directions --------------------------------------------
def test_budget_error_with_gradients_names_a_budget_that_runs_forward_and_backward():
    q, k, v = _qkv(1, 2, 256, 16, dtype=torch.float32)
    with pytest.raises(MemoryBudgetError) as fwd_err:
        attention(q, k, v, causal=True, device=SHIM, memory_budget=64)
    fwd_min = fwd_err.value.minimum
    attention(q, k, v, causal=True, device=SHIM, memory_budget=fwd_min)  # runs forward
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    with pytest.raises(MemoryBudgetError, match="backward") as both:
        attention(qg, kg, vg, causal=True, device=SHIM, memory_budget=fwd_min)
    need = both.value.minimum
    assert need > fwd_min
    assert f">= {need}" in str(both.value)
    out = attention(qg, kg, vg, causal=True, device=SHIM, memory_budget=need)
    out.sum().backward()
    assert torch.isfinite(qg.grad).all()
    assert last_run_stats().task_bytes_estimate <= need


# -- every report describes its own run -------------------------------------------------------
def test_repeated_single_call_reports_its_own_counters():
    q, k, v = _qkv(1, 2, 64, 8, dtype=torch.float32)
    with fail_calls({0}):  # the call that the fast path remembers ran out of memory once
        attention(q, k, v, causal=True, scale=0.3)
    first = last_run_stats()
    assert first.oom_retries == 1
    attention(q, k, v, causal=True, scale=0.3)
    again = last_run_stats()
    assert again is not first
    assert again.oom_retries == 0
    assert again.refinements == 0
    assert again.oom_events == []
    assert sum(again.kernel_calls.values()) == 1
    assert again.schedule == "whole"
    assert again.design_v is None  # no CQS design in a single call


def test_reports_show_a_design_only_for_cqs_plans():
    q, k, v = _qkv(1, 2, 91, 8)
    attention(q, k, v, plan=make_plan(91, schedule="query_blocks", block_q=32, block_kv=32))
    rep = last_run_stats()
    assert (rep.design_v, rep.design_k, rep.levels) == (None, None, None)
    attention(q, k, v, plan=3)
    rep = last_run_stats()
    assert (rep.design_v, rep.design_k) == (13, 4)
    assert rep.peak_device_bytes is None  # not measured on the CPU, never a made-up number


# -- the guard halves what is too long, not rows down to one ---------------------------------
def test_guard_splits_keys_when_keys_are_what_does_not_fit():
    q, k, v = _qkv(1, 1, 64, 4)
    shapes = []

    def too_many_keys(call):
        if call.lk > 16:
            raise torch.cuda.OutOfMemoryError("more than 16 keys")
        shapes.append((call.lq, call.lk))

    with call_hook(too_many_keys):
        out = attention(q, k, v, plan=make_plan(64, schedule="query_blocks", block_q=64,
                                                block_kv=64), device=SHIM,
                        memory_budget=1 << 24)
    rep = last_run_stats()
    assert _rel(out, reference_attention(q, k, v)[0]) < 1e-12
    # the single call and its retry; then, re-planned with accumulators, splits of the longer
    # axis (keys on a tie, then alternating): 64x64 -> 64x32 -> 32x32 -> 32x16, 1 + 1 + 1 + 2
    # + 4 errors; before, rows were halved down to single rows (511 errors)
    assert rep.oom_retries <= 9, rep.oom_retries
    assert min(lq for lq, _ in shapes) >= 16
    assert all(lk <= 16 for _, lk in shapes)


# -- odd inputs, right answers ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_non_finite_value_row_in_one_head_leaves_the_other_heads_alone(dtype):
    q, k, v = _qkv(2, 3, 12, 4, dtype=dtype)
    bad = v.clone()
    bad[0, 0, 5, 1] = float("inf")
    bad[1, 2, 7, 0] = float("nan")
    ref, _ = reference_attention(q, k, v, causal=True)
    for out in (reference_attention(q, k, bad, causal=True)[0],
                attention(q, k, bad, causal=True)):
        others = torch.ones(2, 3, dtype=torch.bool)
        others[0, 0] = others[1, 2] = False
        assert torch.equal(out[others], ref[others])  # not even rounding differs
        assert torch.isfinite(out[0, 0, :5]).all()  # rows that cannot see key 5
        assert not torch.isfinite(out[0, 0, 5:, 1]).any()  # rows that see it


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_positive_scale_gives_the_mean_of_the_visible_values(dtype):
    q, k, v = _qkv(1, 2, 33, 8, dtype=dtype)
    out = attention(q, k, v, causal=True, scale=3.7e-236)  # 0 in float32
    mean = v.double().cumsum(2) / torch.arange(1, 34, dtype=torch.float64).view(1, 1, -1, 1)
    assert torch.isfinite(out).all()
    assert _rel(out, mean) < (1e-6 if dtype == torch.float32 else 1e-2)


# -- the cost model counts the pairs a mask allows, exactly -----------------------------------
@settings(max_examples=30)
@given(st.integers(5, 70), st.integers(5, 70), st.booleans(),
       st.sampled_from([None, (3, 0), (None, 2), (5, 5), (0, None), (2, 7)]),
       st.sampled_from(["cqs", "query_blocks", "kv_blocks"]), st.integers(2, 9))
def test_allowed_pairs_match_the_mask(lq, lk, causal, window, sched, blk):
    from cqs_attention.engine.placement import Dims, allowed_pairs
    from cqs_attention.engine.schedule import plan_rectangles
    from cqs_attention.masks import make_mask_spec, mask_matrix
    from cqs_design.plans import PlanError

    kw = {"kv_len": lk, "causal": causal, "window": window}
    try:
        plan = (make_plan(lq, design=2, **kw) if sched == "cqs" else
                make_plan(lq, schedule=sched, block_q=blk, block_kv=blk + 1, **kw))
    except PlanError:
        assume(False)
    rects = plan_rectangles(plan)
    got = allowed_pairs(rects, Dims(1, 1, 1, lq, lk, 4, torch.float32), causal=causal,
                        window=window)
    m = mask_matrix(make_mask_spec(lq, lk, batch=1, heads=1, causal=causal, window=window))
    m = torch.ones(lq, lk, dtype=torch.bool) if m is None else m[0, 0]
    want = [int(m[a:b, c:e].sum()) for a, b, c, e in zip(rects.q0.tolist(), rects.q1.tolist(),
                                                         rects.k0.tolist(), rects.k1.tolist(),
                                                         strict=True)]
    assert got.tolist() == want


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_tiny_positive_scale_on_the_gpu(causal):
    """FA4 and cuDNN apply the scale in float32, where 3.7e-236 is 0: masked calls go to the
    reference kernel, unmasked ones give the mean of every value either way."""
    q, k, v = (t.cuda() for t in _qkv(1, 2, 300, 64, dtype=torch.bfloat16))
    out = attention(q, k, v, causal=causal, scale=3.7e-236)
    n = torch.arange(1, 301, dtype=torch.float64, device="cuda").view(1, 1, -1, 1)
    vd = v.double()
    mean = vd.cumsum(2) / n if causal else vd.mean(2, keepdim=True).expand_as(vd)
    assert torch.isfinite(out.float()).all()
    assert _rel(out, mean) < 1e-2
