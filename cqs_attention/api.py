"""The public :func:`attention`: validate everything, choose a plan and a placement, run it.

This module is thin: arguments are checked here (before any work), the plan and the placement
of the accumulators come from :mod:`cqs_attention.engine.placement`, and the run itself from
:mod:`cqs_attention.engine.run` (through :class:`~cqs_attention.autograd.CQSAttentionFunction`
when gradients are needed).

>>> import torch
>>> from cqs_attention import attention, reference_attention
>>> g = torch.Generator().manual_seed(0)
>>> q, k, v = (torch.randn(2, 4, 50, 16, generator=g) for _ in range(3))
>>> out = attention(q, k, v, causal=True)
>>> ref, _ = reference_attention(q, k, v, causal=True)
>>> bool(((out - ref).norm() / ref.norm()) < 1e-5)
True
"""

from __future__ import annotations

import collections
from typing import Any

import torch

from cqs_attention._bytes import format_bytes, parse_bytes
from cqs_attention.autograd import CQSAttentionFunction
from cqs_attention.engine.placement import Choice, CostModel, Dims, choose
from cqs_attention.engine.run import RunContext, run_forward
from cqs_attention.engine.schedule import mask_categories
from cqs_attention.errors import (
    AttentionInputError,
    KernelUnavailableError,
    MemoryBudgetError,
    PlanMismatchError,
)
from cqs_attention.kernels import available_kernels, select_kernel
from cqs_attention.kernels.base import BlockMask, scale_breaks_masking
from cqs_attention.masks import MaskMod, make_mask_spec
from cqs_attention.merge import accumulator_dtype
from cqs_attention.reference import as_tensor, check_qkv
from cqs_attention.report import RunReport, _set_last, fill_plan_summary

__all__ = ["attention", "check_budget", "out_of_core_attention", "resolve_device",
           "validated_plan"]

_DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: Any, q: torch.Tensor) -> torch.device:
    """The compute device: ``device`` if given, else q's accelerator, else CUDA if available,
    else the CPU. Only CPU and CUDA devices run kernels here.

    >>> resolve_device("cpu", torch.zeros(1))
    device(type='cpu')
    >>> resolve_device("meta", torch.zeros(1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cqs_attention.errors.AttentionInputError: device='meta' cannot run attention kernels...
    """
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise AttentionInputError(f"device={device!r} is not a torch device") from exc
        if dev.type not in _DEVICE_TYPES:
            raise AttentionInputError(f"device={device!r} cannot run attention kernels; valid: "
                                      "'cpu' or 'cuda' (with CUDA available)")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise AttentionInputError(f"device={device!r} but CUDA is not available here; "
                                      "valid: 'cpu'")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return dev
    if q.device.type not in ("cpu", "cuda"):
        raise AttentionInputError(f"q is on {q.device}, where no attention kernel runs; move "
                                  "it to the CPU or a CUDA device, or pass device=")
    if q.device.type != "cpu":
        return q.device
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_budget(memory_budget: Any) -> int | None:
    """``memory_budget`` as a positive int of bytes (ints and strings like ``"2GiB"``).

    >>> check_budget("1 KiB"), check_budget(None)
    (1024, None)
    >>> check_budget(0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cqs_attention.errors.MemoryBudgetError: memory_budget must be a positive number of bytes...
    """
    if memory_budget is None:
        return None
    try:
        value = parse_bytes(memory_budget)
    except ValueError as exc:
        raise MemoryBudgetError(str(exc)) from None
    if value is None or value <= 0:
        raise MemoryBudgetError(f"memory_budget must be a positive number of bytes (an int or "
                                f"a string like '2GiB') or None, got {memory_budget!r}")
    return int(value)


# given plans are validated once per content (the digest covers lengths, mask and rectangles)
_VALIDATED: collections.OrderedDict[str, bool] = collections.OrderedDict()


