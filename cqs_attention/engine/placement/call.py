"""A call's plan: the budget in force, both directions' choices, the kernel of every kind of
call, all decided before any work and cached (:func:`plan_call`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cqs_attention._bytes import format_bytes
from cqs_attention.engine.placement.choice import FORCE, Choice, choose
from cqs_attention.engine.placement.cost import CALIBRATION_BYTES, CostModel
from cqs_attention.engine.placement.decisions import DECISIONS
from cqs_attention.engine.placement.footprint import Dims
from cqs_attention.engine.request import AttentionRequest
from cqs_attention.engine.schedule import (
    Step,
    mask_categories,
    task_steps,
)
from cqs_attention.errors import KernelUnavailableError, MemoryBudgetError
from cqs_attention.kernels import registry_version as kernel_registry_version
from cqs_attention.kernels import select_kernel
from cqs_attention.kernels.base import BlockMask, Kernel, scale_breaks_masking
from cqs_attention.kernels.reference import ReferenceKernel
from cqs_attention.masks import MaskSpec
from cqs_attention.report import PlanSummary

# -- which kernel runs a call ------------------------------------------------------------------
_REFERENCE = ReferenceKernel()

#: a mask of each category, for the dispatcher (kernels tell categories apart by
#: ``BlockMask.band_only`` and ``is_full`` only)
CATEGORY_PROBES: dict[str, BlockMask | None] = {
    "none": None, "causal": BlockMask(causal_offset=0),
    "dense": BlockMask(dense=torch.ones(1, 1, 1, 1, dtype=torch.bool))}


def choose_kernel(backend: str, *, device: torch.device, dtype: torch.dtype, head_dim: int,
                  gqa: bool, category: str, needs_grad: bool, scale: float) -> Kernel:
    """The kernel for calls of one mask ``category`` (``"none"``, ``"causal"``, ``"dense"``)
    and direction: the registry's dispatcher (:func:`cqs_attention.kernels.select_kernel`),
    except that masked calls whose score scale breaks the fast kernels' masking go to the
    reference kernel. Raises :class:`~cqs_attention.errors.KernelUnavailableError` when none
    (or not the forced ``backend``) can run them."""
    if (category != "none" and scale_breaks_masking(scale) and backend == "auto"
            and device.type == "cuda"):
        # cuDNN and the flash kernels break masking for scales that are not positive in
        # float32 (issue 13, item 7; a tiny positive scale rounds to 0 there); the
        # reference kernel is right for every scale
        return _REFERENCE
    return select_kernel(backend, device=device, dtype=dtype, head_dim=head_dim,
                         mask=CATEGORY_PROBES[category], gqa=gqa, needs_grad=needs_grad)



# -- a call's plan: budget, placement, kernels --------------------------------------------------
#: the fraction of the free device memory used as the budget when none is given (CUDA)
DEFAULT_BUDGET_FRACTION = 0.8


#: the steps of a one-task plan and the counts of its blocks by classification
OneTaskSteps = tuple[tuple[Step, ...], dict[str, int]]


@dataclass(frozen=True)
class Planned:
    """Everything decided for one call before any work: the forward's :class:`Choice` and,
    when gradients are needed, the backward's; the kernel of every kind of call they make
    (``(mask category, needs_grad) -> kernel``); for one-task plans under a band mask, the
    steps of that task (per direction, classified once); and the plan summaries the run
    reports start from. Read-only: every run of the call shares it."""

    forward: Choice
    backward: Choice | None
    kernels: dict[tuple[str, bool], Kernel]
    summaries: tuple[PlanSummary, PlanSummary | None]
    steps: tuple[OneTaskSteps | None, OneTaskSteps | None] = (None, None)

    @property
    def footprint(self) -> int:
        """The larger footprint of the two directions."""
        return max(self.forward.footprint,
                   0 if self.backward is None else self.backward.footprint)


def streams_rows(request: AttentionRequest) -> bool:
    """Whether rows are staged (and the budget bounds them): when kernels run elsewhere than
    the data lives, or on the CPU under a budget (numpy memmaps: the data is on disk)."""
    return request.device != request.home or (
        request.device.type == "cpu" and request.memory_budget is not None)


def call_budget(request: AttentionRequest) -> int | None:
    """The budget in force: the one given, else on CUDA :data:`DEFAULT_BUDGET_FRACTION` of the
    free device memory, else None (unbounded); a distributed run uses the smallest over its
    ranks (one collective)."""
    budget = request.memory_budget
    if budget is None and request.device.type == "cuda":
        budget = int(DEFAULT_BUDGET_FRACTION * torch.cuda.mem_get_info(request.device)[0])
    if request.dist is not None:
        budget = request.dist.shared_budget(budget)
    return budget


def plan_kernels(spec: MaskSpec, backend: str, dev: torch.device, dtype: torch.dtype,
                 head_dim: int, gqa: bool, scale: float, *, needs_grad: bool) -> list[Any]:
    """The kernels a run may call, one per kind of call the mask can make (none, a causal
    offset, a window edge or dense mask), for the footprint model. Kinds no kernel can run
    are left out here (:func:`plan_call` reports them)."""
    cats = ["none"]
    if spec.causal or spec.window is not None:
        cats.append("causal")
    if spec.q_doc is not None or spec.mask_mod is not None or (
            spec.window is not None and spec.window[0] is not None):
        cats.append("dense")
    out = []
    for cat in cats:
        try:
            out.append(choose_kernel(backend, device=dev, dtype=dtype, head_dim=head_dim,
                                     gqa=gqa, category=cat, needs_grad=needs_grad,
                                     scale=scale))
        except KernelUnavailableError:
            continue
    return out


def _plan_key(request: AttentionRequest, budget: int | None) -> tuple[Any, ...]:
    """Everything that decides a call's :class:`Planned` besides the budget's value."""
    q, k, v, spec, dev = request.q, request.k, request.v, request.spec, request.device
    band = spec.q_doc is None and spec.mask_mod is None
    model = ("cpu",) if dev.type != "cuda" else (
        "uncalibrated",) if request.dist is not None else (
        "cuda", budget is not None and budget < CALIBRATION_BYTES)
    forced = tuple(sorted(FORCE[-1].items())) if FORCE else ()
    return ("plan", q.shape, k.shape, v.shape, q.dtype, dev,  # shapes: tuples (torch.Size)
            request.home, request.memory_budget is None, spec.causal, spec.window,
            band, spec.dense_bytes_per_pair(), scale_breaks_masking(request.scale),
            request.plan_digest, request.backend, kernel_registry_version(),
            request.needs_grad, None if request.dist is None else request.dist.world_size,
            request.checkpoint is not None, forced, model)


def plan_call(request: AttentionRequest, budget: int | None) -> Planned:
    """The plan of a call under ``budget`` (from :func:`call_budget`): both directions
    chosen by :func:`choose`, every kind of call they make given a kernel (which raises
    :class:`~cqs_attention.errors.KernelUnavailableError` before any work when one cannot
    run), the one-task steps classified.

    Decisions are cached (:data:`DECISIONS`) under everything that decides them; a cached
    plan is reused while it fits the budget and the budget is at most 1.25x the one it was
    chosen under (a larger budget may fit a faster plan).

    Raises :class:`~cqs_attention.errors.MemoryBudgetError` when no plan fits; when gradients
    are needed it names the budget that runs the forward AND the backward.
    """
    key = _plan_key(request, budget)
    hit = DECISIONS.get(key)
    if hit is not None:
        used, planned = hit
        if (budget is None) == (used is None) and (
                budget is None or (planned.footprint <= budget and budget <= 1.25 * used)):
            return planned
    planned = _plan(request, budget)
    DECISIONS.put(key, (budget, planned))
    return planned


def choose_for(request: AttentionRequest, budget: int | None, *, backward: bool,
               allow_whole_call: bool = True) -> Choice:
    """:func:`choose` for one direction of ``request`` under ``budget``. One kernel call (no
    accumulators) is considered only where ``allow_whole_call`` and the run needs none: not
    for a rank's shard, nor for a forward that checkpoints its accumulators."""
    q, k, v, spec, dev = request.q, request.k, request.v, request.spec, request.device
    b, h, lq, d = q.shape
    dims = Dims(b, h, k.shape[1], lq, k.shape[2], d, q.dtype, v.shape[-1])
    # distributed ranks must choose identically: the uncalibrated model then
    model = (CostModel() if request.dist is not None else
             CostModel.for_device(dev, q.dtype, d, budget=budget))
    kernels = plan_kernels(spec, request.backend, dev, q.dtype, d, h != k.shape[1],
                           request.scale, needs_grad=backward)
    whole = (allow_whole_call and request.dist is None
             and (backward or request.checkpoint is None))
    return choose(dims, budget=budget, streamed=streams_rows(request), backward=backward,
                  causal=spec.causal, window=spec.window,
                  dense_masks=spec.dense_bytes_per_pair(), masked=not spec.is_empty_spec,
                  plan=request.plan, kernels=kernels, model=model, allow_whole_call=whole,
                  home_is_device=request.home == dev,
                  min_tasks=1 if request.dist is None else 4 * request.dist.world_size,
                  slack=dev.type == "cuda")


