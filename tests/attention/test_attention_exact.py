"""attention() equals the float64 reference for every plan shape, mask kind and GQA ratio."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from cqs_attention import attention, last_run_stats, reference_attention
from cqs_design.difference_sets import DifferenceSet
from cqs_design.plans import PlanError, make_plan

MASK_MODS = {
    "stripes": lambda b, h, i, j: (i + 2 * j + h) % 3 != 0,
    "prefix_lm": lambda b, h, i, j: (j <= i) | (j < 5),
    "batch_dependent": lambda b, h, i, j: (j + b) % 4 != 0,
}


def _docs(draw, n):
    cuts = sorted(draw(st.lists(st.integers(1, n - 1), max_size=4))) if n > 1 else []
    return torch.tensor([sum(c <= t for c in cuts) for t in range(n)])


@st.composite
def cases(draw):
    b = draw(st.integers(1, 2))
    hkv = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2, 3]))
    d = draw(st.sampled_from([1, 3, 8, 16]))
    lq = draw(st.integers(1, 120))
    lk = lq if draw(st.booleans()) else draw(st.integers(1, 120))
    masks = draw(st.sets(st.sampled_from(["causal", "window", "docs", "mod"]), max_size=3))
    kw = {}
    if "causal" in masks:
        kw["causal"] = True
    if "window" in masks:
        kw["window"] = draw(st.tuples(st.none() | st.integers(0, 30),
                                      st.none() | st.integers(0, 30)))
    if "docs" in masks:
        kw["document_ids"] = _docs(draw, lq) if lq == lk else (_docs(draw, lq), _docs(draw, lk))
    if "mod" in masks:
        kw["mask_mod"] = MASK_MODS[draw(st.sampled_from(sorted(MASK_MODS)))]
    plan_kind = draw(st.sampled_from(["auto", "design", "levels2", "hybrid"]))
    return b, hkv, group, d, lq, lk, kw, plan_kind, draw(st.integers(0, 2**16))


def _plan(kind, lq, lk, kw, data_seed):
    causal, window = kw.get("causal", False), kw.get("window")
    n = min(lq, lk)
    try:
        if kind == "auto":
            return None
        if kind == "design":
            designs = [2, DifferenceSet(3, (0, 1)), DifferenceSet(7, (1, 2, 4)),
                       DifferenceSet(7, (0, 1, 3)).multiply(3)]
            if n >= 13:
                designs.append(3)
            if n >= 21:
                designs.append(DifferenceSet(21, (0, 1, 4, 14, 16)).translate(5))
            return make_plan(lq, kv_len=lk, design=designs[data_seed % len(designs)],
                             causal=causal, window=window)
        if kind == "levels2":
            return make_plan(lq, kv_len=lk, design=2, levels=2, causal=causal, window=window)
        plan = make_plan(lq, kv_len=lk, design=2, causal=causal, window=window)
        ids = [t.id for t in plan.tasks][:: 2 + data_seed % 2]
        return plan.refine(ids, 2)
    except PlanError:
        assume(False)


@given(case=cases())
def test_float64_matches_reference_to_1e10(make_qkv, errors, case):
    _rel_err, lse_err = errors
    b, hkv, group, d, lq, lk, kw, kind, seed = case
    plan = _plan(kind, lq, lk, kw, seed)
    q, k, v = make_qkv(b, hkv * group, lq, d, hkv=hkv, lk=lk, seed=seed)
    out, lse = attention(q, k, v, plan=plan, return_lse=True, **kw)
    ref, ref_lse = reference_attention(q, k, v, **kw)
    assert out.dtype == torch.float64
    assert (out - ref).abs().max().item() <= 1e-10
    assert lse_err(lse, ref_lse) <= 1e-10
    assert not torch.isnan(out).any()
    assert torch.equal(out[torch.isneginf(ref_lse)], torch.zeros_like(out[torch.isneginf(
        ref_lse)]))


@given(case=cases())
def test_float32_matches_reference_to_1e5(make_qkv, errors, case):
    rel_err, lse_err = errors
    b, hkv, group, d, lq, lk, kw, kind, seed = case
    plan = _plan(kind, lq, lk, kw, seed)
    q, k, v = make_qkv(b, hkv * group, lq, d, hkv=hkv, lk=lk, seed=seed)
    ref, ref_lse = reference_attention(q, k, v, **kw)
    out, lse = attention(q.float(), k.float(), v.float(), plan=plan, return_lse=True, **kw)
    assert out.dtype == torch.float32
    assert lse.dtype == torch.float32
    assert rel_err(out, ref) <= 1e-5
    assert lse_err(lse, ref_lse) <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_no_worse_than_monolithic(make_qkv, errors, dtype):
    rel_err, _ = errors
    q, k, v = make_qkv(1, 4, 90, 16, hkv=2, seed=3)
    ref, _ = reference_attention(q, k, v, causal=True)
    lo = [t.to(dtype) for t in (q, k, v)]
    mono, _ = reference_attention(*lo, causal=True)
    out = attention(*lo, causal=True, plan=2)
    assert out.dtype == dtype
    assert rel_err(out, ref) <= max(2 * rel_err(mono, ref), 2e-2)


def test_masked_out_blocks_are_never_computed(make_qkv):
    """Documents empty many chunk pairs the plan keeps: they must not reach a kernel."""
    q, k, v = make_qkv(1, 2, 70, 4, seed=11)
    docs = torch.arange(70) // 10  # 7 documents of 10 tokens = exactly the 7 chunks
    plan = make_plan(70, design=2)
    out = attention(q, k, v, document_ids=docs, plan=plan)
    rep = last_run_stats()
    assert rep.blocks_empty == 42  # 49 chunk pairs, only the 7 diagonal ones are allowed
    assert rep.blocks_full == 7
    assert rep.blocks_partial == 0
    assert rep.pairs_computed == 7 * 100
    assert rep.tasks == 7
    ref, _ = reference_attention(q, k, v, document_ids=docs)
    assert (out - ref).abs().max() < 1e-12


def test_causal_query_chunk_makes_one_kernel_call(make_qkv):
    q, k, v = make_qkv(1, 1, 70, 4, seed=1)
    plan = make_plan(70, design=2, causal=True)
    attention(q, k, v, causal=True, plan=plan)
    rep = last_run_stats()
    # the diagonal block rides with its query chunk's full blocks: one call per query chunk
    query_chunks = {(t.id, r.q_start) for t in plan.tasks for r in t.rectangles}
    assert sum(rep.kernel_calls.values()) == len(query_chunks)
    assert len(query_chunks) < sum(len(t.rectangles) for t in plan.tasks)
    assert rep.pairs_computed == sum((r.q_end - r.q_start) * (r.k_end - r.k_start)
                                     for t in plan.tasks for r in t.rectangles)


def test_default_plan_is_reported(make_qkv):
    """Without a budget everything fits: the planner runs one kernel call, no accumulators."""
    q, k, v = make_qkv(1, 2, 60, 4)
    attention(q, k, v)
    rep = last_run_stats()
    assert rep.plan_source == "whole"
    assert rep.plan.seq_len == 60
    assert rep.accumulators == "none"
    assert rep.kernel_calls == {"reference": 1}
    assert "predicted" in rep.chosen_because


@pytest.mark.parametrize(("lq", "lk"), [(3, 3), (6, 20), (20, 4), (1, 1)])
def test_sequences_shorter_than_any_design_fall_back(make_qkv, lq, lk):
    q, k, v = make_qkv(1, 2, lq, 4, lk=lk, seed=lq)
    out, lse = attention(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v, causal=True)
    assert last_run_stats().plan_source == "whole"
    assert (out - ref).abs().max() < 1e-12
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))


def test_numpy_inputs_give_torch_output(make_qkv):
    q, k, v = make_qkv(1, 2, 30, 4, dtype=torch.float32)
    out = attention(q.numpy(), k.numpy(), v.numpy(), causal=True)
    ref, _ = reference_attention(q, k, v, causal=True)
    assert isinstance(out, torch.Tensor)
    assert torch.allclose(out, ref, atol=1e-6)


def test_out_argument_is_filled_in_place(make_qkv):
    q, k, v = make_qkv(1, 2, 30, 4)
    buf = torch.full((1, 2, 30, 4), 7.0, dtype=torch.float64)
    res = attention(q, k, v, out=buf, window=(3, 3))
    ref, _ = reference_attention(q, k, v, window=(3, 3))
    assert res is buf
    assert (buf - ref).abs().max() < 1e-12


def test_nan_in_one_query_row_stays_in_that_row(make_qkv):
    q, k, v = make_qkv(1, 1, 40, 4, seed=4)
    q[0, 0, 17, 2] = float("nan")
    out = attention(q, k, v, causal=True)
    ref, _ = reference_attention(q, k, v, causal=True)
    assert torch.isnan(out[0, 0, 17]).all()
    rows = torch.ones(40, dtype=torch.bool)
    rows[17] = False
    assert torch.isfinite(out[0, 0, rows]).all()
    assert torch.equal(torch.isnan(out), torch.isnan(ref))


def test_inf_key_poisons_exactly_the_rows_that_attend_it(make_qkv):
    q, k, v = make_qkv(1, 1, 40, 4, seed=6)
    k[0, 0, 25] = float("inf")
    out = attention(q, k, v, causal=True)
    ref, _ = reference_attention(q, k, v, causal=True)
    assert torch.isfinite(out[0, 0, :25]).all()  # rows before 25 never see key 25
    assert not torch.isfinite(out[0, 0, 25:]).all(-1).any()
    assert torch.equal(torch.isfinite(out), torch.isfinite(ref))
