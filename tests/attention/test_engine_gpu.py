"""The engine on a CUDA device (``pytest -m gpu``): streamed from pinned and pageable host
memory under a budget, forward and backward, every schedule, injected out-of-memory errors,
a nearly full card, the single-call fast path, and the memory promises.

``memory_budget`` is a bound, not a target: the peak of ``torch.cuda.max_memory_allocated``
over a call (minus what was allocated before it) must not exceed it, for every schedule and
placement, forward and backward (:func:`test_budget_sweep_holds`), and each kernel's memory
model must bound what one of its calls allocates (:func:`test_kernel_memory_models_bound_the_
allocations`). Measurements are appended to ``$CQS_GPU_RECORD`` (see
``tests/attention/_gpu_reference.py``).
"""

from __future__ import annotations

import pytest
import torch

from cqs_attention import attention, last_run_stats
from cqs_attention.testing import fail_calls, force_placement
from cqs_design.plans import make_plan
from tests.attention._gpu_reference import chunked_reference, record

pytestmark = pytest.mark.gpu


def _rel(a, b):
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return ((a - b).norm() / b.norm()).item()


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


# -- the budget is a bound: every length, mask and fraction, forward and backward ------------
SWEEP_L = [16384, 65536, 262144]


@pytest.mark.parametrize("fraction", [0.125, 0.25, 0.5])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("L", SWEEP_L)
def test_budget_sweep_holds(L, causal, fraction):
    """bf16, B=1, H=16, D=128, pinned host inputs: the measured peak of the forward and of
    the backward stays within ``memory_budget`` (a fraction of the Q+K+V bytes), and the
    footprint model bounds it (no out-of-memory error was needed to stay within it)."""
    g = torch.Generator(device="cuda").manual_seed(L + causal)
    q, k, v, dout = (torch.randn(1, 16, L, 128, device="cuda", dtype=torch.bfloat16,
                                 generator=g).cpu().pin_memory() for _ in range(4))
    budget = int(3 * q.numel() * 2 * fraction)
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = attention(qg, kg, vg, causal=causal, device="cuda", memory_budget=budget,
                    progress=False)
    torch.cuda.synchronize()
    fwd_peak = torch.cuda.max_memory_allocated() - base
    fwd = last_run_stats()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out.backward(dout)
    torch.cuda.synchronize()
    bwd_peak = torch.cuda.max_memory_allocated() - base
    bwd = last_run_stats()
    fields = {"L": L, "causal": causal, "fraction": fraction, "budget": budget,
              "fwd_peak": fwd_peak, "fwd_footprint": fwd.task_bytes_estimate,
              "fwd_schedule": fwd.schedule, "fwd_plan": fwd.chosen_because,
              "fwd_oom": fwd.oom_retries, "fwd_s": fwd.timings.get("total"),
              "fwd_predicted_s": fwd.predicted_seconds,
              "bwd_peak": bwd_peak, "bwd_footprint": bwd.task_bytes_estimate,
              "bwd_schedule": bwd.schedule, "bwd_plan": bwd.chosen_because,
              "bwd_oom": bwd.oom_retries, "bwd_s": bwd.timings.get("total"),
              "bwd_predicted_s": bwd.predicted_seconds,
              "peak_over_budget": max(fwd_peak, bwd_peak) / budget}
    record("budget_sweep", **fields)
    assert bwd.direction == "backward"
    assert torch.isfinite(out.float()).all()
    assert torch.isfinite(qg.grad.float()).all()
    assert fwd_peak <= budget, fields
    assert bwd_peak <= budget, fields
    assert fwd.oom_retries == 0, fields
    assert bwd.oom_retries == 0, fields


# -- host memory: the forward needs the inputs and the output, no float32 copy ----------------
def test_query_block_forward_from_pinned_memory_has_no_float32_output_at_home(
        home_allocations):
    q, k, v = (t.pin_memory() for t in _inputs(torch.bfloat16, L=65536, h=8))
    budget = 3 * q.numel() * 2 // 8
    out = attention(q, k, v, causal=True, device="cuda", memory_budget=budget, progress=False)
    rep = last_run_stats()
    assert rep.schedule == "query_blocks", rep.chosen_because
    assert rep.accumulators == "host", rep.chosen_because
    assert home_allocations == []
    gold = chunked_reference(q, k, v, causal=True)["out"]
    assert _rel(out, gold) <= 2e-2


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
    record("streamed_forward_small", pinned=pinned, dtype=str(dtype), causal=causal,
           fraction=fraction, budget=budget, peak=peak, footprint=rep.task_bytes_estimate,
           oom_retries=rep.oom_retries, err=err, schedule=rep.schedule)
    assert rep.task_bytes_estimate <= budget
    assert peak <= budget, (peak, budget, rep.chosen_because)
    assert rep.oom_retries == 0


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
