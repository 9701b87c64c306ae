"""The lower bound on the bytes a streamed run moves (``engine/placement/traffic.py``): exact
compulsory terms, never above what a real schedule moves (an explicit query-block schedule of
the same model, and the engine's own runs on the CPU), and above the compulsory bytes when
the budget is small against one head's rows."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention import attention, last_run_stats
from cqs_attention.engine.placement.traffic import min_link_bytes, reuse_load_words
from cqs_attention.errors import MemoryBudgetError


def test_compulsory_bytes_forward_and_backward():
    kw = {"batch": 2, "heads": 3, "q_len": 10, "kv_len": 12, "head_dim": 4, "elem": 2,
          "budget": None, "causal": False, "kv_heads": 1, "v_dim": 6}
    f = min_link_bytes(backward=False, **kw)
    q, k, v, o = 2 * 3 * 10 * 4 * 2, 2 * 12 * 4 * 2, 2 * 12 * 6 * 2, 2 * 3 * 10 * 6 * 2
    assert (f.bytes_in, f.bytes_out, f.reuse_in, f.kind) == (q + k + v, o, 0, "compulsory")
    b = min_link_bytes(backward=True, **kw)
    assert (b.bytes_in, b.bytes_out) == (q + k + v + o, q + k + v)  # + dout; dq, dk, dv
    assert b.total == b.bytes_in + b.bytes_out


@pytest.mark.parametrize(("kw", "match"), [
    ({"heads": 0}, "heads"), ({"elem": 0}, "elem"), ({"budget": 0}, "budget"),
    ({"causal": True, "q_len": 20}, "q_len <= kv_len")])
def test_bad_arguments_are_named(kw, match):
    args = {"batch": 1, "heads": 1, "q_len": 8, "kv_len": 8, "head_dim": 4, "elem": 2,
            "budget": 64, "causal": False, "backward": False}
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        min_link_bytes(**args)


def test_reuse_term_grows_as_the_budget_shrinks():
    kw = {"batch": 1, "heads": 1, "q_len": 1 << 14, "kv_len": 1 << 14, "head_dim": 64,
          "elem": 2, "causal": False, "backward": False}
    rows = [min_link_bytes(budget=m, **kw) for m in (1 << 14, 1 << 16, 1 << 18, 1 << 21)]
    reuse = [r.reuse_in for r in rows]
    assert reuse == sorted(reuse, reverse=True)
    assert reuse[0] > reuse[-1]
    assert rows[0].kind == "reuse"
    assert rows[0].bytes_in > 20 * rows[0].compulsory_in
    assert rows[-1].kind == "compulsory"
    # causal halves the pairs, so the forced loads are about half
    causal = min_link_bytes(budget=1 << 14, **{**kw, "causal": True})
    assert 0.4 < causal.reuse_in / rows[0].reuse_in < 0.6


def _query_block_loads(n: int, d: int, dv: int, words: int) -> int | None:
    """Words loaded by an explicit schedule of the bound's model, one head: b query rows with
    their output, running max and sum resident, key and value rows streamed one at a time
    (plus b scores); None when not even one query row fits."""
    b = (words - d - dv) // (d + dv + 3)
    if b < 1:
        return None
    b = min(b, n)
    return n * d + math.ceil(n / b) * n * (d + dv)


@given(n=st.integers(1, 5000), d=st.integers(1, 256), dv=st.integers(1, 256),
       words=st.integers(1, 1 << 22), heads=st.integers(1, 4), causal=st.booleans())
def test_bound_never_above_an_explicit_schedule(n, d, dv, words, heads, causal):
    loads = _query_block_loads(n, d, dv, words)
    if loads is None:
        return
    b = min_link_bytes(batch=1, heads=heads, q_len=n, kv_len=n, head_dim=d, v_dim=dv,
                       elem=2, budget=2 * words, causal=causal, backward=False)
    assert b.bytes_in <= 2 * heads * loads
    assert b.bytes_out == 2 * heads * n * dv  # written once: what the schedule writes


def test_reuse_loads_within_a_small_factor_of_an_explicit_schedule():
    # one head, 32K rows of 64, 64 KiB words: the forced loads are within a small factor of
    # what the query-block schedule moves (the bound is not vacuous)
    n, d, words = 1 << 15, 64, 1 << 15
    lower = reuse_load_words(n * n, d, words)
    upper = _query_block_loads(n, d, d, words)
    assert 0 < upper / 8 < lower <= upper


@given(L=st.integers(16, 160), heads=st.integers(1, 2), head_dim=st.sampled_from([2, 4, 8]),
       causal=st.booleans(), backward=st.booleans(), fraction=st.floats(0.25, 4.0),
       seed=st.integers(0, 3))
def test_bound_never_above_the_engines_runs(L, heads, head_dim, causal, backward, fraction,
                                           seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(1, heads, L, head_dim, generator=g, dtype=torch.bfloat16)
                     for _ in range(4))
    budget = max(256, int(3 * q.numel() * 2 * fraction))
    for _ in range(12):  # the smallest budgets fit no plan: double until one does
        try:
            if backward:
                qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
                attention(qq, kk, vv, causal=causal, memory_budget=budget,
                          device="cpu").backward(dout)
            else:
                attention(q, k, v, causal=causal, memory_budget=budget, device="cpu")
            break
        except MemoryBudgetError:
            budget *= 2
    else:
        pytest.fail(f"no budget up to {budget} bytes fits")
    rep = last_run_stats()
    assert rep.direction == ("backward" if backward else "forward")
    lb = min_link_bytes(batch=1, heads=heads, q_len=L, kv_len=L, head_dim=head_dim, elem=2,
                        budget=budget, causal=causal, backward=backward)
    assert rep.bytes_to_device >= lb.bytes_in
    assert rep.bytes_from_device >= lb.bytes_out


def test_one_call_moves_exactly_the_compulsory_bytes():
    q = torch.randn(1, 2, 64, 8, dtype=torch.bfloat16)
    attention(q, q, q, memory_budget=1 << 30, device="cpu")
    rep = last_run_stats()
    assert rep.schedule == "whole"
    lb = min_link_bytes(batch=1, heads=2, q_len=64, kv_len=64, head_dim=8, elem=2,
                        budget=1 << 30, causal=False, backward=False)
    assert rep.bytes_to_device == lb.bytes_in  # q, k, v once: the bound is met
    assert rep.bytes_from_device == lb.bytes_out + 2 * 64 * 4  # out, and the float32 lse
