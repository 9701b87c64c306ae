"""The execution engine: one pipeline that runs any plan, forward and backward.

Data flows request -> plan -> steps -> placement -> transport -> compute -> accumulate ->
commit, one module per responsibility and no module importing a later stage's internals:

* :mod:`~cqs_attention.engine.request`: one validated call of :func:`cqs_attention.attention`;
* :mod:`~cqs_attention.engine.schedule`: a plan (CQS tasks, query blocks, key/value blocks,
  a rank's shard) as steps of kernel calls; splitting calls after an out-of-memory error;
* :mod:`~cqs_attention.engine.placement`: the one footprint model, the one cost model, the
  budget search choosing the schedule, its granularity and where accumulators live, the
  kernel of each kind of call, and the one cache of these decisions;
* :mod:`~cqs_attention.engine.transport`: streams, events, row copies (a CPU shim for tests;
  the copies in :mod:`~cqs_attention.engine.copies`);
* :mod:`~cqs_attention.engine.compute`: the kernel calls;
* :mod:`~cqs_attention.engine.accumulate`: accumulator rows on the device or at home, merged
  with the package's one log-sum-exp merge (or, for one kernel call, its outputs taken as the
  result);
* :mod:`~cqs_attention.engine.guard`: the out-of-memory policy;
* :mod:`~cqs_attention.engine.driver`: the one loop; :mod:`~cqs_attention.engine.run` plans
  and runs a call (:func:`~cqs_attention.engine.run.execute`) and wires the loop for a
  forward or backward pass (checkpoint journal and distributed shard included).

See docs/architecture.md for the route of a call and the one place of each decision.
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
