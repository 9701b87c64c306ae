"""Guard: what an out-of-memory error in a step means. Policy only; the driver's loop acts.

A step that fails is never partly merged twice: the driver records merged call ids, so a retry
or a split recomputes only the calls not merged yet. The policy, per step:

1. first failure: ``"retry"`` with prefetching turned off and the allocator cache emptied;
2. then, alternately, ``"split_q"`` (halve the query rows of the unmerged calls) and
   ``"split_k"`` (halve their keys, which also halves the key/value rows the step stages);
   this is the refinement: finer steps covering exactly the same (query, key) pairs;
3. when nothing can be split (one query row against one key): plain retries, and ``"fail"``
   after ``MAX_PLAIN_RETRIES`` of them.

>>> g = OOMGuard()
>>> [g.on_oom(0, can_split_q=True, can_split_k=True) for _ in range(4)]
['retry', 'split_q', 'split_k', 'split_q']
>>> [g.on_oom(1, can_split_q=False, can_split_k=False) for _ in range(4)]
['retry', 'retry', 'retry', 'fail']
"""

from __future__ import annotations

from typing import Literal

__all__ = ["OOMGuard"]

Action = Literal["retry", "split_q", "split_k", "fail"]

#: retries of a step that cannot be split any more before the run fails
MAX_PLAIN_RETRIES = 3


class OOMGuard:
    """Out-of-memory policy of one run (see the module docstring).

    ``attempts`` counts failures per step key (the driver passes the id of the step's first
    unmerged call; split steps get fresh keys).
    """

    def __init__(self) -> None:
        self.attempts: dict[int, int] = {}
        self.prefetch = True

    def on_oom(self, key: int, *, can_split_q: bool, can_split_k: bool) -> Action:
        n = self.attempts.get(key, 0)
        self.attempts[key] = n + 1
        self.prefetch = False
        if n == 0:
            return "retry"
        order: list[Action] = ["split_q", "split_k"] if n % 2 == 1 else ["split_k", "split_q"]
        for act in order:
            if (act == "split_q" and can_split_q) or (act == "split_k" and can_split_k):
                return act
        return "retry" if n < MAX_PLAIN_RETRIES else "fail"
