"""A checkpointed attention run that hangs after some tasks (run as a subprocess, then killed).

``python _ckpt_worker.py DIR HANG_AFTER``: runs :func:`run` with ``checkpoint_dir=DIR`` and
``checkpoint_interval=1``; before task number ``HANG_AFTER`` (0-based count of attempts) it
sleeps for an hour, so the parent can ``SIGKILL`` it with a checkpoint on disk.
The test imports :func:`inputs` / :func:`run` so both sides compute the same thing.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return tuple(torch.randn(1, 2, 200, 16, generator=g) for _ in range(3))


def run(directory: Any, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from cqs_attention import attention
    from cqs_design.plans import make_plan

    q, k, v = inputs()
    return attention(q, k, v, causal=True, plan=make_plan(200, design=3, causal=True),
                     return_lse=True, checkpoint_dir=directory, **kw)


def main(directory: str, hang_after: int) -> None:
    torch.set_num_threads(1)
    from cqs_attention.testing import task_hook

    seen: list[int] = []

    def hook(task_id: int, attempt: int) -> None:
        if len(seen) == hang_after:
            time.sleep(3600)
        seen.append(task_id)

    with task_hook(hook):
        run(directory, checkpoint_interval=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
