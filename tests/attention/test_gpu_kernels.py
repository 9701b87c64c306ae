"""GPU kernels: mask pieces, lse fix-ups and piecewise plumbing on CPU; every kernel on GPU.

The CPU tests drive the same piecewise code the GPU kernels use with a float64 dense
"piece kernel", and check FlexAttention's backward-with-global-lse formula with eager flex.
The ``gpu`` tests compare every kernel that can run here with a float64 reference, forward and
backward (with the GLOBAL out and lse), for full, causal (square and offset), GQA and
partial (dense) masks, and rows with no allowed key.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention.kernels._gpu_common import (
    Piece,
    causal_pieces,
    fix_lse,
    piece_allowed,
    run_pieces_bwd,
    run_pieces_fwd,
    sum_kv_groups,
)
from cqs_attention.kernels.base import BlockMask
from cqs_attention.kernels.fa2 import Fa2Kernel
from cqs_attention.kernels.fa3 import Fa3Kernel
from cqs_attention.kernels.fa4 import Fa4Kernel
from cqs_attention.kernels.flex import FlexKernel, grads_from_local
from cqs_attention.kernels.sdpa import CudnnKernel, EfficientKernel, SdpaFlashKernel

ALL_GPU_KERNELS = [Fa4Kernel(), Fa3Kernel(), Fa2Kernel(), CudnnKernel(), SdpaFlashKernel(),
                   EfficientKernel(), FlexKernel()]


# ---------------------------------------------------------------- float64 dense reference ----
def _allowed(lq: int, lk: int, mask: BlockMask | None, device="cpu") -> torch.Tensor:
    i = torch.arange(lq, device=device)[:, None]
    j = torch.arange(lk, device=device)[None, :]
    allowed = torch.ones(lq, lk, dtype=torch.bool, device=device)
    if mask is not None and mask.causal_offset is not None:
        allowed = j <= i + mask.causal_offset
    allowed = allowed[None, None]
    if mask is not None and mask.dense is not None:
        allowed = allowed & mask.dense.to(device)
    return allowed


def ref_attention(q, k, v, scale, mask=None):
    """float64 (out, lse) with out=0 / lse=-inf on empty rows; differentiable."""
    g = q.shape[1] // k.shape[1]
    q, k, v = q.double(), k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    allowed = _allowed(q.shape[2], k.shape[2], mask, q.device).expand_as(s)
    s = s.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(s, -1)
    safe = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
    p = torch.exp(s - safe[..., None])
    return p @ v, lse


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


# ------------------------------------------------------------------------- CPU: pieces ----
@given(lq=st.integers(1, 12), lk=st.integers(1, 12), offset=st.integers(-14, 14) | st.none(),
       square=st.booleans())
def test_causal_pieces_cover_exactly_the_mask(lq, lk, offset, square):
    pieces = causal_pieces(lq, lk, offset, square_only=square)
    for i in range(lq):
        for j in range(lk):
            want = offset is None or j <= i + offset
            hits = sum(piece_allowed(p, i, j) for p in pieces)
            assert hits == int(want), (i, j, pieces)
    for p in pieces:
        assert 0 <= p.q0 < p.q1 <= lq
        assert 0 <= p.k0 < p.k1 <= lk
        if square and p.causal:
            assert p.q1 - p.q0 == p.k1 - p.k0
    if not square:  # bottom-right kernels never need a merge
        rows = [r for p in pieces for r in range(p.q0, p.q1)]
        assert len(rows) == len(set(rows))


def test_fix_lse_handles_every_kernel_quirk():
    raw = torch.tensor([[[[0.5], [float("inf")], [float("-inf")], [2.0]]]])  # cuDNN-like
    assert fix_lse(raw, 3).tolist() == [[[0.5, float("-inf"), float("-inf")]]]
    padded = torch.arange(64, dtype=torch.float16).view(1, 1, 64)  # efficient-like padding
    fixed = fix_lse(padded, 33)
    assert fixed.dtype == torch.float32
    assert fixed.shape == (1, 1, 33)
    assert fixed[0, 0, -1].item() == 32.0


def test_sum_kv_groups_sums_each_group():
    t = torch.arange(2 * 6 * 3 * 2, dtype=torch.float64).view(2, 6, 3, 2)
    got = sum_kv_groups(t, 3)
    assert got.shape == (2, 2, 3, 2)
    assert torch.equal(got[:, 1], t[:, 3] + t[:, 4] + t[:, 5])


def _dense_piece_fwd(q, k, v, causal):
    lq, lk = q.shape[2], k.shape[2]
    m = BlockMask(causal_offset=lk - lq) if causal else None
    out, lse = ref_attention(q, k, v, 1 / math.sqrt(q.shape[-1]), m)
    return out.to(q.dtype), lse.float() if q.dtype != torch.float64 else lse


def _dense_piece_bwd(dout, q, k, v, out, lse, causal):
    """Backward of one piece from the GLOBAL out/lse, written out (as a kernel would)."""
    lq, lk = q.shape[2], k.shape[2]
    scale = 1 / math.sqrt(q.shape[-1])
    s = (q @ k.transpose(-1, -2)) * scale
    allowed = _allowed(lq, lk, BlockMask(causal_offset=lk - lq) if causal else None)
    safe = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
    p = torch.exp(s - safe[..., None]).masked_fill(~allowed, 0.0)
    p = p.masked_fill(torch.isneginf(lse)[..., None], 0.0)
    dp = dout @ v.transpose(-1, -2)
    delta = (dout * out).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    return (ds @ k) * scale, (ds.transpose(-1, -2) @ q) * scale, p.transpose(-1, -2) @ dout


@given(lq=st.integers(1, 9), lk=st.integers(1, 9), offset=st.integers(-10, 10),
       square=st.booleans(), seed=st.integers(0, 2**16))
def test_piecewise_fwd_bwd_match_reference(lq, lk, offset, square, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(1, 2, n, 4, generator=gen, dtype=torch.float64)
                     for n in (lq, lk, lk, lq))
    mask = BlockMask(causal_offset=offset)
    pieces = causal_pieces(lq, lk, offset, square_only=square)
    out, lse = run_pieces_fwd(_dense_piece_fwd, q, k, v, pieces)
    qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
    ref_out, ref_lse = ref_attention(qq, kk, vv, 0.5, mask)
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    fin = ~torch.isneginf(ref_lse)
    assert torch.allclose(lse[fin], ref_lse[fin], atol=1e-12)
    grads = run_pieces_bwd(_dense_piece_bwd, dout, q, k, v, out, lse, pieces)
    ref_grads = torch.autograd.grad(ref_out, (qq, kk, vv), dout)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-10)


def test_piece_rows_without_keys_give_zero_and_minus_inf():
    q = torch.randn(1, 1, 5, 4, dtype=torch.float64)
    k = v = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    out, lse = run_pieces_fwd(_dense_piece_fwd, q, k, v, causal_pieces(5, 3, -2, square_only=True))
    assert torch.isneginf(lse[0, 0, :2]).all()
    assert (out[0, 0, :2] == 0).all()
    assert torch.isfinite(lse[0, 0, 2:]).all()
    assert causal_pieces(3, 3, -3, square_only=True) == []
    assert causal_pieces(2, 3, 5, square_only=False) == [Piece(0, 2, 0, 3, False)]


# ------------------------------------------------------------ CPU: kernels' declarations ----
@pytest.mark.parametrize("kernel", ALL_GPU_KERNELS, ids=lambda k: k.name)
def test_gpu_kernels_decline_cpu_with_reasons(kernel):
    """Every GPU kernel declines a CPU device, with a reason naming CUDA."""
    reasons = kernel.not_supported(device=torch.device("cpu"), dtype=torch.bfloat16,
                                   head_dim=128, mask=None, gqa=False, needs_grad=True)
    assert reasons
    assert all(isinstance(r, str) and r for r in reasons)
    assert any("CUDA" in r for r in reasons)


def test_efficient_declines_half_precision_backward():
    kern = EfficientKernel()
    args = {"device": torch.device("cpu"), "head_dim": 64, "mask": None, "gqa": False}
    assert any("backward" in r for r in kern.not_supported(dtype=torch.bfloat16,
                                                            needs_grad=True, **args))
    assert not any("backward" in r for r in kern.not_supported(dtype=torch.bfloat16,
                                                                needs_grad=False, **args))
    assert not any("backward" in r for r in kern.not_supported(dtype=torch.float32,
                                                                needs_grad=True, **args))


@pytest.mark.parametrize("kernel", [CudnnKernel(), SdpaFlashKernel(), Fa4Kernel()],
                         ids=lambda k: k.name)
def test_dense_masks_and_bad_head_dims_are_declined(kernel):
    dense = BlockMask(dense=torch.ones(1, 1, 2, 2, dtype=torch.bool))
    reasons = kernel.not_supported(device=torch.device("cpu"), dtype=torch.float64,
                                   head_dim=12, mask=dense, gqa=False, needs_grad=False)
    text = " | ".join(reasons)
    assert "dense" in text
    assert "head_dim 12" in text
    assert "float64" in text


def test_flex_bwd_with_global_lse_matches_reference_eager():
    """Flex's backward formula (local recompute, global merge weights), on CPU with eager flex."""
    torch.manual_seed(0)
    kern = FlexKernel(compiled=False)
    lq = lk = 128
    q = torch.randn(1, 4, lq, 16)
    k, v = torch.randn(1, 2, lk, 16), torch.randn(1, 2, lk, 16)
    dout = torch.randn(1, 4, lq, 16)
    dense = torch.rand(1, 1, lq, lk) < 0.7
    dense[..., :3, :] = False  # rows with no allowed key
    parts = [BlockMask(causal_offset=20, dense=dense), BlockMask(dense=~dense)]
    # two disjoint masks on the same keys: their merge is full attention
    res = [kern.fwd(q, k, v, scale=0.25, mask=m) for m in parts]
    from cqs_attention.merge import merge_partials

    out, lse = merge_partials(res[0][0], res[0][1], res[1][0], res[1][1])
    qq, kk, vv = (t.double().requires_grad_(True) for t in (q, k, v))
    union = BlockMask(dense=(_allowed(lq, lk, parts[0]) | _allowed(lq, lk, parts[1])))
    ref_out, ref_lse = ref_attention(qq, kk, vv, 0.25, union)
    assert _rel(out, ref_out) < 1e-5
    assert (lse.double() - ref_lse).abs().max().item() < 1e-4
    assert torch.isneginf(res[0][1][0, :, :3]).all()
    assert (res[0][0][0, :, :3] == 0).all()
    # (eager flex has no CPU backward: the formula is checked with the float64 reference
    # as the local forward here, and with compiled flex on the GPU)
    ref_grads = torch.autograd.grad(ref_out, (qq, kk, vv), dout.double())
    out64, lse64 = (t.detach() for t in ref_attention(q, k, v, 0.25, union))
    grads = [grads_from_local(lambda a, b, c, m=m: ref_attention(a, b, c, 0.25, m),
                              dout.double(), q.double(), k.double(), v.double(), out64, lse64)
             for m in parts]
    for n in range(3):
        assert _rel(grads[0][n] + grads[1][n], ref_grads[n]) < 1e-10


