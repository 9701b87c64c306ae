"""The streaming executor and the OOM guardrails on a CUDA device (``pytest -m gpu``).

Peak device memory is checked against ``memory_budget`` plus a documented margin
(docs/streaming.md): the kernel's own workspace, which the budget estimate does not see for
cuDNN/flash kernels, and one retained task's inputs, bounded here by 25% of the budget + 8 MiB.
"""

from __future__ import annotations

import pytest
import torch

from cqs_attention import attention, last_run_stats
from cqs_attention.testing import task_hook

pytestmark = pytest.mark.gpu

MARGIN = (0.25, 8 << 20)  # relative to the budget, and absolute bytes


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
    out = torch.nn.functional.scaled_dot_product_attention(q64, k64, v64, is_causal=causal)
    return out.cpu()


@pytest.mark.parametrize("pinned", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_streamed_from_host_matches_reference_within_budget(pinned, dtype, causal):
    q, k, v = _inputs(dtype, hkv=4)
    if pinned:
        q, k, v = (t.pin_memory() for t in (q, k, v))
    budget = sum(t.numel() * t.element_size() for t in (q, k, v)) // 4
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = attention(q, k, v, causal=causal, memory_budget=budget, device="cuda",
                    progress=False)
    peak = torch.cuda.max_memory_allocated() - base
    rep = last_run_stats()
    assert type(rep).__name__ == "GuardrailReport"
    assert out.device.type == "cpu"
    assert out.dtype == dtype
    gold = _gold(q, k, v, causal)
    err = _rel(out, gold)
    print(f"\nstream pinned={pinned} {dtype} causal={causal}: rel_err={err:.2e} "
          f"budget={budget} peak={peak} ({peak / budget:.2f}x) design_v={rep.design_v} "
          f"n_cap={rep.n_cap_start} acc={rep.accumulator_device} "
          f"to_dev={rep.bytes_to_device} saved={rep.bytes_saved} "
          f"profile={ {k_: round(x, 4) for k_, x in rep.profile.items()} }")
    if dtype == torch.float32:
        assert err <= 1e-5 or err <= 2 * _rel(_mono(q, k, v, causal), gold)
    else:
        assert err <= 2e-2
        assert err <= 1.5 * _rel(_mono(q, k, v, causal), gold) + 1e-3
    assert peak <= budget * (1 + MARGIN[0]) + MARGIN[1]
    assert rep.chunk_hits > 0
    assert set(rep.merge_counts.values()) == {1}


def _mono(q, k, v, causal):
    dev = torch.device("cuda")
    g = q.shape[1] // k.shape[1]
    qd, kd, vd = (t.to(dev) for t in (q, k, v))
    if g > 1:
        kd, vd = kd.repeat_interleave(g, 1), vd.repeat_interleave(g, 1)
    return torch.nn.functional.scaled_dot_product_attention(qd, kd, vd, is_causal=causal).cpu()


def test_injected_oom_on_gpu_refines_and_stays_exact():
    q, k, v = (t.pin_memory() for t in _inputs(torch.bfloat16, L=4096))

    def hook(task_id, attempt):
        if task_id == 2:
            raise torch.cuda.OutOfMemoryError("injected")

    with task_hook(hook):
        out = attention(q, k, v, causal=True, plan=2, device="cuda", progress=False)
    rep = last_run_stats()
    gold = _gold(q, k, v, True)
    assert rep.refined_tasks == [2]
    assert set(rep.merge_counts.values()) == {1}
    assert _rel(out, gold) <= 2e-2


def test_streamed_backward_matches():
    q, k, v = (t.requires_grad_() for t in _inputs(torch.float32, L=2048, h=4, hkv=2))
    # 3/4 of the inputs: gradient accumulators (as large as the inputs, in float32) stay on the
    # host, and one backward task of the finest plan fits
    budget = sum(t.numel() * t.element_size() for t in (q, k, v)) * 3 // 4
    out = attention(q, k, v, causal=True, memory_budget=budget, device="cuda", progress=False)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    out.backward(dout)
    rep = last_run_stats()
    assert rep.direction == "backward"
    assert set(rep.merge_counts.values()) == {1}
    q64, k64, v64 = (t.detach().double().cuda().requires_grad_() for t in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(
        q64, k64.repeat_interleave(2, 1), v64.repeat_interleave(2, 1), is_causal=True)
    ref.backward(dout.double().cuda())
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert _rel(got, want.cpu()) <= 1e-4


def test_card_mostly_full_still_finishes_right():
    q, k, v = (t.pin_memory() for t in _inputs(torch.bfloat16, L=16384, h=8))
    free, _total = torch.cuda.mem_get_info()
    hog = torch.empty(int(free - (3 << 30)), dtype=torch.uint8, device="cuda")
    try:
        out = attention(q, k, v, causal=True, device="cuda", progress=False)
        rep = last_run_stats()
    finally:
        del hog
        torch.cuda.empty_cache()
    print(f"\nfull card: plan={rep.plan_source} design_v={rep.design_v} "
          f"refinements={rep.refinements} ooms={rep.oom_retries} "
          f"acc={rep.accumulator_device}")
    gold = _gold(q, k, v, True)
    assert _rel(out, gold) <= 2e-2
    assert set(rep.merge_counts.values()) == {1}
