"""The execution engine: one pipeline that runs any plan, forward and backward.

Data flows plan -> steps -> placement -> transport -> compute -> accumulate -> commit, one
module per responsibility and no module importing a later stage's internals:

* :mod:`~cqs_attention.engine.schedule`: a plan (CQS tasks, query blocks, key/value blocks,
  a rank's shard) as steps of kernel calls; splitting calls after an out-of-memory error;
* :mod:`~cqs_attention.engine.placement`: the one footprint model, the one cost model and the
  budget search choosing the schedule, its granularity and where accumulators live;
* :mod:`~cqs_attention.engine.transport`: streams, events, row copies (a CPU shim for tests);
* :mod:`~cqs_attention.engine.compute`: kernel dispatch and calls;
* :mod:`~cqs_attention.engine.accumulate`: accumulator rows on the device or at home, merged
  with the package's one log-sum-exp merge;
* :mod:`~cqs_attention.engine.guard`: the out-of-memory policy;
* :mod:`~cqs_attention.engine.driver`: the one loop; :mod:`~cqs_attention.engine.run` wires it
  for a forward or backward call (checkpoint journal and distributed shard included).
"""

from __future__ import annotations

from cqs_attention.engine.compute import call_hook
from cqs_attention.engine.placement import Choice, CostModel, Dims, choose, footprint
from cqs_attention.engine.schedule import Call, Step, plan_rectangles, split_call, task_steps

__all__ = [
    "Call",
    "Choice",
    "CostModel",
    "Dims",
    "Step",
    "call_hook",
    "choose",
    "footprint",
    "plan_rectangles",
    "split_call",
    "task_steps",
]