def validated_plan(plan: Any, lq: int, lk: int, causal: bool, window: Any) -> Any:
    """Check a given plan against the call and prove its exact cover (cached by content).

    Raises :class:`~cqs_attention.errors.PlanMismatchError` for another length or a weaker
    mask, or a plan that is not an exact cover.
    """
    from cqs_attention.checkpoint import plan_digest
    from cqs_design.plans import Plan, PlanError

    if not isinstance(plan, Plan):
        raise PlanMismatchError(f"plan must be a cqs_design Plan (load others with "
                                f"Plan.from_json), a design or None, got {type(plan).__name__}")
    if plan.seq_len != lq or plan.kv_len != lk:
        raise PlanMismatchError(
            f"plan was built for seq_len={plan.seq_len}, kv_len={plan.kv_len}, but q has "
            f"{lq} tokens and k has {lk}; build it with make_plan({lq}, kv_len={lk}, ...)")
    p_left, p_right = _bounds(bool(plan.causal), plan.window)
    c_left, c_right = _bounds(causal, window)
    if c_left > p_left or c_right > p_right:
        raise PlanMismatchError(
            f"plan was built with causal={plan.causal}, window={plan.window}, which drops "
            f"pairs this call needs (causal={causal}, window={window}); build the plan with "
            "this call's mask")
    key = plan_digest(plan)
    if key not in _VALIDATED:
        try:
            plan.validate()
        except PlanError as exc:
            raise PlanMismatchError(f"plan is not an exact cover of the attention matrix: "
                                    f"{exc}") from exc
        _VALIDATED[key] = True
        while len(_VALIDATED) > 64:
            _VALIDATED.popitem(last=False)
    return plan


def _bounds(causal: bool, window: Any) -> tuple[float, float]:
    """(left, right) reach of the band a causal/window mask allows (inf = unbounded)."""
    from cqs_design.plans.mask import Mask

    band = Mask.of(0, 0, causal=causal, window=window)  # the band rule; lengths unused
    inf = float("inf")
    return (inf if band.lower_shift is None else band.lower_shift,
            inf if band.upper_shift is None else band.upper_shift)


def _design_plan(design: Any, lq: int, lk: int, causal: bool, window: Any) -> Any:
    from cqs_design.difference_sets import DifferenceSet
    from cqs_design.plans import PlanError, make_plan

    if isinstance(design, bool) or not isinstance(design, (int, DifferenceSet)):
        raise PlanMismatchError(f"plan must be a Plan, a design (prime power q or "
                                f"DifferenceSet) or None, got {type(design).__name__}")
    try:
        return make_plan(lq, kv_len=lk, design=design, causal=causal, window=window)
    except PlanError as exc:
        raise PlanMismatchError(f"plan={design!r}: cannot build a plan for seq_len={lq}, "
                                f"kv_len={lk}: {exc}") from exc


def _ranges_overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.device != b.device or a.numel() == 0 or b.numel() == 0:
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    a1 = a0 + a.numel() * a.element_size()
    b1 = b0 + b.numel() * b.element_size()
    if not (a.is_contiguous() and b.is_contiguous()):  # conservative: the whole storages
        sa, sb = a.untyped_storage(), b.untyped_storage()
        a0, a1 = sa.data_ptr(), sa.data_ptr() + sa.nbytes()
        b0, b1 = sb.data_ptr(), sb.data_ptr() + sb.nbytes()
    return a0 < b1 and b0 < a1


