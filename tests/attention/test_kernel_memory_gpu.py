"""Each kernel's memory model bounds what one of its calls allocates (``pytest -m gpu``).

The footprint model adds ``memory_bytes`` of the kernels a run calls to the rows it stages;
here every kernel that runs on this GPU is called once (after a warm-up call that compiles it
and creates its workspaces) on odd lengths, with and without GQA, unmasked, with a causal
offset that cuts the call into pieces, and with a window edge and a dense mask, forward and
backward, and the measured peak must not exceed its model. Measurements go to
``$CQS_GPU_RECORD``.
"""

from __future__ import annotations

import pytest
import torch

from cqs_attention.kernels import available_kernels
from cqs_attention.kernels._gpu_common import CallMemory
from cqs_attention.kernels.base import BlockMask
from tests.attention._gpu_reference import record

pytestmark = pytest.mark.gpu


def _kernel_cases():
    cases = []
    for kernel in available_kernels():
        dtypes = {"efficient": (torch.bfloat16, torch.float32),
                  "reference": (torch.float32,)}.get(kernel.name, (torch.bfloat16,))
        for dtype in dtypes:
            for mask in ("none", "causal", "dense"):
                for hkv in (2, 8):
                    for backward in (False, True):
                        cases.append((kernel, dtype, mask, hkv, backward))
    return cases


def _probe_mask(kind, lq, lk):
    if kind == "none":
        return None
    if kind == "causal":
        return BlockMask(causal_offset=lk - lq + 700)  # two pieces: the last rows see all
    g = torch.Generator(device="cuda").manual_seed(1)
    dense = torch.rand(1, 1, lq, lk, device="cuda", generator=g) > 0.3
    return BlockMask(causal_offset=lk - lq, lower_offset=-2000, dense=dense)


@pytest.mark.parametrize(("kernel", "dtype", "mask", "hkv", "backward"), _kernel_cases(),
                         ids=lambda x: getattr(x, "name", str(x).removeprefix("torch.")))
def test_kernel_memory_models_bound_the_allocations(kernel, dtype, mask, hkv, backward):
    lq, lk, h, d = 3001, 5003, 8, 128
    bm = _probe_mask(mask, lq, lk)
    why = kernel.not_supported(device=torch.device("cuda"), dtype=dtype, head_dim=d, mask=bm,
                               gqa=hkv != h, needs_grad=backward)
    if why:
        pytest.skip("; ".join(why))
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, h, lq, d, device="cuda", dtype=dtype, generator=g)
    k, v = (torch.randn(1, hkv, lk, d, device="cuda", dtype=dtype, generator=g)
            for _ in range(2))
    dout = torch.randn_like(q)
    scale = d ** -0.5
    out, lse = kernel.fwd(q, k, v, scale=scale, mask=bm)  # warm-up (compiles, workspaces)
    if backward:
        kernel.bwd(dout, q, k, v, out, lse, scale=scale, mask=bm)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    if backward:
        res = kernel.bwd(dout, q, k, v, out, lse, scale=scale, mask=bm)
    else:
        res = kernel.fwd(q, k, v, scale=scale, mask=bm)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del res
    m = CallMemory(batch=1, heads=h, kv_heads=hkv, lq=lq, lk=lk, head_dim=d, v_dim=d,
                   elem=q.element_size(), acc=8 if dtype == torch.float64 else 4)
    model = kernel.memory_bytes(m, backward=backward, mask=mask, pieces=2)
    if bm is not None and bm.dense is not None:  # the footprint counts dense masks itself
        model += 5 * bm.dense.numel()
    record("kernel_memory", kernel=kernel.name, dtype=str(dtype), mask=mask, hkv=hkv,
           backward=backward, peak=peak, model=model, ratio=peak / model)
    assert peak <= model, (kernel.name, peak, model)
