"""Guard: what an out-of-memory error in a step means. Policy only; the driver's loop acts.

A step that fails is never partly merged twice: the driver records merged call ids, so a retry
or a split recomputes only the calls not merged yet. The policy, per step and its *lineage*
(the steps a split made from it inherit the count of failures and the axis last halved):

1. the lineage's first failure: ``"retry"`` with prefetching turned off and the allocator
   cache emptied;
2. then a split of the unmerged calls: ``"split_k"`` (halve their keys, which also halves the
   key/value rows the step stages) or ``"split_q"`` (halve their query rows), whichever axis is
   longer; on a tie, the other axis than the one the lineage halved last (keys first). This is
   the refinement: finer steps covering exactly the same (query, key) pairs;
3. when nothing can be split (one query row against one key): plain retries, and ``"fail"``
   after ``MAX_PLAIN_RETRIES`` of them.

>>> g = OOMGuard()
>>> g.on_oom(failures=1, lineage=0, rows=64, keys=64, last=None)
'retry'
>>> g.on_oom(failures=2, lineage=0, rows=64, keys=64, last=None)
'split_k'
>>> g.on_oom(failures=1, lineage=2, rows=64, keys=32, last="k")
'split_q'
>>> g.on_oom(failures=1, lineage=3, rows=32, keys=32, last="q")
'split_k'
>>> [g.on_oom(failures=n, lineage=9, rows=1, keys=1, last="q") for n in (1, 2, 3, 4)]
['retry', 'retry', 'retry', 'fail']
"""

from __future__ import annotations

from typing import Literal

__all__ = ["MAX_PLAIN_RETRIES", "OOMGuard"]

Action = Literal["retry", "split_q", "split_k", "fail"]

#: retries of a step that cannot be split any more before the run fails
MAX_PLAIN_RETRIES = 3


class OOMGuard:
    """Out-of-memory policy of one run (see the module docstring)."""

    __slots__ = ("prefetch",)

    def __init__(self) -> None:
        self.prefetch = True

    def on_oom(self, *, failures: int, lineage: int, rows: int, keys: int,
               last: str | None) -> Action:
        """The action after a step's ``failures``-th out-of-memory error (counting this one),
        its lineage having failed ``lineage`` times before it; ``rows``/``keys``: the longest
        query rows / keys of its unmerged calls; ``last``: the axis its lineage halved last."""
        self.prefetch = False
        if lineage + failures == 1:
            return "retry"
        can_q, can_k = rows > 1, keys > 1
        if not (can_q or can_k):
            return "retry" if failures <= MAX_PLAIN_RETRIES else "fail"
        if can_q and can_k:
            if rows != keys:
                return "split_q" if rows > keys else "split_k"
            return "split_q" if last == "k" else "split_k"
        return "split_q" if can_q else "split_k"
