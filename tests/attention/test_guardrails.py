"""OOM guardrails on the CPU: injected out-of-memory errors, refinement, merge-once, sizing."""

from __future__ import annotations

import pytest
import torch

from cqs_attention import attention, last_run_stats, reference_attention
from cqs_attention import executor as ex_mod
from cqs_attention.executor import executor_class, register_executor, task_hook
from cqs_attention.guardrails import GuardedExecutor, OOMGuard, size_run
from cqs_attention.streaming import StreamingExecutor
from cqs_design.plans import make_plan


@pytest.fixture(params=[GuardedExecutor, StreamingExecutor])
def guarded(request):
    """Run CPU attention through a guarded executor (on CUDA this is automatic)."""
    executor_class(torch.device("cpu"), torch.device("cpu"))  # discover streaming.py first
    cls = request.param
    register_executor(lambda dev, home: dev.type == "cpu", cls)
    yield cls
    ex_mod._EXECUTORS[:] = [e for e in ex_mod._EXECUTORS if e[1] is not cls]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _check_cover(rep, plan_len_before):
    """Every task merged exactly once; refined tasks never merged."""
    assert set(rep.merge_counts.values()) == {1}
    assert not set(rep.refined_tasks) & set(rep.merge_counts)
    assert rep.tasks == len(rep.merge_counts)
    assert rep.tasks >= plan_len_before - len(rep.refined_tasks)


def test_oom_lowers_n_cap_then_retries(guarded, make_qkv):
    q, k, v = make_qkv(1, 2, 90, 8, dtype=torch.float32, seed=3)
    seen = []

    def hook(task_id, attempt):
        seen.append((task_id, attempt))
        if task_id in (2, 5) and attempt == 0:
            raise torch.cuda.OutOfMemoryError("injected")

    with task_hook(hook):
        out = attention(q, k, v, causal=True, plan=2)
    rep = last_run_stats()
    ref, _ = reference_attention(q.double(), k.double(), v.double(), causal=True)
    assert _rel(out, ref) <= 1e-5
    assert rep.oom_retries == 2
    assert rep.refinements == 0
    assert rep.n_cap_start == 2
    assert rep.n_cap_final == 1
    assert [e[2] for e in rep.oom_events] == [2, 1]  # n_cap when each OOM hit
    assert (2, 1) in seen
    assert (5, 1) in seen
    _check_cover(rep, 7)


def test_repeated_oom_at_n_cap_one_refines_the_task(guarded, make_qkv):
    q, k, v = make_qkv(1, 2, 140, 8, hkv=1, dtype=torch.float32, seed=4)
    plan = make_plan(140, design=2, causal=True)

    def hook(task_id, attempt):
        if task_id == 3:  # task 3 never fits: only its sub-tasks can run
            raise torch.cuda.OutOfMemoryError("injected")

    with task_hook(hook):
        out, lse = attention(q, k, v, causal=True, plan=plan, return_lse=True)
    rep = last_run_stats()
    ref, ref_lse = reference_attention(q.double(), k.double(), v.double(), causal=True)
    assert _rel(out, ref) <= 1e-5
    assert (lse.double() - ref_lse).abs().max() <= 1e-4
    assert rep.refined_tasks == [3]
    assert rep.refinements == 1
    assert rep.levels == 2
    assert rep.calibration > 1.0
    assert 3 not in rep.merge_counts
    assert max(rep.merge_counts) >= 7
    assert len(rep.oom_events) == 3  # n_cap 2 -> 1, one plain retry at 1, then refine
    _check_cover(rep, 7)


def test_refinement_cascades_and_backward_stays_exact(guarded, make_qkv):
    q, k, v = make_qkv(1, 2, 200, 8, dtype=torch.float32, seed=5, requires_grad=True)
    failing = {0, 7}  # task 0, then the first of its sub-tasks (id 7) also fails

    def hook(task_id, attempt):
        if task_id in failing:
            raise torch.cuda.OutOfMemoryError("injected")

    with task_hook(hook):
        out = attention(q, k, v, window=(40, 0), plan=2)
        fwd = last_run_stats()
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        out.backward(dout)
    bwd = last_run_stats()
    assert fwd.refined_tasks == [0, 7]
    _check_cover(fwd, 7)
    assert bwd.direction == "backward"
    _check_cover(bwd, len(fwd.plan))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, _ = reference_attention(q64, k64, v64, window=(40, 0))
    ref.backward(dout.double())
    assert _rel(out.detach(), ref.detach()) <= 1e-5
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert _rel(got, want) <= 1e-4


def test_task_too_small_to_refine_raises(guarded, make_qkv):
    q, k, v = make_qkv(1, 1, 20, 4, dtype=torch.float32)

    def hook(task_id, attempt):
        raise torch.cuda.OutOfMemoryError("always")

    with task_hook(hook), pytest.raises(torch.cuda.OutOfMemoryError, match="too small"):
        attention(q, k, v, plan=2)


def test_policy_and_sizing():
    g = OOMGuard(4, retries_at_one=0)
    assert [g.on_oom(1), g.n_cap, g.on_oom(1), g.n_cap, g.on_oom(1)] == [
        "retry", 2, "retry", 1, "refine"]
    with pytest.raises(ValueError, match="n_cap"):
        OOMGuard(0)
    assert size_run(budget=None, task_bytes=10, resident_bytes=0, n_cap_max=3) == 3
    assert size_run(budget=100, task_bytes=30, resident_bytes=10, n_cap_max=8) == 3
    assert size_run(budget=100, task_bytes=30, resident_bytes=10, n_cap_max=8,
                    calibration=2.0) == 1


def test_streaming_on_cpu_reuses_chunks_and_profiles(make_qkv):
    from cqs_attention.masks import make_mask_spec

    q, k, v = make_qkv(2, 2, 130, 8, dtype=torch.float32, seed=6)
    plan = make_plan(130, design=3)
    ex = StreamingExecutor(plan, make_mask_spec(130, 130, batch=2, heads=2),
                           device=torch.device("cpu"), scale=8 ** -0.5, progress=False)
    out, _lse = ex.forward(q, k, v)
    ref, _ref_lse = reference_attention(q.double(), k.double(), v.double())
    rep = ex.report
    assert _rel(out, ref) <= 1e-5
    assert rep.chunk_hits > 0
    assert rep.bytes_saved > 0
    assert set(rep.merge_counts.values()) == {1}
    assert len(rep.merge_counts) == 13
    assert {"h2d", "compute", "merge", "idle"} <= set(rep.profile)
    # every staged byte is either copied or reused: q once per task row, k and v likewise
    assert rep.bytes_to_device + rep.bytes_saved == 3 * sum(
        t.tokens for t in plan.tasks) * 2 * 2 * 8 * 4
