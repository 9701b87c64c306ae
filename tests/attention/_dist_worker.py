"""One rank of the CPU/gloo distributed attention tests (run as a subprocess).

``python _dist_worker.py RANK WORLD_SIZE PORT OUT_DIR``: joins a gloo group at
127.0.0.1:PORT, runs every case of :func:`cases` with ``cqs_attention.distributed.attention``
and saves ``{name: tensors}`` to ``OUT_DIR/rank<RANK>.pt``. The test compares them with the
single-process run and the reference. :func:`cases` is imported by the test too, so both
sides build the same seeded inputs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch


def _qkv(b: int, h: int, hkv: int, lq: int, lk: int, d: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hkv, lk, d, generator=g, dtype=torch.float64)
    dout = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype), dout.to(dtype)


def cases() -> dict[str, dict[str, Any]]:
    """name -> inputs and attention keyword arguments (same on every rank)."""
    from cqs_design.plans import make_plan

    docs = torch.tensor([0] * 30 + [1] * 40 + [2] * 27)
    return {
        # fp32, causal, GQA, length not divisible by v
        "causal_gqa": {"qkv": _qkv(2, 4, 2, 97, 97, 16, torch.float32, 1),
                           "kw": {"causal": True, "plan": make_plan(97, design=3, causal=True)}},
        # fp64 window + documents, grads exact to 1e-10
        "mask_f64": {"qkv": _qkv(1, 2, 2, 97, 97, 8, torch.float64, 2),
                         "kw": {"window": (20, 5), "document_ids": docs,
                                 "plan": make_plan(97, design=2, window=(20, 5))}},
        # cross-attention, causal bottom-right, default plan
        "cross": {"qkv": _qkv(1, 2, 1, 40, 70, 8, torch.float32, 3), "kw": {"causal": True}},
        # one task (shorter than the smallest design): the other ranks have nothing to do
        "tiny": {"qkv": _qkv(1, 2, 2, 5, 5, 8, torch.float64, 4), "kw": {"causal": True}},
    }


def main(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    from cqs_attention import attention, distributed
    from cqs_attention.errors import PlanMismatchError
    from cqs_attention.report import last_run_stats
    from cqs_design.plans import make_plan

    res: dict[str, Any] = {}
    for name, case in cases().items():
        q, k, v, dout = (t.clone() for t in case["qkv"])
        for t in (q, k, v):
            t.requires_grad_(True)
        out, lse = distributed.attention(q, k, v, return_lse=True, **case["kw"])
        tasks_fwd = last_run_stats().tasks
        out.backward(dout)
        res[name] = {"out": out.detach(), "lse": lse, "dq": q.grad, "dk": k.grad, "dv": v.grad,
                         "tasks": tasks_fwd}
    # dst: only rank 1 % world gets the output; no grad
    q, k, v, _ = cases()["causal_gqa"]["qkv"]
    got = distributed.attention(q, k, v, dst=1 % world, causal=True)
    res["dst"] = None if got is None else got.clone()
    # heterogeneous ranks: per-rank budgets and speeds; the plan comes from the smallest budget
    budget = [150_000, 400_000, 1_000_000][rank % 3]
    out = distributed.attention(q, k, v, causal=True, memory_budget=budget,
                                rank_weight=float(rank + 1))
    stats = last_run_stats()
    res["hetero"] = {"out": out, "tasks": stats.tasks, "plan": repr(stats.plan),
                     "footprint": stats.task_bytes_estimate}
    attention(q, k, v, causal=True, memory_budget=budget)  # this rank alone, its own budget
    res["hetero_alone_plan"] = repr(last_run_stats().plan)
    # ranks disagreeing on the plan: every rank gets PlanMismatchError
    try:
        distributed.attention(q, k, v, causal=True,
                              plan=make_plan(97, design=2 + (rank == 1), causal=True))
        res["mismatch"] = "no error"
    except PlanMismatchError as exc:
        res["mismatch"] = str(exc)
    # the engine's modes on every rank: streamed through the CPU shim with home accumulators,
    # out-of-memory errors injected, a crash after two committed tasks, then resume
    from cqs_attention.testing import fail_calls, force_placement, task_hook

    q, k, v, dout = (t.double() for t in cases()["causal_gqa"]["qkv"])
    kw = {"causal": True, "plan": make_plan(97, design=3, causal=True),
          "device": torch.device("cpu", 0), "memory_budget": 1 << 22}
    ck = os.path.join(out_dir, "ck")

    class Crash(BaseException):
        pass

    seen: set[int] = set()

    def crash(tid: int, attempt: int) -> None:
        seen.add(tid)
        if len(seen) > 2:
            raise Crash

    try:
        with force_placement("host"), fail_calls({1, 3}), task_hook(crash):
            distributed.attention(q, k, v, checkpoint_dir=ck, checkpoint_interval=1, **kw)
        res["crashed"] = False
    except Crash:
        res["crashed"] = True
    with force_placement("host"), fail_calls({0, 2}):
        out, lse = distributed.attention(q, k, v, checkpoint_dir=ck, return_lse=True, **kw)
    res["streamed_ckpt"] = {"out": out, "lse": lse}
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    with force_placement("host"), fail_calls({1, 4}):
        o = distributed.attention(qg, kg, vg, **kw)
        o.backward(dout)
    res["streamed_bwd"] = {"out": o.detach(), "dq": qg.grad, "dk": kg.grad, "dv": vg.grad}
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    # leave without the interpreter's teardown of the gloo group, whose destructor can abort
    # the process when a peer has just gone ("terminate called without an active exception")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
