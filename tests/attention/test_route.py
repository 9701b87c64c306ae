"""One route from ``attention()`` to the kernel (issue 20): the single kernel call is a
one-step plan the driver runs under the same guard, planning decisions are cached once (and
hold no run state), and every report is the planner's summary plus the run's own counters.

``device=torch.device("cpu", 0)`` is a compute device other than the inputs' ``"cpu"``: it
takes the streamed branch a CUDA device with host inputs takes.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cqs_attention import attention, last_run_stats, reference_attention
from cqs_attention.engine.placement import DECISIONS
from cqs_attention.errors import MemoryBudgetError
from cqs_attention.testing import fail_calls, force_placement, task_hook
from cqs_design.plans import make_plan

SHIM = torch.device("cpu", 0)


def _qkv(lq, *, lk=None, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    lk = lq if lk is None else lk
    return [torch.randn(1, 2, n, 8, generator=g, dtype=torch.float64).requires_grad_(
        requires_grad) for n in (lq, lk, lk)]


def _grads(q, k, v, dout, **kw):
    for t in (q, k, v):
        t.grad = None
    attention(q, k, v, **kw).backward(dout)
    return [t.grad.clone() for t in (q, k, v)]


def _reference_grads(q, k, v, dout, **kw):
    qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    reference_attention(qr, kr, vr, **kw)[0].backward(dout)
    return [qr.grad, kr.grad, vr.grad]


# -- the single call goes through the driver and its guard -----------------------------------
def test_single_call_is_retried_like_any_step():
    q, k, v = _qkv(40)
    with fail_calls({0}) as failed:
        out = attention(q, k, v, causal=True)
    rep = last_run_stats()
    assert failed == [0]
    assert rep.accumulators == "none"
    assert rep.accumulator_device == "none (one kernel call)"
    assert rep.oom_retries == 1
    assert rep.oom_events == [(0, 0)]
    assert sum(rep.kernel_calls.values()) == 1  # the retry; the failed call never ran
    assert torch.allclose(out, reference_attention(q, k, v, causal=True)[0], atol=1e-12)


def test_single_call_that_fails_again_switches_to_accumulators():
    q, k, v = _qkv(40)
    with fail_calls({0, 1}):
        out, lse = attention(q, k, v, causal=True, return_lse=True)
    rep = last_run_stats()
    assert rep.accumulators == "none"  # what the planner chose first
    assert rep.accumulator_device == "cpu"  # where the run kept them after the switch
    assert rep.oom_retries == 2
    assert rep.tasks == 1  # the plan that ran, not the abandoned one as well
    assert rep.blocks_full + rep.blocks_partial + rep.blocks_empty == 1
    ref, ref_lse = reference_attention(q, k, v, causal=True)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(lse, ref_lse, atol=1e-12)


def test_single_backward_call_that_fails_again_switches_to_accumulators():
    q, k, v = _qkv(40, requires_grad=True)
    dout = torch.randn(q.shape, dtype=q.dtype, generator=torch.Generator().manual_seed(1))
    want = _reference_grads(q, k, v, dout, causal=True)
    out = attention(q, k, v, causal=True)
    assert last_run_stats().accumulators == "none"
    with fail_calls({0, 1}):
        out.backward(dout)
    rep = last_run_stats()
    assert rep.direction == "backward"
    assert rep.accumulators == "none"
    assert rep.accumulator_device == "cpu"
    assert rep.oom_retries == 2
    for got, ref in zip((q.grad, k.grad, v.grad), want, strict=True):
        assert torch.allclose(got, ref, atol=1e-12)


def test_the_switch_rechecks_the_budget():
    q, k, v = _qkv(64)
    whole = make_plan(64, schedule="query_blocks", block_q=64, block_kv=64)  # one rectangle
    attention(q, k, v, plan=whole, device=SHIM, memory_budget=1 << 30)
    assert last_run_stats().accumulators == "none"
    with force_placement(prefetch=False):
        # a budget that fits the one call exactly: the plan with accumulators does not fit it
        attention(q, k, v, plan=whole, device=SHIM, memory_budget=1 << 30)
        budget = last_run_stats().task_bytes_estimate
        attention(q, k, v, plan=whole, device=SHIM, memory_budget=budget)
        assert last_run_stats().accumulators == "none"
        with fail_calls({0, 1}), pytest.raises(MemoryBudgetError,
                                               match="one kernel call ran out"):
            attention(q, k, v, plan=whole, device=SHIM, memory_budget=budget)
    # with room for accumulators, the switch runs and the answer is exact
    with fail_calls({0, 1}):
        out = attention(q, k, v, plan=whole, device=SHIM, memory_budget=1 << 30)
    assert last_run_stats().accumulator_device in ("cpu:0", "cpu (merged on cpu:0)")
    assert torch.allclose(out, reference_attention(q, k, v)[0], atol=1e-12)


def test_one_call_needs_a_rectangle_covering_the_whole_matrix():
    """A plan of one rectangle that leaves rows out (they attend no key) runs with
    accumulators: the one call's outputs would not be the whole result."""
    q, k, v = _qkv(32, lk=1)
    plan = make_plan(32, kv_len=1, schedule="query_blocks", block_q=16, block_kv=1,
                     window=(None, 0))
    assert len(plan.tasks) == 1
    assert len(plan.tasks[0].rectangles) == 1
    for grad in (False, True):
        qg, kg, vg = (t.clone().requires_grad_(grad) for t in (q, k, v))
        out, lse = attention(qg, kg, vg, window=(None, 0), plan=plan, return_lse=True)
        assert last_run_stats().accumulators != "none"
        ref, ref_lse = reference_attention(q, k, v, window=(None, 0))
        assert torch.allclose(out, ref, atol=1e-12)
        assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
        if grad:
            out.sum().backward()
            assert last_run_stats().accumulators != "none"
            assert torch.isfinite(qg.grad).all()


