"""One rank of the "a rank dies mid-run" test (run as a subprocess).

``python _kill_worker.py RANK WORLD PORT OUT_DIR``: joins a gloo group with a 20 s timeout and
runs ``cqs_attention.distributed.attention``; rank 1 SIGKILLs itself when its third task
starts. The survivors write ``{"error", "message", "seconds"}`` to ``OUT_DIR/rank<RANK>.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time


def main(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=20))
    from cqs_attention import distributed
    from cqs_attention.testing import task_hook
    from cqs_design.plans import make_plan

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 97, 16, generator=g) for _ in range(3))
    seen: set[int] = set()

    def die(tid: int, attempt: int) -> None:
        seen.add(tid)
        if rank == 1 and len(seen) >= 3:
            os.kill(os.getpid(), signal.SIGKILL)

    t0 = time.monotonic()
    res: dict[str, object] = {"error": None, "message": ""}
    try:
        with task_hook(die):
            distributed.attention(q, k, v, causal=True, plan=make_plan(97, design=3, causal=True),
                                  device=torch.device("cpu", 0), memory_budget=1 << 22)
    except Exception as exc:
        res = {"error": type(exc).__name__, "message": str(exc)[:800]}
    res["seconds"] = time.monotonic() - t0
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(res, fh)
    # leave without the interpreter's teardown of the gloo group, whose destructor can abort
    # the process when a peer is gone (it is: rank 1 was killed); the answer is written
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
