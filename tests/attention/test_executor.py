"""Executor structure: one call per query chunk where possible, plug-in executors, info."""

from __future__ import annotations

import torch

from cqs_attention import attention, last_run_stats, reference_attention
from cqs_attention.executor import PlanExecutor, executor_class, register_executor
from cqs_attention.masks import make_mask_spec
from cqs_design.plans import make_plan


def test_at_most_two_calls_per_query_chunk_and_staging_once(make_qkv):
    q, k, v = make_qkv(1, 2, 63, 4, seed=2)
    plan = make_plan(63, design=2)
    mod = lambda b, h, i, j: (i + 2 * j + h) % 3 != 0  # noqa: E731 - partial everywhere
    spec = make_mask_spec(63, 63, batch=1, heads=2, causal=True, window=(20, None),
                          mask_mod=mod)
    ex = PlanExecutor(plan, spec, device=torch.device("cpu"), scale=0.5)
    for task in plan.tasks:
        work = ex.task_work(task)
        per_chunk: dict[int, int] = {}
        for call in work.calls:
            per_chunk[call.q0] = per_chunk.get(call.q0, 0) + 1
            assert call.mask is not None  # mask_mod makes every non-empty block partial
        assert all(n <= 2 for n in per_chunk.values())
        # staged rows are exactly the rows the calls touch
        rows = {i for c in work.calls for i in range(c.q0, c.q1)}
        assert sum(e - s for s, e in work.q_segments) == len(rows)
    out = attention(q, k, v, plan=plan, causal=True, window=(20, None), mask_mod=mod)
    ref, _ = reference_attention(q, k, v, causal=True, window=(20, None), mask_mod=mod)
    assert (out - ref).abs().max() < 1e-12


class _CountingExecutor(PlanExecutor):
    staged = 0

    def stage(self, work, q_tensors, kv_tensors):
        type(self).staged += 1
        return super().stage(work, q_tensors, kv_tensors)


def test_registered_executor_is_used(make_qkv):
    from cqs_attention import executor as ex_mod

    q, k, v = make_qkv(1, 1, 30, 4)
    register_executor(lambda dev, home: dev.type == "cpu", _CountingExecutor)
    try:
        assert executor_class(torch.device("cpu"), torch.device("cpu")) is _CountingExecutor
        out = attention(q, k, v, plan=2, causal=True)
        assert _CountingExecutor.staged == last_run_stats().tasks > 0
    finally:
        ex_mod._EXECUTORS[:] = [e for e in ex_mod._EXECUTORS if e[1] is not _CountingExecutor]
    ref, _ = reference_attention(q, k, v, causal=True)
    assert (out - ref).abs().max() < 1e-12
    assert executor_class(torch.device("cpu"), torch.device("cpu")) is PlanExecutor


def test_tasks_emptied_by_the_mask_are_skipped(make_qkv):
    q, k, v = make_qkv(1, 1, 70, 4)
    docs = torch.zeros(70, dtype=torch.long)
    docs[:10] = 1  # chunk 0 alone in document 1
    mod = lambda b, h, i, j: (i < 10) & (j < 10)  # noqa: E731
    attention(q, k, v, plan=make_plan(70, design=2), document_ids=docs, mask_mod=mod)
    rep = last_run_stats()
    assert rep.tasks == 1
    assert rep.tasks_skipped == 6
    assert rep.pairs_computed == 100


def test_info_lists_the_reference_kernel(capsys):
    from cqs_attention.info import main

    assert main() == 0
    text = capsys.readouterr().out
    assert "reference" in text
    assert "cpu float64" in text
