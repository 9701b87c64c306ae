"""Distributed attention: CPU/gloo process groups of 2 and 3 ranks against one process and the
reference, forward and backward; task assignment; the collective merge's -inf rows."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention import attention, reference_attention
from cqs_attention.distributed import (
    PlanShard,
    assign_tasks,
    distributed_options,
    task_pairs,
)
from cqs_attention.errors import AttentionInputError
from cqs_design.plans import make_plan

WORKER = Path(__file__).with_name("_dist_worker.py")
_spec = importlib.util.spec_from_file_location("_dist_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, out_dir: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for attempt in range(2):  # a port taken between _free_port and bind: try once more
        port = _free_port()
        # a fresh directory per attempt: a second attempt must not resume the first one's
        # checkpoint journal (it would run no task, and the crash test would see no crash)
        run_dir = out_dir / f"attempt{attempt}"
        run_dir.mkdir()
        procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(world), str(port),
                                   str(run_dir)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for r in range(world)]
        logs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
        if all(p.returncode == 0 for p in procs):
            return [torch.load(run_dir / f"rank{r}.pt", weights_only=False)
                    for r in range(world)]
    raise AssertionError("distributed workers failed:\n" + "\n----\n".join(logs))


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def ranks(request, tmp_path_factory) -> list[dict]:
    return _launch(request.param, tmp_path_factory.mktemp(f"dist{request.param}"))


def _single(case: dict) -> dict:
    q, k, v, dout = (t.clone() for t in case["qkv"])
    for t in (q, k, v):
        t.requires_grad_(True)
    out, lse = attention(q, k, v, return_lse=True, **case["kw"])
    out.backward(dout)
    return {"out": out.detach(), "lse": lse, "dq": q.grad, "dk": k.grad, "dv": v.grad}


def _reference(case: dict) -> dict:
    q, k, v, dout = (t.detach().double().requires_grad_(True) for t in case["qkv"])
    kw = {n: val for n, val in case["kw"].items() if n != "plan"}
    out, lse = reference_attention(q, k, v, **kw)
    out.backward(dout)
    return {"out": out.detach(), "lse": lse, "dq": q.grad, "dk": k.grad, "dv": v.grad}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("name", list(worker.cases()))
def test_every_rank_matches_single_process_and_reference(ranks, name):
    case = worker.cases()[name]
    single, ref = _single(case), _reference(case)
    f64 = case["qkv"][0].dtype == torch.float64
    tol = 1e-10 if f64 else 1e-5
    for r, res in enumerate(ranks):
        got = res[name]
        assert torch.equal(torch.isneginf(got["lse"]), torch.isneginf(ref["lse"]))
        for key in ("out", "dq", "dk", "dv"):
            assert got[key].dtype == case["qkv"][0].dtype
            assert _rel(got[key], ref[key]) <= tol, (r, key)
            assert _rel(got[key], single[key]) <= tol, (r, key)
        fin = torch.isfinite(ref["lse"])
        assert (got["lse"].double()[fin] - ref["lse"][fin]).abs().max() <= (
            1e-10 if f64 else 1e-5)
        # every rank returns the same tensors
        assert torch.equal(got["out"], ranks[0][name]["out"])
        assert torch.equal(got["dq"], ranks[0][name]["dq"])


def test_ranks_split_the_tasks(ranks):
    n = len(ranks)
    for name in worker.cases():
        counts = [res[name]["tasks"] for res in ranks]
        if name == "tiny":  # one task: exactly one rank runs it
            assert sorted(counts) == [0] * (n - 1) + [1]
            continue
        assert all(c > 0 for c in counts)
        plan = worker.cases()[name]["kw"].get("plan")
        if plan is not None:  # disjoint shares covering the plan (no task emptied by mask here)
            assert sum(counts) <= len(plan)
            assert max(counts) < len(plan)
    assert n in (2, 3)


def test_dst_only_on_destination(ranks):
    world = len(ranks)
    q, k, v, _ = worker.cases()["causal_gqa"]["qkv"]
    ref, _ = reference_attention(q.double(), k.double(), v.double(), causal=True)
    for r, res in enumerate(ranks):
        if r == 1 % world:
            assert _rel(res["dst"], ref) <= 1e-5
        else:
            assert res["dst"] is None


def test_heterogeneous_budgets_share_the_smallest_budget_plan(ranks):
    q, k, v, _ = worker.cases()["causal_gqa"]["qkv"]
    ref, _ = reference_attention(q.double(), k.double(), v.double(), causal=True)
    # every rank runs the same plan, chosen under the smallest budget (rank 0's) ...
    assert len({res["hetero"]["plan"] for res in ranks}) == 1
    assert all(res["hetero"]["footprint"] <= 150_000 for res in ranks)
    # ... which is not what the rank with the largest budget would pick alone
    assert ranks[-1]["hetero_alone_plan"] != ranks[0]["hetero"]["plan"]
    for res in ranks:
        assert _rel(res["hetero"]["out"], ref) <= 1e-5
    # rank_weight = rank + 1: the faster ranks take more tasks
    tasks = [res["hetero"]["tasks"] for res in ranks]
    assert tasks[-1] > tasks[0]


def test_plan_disagreement_is_refused_on_every_rank(ranks):
    for res in ranks:
        assert "disagree on the plan" in res["mismatch"]


# -- pieces that need no process group -----------------------------------------------------
@given(pairs=st.lists(st.integers(0, 10**6), min_size=1, max_size=60),
       world=st.integers(1, 8), data=st.data())
def test_assign_tasks_is_a_balanced_partition(pairs, world, data):
    weights = data.draw(st.none() | st.lists(st.floats(0.1, 10), min_size=world,
                                             max_size=world))
    shares = assign_tasks(pairs, world, weights=weights)
    flat = np.concatenate(shares)
    assert sorted(flat.tolist()) == list(range(len(pairs)))
    assert all(np.all(np.diff(s) > 0) for s in shares)
    w = np.ones(world) if weights is None else np.asarray(weights)
    p = np.asarray(pairs, dtype=np.float64)
    finish = [p[s].sum() / w[r] for r, s in enumerate(shares)]
    # greedy list scheduling bound: max finish <= total/sum(w) + max task / min w
    assert max(finish) <= p.sum() / w.sum() + p.max() / w.min() + 1e-6
    assert assign_tasks(pairs, world, weights=weights)[0].tolist() == shares[0].tolist()


def test_task_pairs_sum_to_plan_pairs():
    for plan in (make_plan(97, design=3, causal=True), make_plan(70, kv_len=50, design=2),
                 make_plan(97, design=2, window=(20, 5))):
        assert int(task_pairs(plan).sum()) == plan.stats().pairs_computed


def test_plan_shard_runs_only_its_tasks_and_shards_merge_exactly(make_qkv):
    from cqs_attention.engine.placement import Dims, choose
    from cqs_attention.engine.request import AttentionRequest
    from cqs_attention.engine.run import RunContext, run_forward
    from cqs_attention.masks import make_mask_spec
    from cqs_attention.merge import merge_partials
    from cqs_attention.report import RunCounters

    q, k, v = make_qkv(1, 2, 61, 8, seed=5)
    plan = make_plan(61, design=2, causal=True)
    spec = make_mask_spec(61, 61, batch=1, heads=2, causal=True)
    parts = []
    for share in assign_tasks(task_pairs(plan), 3):
        shard = PlanShard(plan, share)
        assert [t.id for t in shard.tasks] == [plan.task_ids[i] for i in share]
        choice = choose(Dims(1, 2, 2, 61, 61, 8, q.dtype), budget=None, streamed=False,
                        backward=False, causal=True, window=None, plan=plan,
                        force_accumulators="device")
        request = AttentionRequest(q=q, k=k, v=v, spec=spec, scale=8 ** -0.5, plan=plan,
                                   memory_budget=None, device=torch.device("cpu"),
                                   home=torch.device("cpu"), backend="auto", needs_grad=False)
        ctx = RunContext(request=request, budget=None, counters=RunCounters(),
                         positions=list(share))
        parts.append(run_forward(q, k, v, choice, ctx))
    out, lse = parts[0]
    for o, lo in parts[1:]:
        out, lse = merge_partials(out, lse, o, lo)
    ref, ref_lse = reference_attention(q, k, v, causal=True)
    assert (out - ref).abs().max() < 1e-12
    assert (lse - ref_lse).abs().max() < 1e-12
    nested = PlanShard(PlanShard(plan, [1, 3, 5]), [0, 2])
    assert nested.positions.tolist() == [1, 5]
    assert nested.parent is plan


def test_bad_arguments_are_refused_before_work():
    q = torch.randn(1, 1, 10, 4)
    with pytest.raises(AttentionInputError, match=r"torch\.distributed initialised"):
        attention(q, q, q, process_group=object())
    with pytest.raises(AttentionInputError, match=r"torch\.distributed initialised"):
        distributed_options(None, 0)


def test_streamed_checkpointed_oom_injected_ranks_are_exact(ranks):
    """Every rank streams through the CPU shim with home accumulators, survives injected
    out-of-memory errors, crashes after two commits, resumes from its journal; the merged
    result and the distributed backward equal the float64 reference."""
    q, k, v, dout = (t.double() for t in worker.cases()["causal_gqa"]["qkv"])
    qr, kr, vr = (t.clone().requires_grad_(True) for t in (q, k, v))
    ref, ref_lse = reference_attention(qr, kr, vr, causal=True)
    ref.backward(dout)
    for res in ranks:
        assert res["crashed"]
        got = res["streamed_ckpt"]
        assert _rel(got["out"], ref) <= 1e-10
        assert (got["lse"] - ref_lse).abs().max() <= 1e-9
        b = res["streamed_bwd"]
        assert _rel(b["out"], ref) <= 1e-10
        for name, want in (("dq", qr.grad), ("dk", kr.grad), ("dv", vr.grad)):
            assert _rel(b[name], want) <= 1e-10, name


def test_a_rank_killed_mid_run_is_a_clear_error_on_the_others(tmp_path):
    """Issue 15, item 4 on gloo: rank 1 is SIGKILLed in its third task; rank 0 must not hang
    in the collective merge but raise a clear error (within the group's 20 s timeout)."""
    import json

    kill = Path(__file__).with_name("_kill_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(kill), str(r), "2", str(port),
                               str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for r in range(2)]
    logs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
    assert procs[1].returncode == -9, logs[1]  # SIGKILL
    assert procs[0].returncode == 0, logs[0]
    res = json.loads((tmp_path / "rank0.json").read_text())
    assert res["error"] == "RankFailureError", res
    assert "rank" in res["message"]
    assert "collective" in res["message"]
    assert res["seconds"] < 90