# -------------------------------------------------------------------------- GPU tests ----
def _gpu_cases():
    return [
        ("full", 256, 256, 4, 4, None),
        ("causal_square", 256, 256, 4, 4, 0),
        ("causal_bottom_right", 128, 384, 4, 4, 256),
        ("causal_offset_neg", 300, 200, 4, 4, -40),
        ("gqa_causal", 256, 256, 8, 2, 0),
        ("odd_lengths", 97, 1025, 4, 4, None),
    ]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32],
                         ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("case", _gpu_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("kernel", ALL_GPU_KERNELS, ids=lambda k: k.name)
def test_gpu_kernel_matches_float64_reference(kernel, case, dtype):
    _, lq, lk, h, hkv, offset = case
    mask = None if offset is None else BlockMask(causal_offset=offset)
    dev = torch.device("cuda")
    reasons = kernel.not_supported(device=dev, dtype=dtype, head_dim=64, mask=mask,
                                   gqa=h != hkv, needs_grad=True)
    if reasons:
        pytest.skip("; ".join(reasons))
    gen = torch.Generator(device=dev).manual_seed(lq * 7 + lk)
    q = torch.randn(2, h, lq, 64, device=dev, generator=gen).to(dtype)
    k = torch.randn(2, hkv, lk, 64, device=dev, generator=gen).to(dtype)
    v = torch.randn(2, hkv, lk, 64, device=dev, generator=gen).to(dtype)
    dout = torch.randn(2, h, lq, 64, device=dev, generator=gen).to(dtype)
    scale = 1 / 8
    qq, kk, vv = (t.double().requires_grad_(True) for t in (q, k, v))
    ref_out, ref_lse = ref_attention(qq, kk, vv, scale, mask)
    ref_grads = torch.autograd.grad(ref_out, (qq, kk, vv), dout.double())
    # the same math in the low precision: the floor a kernel is compared against
    low_out, _ = ref_attention(q.float(), k.float(), v.float(), scale, mask)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    out, lse = kernel.fwd(q, k, v, scale=scale, mask=mask)
    assert out.shape == q.shape
    assert lse.shape == q.shape[:3]
    assert lse.dtype == torch.float32
    assert not torch.isnan(out).any()
    assert not torch.isnan(lse).any()
    empty = torch.isneginf(ref_lse)
    assert torch.equal(torch.isneginf(lse), empty)
    assert (out[empty] == 0).all()
    err = _rel(out, ref_out)
    assert err <= tol, err
    if dtype != torch.float32:  # no worse than the same math rounded to this dtype
        assert err <= 2 * _rel(low_out.to(dtype), ref_out) + 1e-3, err
    assert (lse[~empty].double() - ref_lse[~empty]).abs().max().item() < 1e-2
    grads = kernel.bwd(dout, q, k, v, ref_out.to(dtype), ref_lse.float(), scale=scale, mask=mask)
    for name, g, r in zip("qkv", grads, ref_grads, strict=True):
        assert g.shape == r.shape, name
        assert _rel(g, r) <= (2e-5 if dtype == torch.float32 else 2e-2), (name, _rel(g, r))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32],
                         ids=lambda d: str(d).removeprefix("torch."))