def _check_out(out: Any, q: torch.Tensor, v: torch.Tensor,
               inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    out = as_tensor(out, "out")
    shape = (*q.shape[:3], v.shape[3])
    if tuple(out.shape) != shape:
        raise AttentionInputError(f"out must have shape {shape}, got {tuple(out.shape)}")
    if out.dtype != q.dtype:
        raise AttentionInputError(f"out must have q's dtype {q.dtype}, got {out.dtype}")
    if not out.is_contiguous():
        raise AttentionInputError("out must be contiguous (and so free of internal overlap); "
                                  f"got strides {out.stride()}")
    for name, t in zip(("q", "k", "v"), inputs, strict=True):
        if _ranges_overlap(out, t):
            raise AttentionInputError(f"out overlaps the memory of {name}; pass a separate "
                                      "buffer")
    if out.requires_grad:
        raise AttentionInputError("out must not require grad (out= does not support autograd)")
    return out


def _probe_kernels(backend: str, dev: torch.device, q: torch.Tensor, gqa: bool,
                   cats: set[str], needs_grad: bool) -> None:
    """Every kind of call the run will make has a kernel (before any work)."""
    probes: dict[str, BlockMask | None] = {
        "none": None, "causal": BlockMask(causal_offset=0),
        "dense": BlockMask(dense=torch.ones(1, 1, 1, 1, dtype=torch.bool))}
    for cat in sorted(cats):
        for grad in ((False, True) if needs_grad else (False,)):
            select_kernel(backend, device=dev, dtype=q.dtype, head_dim=q.shape[-1],
                          mask=probes[cat], gqa=gqa, needs_grad=grad)


def plan_kernels(spec: Any, backend: str, dev: torch.device, q: torch.Tensor, gqa: bool,
                 scale: float, *, needs_grad: bool) -> list[Any]:
    """The kernels a run may call: one per kind of call the mask can make (none, a causal
    offset, a window edge or dense mask), for the footprint model. Kinds no kernel can run
    are left out here (the probe before the run reports them)."""
    probes: list[BlockMask | None] = [None]
    if spec.causal or spec.window is not None:
        probes.append(BlockMask(causal_offset=0))
    if spec.q_doc is not None or spec.mask_mod is not None or (
            spec.window is not None and spec.window[0] is not None):
        probes.append(BlockMask(causal_offset=0, lower_offset=0))
    out = []
    for mask in probes:
        try:
            out.append(select_kernel(backend, device=dev, dtype=q.dtype, head_dim=q.shape[-1],
                                     mask=mask, gqa=gqa, needs_grad=needs_grad))
        except KernelUnavailableError:
            continue
    if len(probes) > 1 and dev.type == "cuda" and scale_breaks_masking(scale):
        from cqs_attention.kernels.reference import ReferenceKernel

        out.append(ReferenceKernel())  # masked calls with such a scale go there
    return out


def plan_run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, spec: Any, plan: Any,
             budget: int | None, dev: torch.device, streamed: bool, backward: bool,
             kernels: list[Any], home_is_device: bool, dist_opts: Any = None) -> Choice:
    """The planner's choice for one direction of a call (see :func:`choose`)."""
    b, h, lq, d = q.shape
    dims = Dims(b, h, k.shape[1], lq, k.shape[2], d, q.dtype, v.shape[-1])
    # distributed ranks must choose identically: the uncalibrated model then
    model = (CostModel() if dist_opts is not None else
             CostModel.for_device(dev, q.dtype, d, budget=budget))
    return choose(dims, budget=budget, streamed=streamed, backward=backward,
                  causal=spec.causal, window=spec.window,
                  dense_masks=spec.dense_bytes_per_pair(),
                  masked=not spec.is_empty_spec, plan=plan, kernels=kernels, model=model,
                  allow_whole_call=dist_opts is None, home_is_device=home_is_device,
                  min_tasks=1 if dist_opts is None else 4 * dist_opts.world_size,
                  slack=dev.type == "cuda")


def attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    window: tuple[int | None, int | None] | None = None,
    document_ids: Any = None,
    mask_mod: MaskMod | None = None,
    scale: float | None = None,
    plan: Any = None,
    memory_budget: int | str | None = None,
    device: torch.device | str | None = None,
    backend: str = "auto",
    return_lse: bool = False,
    out: Any = None,
    progress: bool | None = None,
    process_group: Any = None,
    dst: int | None = None,
    checkpoint_dir: Any = None,
    checkpoint_interval: Any = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
    """Exact attention computed step by step from a plan chosen for the memory budget.

    Parameters
    ----------
    q, k, v
        ``(B, H, Lq, D)``, ``(B, Hkv, Lk, D)``, ``(B, Hkv, Lk, D)`` with ``H % Hkv == 0``
        (GQA/MQA). Torch tensors on any device (host tensors may be pinned), or numpy arrays /
        memmaps (on disk; read chunk by chunk). float16, bfloat16, float32; float64 runs on the
        reference kernel.
    causal, window, document_ids, mask_mod
        Masks in global token coordinates, combined by AND; see :mod:`cqs_attention.masks`.
        With ``Lq != Lk`` causal and window are aligned bottom-right (query ``i`` sits at key
        position ``i + Lk - Lq``), like flash-attn.
    scale
        Score scale; default ``1/sqrt(D)``.
    plan
        A :class:`cqs_design.plans.Plan` for ``(Lq, Lk)`` of any schedule (CQS tasks, query
        blocks, key/value blocks; validated before use, the result cached by content), or a
        design (an int prime power ``q`` for the Singer design, or a ``DifferenceSet``) to
        build a CQS plan with :func:`cqs_design.plans.make_plan`. None: the planner picks the
        schedule, its granularity and where the accumulators live, fastest predicted first
        (:func:`cqs_attention.engine.placement.choose`): one kernel call when everything fits
        on the device, else query blocks or a CQS design. The run report says what was chosen
        and why.
    memory_budget
        Bytes of device memory the run may hold at once besides inputs already on the device
        (staged rows, accumulators on the device, partial results, masks, kernel workspace),
        as an int or a string such as ``"2GiB"``. Too small for any plan:
        :class:`~cqs_attention.errors.MemoryBudgetError` naming the smallest that works.
        None on CUDA: 80% of the free device memory. The backward pass runs under the same
        budget (gradient accumulators at home when they do not fit).
    device
        Where kernels run. Default: q's device if it is an accelerator, else CUDA when
        available (host and disk inputs are streamed to it), else the CPU.
    backend
        ``"auto"`` (first kernel that supports each call) or a kernel name (see
        ``python -m cqs_attention.info``).
    return_lse
        Also return the log-sum-exp ``(B, H, Lq)`` (float32; float64 for float64 inputs).
    out
        Optional contiguous ``(B, H, Lq, D)`` tensor (or numpy array / memmap) of q's dtype to
        write the result into; by default the output lands on q's device (CPU for numpy).
    progress
        tqdm progress bar over tasks: None shows it only for runs longer than 2 s on a
        terminal, True always, False never.
    process_group, dst
        Split the plan's tasks over the ranks of a ``torch.distributed`` process group and
        merge the partial results with collectives (see :mod:`cqs_attention.distributed`);
        with ``dst`` (a rank of the group) only that rank gets the result and the others
        return None (forward only).
    checkpoint_dir, checkpoint_interval
        Journal finished tasks and the accumulators to this directory (every
        ``checkpoint_interval`` tasks, or a ``timedelta`` / ``"30s"``) and resume from it;
        see :mod:`cqs_attention.checkpoint`.

    Returns
    -------
    out or (out, lse)
        Rows with no allowed key get ``out = 0`` and ``lse = -inf``. Differentiable in q, k,
        v once (not through ``lse``; double backward raises); the backward pass streams under
        the same budget.

    Notes
    -----
    Non-finite inputs propagate as in full attention: a NaN/inf in a query row, or in a key or
    value a row attends, makes that row NaN. The plan used, kernels, bytes moved, timings and
    the planner's reasons are in :func:`cqs_attention.last_run_stats`.
    """
    fast = _fast_key(q, k, v, causal, window, document_ids, mask_mod, scale, plan,
                     memory_budget, device, backend, return_lse, out, progress, process_group,
                     dst, checkpoint_dir, checkpoint_interval)
    if fast is not None:
        hit = _FAST.get(fast)
        if hit is not None:
            res = _run_fast(q, k, v, hit, return_lse)
            if res is not None:
                return res
    q, k, v, scale = check_qkv(q, k, v, scale)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    spec = make_mask_spec(lq, lk, batch=b, heads=h, causal=causal, window=window,
                          document_ids=document_ids, mask_mod=mask_mod)
    dev = resolve_device(device, q)
    if not isinstance(backend, str):
        raise AttentionInputError(f"backend must be a str ('auto' or a kernel name), got "
                                  f"{backend!r}")
    if backend != "auto":
        names = [kk.name for kk in available_kernels()]
        if backend not in names:
            raise KernelUnavailableError(f"backend={backend!r} is not a registered kernel; "
                                         "valid: 'auto', " + ", ".join(map(repr, names)))
    if not isinstance(return_lse, bool):
        raise AttentionInputError(f"return_lse must be a bool, got {return_lse!r}")
    if progress is not None and not isinstance(progress, bool):
        raise AttentionInputError(f"progress must be None, True or False, got {progress!r}")
    memory_budget = check_budget(memory_budget)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    dist_opts = ckpt_opts = None
    if process_group is not None or dst is not None:
        from cqs_attention._collectives import distributed_options

        dist_opts = distributed_options(process_group, dst, needs_grad=needs_grad)
    if checkpoint_dir is not None or checkpoint_interval is not None:
        from cqs_attention.checkpoint import checkpoint_options

        ckpt_opts = checkpoint_options(checkpoint_dir, checkpoint_interval, dist=dist_opts)
    if out is not None:
        out = _check_out(out, q, v, (q, k, v))
        if needs_grad:
            raise AttentionInputError("out= cannot be used when q, k or v require grad")
    gqa = h != k.shape[1]
    select_kernel(backend, device=dev, dtype=q.dtype, head_dim=d, mask=None, gqa=gqa,
                  needs_grad=needs_grad)  # a forced backend that cannot run fails here
    home = out.device if out is not None else q.device
    report = RunReport(memory_budget=memory_budget)
    if lq == 0 or lk == 0:
        return _empty(q, v, out, home, return_lse, report, needs_grad, (q, k, v))

    given = None
    if plan is not None:
        given = (validated_plan(plan, lq, lk, causal, spec.window) if not isinstance(
            plan, (int, bool)) and not _is_design(plan) else
            _design_plan(plan, lq, lk, causal, spec.window))
    # rows are staged (and the budget bounds them) when kernels run elsewhere than the data,
    # or on the CPU under a budget (numpy memmaps: the data is on disk)
    streamed = dev != home or (dev.type == "cpu" and memory_budget is not None)
    budget = memory_budget
    if budget is None and dev.type == "cuda":
        budget = int(0.8 * torch.cuda.mem_get_info(dev)[0])
        report.memory_budget = budget
    if dist_opts is not None:
        budget = dist_opts.shared_budget(budget)

    def decide(backward: bool) -> Choice | MemoryBudgetError:
        kernels = plan_kernels(spec, backend, dev, q, gqa, scale, needs_grad=backward)
        try:
            return plan_run(q, k, v, spec=spec, plan=given, budget=budget, dev=dev,
                            streamed=streamed, backward=backward, kernels=kernels,
                            home_is_device=home == dev, dist_opts=dist_opts)
        except MemoryBudgetError as exc:
            return exc

    choice = decide(False)
    bwd_choice = decide(True) if needs_grad else None
    failed = [c for c in (choice, bwd_choice) if isinstance(c, MemoryBudgetError)]
    if needs_grad and failed:  # name the budget that runs the forward AND the backward
        need = max(c.minimum or 0 for c in failed)
        which = ("forward and backward" if len(failed) == 2 else
                 "backward" if failed[0] is bwd_choice else "forward")
        err = MemoryBudgetError(
            f"memory_budget={budget} bytes is too small for the {which} of this call "
            f"(q, k or v require grad, so the backward runs under the same budget): pass "
            f"memory_budget >= {need} ({format_bytes(need)}) to run both; {failed[0]}",
            minimum=need)
        choice = err if isinstance(choice, MemoryBudgetError) else choice
        bwd_choice = err if isinstance(bwd_choice, MemoryBudgetError) else bwd_choice
    if dist_opts is not None:
        first = choice if isinstance(choice, Choice) else None
        if first is not None:
            dist_opts.check_same(first.plan, q, k, v)
        bad = next((c for c in (choice, bwd_choice) if isinstance(c, Exception)), None)
        dist_opts.agree(bad is None, str(bad))
    for c in (choice, bwd_choice):
        if isinstance(c, Exception):
            raise c
    assert isinstance(choice, Choice)
    cats = mask_categories(choice.rects, spec, choice.stationary)
    if bwd_choice is not None:
        cats |= mask_categories(bwd_choice.rects, spec, bwd_choice.stationary)
    _probe_kernels(backend, dev, q, gqa, cats, needs_grad)

    positions = None
    if dist_opts is not None:
        positions = [int(p) for p in dist_opts.positions(choice.plan)]
    journal = None
    if ckpt_opts is not None:
        from cqs_attention.checkpoint import Journal, make_manifest

        ids = [int(choice.rects.ids[p]) for p in (positions if positions is not None
                                                  else range(len(choice.rects)))]
        manifest = make_manifest(q, k, v, spec=spec, scale=scale, plan=choice.plan,
                                 task_ids=ids, rank=ckpt_opts.rank)
        journal = Journal(ckpt_opts, manifest, ids)
    fill_plan_summary(report, choice, given=given is not None,
                      default_budget=memory_budget is None and budget is not None)
    ctx = RunContext(device=dev, home=home, streamed=streamed, spec=spec, scale=scale,
                     backend=backend, report=report, progress=progress, journal=journal,
                     dist=dist_opts, positions=positions, budget=budget)
    out_target = out if isinstance(out, torch.Tensor) and out.device == home else None
    if (fast is not None and choice.accumulators == "none" and not streamed
            and (bwd_choice is None or isinstance(bwd_choice, Choice))):
        _remember(fast, choice, bwd_choice, ctx, report)
    if needs_grad:
        res_out, res_lse = CQSAttentionFunction.apply(q, k, v, choice, bwd_choice, ctx)
    else:
        with torch.no_grad():
            res_out, res_lse = run_forward(q, k, v, choice, ctx, out_target=out_target)
    _set_last(report)
    if dist_opts is not None and not dist_opts.is_destination:
        return None
    if out is not None and res_out is not out:
        out.copy_(res_out)
        res_out = out
    return (res_out, res_lse) if return_lse else res_out


