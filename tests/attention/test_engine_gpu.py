"""The engine on a CUDA device (``pytest -m gpu``): streamed from pinned and pageable host
memory under a budget, forward and backward, every schedule, injected out-of-memory errors,
a nearly full card, and the single-call fast path.

Peak device memory is checked against ``memory_budget`` plus a margin for what the footprint
model does not see (kernel workspace of cuDNN/flash kernels, allocator rounding): 25% of the
budget + 64 MiB.
"""

from __future__ import annotations

import pytest
import torch

from cqs_attention import attention, last_run_stats
from cqs_attention.testing import fail_calls, force_placement
from cqs_design.plans import make_plan

pytestmark = pytest.mark.gpu

MARGIN = (0.25, 64 << 20)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _inputs(dtype, *, b=1, h=8, hkv=8, L=8192, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, L, d, generator=g)
    k = torch.randn(b, hkv, L, d, generator=g)
    v = torch.randn(b, hkv, L, d, generator=g)
    return [t.to(dtype) for t in (q, k, v)]


def _gold(q, k, v, causal):
    dev = torch.device("cuda")
    q64, k64, v64 = (t.to(dev, torch.float64) for t in (q, k, v))
    g = q.shape[1] // k.shape[1]
    if g > 1:
        k64, v64 = k64.repeat_interleave(g, 1), v64.repeat_interleave(g, 1)
    return torch.nn.functional.scaled_dot_product_attention(q64, k64, v64,
                                                            is_causal=causal).cpu()


def _mono_err(q, k, v, causal, gold):
    dev = torch.device("cuda")
    g = q.shape[1] // k.shape[1]
    qq, kk, vv = (t.to(dev) for t in (q, k, v))
    if g > 1:
        kk, vv = kk.repeat_interleave(g, 1), vv.repeat_interleave(g, 1)
    mono = torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, is_causal=causal)
    return _rel(mono.cpu(), gold)


@pytest.mark.parametrize("pinned", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fraction", [0.125, 0.25, 0.5])
def test_streamed_forward_exact_within_budget(pinned, dtype, causal, fraction):
    q, k, v = _inputs(dtype, hkv=4 if causal else 8)
    if pinned:
        q, k, v = (t.pin_memory() for t in (q, k, v))
    budget = int(sum(t.numel() * t.element_size() for t in (q, k, v)) * fraction)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = attention(q, k, v, causal=causal, memory_budget=budget, device="cuda",
                    progress=False)
    peak = torch.cuda.max_memory_allocated() - base
    rep = last_run_stats()
    gold = _gold(q, k, v, causal)
    err = _rel(out, gold)
    assert err <= (1e-5 if dtype == torch.float32 else 2e-2)
    if dtype == torch.bfloat16:
        assert err <= 2 * _mono_err(q, k, v, causal, gold) + 1e-4
    assert rep.task_bytes_estimate <= budget
    assert peak <= budget * (1 + MARGIN[0]) + MARGIN[1], (peak, budget, rep.chosen_because)


@pytest.mark.parametrize("schedule", ["cqs", "query_blocks", "overlap"])
@pytest.mark.parametrize("acc", ["host", "device"])
def test_every_schedule_and_placement_with_injected_ooms(schedule, acc):
    L = 4096
    q, k, v = (t.pin_memory() for t in _inputs(torch.bfloat16, L=L))
    if schedule == "cqs":
        plan = make_plan(L, design=3, causal=True)
    elif schedule == "query_blocks":
        plan = make_plan(L, schedule="query_blocks", block_q=1024, block_kv=768, causal=True)
    else:
        from tests.attention.test_engine import _overlapping_plan

        plan = _overlapping_plan(L, True)
    with force_placement(acc), fail_calls({2, 3, 7}) as failed:
        out, lse = attention(q, k, v, causal=True, plan=plan, device="cuda",
                             memory_budget=1 << 30, return_lse=True, progress=False)
    assert failed == [2, 3, 7]
    gold = _gold(q, k, v, True)
    assert _rel(out, gold) <= 2 * _mono_err(q, k, v, True, gold) + 1e-4
    assert torch.isfinite(lse).all()


@pytest.mark.parametrize("resident", [True, False])
def test_backward_streamed_and_resident(resident):
    q, k, v = _inputs(torch.bfloat16, L=4096, h=8, hkv=4)
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(3)
    dout = torch.randn(q.shape, generator=g).to(torch.bfloat16)
    if resident:
        q, k, v, dout = (t.to(dev) for t in (q, k, v, dout))
        kw = {}
    else:
        q, k, v, dout = (t.pin_memory() for t in (q, k, v, dout))
        kw = {"memory_budget": int(3 * q.numel() * 2 / 4), "device": "cuda"}
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
    out = attention(qg, kg, vg, causal=True, progress=False, **kw)
    out.backward(dout)
    rep = last_run_stats()
    assert rep.direction == "backward"
    q64, k64, v64 = (t.detach().to(dev, torch.float64).requires_grad_(True) for t in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(
        q64, k64.repeat_interleave(2, 1), v64.repeat_interleave(2, 1), is_causal=True)
    ref.backward(dout.to(dev, torch.float64))
    for a, b in ((qg.grad, q64.grad), (kg.grad, k64.grad), (vg.grad, v64.grad)):
        assert _rel(a.to(dev), b) <= 2e-2


def test_single_call_on_resident_inputs_has_no_accumulators():
    q, k, v = (t.cuda() for t in _inputs(torch.bfloat16, L=16384))
    out = attention(q, k, v, causal=True, progress=False)
    rep = last_run_stats()
    assert rep.accumulators == "none"
    assert sum(rep.kernel_calls.values()) == 1
    gold = _gold(q, k, v, True)
    assert _rel(out, gold) <= 2 * _mono_err(q, k, v, True, gold) + 1e-4


def test_card_mostly_full_still_finishes_right():
    q, k, v = (t.pin_memory() for t in _inputs(torch.bfloat16, L=16384, h=8))
    free, _total = torch.cuda.mem_get_info()
    hog = torch.empty(int(free - (2 << 30)), dtype=torch.uint8, device="cuda")
    try:
        out = attention(q, k, v, causal=True, device="cuda", progress=False)
        rep = last_run_stats()
    finally:
        del hog
        torch.cuda.empty_cache()
    gold = _gold(q, k, v, True)
    assert _rel(out, gold) <= 2e-2, rep.chosen_because
