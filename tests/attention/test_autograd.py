"""Gradients follow the plan and match the reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention import AttentionInputError, attention, last_run_stats, reference_attention
from cqs_design.plans import PlanError, make_plan


@pytest.mark.parametrize("kw", [
    {"causal": True},
    {"window": (3, 2)},
    {"document_ids": torch.tensor([0] * 5 + [1] * 6), "mask_mod": lambda b, h, i, j: j != 2},
])
def test_gradcheck_small_double(make_qkv, kw):
    q, k, v = make_qkv(1, 2, 11, 3, hkv=1, requires_grad=True, seed=2)
    plan = make_plan(11, design=2, causal=kw.get("causal", False), window=kw.get("window"))

    def f(q, k, v):
        return attention(q, k, v, plan=plan, **kw)

    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-7, fast_mode=True)


def test_gradcheck_cross_attention(make_qkv):
    q, k, v = make_qkv(1, 2, 7, 2, lk=9, requires_grad=True, seed=3)  # full (slow) mode
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, causal=True, plan=2),
                                    (q, k, v), eps=1e-6, atol=1e-7)


@given(lq=st.integers(7, 90), cross=st.booleans(), group=st.sampled_from([1, 2, 4]),
       causal=st.booleans(), window=st.none() | st.tuples(st.integers(0, 20), st.none()),
       docs=st.booleans(), levels=st.sampled_from([1, 2]), seed=st.integers(0, 999))
def test_float32_gradients_match_reference(make_qkv, errors, lq, cross, group, causal, window,
                                           docs, levels, seed):
    rel_err, _ = errors
    lk = (lq * 3) // 2 + 1 if cross else lq
    kw = {"causal": causal, "window": window}
    if docs:
        kw["document_ids"] = ((torch.arange(lq) * 3) // lq, (torch.arange(lk) * 3) // lk)
    q64, k64, v64 = make_qkv(1, 2 * group, lq, 8, hkv=2, lk=lk, requires_grad=True, seed=seed)
    dout = torch.randn(1, 2 * group, lq, 8, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed + 1))
    ref = torch.autograd.grad(reference_attention(q64, k64, v64, **kw)[0], (q64, k64, v64), dout)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q64, k64, v64))
    mono = torch.autograd.grad(reference_attention(q32, k32, v32, **kw)[0], (q32, k32, v32),
                               dout.float())
    try:
        plan = make_plan(lq, kv_len=lk, design=2, levels=levels, causal=causal, window=window)
    except PlanError:  # too short for two levels: let attention() choose
        plan = None
    out = attention(q32, k32, v32, plan=plan, **kw)
    got = torch.autograd.grad(out, (q32, k32, v32), dout.float())
    assert last_run_stats().direction == "backward"
    for g, m, r in zip(got, mono, ref, strict=True):
        assert g.dtype == torch.float32
        assert rel_err(g, r) <= 2 * rel_err(m, r) + 1e-5


def test_backward_reports_and_counts_the_same_work(make_qkv):
    q, k, v = make_qkv(1, 2, 40, 4, requires_grad=True)
    out = attention(q, k, v, causal=True, plan=2)
    fwd = last_run_stats()
    out.sum().backward()
    bwd = last_run_stats()
    assert bwd is not fwd
    assert bwd.direction == "backward"
    assert bwd.kernel_calls == fwd.kernel_calls
    assert bwd.pairs_computed == fwd.pairs_computed


def test_rows_without_keys_have_zero_gradient_not_nan(make_qkv):
    q, k, v = make_qkv(1, 1, 20, 4, lk=12, requires_grad=True, seed=5)
    out = attention(q, k, v, causal=True, plan=2)  # rows 0..7 see no key
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    assert q.grad[0, 0, :8].eq(0).all()
    assert q.grad[0, 0, 8:].abs().sum() > 0


def test_out_with_grad_is_refused(make_qkv):
    q, k, v = make_qkv(1, 1, 10, 4, requires_grad=True)
    with pytest.raises(AttentionInputError, match="out"):
        attention(q, k, v, out=torch.empty(1, 1, 10, 4, dtype=torch.float64))
