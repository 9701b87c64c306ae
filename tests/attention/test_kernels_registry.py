"""The kernel registry/dispatcher and the reference kernel's block backward."""

from __future__ import annotations

import pytest
import torch

from cqs_attention import KernelUnavailableError
from cqs_attention.kernels import (
    available_kernels,
    register_kernel,
    select_kernel,
    unregister_kernel,
)
from cqs_attention.kernels.base import BlockMask, Kernel
from cqs_attention.kernels.reference import ReferenceKernel, reference_bwd, reference_fwd
from cqs_attention.reference import reference_attention

CPU = torch.device("cpu")
# float64: only the reference kernel runs it on the CPU (cpu_flash takes fp32/bf16)
PROPS = {"device": CPU, "dtype": torch.float64, "head_dim": 8, "mask": None, "gqa": False,
         "needs_grad": False}


class _Refuses:
    name = "refuses"
    priority = 0

    def not_supported(self, **kw):
        return ["refuses on purpose", f"dtype {kw['dtype']}"]


def test_reference_is_a_kernel_and_last():
    kernels = available_kernels()
    assert isinstance(ReferenceKernel(), Kernel)
    assert kernels[-1].name == "reference"
    assert select_kernel("auto", **PROPS).name == "reference"
    # fp32 on the CPU goes to the faster aten CPU flash kernel, ahead of the reference
    assert select_kernel("auto", **{**PROPS, "dtype": torch.float32}).name == "cpu_flash"


def test_first_kernel_without_reasons_wins_and_forced_backend_explains():
    register_kernel(_Refuses())
    try:
        assert available_kernels()[0].name == "refuses"
        assert select_kernel("auto", **PROPS).name == "reference"
        with pytest.raises(KernelUnavailableError, match="refuses on purpose"):
            select_kernel("refuses", **PROPS)
    finally:
        unregister_kernel("refuses")
    assert "refuses" not in [k.name for k in available_kernels()]


def test_forced_backend_that_cannot_run_says_cannot():
    """Issue: a forced backend that cannot run said "backend='fa4' can run this call"."""
    from cqs_attention.api import attention

    q = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(KernelUnavailableError) as info:
        attention(q, q, q, backend="cpu_flash")
    assert str(info.value).startswith("backend='cpu_flash' cannot run this call")
    with pytest.raises(KernelUnavailableError, match=r"^no kernel can run this call"):
        select_kernel("auto", **{**PROPS, "dtype": torch.int8})


def test_unknown_backend_lists_valid_names():
    with pytest.raises(KernelUnavailableError, match="'reference'"):
        select_kernel("nope", **PROPS)


def test_no_kernel_lists_every_reason():
    with pytest.raises(KernelUnavailableError, match="reference: dtype"):
        select_kernel("auto", **{**PROPS, "dtype": torch.int8})


@pytest.mark.parametrize("gqa", [1, 3])
def test_block_backward_with_global_lse_sums_to_full_gradient(make_qkv, errors, gqa):
    """Split the keys in two blocks; block grads with the GLOBAL out/lse add up exactly."""
    rel_err, _ = errors
    q, k, v = make_qkv(2, 3, 9, 4, hkv=3 // gqa, lk=13, requires_grad=True, seed=gqa)
    dout = torch.randn(2, 3, 9, 4, dtype=torch.float64)
    out, lse = reference_attention(q, k, v, causal=True)
    want = torch.autograd.grad(out, (q, k, v), dout)
    off = 13 - 9
    # block 1: keys [0, 6) with the causal diagonal offset; block 2: keys [6, 13)
    m1 = BlockMask(causal_offset=off)
    m2 = BlockMask(causal_offset=off - 6)
    with torch.no_grad():
        g1 = reference_bwd(dout, q, k[:, :, :6], v[:, :, :6], out, lse, scale=0.5, mask=m1)
        g2 = reference_bwd(dout, q, k[:, :, 6:], v[:, :, 6:], out, lse, scale=0.5, mask=m2)
    assert rel_err(g1[0] + g2[0], want[0]) < 1e-12
    assert rel_err(torch.cat([g1[1], g2[1]], 2), want[1]) < 1e-12
    assert rel_err(torch.cat([g1[2], g2[2]], 2), want[2]) < 1e-12


def test_fully_masked_block_is_zero_not_nan(make_qkv):
    q, k, v = make_qkv(1, 1, 4, 4)
    dense = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    out, lse = reference_fwd(q, k, v, scale=1.0, mask=BlockMask(dense=dense))
    assert out.eq(0).all()
    assert torch.isneginf(lse).all()
    grads = reference_bwd(torch.ones_like(q), q, k, v, out, lse, scale=1.0,
                          mask=BlockMask(dense=dense))
    assert all(torch.isfinite(g).all() and g.eq(0).all() for g in grads)
