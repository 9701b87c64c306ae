"""Strong scaling of distributed CQS attention: the same problem on 1 rank and on N ranks.

Run under torchrun (NCCL when CUDA is present, gloo otherwise)::

    torchrun --standalone --nproc_per_node=2 benchmarks/bench_distributed.py \
        --seq 65536 --heads 16 --head-dim 128 --dtype bfloat16 --causal

Every rank first times the whole problem alone (``process_group`` unused: the 1-rank
baseline, measured on each rank, rank 0's is reported), then all ranks run it together with
``cqs_attention.distributed.attention``. Rank 0 prints the times, the speedup
(``t_1 / t_N``), the efficiency (``speedup / N``), the relative error against the 1-rank
output, and writes ``benchmarks/results/distributed_<backend>_<N>ranks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time(fn, dev: torch.device, repeats: int) -> tuple[float, object]:
    res = fn()  # warm-up
    _sync(dev)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--causal", action="store_true")
    p.add_argument("--design", type=int, default=7,
                   help="Singer order q of the plan (default 7: v = 57 tasks, so N ranks "
                        "balance well; v = 7 tasks cap 2 ranks at 7/4 = 1.75x)")
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    a = p.parse_args()

    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if "RANK" not in os.environ:  # plain `python bench_distributed.py`: a 1-rank group
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", "29517"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

    from cqs_attention import attention, distributed, last_run_stats
    from cqs_design.plans import make_plan

    dtype = getattr(torch, a.dtype)
    g = torch.Generator(device=dev).manual_seed(a.seed)
    shape = (a.batch, a.heads, a.seq, a.head_dim)
    q, k, v = (torch.randn(shape, generator=g, device=dev, dtype=dtype) for _ in range(3))
    plan = make_plan(a.seq, design=a.design, causal=a.causal)
    grad = a.backward
    if grad:
        for t in (q, k, v):
            t.requires_grad_(True)

    def single():
        out = attention(q, k, v, causal=a.causal, plan=plan, progress=False)
        if grad:
            out.sum().backward()
        return out.detach()

    def multi():
        out = distributed.attention(q, k, v, causal=a.causal, plan=plan, progress=False)
        if grad:
            out.sum().backward()
        return out.detach()

    t1, ref = _time(single, dev, a.repeats)
    dist.barrier()
    tn, got = _time(multi, dev, a.repeats)
    stats = last_run_stats()
    err = ((got.double() - ref.double()).norm() / ref.double().norm()).item()
    times = torch.tensor([t1, tn], dtype=torch.float64, device=dev)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)  # the slowest rank decides
    if rank == 0:
        t1, tn = times.tolist()
        res = {
            "backend": backend, "world_size": world, "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if cuda else platform.processor(),
            "shape": list(shape), "dtype": a.dtype, "causal": a.causal,
            "backward": grad, "plan_tasks": len(plan), "design_v": plan.design.v,
            "t_1rank_s": t1, "t_nranks_s": tn, "speedup": t1 / tn,
            "efficiency": t1 / tn / world, "rel_err_vs_1rank": err,
            "collective_s_rank0": (stats.timings.get("collective") if stats else None),
            "torch": torch.__version__,
        }
        print(f"{world} ranks ({backend}, {dev.type}) {shape} {a.dtype} causal={a.causal} "
              f"backward={grad}: 1 rank {t1 * 1e3:.1f} ms, {world} ranks {tn * 1e3:.1f} ms, "
              f"speedup {t1 / tn:.2f}x (efficiency {t1 / tn / world:.0%}), "
              f"rel err {err:.1e}")
        path = Path(a.out) if a.out else (Path(__file__).parent / "results" /
                                          f"distributed_{backend}_{world}ranks.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {path}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
