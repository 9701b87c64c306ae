"""reference_attention against torch's full attention and the mask definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cqs_attention import AttentionInputError, reference_attention


def _explicit(q, k, v, allowed, scale):
    """Independent oracle: softmax over explicitly masked scores (float64)."""
    g = q.shape[1] // k.shape[1]
    kk = k.double().repeat_interleave(g, 1)
    vv = v.double().repeat_interleave(g, 1)
    s = q.double() @ kk.transpose(-1, -2) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ vv, lse


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hkv", [1, 2, 4])
def test_matches_sdpa_float64(make_qkv, errors, causal, hkv):
    rel_err, _ = errors
    q, k, v = make_qkv(2, 4, 23, 8, hkv=hkv, seed=hkv)
    out, lse = reference_attention(q, k, v, causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hkv != 4)
    assert rel_err(out, ref) < 1e-12
    assert lse.shape == (2, 4, 23)
    assert lse.dtype == torch.float64


@pytest.mark.parametrize(("lq", "lk"), [(5, 12), (12, 5), (9, 9)])
def test_causal_and_window_are_bottom_right_aligned(make_qkv, errors, lq, lk):
    rel_err, lse_err = errors
    q, k, v = make_qkv(1, 2, lq, 4, lk=lk, seed=lq)
    i = torch.arange(lq).view(-1, 1) + (lk - lq)
    j = torch.arange(lk).view(1, -1)
    allowed = (j <= i) & (j >= i - 2)
    out, lse = reference_attention(q, k, v, causal=True, window=(2, 5))
    want, want_lse = _explicit(q, k, v, allowed, 4 ** -0.5)
    assert rel_err(out, want) < 1e-12
    assert lse_err(lse, want_lse) < 1e-12
    if lq > lk:  # first rows see no key: out 0, lse -inf
        assert out[:, :, : lq - lk].eq(0).all()
        assert torch.isneginf(lse[:, :, : lq - lk]).all()


def test_document_ids_and_mask_mod_compose(make_qkv, errors):
    rel_err, lse_err = errors
    q, k, v = make_qkv(2, 2, 16, 4, seed=5)
    docs = torch.tensor([[0] * 5 + [1] * 7 + [2] * 4, [0] * 16])
    out, lse = reference_attention(q, k, v, document_ids=docs,
                                   mask_mod=lambda b, h, i, j: (i + j + h) % 3 != 1)
    i = torch.arange(16).view(1, 1, -1, 1)
    j = torch.arange(16).view(1, 1, 1, -1)
    h = torch.arange(2).view(1, -1, 1, 1)
    allowed = (docs[:, None, :, None] == docs[:, None, None, :]) & ((i + j + h) % 3 != 1)
    want, want_lse = _explicit(q, k, v, allowed, 0.5)
    assert rel_err(out, want) < 1e-12
    assert lse_err(lse, want_lse) < 1e-12


def test_rows_without_keys_give_zero_and_neg_inf(make_qkv):
    q, k, v = make_qkv(1, 1, 6, 4, seed=2)
    out, lse = reference_attention(q, k, v, mask_mod=lambda b, h, i, j: (i < 3) & (j >= 0))
    assert not torch.isnan(out).any()
    assert out[0, 0, 3:].eq(0).all()
    assert torch.isneginf(lse[0, 0, 3:]).all()
    assert torch.isfinite(lse[0, 0, :3]).all()


def test_gradients_match_sdpa(make_qkv, errors):
    rel_err, _ = errors
    q, k, v = make_qkv(1, 2, 11, 4, requires_grad=True, seed=9)
    dout = torch.randn(1, 2, 11, 4, dtype=torch.float64)
    g1 = torch.autograd.grad(reference_attention(q, k, v, causal=True)[0], (q, k, v), dout)
    g2 = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True),
                             (q, k, v), dout)
    for a, b in zip(g1, g2, strict=True):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_is_computed_in_float32(make_qkv, errors, dtype):
    rel_err, _ = errors
    q, k, v = make_qkv(1, 2, 20, 8, seed=1)
    ref, _ = reference_attention(q, k, v)
    out, lse = reference_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert out.dtype == dtype
    assert lse.dtype == torch.float32
    assert rel_err(out, ref) < (1e-6 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize(("args", "match"), [
    ((torch.zeros(1, 2, 3), torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)), "q must have 4"),
    ((torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5), torch.zeros(1, 2, 3, 5)), "head_dim"),
    ((torch.zeros(1, 3, 3, 4), torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)), "multiple"),
    ((torch.zeros(2, 2, 3, 4), torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)), "batch"),
    ((torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4, 4)), "same shape"),
    ((torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4).double(), torch.zeros(1, 2, 3, 4)),
     "dtype"),
    ((torch.zeros(1, 2, 3, 4, dtype=torch.int32),) * 3, "float16"),
    (([1.0], torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)), "q must be a torch.Tensor"),
])
def test_bad_inputs_name_the_argument(args, match):
    with pytest.raises(AttentionInputError, match=match):
        reference_attention(*args)
