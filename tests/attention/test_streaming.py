"""Inputs on disk, memory budgets, retried tasks (injected OOM) and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cqs_attention import (
    AttentionInputError,
    KernelUnavailableError,
    MaskError,
    MemoryBudgetError,
    PlanMismatchError,
    attention,
    last_run_stats,
    reference_attention,
)
from cqs_attention.testing import task_hook
from cqs_design.plans import make_plan


def _memmaps(tmp_path, arrays):
    maps = []
    for name, a in zip("qkv", arrays, strict=True):
        m = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=a.dtype,
                                      shape=tuple(a.shape))
        m[:] = a
        m.flush()
        maps.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    return maps


def test_disk_inputs_with_budget_smaller_than_one_tensor(make_qkv, errors, tmp_path):
    rel_err, lse_err = errors
    q, k, v = make_qkv(1, 4, 200, 16, hkv=2, dtype=torch.float32, seed=7)
    qm, km, vm = _memmaps(tmp_path, [t.numpy() for t in (q, k, v)])
    budget = q.numel() * 4 // 2  # half of q alone
    out_map = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32,
                                        shape=tuple(q.shape))
    res, lse = attention(qm, km, vm, causal=True, memory_budget=budget, out=out_map,
                         return_lse=True)
    rep = last_run_stats()
    assert rep.plan_source in ("cqs", "query_blocks")  # chosen by the planner
    assert rep.task_bytes_estimate <= budget < q.numel() * 4
    ref, ref_lse = reference_attention(q.double(), k.double(), v.double(), causal=True)
    out_map.flush()
    back = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert rel_err(torch.from_numpy(np.array(back)), ref) <= 1e-5
    assert rel_err(res, ref) <= 1e-5
    assert lse_err(lse, ref_lse) <= 1e-4


def test_torch_from_file_inputs(make_qkv, errors, tmp_path):
    rel_err, _ = errors
    q, k, v = make_qkv(1, 2, 90, 8, dtype=torch.float32, seed=8)
    disk = []
    for name, t in zip("qkv", (q, k, v), strict=True):
        path = tmp_path / f"{name}.bin"
        t.numpy().tofile(path)
        disk.append(torch.from_file(str(path), size=t.numel(), dtype=torch.float32)
                    .view(t.shape))
    out = attention(*disk, window=(20, 0), memory_budget=20_000)
    ref, _ = reference_attention(q.double(), k.double(), v.double(), window=(20, 0))
    assert rel_err(out, ref) <= 1e-5
    assert last_run_stats().task_bytes_estimate <= 20_000


def test_budget_too_small_names_the_smallest_that_works(make_qkv):
    q, k, v = make_qkv(1, 2, 60, 8, dtype=torch.float32)
    with pytest.raises(MemoryBudgetError, match=r"pass memory_budget >= (\d+)") as info:
        attention(q, k, v, memory_budget=500)
    smallest = int(info.value.args[0].rsplit(">= ", 1)[1])
    attention(q, k, v, memory_budget=smallest)
    assert last_run_stats().task_bytes_estimate <= smallest


def test_given_plan_over_budget_is_refused(make_qkv):
    q, k, v = make_qkv(1, 2, 60, 8, dtype=torch.float32)
    with pytest.raises(MemoryBudgetError, match="given plan"):
        attention(q, k, v, plan=make_plan(60, design=2), memory_budget=1000)


def test_injected_oom_retries_and_merges_each_task_once(make_qkv, errors):
    _rel_err, lse_err = errors
    q, k, v = make_qkv(1, 2, 50, 4, seed=1)
    failed = []

    def hook(task_id, attempt):
        if task_id in (0, 3) and attempt == 0:
            failed.append(task_id)
            raise torch.cuda.OutOfMemoryError("injected")

    with task_hook(hook):
        out, lse = attention(q, k, v, causal=True, plan=2, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v, causal=True)
    assert failed == [0, 3]
    assert last_run_stats().oom_retries == 2
    assert (out - ref).abs().max() < 1e-12
    assert lse_err(lse, ref_lse) < 1e-12


def test_persistent_oom_is_raised(make_qkv):
    q, k, v = make_qkv(1, 1, 20, 4)

    def hook(task_id, attempt):
        raise torch.cuda.OutOfMemoryError("always")

    with task_hook(hook), pytest.raises(torch.cuda.OutOfMemoryError):
        attention(q, k, v, plan=2)


def _no_work(monkeypatch):
    """Make any engine run fail loudly: errors must come before work starts."""
    from cqs_attention.engine import driver, run

    def boom(*a, **kw):
        raise AssertionError("work started")

    monkeypatch.setattr(run, "run_forward", boom)
    monkeypatch.setattr(driver.Driver, "run", boom)


Q = torch.zeros(1, 2, 20, 4)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"out": torch.zeros(1, 2, 20, 5)}, AttentionInputError, "out must have shape"),
    ({"out": torch.zeros(1, 2, 20, 4, dtype=torch.float64)}, AttentionInputError, "dtype"),
    ({"out": torch.zeros(1, 2, 4, 20).transpose(-1, -2)}, AttentionInputError, "contiguous"),
    ({"out": Q}, AttentionInputError, "overlaps the memory of q"),
    ({"plan": make_plan(21, design=2)}, PlanMismatchError, "seq_len=21"),
    ({"plan": make_plan(20, design=2, causal=True)}, PlanMismatchError, "drops pairs"),
    ({"plan": 4}, PlanMismatchError, "plan=4"),
    ({"plan": 6}, PlanMismatchError, "prime power"),
    ({"plan": "x"}, PlanMismatchError, "plan must be"),
    ({"memory_budget": 0}, MemoryBudgetError, "positive"),
    ({"memory_budget": 0.4}, MemoryBudgetError, "positive"),
    ({"memory_budget": "lots"}, MemoryBudgetError, "not a size"),
    ({"backend": "nope"}, KernelUnavailableError, "'reference'"),
    ({"backend": "flex"}, KernelUnavailableError, "flex"),
    ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "bogus"},
     AttentionInputError, "device"),
    ({"scale": float("nan")}, AttentionInputError, "scale"),
    ({"return_lse": 1}, AttentionInputError, "return_lse"),
    ({"progress": "yes"}, AttentionInputError, "progress"),
    ({"mask_mod": lambda b, h, i, j: 1 / 0}, MaskError, "mask_mod raised"),
    ({"mask_mod": lambda b, h, i, j: i - j}, MaskError, "bool tensor"),
    ({"window": (1, 2, 3)}, MaskError, "window"),
])
def test_bad_arguments_fail_before_work(monkeypatch, kwargs, exc, match):
    _no_work(monkeypatch)
    if kwargs.get("backend") == "flex" and "flex" not in [
            k.name for k in __import__("cqs_attention").available_kernels()]:
        pytest.skip("no flex kernel registered")
    with pytest.raises(exc, match=match):
        attention(Q, Q.clone(), Q.clone(), **kwargs)


def test_overlap_with_a_view_of_v_is_detected():
    q = torch.randn(1, 2, 20, 4)
    kv = torch.randn(2, 1, 2, 20, 4)
    with pytest.raises(AttentionInputError, match="overlaps the memory of v"):
        attention(q, kv[0], kv[1], out=kv[1])


def test_a_looser_plan_than_the_mask_is_fine(make_qkv):
    q, k, v = make_qkv(1, 1, 30, 4)
    out = attention(q, k, v, causal=True, window=(5, 0), plan=make_plan(30, design=2))
    ref, _ = reference_attention(q, k, v, causal=True, window=(5, 0))
    assert (out - ref).abs().max() < 1e-12
    assert last_run_stats().plan_source == "given"


def test_progress_bar_can_be_forced(make_qkv, capsys):
    q, k, v = make_qkv(1, 1, 30, 4)
    attention(q, k, v, plan=2, progress=True)
    assert "task" in capsys.readouterr().err
    attention(q, k, v, plan=2, progress=False)
    assert capsys.readouterr().err == ""
