"""The CPU flash kernel against the reference kernel and the float64 golden result."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention import attention, last_run_stats, reference_attention
from cqs_attention.kernels import select_kernel
from cqs_attention.kernels.base import BlockMask
from cqs_attention.kernels.cpu_flash import CpuFlashKernel
from cqs_attention.kernels.reference import reference_bwd, reference_fwd

KERNEL = CpuFlashKernel()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _inputs(b, h, hkv, lq, lk, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hkv, lk, d, generator=g, dtype=torch.float64)
    do = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    return q, k, v, do, dtype


@given(b=st.integers(1, 2), hkv=st.integers(1, 2), groups=st.integers(1, 2),
       lq=st.integers(1, 40), lk=st.integers(1, 40), d=st.sampled_from([4, 8, 13]),
       offset=st.one_of(st.none(), st.integers(-5, 45)),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_matches_reference_forward_and_backward(b, hkv, groups, lq, lk, d, offset, dtype, seed):
    q64, k64, v64, do64, dtype = _inputs(b, hkv * groups, hkv, lq, lk, d, dtype, seed)
    mask = None if offset is None else BlockMask(causal_offset=offset)
    scale = d ** -0.5
    gold_o, gold_l = reference_fwd(q64, k64, v64, scale=scale, mask=mask)
    q, k, v, do = (t.to(dtype) for t in (q64, k64, v64, do64))
    out, lse = KERNEL.fwd(q, k, v, scale=scale, mask=mask)
    ref_o, _ref_l = reference_fwd(q, k, v, scale=scale, mask=mask)
    assert out.dtype == dtype
    assert lse.dtype == torch.float32
    assert torch.equal(torch.isneginf(lse), torch.isneginf(gold_l))
    empty = torch.isneginf(gold_l)
    assert bool((out[empty] == 0).all())
    if bool((~empty).any()):
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        err = _rel(out[~empty], gold_o[~empty])
        assert err <= max(tol, 2 * _rel(ref_o[~empty], gold_o[~empty]) + 1e-6)
        assert (lse[~empty].double() - gold_l[~empty]).abs().max().item() <= 10 * tol
        # backward with the GLOBAL out/lse (here this block is the whole attention)
        gq, gk, gv = reference_bwd(do64, q64, k64, v64, gold_o, gold_l, scale=scale, mask=mask)
        dq, dk, dv = KERNEL.bwd(do, q, k, v, gold_o.to(dtype), gold_l.float(), scale=scale,
                                mask=mask)
        assert dk.shape == k.shape
        assert dv.shape == v.shape
        rtol = 1e-4 if dtype == torch.float32 else 3e-2
        for got, want in ((dq, gq), (dk, gk), (dv, gv)):
            # absolute floor: with one key, dq is exactly 0 and only rounding remains
            assert (got.double() - want).norm() <= rtol * (want.norm() + 1e-2 * do64.norm())


def test_dispatch_prefers_it_for_float32_and_bfloat16_only():
    kw = {"device": torch.device("cpu"), "head_dim": 8, "gqa": False, "needs_grad": True}
    assert select_kernel(dtype=torch.float32, mask=None, **kw).name == "cpu_flash"
    assert select_kernel(dtype=torch.bfloat16, mask=BlockMask(causal_offset=3),
                         **kw).name == "cpu_flash"
    assert select_kernel(dtype=torch.float64, mask=None, **kw).name == "reference"
    dense = BlockMask(dense=torch.ones(1, 1, 2, 2, dtype=torch.bool))
    assert select_kernel(dtype=torch.float32, mask=dense, **kw).name == "reference"
    why = KERNEL.not_supported(device=torch.device("meta"), dtype=torch.float16, head_dim=8,
                               mask=dense, gqa=False, needs_grad=False)
    assert len(why) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_uses_it_end_to_end(dtype):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 4, 97, 16, generator=g, dtype=torch.float64) for _ in range(3))
    qs, ks, vs = (t.to(dtype).requires_grad_() for t in (q, k, v))
    out = attention(qs, ks, vs, causal=True, plan=2)
    assert last_run_stats().kernel_calls.get("cpu_flash", 0) > 0
    ref, _ = reference_attention(q, k, v, causal=True)
    mono = torch.nn.functional.scaled_dot_product_attention(
        *(t.detach() for t in (qs, ks, vs)), is_causal=True)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert _rel(out.detach(), ref) <= max(tol, 2 * _rel(mono, ref))
    dout = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(dout.to(dtype))
    q64, k64, v64 = (t.clone().requires_grad_() for t in (q, k, v))
    reference_attention(q64, k64, v64, causal=True)[0].backward(dout)
    for got, want in ((qs.grad, q64.grad), (ks.grad, k64.grad), (vs.grad, v64.grad)):
        assert _rel(got, want) <= (1e-4 if dtype == torch.float32 else 3e-2)