def replan_with_accumulators(request: AttentionRequest, budget: int | None, *,
                             backward: bool) -> Choice:
    """The plan after one kernel call ran out of memory where the guard would split it: the
    fastest run WITH accumulators that fits the same budget (the given plan, if any, with
    accumulators); :class:`~cqs_attention.errors.MemoryBudgetError` when none does."""
    try:
        return choose_for(request, budget, backward=backward, allow_whole_call=False)
    except MemoryBudgetError as exc:
        raise MemoryBudgetError(
            f"one kernel call ran out of device memory and no run with accumulators fits "
            f"memory_budget={budget} bytes: {exc}", minimum=exc.minimum) from exc


def check_unmasked_kernel(request: AttentionRequest) -> None:
    """:class:`~cqs_attention.errors.KernelUnavailableError` when no kernel (or not the forced
    backend) can run even an unmasked call of ``request``: before any planning."""
    q = request.q
    choose_kernel(request.backend, device=request.device, dtype=q.dtype,
                  head_dim=q.shape[-1], gqa=q.shape[1] != request.k.shape[1],
                  category="none", needs_grad=request.needs_grad, scale=request.scale)


def _plan(request: AttentionRequest, budget: int | None) -> Planned:
    q, k, spec, dev = request.q, request.k, request.spec, request.device
    d = q.shape[-1]
    gqa = q.shape[1] != k.shape[1]
    check_unmasked_kernel(request)

    def decide(backward: bool) -> Choice | MemoryBudgetError:
        try:
            return choose_for(request, budget, backward=backward)
        except MemoryBudgetError as exc:
            return exc

    fwd = decide(False)
    bwd = decide(True) if request.needs_grad else None
    failed = [c for c in (fwd, bwd) if isinstance(c, MemoryBudgetError)]
    if request.needs_grad and failed:  # name the budget that runs the forward AND the backward
        need = max(c.minimum or 0 for c in failed)
        which = ("forward and backward" if len(failed) == 2 else
                 "backward" if failed[0] is bwd else "forward")
        raise MemoryBudgetError(
            f"memory_budget={budget} bytes is too small for the {which} of this call "
            f"(q, k or v require grad, so the backward runs under the same budget): pass "
            f"memory_budget >= {need} ({format_bytes(need)}) to run both; {failed[0]}",
            minimum=need)
    if failed:
        raise failed[0]
    assert isinstance(fwd, Choice)
    assert not isinstance(bwd, MemoryBudgetError)
    cats = mask_categories(fwd.rects, spec, fwd.stationary)
    if bwd is not None:
        cats |= mask_categories(bwd.rects, spec, bwd.stationary)
    kernels = {(cat, grad): choose_kernel(request.backend, device=dev, dtype=q.dtype,
                                          head_dim=d, gqa=gqa, category=cat, needs_grad=grad,
                                          scale=request.scale)
               for cat in sorted(cats)
               for grad in ((False, True) if request.needs_grad else (False,))}
    default = request.memory_budget is None and budget is not None
    given = request.plan is not None
    band = spec.q_doc is None and spec.mask_mod is None
    return Planned(
        forward=fwd, backward=bwd, kernels=kernels,
        summaries=(summarize(fwd, given=given, default_budget=default),
                   None if bwd is None else summarize(bwd, given=given,
                                                      default_budget=default)),
        steps=(_one_task_steps(fwd, spec, dev) if band else None,
               _one_task_steps(bwd, spec, dev) if band and bwd is not None else None))


