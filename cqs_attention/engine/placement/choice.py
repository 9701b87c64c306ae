"""The ONE budget search: the fastest predicted run that fits the budget.

:func:`choose` searches the candidates (one whole call; query-block or key/value-block plans
from coarse to fine; CQS plans with Singer designs; each with accumulators on the device, at
home, or none for one call, with or without prefetching) for the fastest predicted one whose
footprint fits, and returns it as a :class:`Choice`.

>>> import torch
>>> from cqs_attention.engine.placement.footprint import Dims
>>> dims = Dims(batch=1, heads=2, kv_heads=2, q_len=64, kv_len=64, head_dim=8,
...             dtype=torch.float32)
>>> choice = choose(dims, budget=None, streamed=False, backward=False, causal=True,
...                 window=None)
>>> choice.kind, choice.accumulators
('whole', 'none')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cqs_attention.engine.placement.cost import CostModel, predict
from cqs_attention.engine.placement.footprint import Dims, conversion_slab_bytes, footprint
from cqs_attention.engine.schedule import (
    PlanRects,
    plan_rectangles,
    stationary_side,
)
from cqs_attention.errors import MemoryBudgetError

#: overrides for tests (:func:`cqs_attention.testing.force_placement`): keys "accumulators",
#: "prefetch"
FORCE: list[dict[str, Any]] = []

#: Singer orders the budget search tries for CQS plans (v = q^2 + q + 1)
SINGER_ORDERS = (2, 3, 4, 5, 7, 8, 9, 11, 13, 16, 17, 19, 23, 25, 27, 29, 31, 32, 37, 41, 43)
#: CQS plans with more rectangles than this are not tried by the search (pass plan= instead)
MAX_SCAN_RECTANGLES = 1 << 21
#: query-block plans: block sizes are rounded to multiples of this when at least twice as long
GRANULE = 128
#: query-block plans with more (query block, key/value block) pairs are not tried
MAX_BLOCK_PAIRS = 1 << 12


# -- the search ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """What a run will do: the plan, where accumulators live, and why (read-only: a choice
    is a planning decision, shared by every run of the call it was made for)."""

    kind: str  # "whole", "query_blocks", "kv_blocks", "cqs" or "given"
    plan: Any
    rects: PlanRects
    stationary: str
    accumulators: Literal["device", "host", "none"]
    prefetch: bool
    footprint: int
    predicted_s: float
    reason: str = ""
    candidates: tuple[tuple[str, int, float], ...] = ()


def _block(n: int, parts: int) -> int:
    size = -(-n // parts)
    if size >= 2 * GRANULE:
        size = -(-size // GRANULE) * GRANULE
    return max(1, min(n, size))


def _candidates(d: Dims, *, backward: bool, causal: bool, window: Any) -> list[tuple[str, Any]]:
    from cqs_design.plans import PlanError, make_plan

    out: list[tuple[str, Any]] = []
    lq, lk = d.q_len, d.kv_len
    kw = {"kv_len": lk, "causal": causal, "window": window}
    sched = "kv_blocks" if backward else "query_blocks"
    seen = set()
    for i in range(0, 14):
        for j in range(0, 14):
            bq, bk = _block(lq, 2 ** i), _block(lk, 2 ** j)
            if (bq, bk) in seen or 2 ** i > max(1, lq // 16) or 2 ** j > max(1, lk // 16):
                continue
            if 2 ** (i + j) > MAX_BLOCK_PAIRS:
                continue
            seen.add((bq, bk))
            name = "whole" if bq >= lq and bk >= lk else sched
            out.append((name, lambda bq=bq, bk=bk: make_plan(
                lq, schedule=sched, block_q=bq, block_kv=bk, **kw)))
    for order in SINGER_ORDERS:
        v = order * order + order + 1
        if v > min(lq, lk):
            break
        if v * (order + 1) * (order + 2) // 2 > MAX_SCAN_RECTANGLES:
            break

        def build(order: int = order) -> Any:
            try:
                return make_plan(lq, design=order, **kw)
            except PlanError:
                return None
        out.append(("cqs", build))
    return out


def choose(d: Dims, *, budget: int | None, streamed: bool, backward: bool, causal: bool,
           window: Any, dense_masks: int = 0, masked: bool | None = None, plan: Any = None,
           kernels: Sequence[Any] = (), model: CostModel | None = None,
           allow_whole_call: bool = True, force_accumulators: str | None = None,
           min_tasks: int = 1, home_is_device: bool | None = None,
           slack: bool = False) -> Choice:
    """The fastest predicted run that fits ``budget`` (see the module docstring).

    ``plan`` forces the plan (a given :class:`~cqs_design.plans.Plan`); only the accumulator
    placement and prefetching are chosen then. ``kernels``: the kernels of the kinds of call
    the run makes, whose memory models :func:`footprint` uses; ``dense_masks``: bytes of dense
    mask per (query, key) pair (document ids, ``mask_mod``). ``min_tasks``: plans with fewer
    tasks are only used when no other fits (a distributed run wants a task per rank). Raises
    :class:`MemoryBudgetError` naming the smallest footprint found when nothing fits (its
    ``minimum``).
    """
    model = model if model is not None else CostModel()
    masked = (causal or window is not None) if masked is None else masked
    forced = FORCE[-1] if FORCE else {}
    if force_accumulators is None and streamed:
        force_accumulators = forced.get("accumulators")
    best: Choice | None = None
    smallest: tuple[int, str] | None = None
    tried: list[tuple[str, int, float]] = []
    cqs_after_fit = 0
    sources = [("given", lambda: plan)] if plan is not None else _candidates(
        d, backward=backward, causal=causal, window=window)
    for name, build in sources:
        if name == "cqs" and cqs_after_fit >= 2:
            continue  # finer designs only add tasks once two have fit
        n_tried = len(tried)
        p = build()
        if p is None:
            continue
        rects = plan_rectangles(p)
        if int(rects.ptr[-1]) > MAX_SCAN_RECTANGLES and plan is None:
            continue
        if plan is None and len(rects) < min_tasks and name != "cqs":
            continue
        stationary = stationary_side(p, "backward" if backward else "forward")
        # one kernel call: one rectangle covering the whole matrix (its outputs are the result)
        single = (len(rects) == 1 and int(rects.ptr[-1]) == 1
                  and (int(rects.q0[0]), int(rects.q1[0]), int(rects.k0[0]), int(rects.k1[0]))
                  == (0, d.q_len, 0, d.kv_len))
        places: list[str] = ["none"] if (single and allow_whole_call) else []
        places += ["device", "host"] if streamed else ["device"]
        if force_accumulators is not None:
            places = [force_accumulators]
        for acc in places:
            pre = (True, False) if streamed else (False,)
            if streamed and "prefetch" in forced:
                pre = (forced["prefetch"],)
            for prefetch in pre:
                fp = footprint(rects, d, stationary=stationary, streamed=streamed,
                               accumulators=acc, backward=backward, prefetch=prefetch,
                               masked=masked, dense_masks=dense_masks, kernels=kernels,
                               home_is_device=home_is_device,
                               slab=conversion_slab_bytes(budget), slack=slack)
                label = f"{name} {_describe(p)} acc={acc}{' prefetch' if prefetch else ''}"
                if smallest is None or fp < smallest[0]:
                    smallest = (fp, label)
                if budget is not None and fp > budget:
                    continue
                t = predict(rects, d, model, stationary=stationary, streamed=streamed,
                            accumulators=acc, backward=backward, causal=causal, window=window)
                if not prefetch and streamed:
                    t *= 1.3  # copies no longer overlap the compute
                tried.append((label, fp, t))
                if best is None or t < best.predicted_s:
                    best = Choice(name, p, rects, stationary, acc, prefetch, fp, t)
        if name == "cqs" and len(tried) > n_tried:
            cqs_after_fit += 1
        if best is not None and plan is None and name == "whole" and best.kind == "whole":
            break  # nothing beats one call when it fits
    if best is None and min_tasks > 1 and plan is None:
        return choose(d, budget=budget, streamed=streamed, backward=backward, causal=causal,
                      window=window, dense_masks=dense_masks, masked=masked,
                      kernels=kernels, model=model, allow_whole_call=allow_whole_call,
                      force_accumulators=force_accumulators, home_is_device=home_is_device,
                      slack=slack)
    if best is None:
        fp, label = smallest if smallest is not None else (0, "no plan")
        what = "the given plan" if plan is not None else "any plan"
        raise MemoryBudgetError(
            f"memory_budget={budget} bytes is too small for {what}"
            f"{' (backward)' if backward else ''}: the smallest footprint found is {fp} "
            f"bytes ({label}); pass memory_budget >= {fp}"
            + (" or a finer plan" if plan is not None else ""), minimum=fp)
    return dataclasses.replace(
        best, candidates=tuple(sorted(tried, key=lambda x: x[2])[:8]),
        reason=(f"{best.kind} {_describe(best.plan)}, accumulators {best.accumulators}"
                f"{', prefetching' if best.prefetch else ''}: predicted "
                f"{best.predicted_s * 1e3:.1f} ms with footprint {best.footprint} bytes"
                + ("" if budget is None else f" <= budget {budget}")
                + f" ({len(tried)} candidates fit; cost model: {model.source})"))


def _describe(p: Any) -> str:
    sched = getattr(p, "schedule", "cqs")
    if sched != "cqs":
        return f"(block_q={p.block_q}, block_kv={p.block_kv})"
    ds = getattr(p, "design", None)
    if ds is None:
        return "(one task)"
    return f"(v={ds.v}, k={ds.k}, levels={getattr(p, 'levels', 1)})"