# -- the fast path: a repeated call with the same signature that runs as ONE kernel call -----
_FAST: collections.OrderedDict[tuple[Any, ...], tuple[Any, ...]] = collections.OrderedDict()


def _fast_key(q: Any, k: Any, v: Any, causal: Any, window: Any, document_ids: Any,
              mask_mod: Any, scale: Any, plan: Any, memory_budget: Any, device: Any,
              backend: Any, return_lse: Any, out: Any, progress: Any, process_group: Any,
              dst: Any, checkpoint_dir: Any, checkpoint_interval: Any) -> tuple[Any, ...] | None:
    """The cache key of a call eligible for the fast path (tensors on one accelerator or the
    CPU, no document ids / mask_mod / plan / budget / out / distributed / checkpoint / forced
    progress bar), or None. Everything the full path validates is part of the key, so a hit
    needs no check."""
    if (document_ids is not None or mask_mod is not None or plan is not None
            or memory_budget is not None or out is not None or process_group is not None
            or dst is not None or checkpoint_dir is not None
            or checkpoint_interval is not None or progress is True):
        return None
    if not (type(q) is torch.Tensor and type(k) is torch.Tensor and type(v) is torch.Tensor):
        return None
    if not (isinstance(causal, bool) and isinstance(return_lse, bool)
            and isinstance(backend, str)):
        return None
    if window is not None and not isinstance(window, tuple):
        return None
    if scale is not None and type(scale) is not float:
        return None
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return (q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype, q.device, k.device,
            v.device, causal, window, scale, backend, device if device is None or isinstance(
                device, str) else str(device), grad, q.is_contiguous(), k.is_contiguous(),
            v.is_contiguous())