def _one_task_steps(choice: Choice, spec: MaskSpec, dev: torch.device) -> OneTaskSteps | None:
    """The steps of a one-task plan and its block counts (a band mask classifies the same
    way in every run), or None for plans of several tasks."""
    if len(choice.rects) != 1:
        return None
    counts: dict[str, int] = {}
    steps = task_steps(choice.rects, 0, spec, stationary=choice.stationary, device=dev,
                       counts=counts)
    return tuple(steps), counts


def summarize(choice: Choice, *, given: bool, default_budget: bool = False) -> PlanSummary:
    """The :class:`~cqs_attention.report.PlanSummary` of a planner ``choice``: the plan, how
    it was chosen, its CQS design (None for other schedules), placement and prediction."""
    p = choice.plan
    sched = getattr(p, "schedule", "cqs")
    source = "given" if given else choice.kind
    if default_budget:
        source += f" ({DEFAULT_BUDGET_FRACTION:.0%} of free device memory)"
    ds = getattr(p, "design", None) if sched == "cqs" else None
    return PlanSummary(
        plan=p, plan_source=source, schedule=choice.kind if not given else f"given {sched}",
        design_v=None if ds is None else ds.v, design_k=None if ds is None else ds.k,
        levels=None if ds is None else getattr(p, "levels", 1),
        accumulators=choice.accumulators, prefetch=choice.prefetch,
        chosen_because=choice.reason, predicted_seconds=choice.predicted_s,
        task_bytes_estimate=choice.footprint)
