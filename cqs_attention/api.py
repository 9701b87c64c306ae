"""The public :func:`attention`: validate every argument, then hand the call to the engine.

:func:`attention` checks its arguments (before any work) into one
:class:`~cqs_attention.engine.request.AttentionRequest`; :func:`cqs_attention.engine.run.execute`
plans it (:mod:`cqs_attention.engine.placement`) and runs it.

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

from typing import Any

import torch

from cqs_attention._bytes import check_budget
from cqs_attention._collectives import distributed_options
from cqs_attention.checkpoint import checkpoint_options, plan_digest
from cqs_attention.engine.placement import DECISIONS
from cqs_attention.engine.request import AttentionRequest
from cqs_attention.engine.run import execute
from cqs_attention.errors import AttentionInputError, PlanMismatchError
from cqs_attention.kernels import check_backend
from cqs_attention.masks import MaskMod, make_mask_spec
from cqs_attention.reference import as_tensor, check_qkv
from cqs_design.difference_sets import DifferenceSet
from cqs_design.plans import Plan, PlanError, make_plan
from cqs_design.plans.mask import Mask

__all__ = ["attention", "out_of_core_attention", "resolve_device", "validated_plan"]

_DEVICE_TYPES = ("cpu", "cuda")
_CPU = torch.device("cpu")


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
    home = q.device
    if home.type not in _DEVICE_TYPES:
        raise AttentionInputError(f"q is on {home}, where no attention kernel runs; move "
                                  "it to the CPU or a CUDA device, or pass device=")
    if home.type != "cpu":
        return home
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return _CPU


def validated_plan(plan: Any, lq: int, lk: int, causal: bool, window: Any) -> tuple[Any, str]:
    """Check a given plan against the call and prove its exact cover (once per content: the
    proof is cached by the plan's digest); returns the plan and its digest.

    Raises :class:`~cqs_attention.errors.PlanMismatchError` for another length or a weaker
    mask, or a plan that is not an exact cover.
    """
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
    if DECISIONS.get(("valid", key)) is None:
        try:
            plan.validate()
        except PlanError as exc:
            raise PlanMismatchError(f"plan is not an exact cover of the attention matrix: "
                                    f"{exc}") from exc
        DECISIONS.put(("valid", key), True)
    return plan, key


def _bounds(causal: bool, window: Any) -> tuple[float, float]:
    """(left, right) reach of the band a causal/window mask allows (inf = unbounded)."""
    band = Mask.of(0, 0, causal=causal, window=window)  # the band rule; lengths unused
    inf = float("inf")
    return (inf if band.lower_shift is None else band.lower_shift,
            inf if band.upper_shift is None else band.upper_shift)


def _design_plan(design: Any, lq: int, lk: int, causal: bool, window: Any) -> Any:
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
    q, k, v, scale = check_qkv(q, k, v, scale)
    b, h, lq, _d = q.shape
    lk = k.shape[2]
    spec = make_mask_spec(lq, lk, batch=b, heads=h, causal=causal, window=window,
                          document_ids=document_ids, mask_mod=mask_mod)
    dev = resolve_device(device, q)
    backend = check_backend(backend)
    if not isinstance(return_lse, bool):
        raise AttentionInputError(f"return_lse must be a bool, got {return_lse!r}")
    if progress is not None and not isinstance(progress, bool):
        raise AttentionInputError(f"progress must be None, True or False, got {progress!r}")
    budget = check_budget(memory_budget)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad
                                              or v.requires_grad)
    dist = ckpt = None
    if process_group is not None or dst is not None:
        dist = distributed_options(process_group, dst, needs_grad=needs_grad)
    if checkpoint_dir is not None or checkpoint_interval is not None:
        ckpt = checkpoint_options(checkpoint_dir, checkpoint_interval, dist=dist)
    if out is not None:
        out = _check_out(out, q, v, (q, k, v))
        if needs_grad:
            raise AttentionInputError("out= cannot be used when q, k or v require grad")
    given = digest = None
    if plan is not None and lq > 0 and lk > 0:
        if isinstance(plan, (int, bool, DifferenceSet)):
            given = _design_plan(plan, lq, lk, causal, spec.window)
            digest = plan_digest(given)
        else:
            given, digest = validated_plan(plan, lq, lk, causal, spec.window)
    return execute(AttentionRequest(
        q=q, k=k, v=v, spec=spec, scale=scale, plan=given, plan_digest=digest,
        memory_budget=budget, device=dev, home=out.device if out is not None else q.device,
        backend=backend, needs_grad=needs_grad, return_lse=return_lse, out=out,
        progress=progress, dist=dist, checkpoint=ckpt))


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
    qt, kt = as_tensor(q, "q"), as_tensor(k, "k")
    if qt.dim() != 4 or kt.dim() != 4:
        raise AttentionInputError("q and k must have 4 dims (batch, heads, seq, head_dim)")
    plan = make_plan(qt.shape[2], kv_len=kt.shape[2], schedule="query_blocks",
                     block_q=block_q, block_kv=block_kv, causal=causal, window=window)
    return attention(q, k, v, causal=causal, window=window, plan=plan, **kwargs)