def _remember(key: tuple[Any, ...], choice: Choice, bwd_choice: Any, ctx: RunContext,
              report: RunReport) -> None:
    _FAST[key] = (choice, bwd_choice, ctx, report)
    while len(_FAST) > 64:
        _FAST.popitem(last=False)


def _run_fast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hit: tuple[Any, ...],
              return_lse: bool) -> Any:
    """Run a remembered single-call choice; None to take the full path (e.g. out of memory)."""
    import copy

    choice, bwd_choice, ctx, report = hit
    rep = report.fresh_copy()  # this run's own counters, never the first run's
    run_ctx = copy.copy(ctx)
    run_ctx.report = rep
    try:
        if bwd_choice is not None:
            res_out, res_lse = CQSAttentionFunction.apply(q, k, v, choice, bwd_choice, run_ctx)
        else:
            with torch.no_grad():
                res_out, res_lse = run_forward(q, k, v, choice, run_ctx)
    except torch.cuda.OutOfMemoryError:
        return None
    _set_last(rep)
    return (res_out, res_lse) if return_lse else res_out


def _is_design(plan: Any) -> bool:
    from cqs_design.difference_sets import DifferenceSet

    return isinstance(plan, DifferenceSet)


def _empty(q: torch.Tensor, v: torch.Tensor, out: Any, home: torch.device, return_lse: bool,
           report: RunReport, needs_grad: bool, inputs: tuple[torch.Tensor, ...]) -> Any:
    """Lq == 0 or Lk == 0: zeros and -inf, still connected to the graph (zero gradients)."""
    b, h, lq, _ = q.shape
    res_out = torch.zeros(b, h, lq, v.shape[-1], dtype=q.dtype, device=home)
    res_lse = torch.full((b, h, lq), float("-inf"), dtype=accumulator_dtype(q.dtype),
                         device=home)
    if needs_grad:  # connect to the inputs so backward gives (zero) gradients
        tie = sum(t.reshape(-1)[:0].sum().to(res_out.dtype) for t in inputs
                  if t.requires_grad)
        res_out = res_out + tie
    report.plan_source = "none (empty sequence)"
    _set_last(report)
    if out is not None:
        out.copy_(res_out)
        res_out = out
    return (res_out, res_lse) if return_lse else res_out