def test_single_call_runs_the_task_hooks_like_any_task():
    q, k, v = _qkv(24)
    seen = []
    with task_hook(lambda tid, attempt: seen.append((tid, attempt))):
        attention(q, k, v)
    assert seen == [(0, 0)]


# -- one cache of decisions, no run state ---------------------------------------------------
def test_repeated_calls_share_the_plan_summary_and_never_the_counters():
    q, k, v = _qkv(48)
    DECISIONS.clear()
    attention(q, k, v, causal=True)
    first = last_run_stats()
    attention(q, k, v, causal=True)
    again = last_run_stats()
    assert len(DECISIONS) == 1
    assert again.summary is first.summary  # decided once
    assert again.counters is not first.counters
    assert first.kernel_calls == again.kernel_calls == {"reference": 1}
    assert again.device == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.summary.schedule = "cqs"  # type: ignore[misc]


def test_cached_decisions_are_keyed_by_the_mask():
    """The classified steps of a one-call plan are part of the decision for band masks only:
    a document-id or mask_mod call never reuses another call's masks."""
    q, k, v = _qkv(32)
    docs_a = torch.tensor([0] * 16 + [1] * 16)
    docs_b = torch.tensor([0] * 8 + [1] * 24)
    for docs in (docs_a, docs_b, docs_a):
        out = attention(q, k, v, document_ids=docs)
        ref, _ = reference_attention(q, k, v, document_ids=docs)
        assert torch.allclose(out, ref, atol=1e-12)
    for shift in (0, 3, 0):
        def mod(b, h, i, j, shift=shift):
            return j <= i + shift
        out = attention(q, k, v, mask_mod=mod)
        ref, _ = reference_attention(q, k, v, mask_mod=mod)
        assert torch.allclose(out, ref, atol=1e-12)
    for window in ((4, 0), (8, 2), (4, 0)):
        out = attention(q, k, v, window=window)
        assert torch.allclose(out, reference_attention(q, k, v, window=window)[0], atol=1e-12)


def test_a_given_plan_is_planned_by_content():
    q, k, v = _qkv(49)
    DECISIONS.clear()
    for _ in range(2):  # two plan objects of the same content: one decision
        attention(q, k, v, causal=True, plan=make_plan(49, design=2, causal=True))
    plans = [key for key in DECISIONS._lru if key[0] == "plan"]
    assert len(plans) == 1
    attention(q, k, v, causal=True, plan=make_plan(49, design=3, causal=True))
    assert len([key for key in DECISIONS._lru if key[0] == "plan"]) == 2
    assert last_run_stats().design_v == 13


def test_forward_and_backward_reports_come_from_their_own_choices():
    q, k, v = _qkv(64, requires_grad=True)
    out = attention(q, k, v, causal=True, device=SHIM, memory_budget=40_000)
    fwd = last_run_stats()
    out.sum().backward()
    bwd = last_run_stats()
    assert (fwd.direction, bwd.direction) == ("forward", "backward")
    assert fwd.summary is not bwd.summary
    assert fwd.schedule == "query_blocks"
    assert bwd.schedule in ("kv_blocks", "cqs")  # key/value-stationary
    assert fwd.memory_budget == bwd.memory_budget == 40_000
    assert bwd.task_bytes_estimate <= 40_000