def test_gpu_flex_dense_mask(dtype):
    kernel = FlexKernel()
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(3)
    lq, lk = 256, 384
    q = torch.randn(1, 4, lq, 64, device=dev, generator=gen).to(dtype)
    k, v = (torch.randn(1, 2, lk, 64, device=dev, generator=gen).to(dtype) for _ in range(2))
    dout = torch.randn(1, 4, lq, 64, device=dev, generator=gen).to(dtype)
    dense = torch.rand(1, 4, lq, lk, device=dev, generator=gen) < 0.3
    dense[:, :, :5] = False
    mask = BlockMask(causal_offset=lk - lq, dense=dense)
    qq, kk, vv = (t.double().requires_grad_(True) for t in (q, k, v))
    ref_out, ref_lse = ref_attention(qq, kk, vv, 0.125, mask)
    ref_grads = torch.autograd.grad(ref_out, (qq, kk, vv), dout.double())
    out, lse = kernel.fwd(q, k, v, scale=0.125, mask=mask)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert _rel(out, ref_out) <= tol
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    grads = kernel.bwd(dout, q, k, v, ref_out.to(dtype), ref_lse.float(), scale=0.125, mask=mask)
    for g, r in zip(grads, ref_grads, strict=True):
        assert _rel(g, r) <= 2 * tol
