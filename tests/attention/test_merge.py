"""merge_partials: exact, stable, -inf safe."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention.merge import merge_partials, merge_partials_
from cqs_attention.reference import reference_attention


@given(split=st.integers(1, 29), seed=st.integers(0, 2**16), causal=st.booleans())
def test_merging_two_key_halves_equals_full_attention(make_qkv, errors, split, seed, causal):
    rel_err, lse_err = errors
    q, k, v = make_qkv(1, 2, 30, 4, seed=seed)
    ref, ref_lse = reference_attention(q, k, v, causal=causal)
    # halves of the keys, with the causal mask expressed through mask_mod in global indices
    mm = (lambda b, h, i, j: j <= i) if causal else None
    o1, l1 = reference_attention(q, k[:, :, :split], v[:, :, :split],
                                 mask_mod=None if mm is None else (lambda b, h, i, j: j <= i))
    o2, l2 = reference_attention(q, k[:, :, split:], v[:, :, split:],
                                 mask_mod=None if mm is None else
                                 (lambda b, h, i, j: j + split <= i))
    out, lse = merge_partials(o1, l1, o2, l2)
    assert rel_err(out, ref) < 1e-12
    assert lse_err(lse, ref_lse) < 1e-12


def test_empty_rows_stay_zero_and_neg_inf_without_nan():
    ninf = float("-inf")
    out, lse = merge_partials(torch.zeros(1, 2, 3), torch.tensor([[ninf, 0.5]]),
                              torch.ones(1, 2, 3), torch.tensor([[ninf, ninf]]))
    assert not torch.isnan(out).any()
    assert out[0, 0].eq(0).all()
    assert lse[0, 0].item() == ninf
    assert lse[0, 1].item() == 0.5
    assert out[0, 1].eq(0).all()


def test_huge_lse_does_not_overflow():
    out, lse = merge_partials(torch.full((1, 2), 2.0), torch.tensor([1000.0]),
                              torch.full((1, 2), 4.0), torch.tensor([1000.0]))
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.full((1, 2), 3.0), atol=1e-3)  # float32 at |lse|=1000
    assert abs(lse.item() - (1000.0 + torch.log(torch.tensor(2.0)).item())) < 1e-3


def test_in_place_merge_matches_functional_on_a_slice():
    g = torch.Generator().manual_seed(3)
    acc = torch.randn(2, 6, 4, generator=g)
    acc_lse = torch.randn(2, 6, generator=g)
    acc_lse[0, 1] = float("-inf")
    acc[0, 1] = 0
    o = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    lse = torch.randn(2, 3, generator=g, dtype=torch.float64)
    want_o, want_l = merge_partials(acc[:, 2:5], acc_lse[:, 2:5], o, lse)
    before = acc[:, :2].clone()
    merge_partials_(acc[:, 2:5], acc_lse[:, 2:5], o, lse)
    assert torch.allclose(acc[:, 2:5], want_o)
    assert torch.allclose(acc_lse[:, 2:5], want_l)
    assert torch.equal(acc[:, :2], before)
    assert acc.dtype == torch.float32


def test_float64_accumulates_in_float64():
    o, lse = merge_partials(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1,
                            dtype=torch.float64), torch.ones(1, 1), torch.zeros(1))
    assert o.dtype == torch.float64
    assert lse.dtype == torch.float64