def out_of_core_attention(q: Any, k: Any, v: Any, *, block_q: int | None = None,
                          block_kv: int | None = None, causal: bool = False,
                          window: tuple[int | None, int | None] | None = None,
                          **kwargs: Any) -> Any:
    """:func:`attention` with the plain query-block schedule: query blocks of ``block_q`` rows
    stay on the device with their accumulators while key/value blocks of ``block_kv`` rows
    stream by (the FlashAttention-style out-of-core loop, run by the same engine).

    Other keyword arguments as for :func:`attention` (``memory_budget``, ``device``, ...).

    >>> g = torch.Generator().manual_seed(0)
    >>> q, k, v = (torch.randn(1, 2, 100, 8, generator=g, dtype=torch.float64) for _ in "qkv")
    >>> from cqs_attention.reference import reference_attention
    >>> out = out_of_core_attention(q, k, v, causal=True, block_q=32, block_kv=24)
    >>> bool((out - reference_attention(q, k, v, causal=True)[0]).norm() < 1e-12)
    True
    """
    from cqs_design.plans import make_plan

    qt, kt = as_tensor(q, "q"), as_tensor(k, "k")
    if qt.dim() != 4 or kt.dim() != 4:
        raise AttentionInputError("q and k must have 4 dims (batch, heads, seq, head_dim)")
    plan = make_plan(qt.shape[2], kv_len=kt.shape[2], schedule="query_blocks",
                     block_q=block_q, block_kv=block_kv, causal=causal, window=window)
    return attention(q, k, v, causal=causal, window=window, plan=plan, **kwargs)
