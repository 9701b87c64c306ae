"""The public :func:`attention`: validate everything, choose a plan, run it.

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

from cqs_attention.autograd import CQSAttentionFunction
from cqs_attention.errors import (
    AttentionInputError,
    KernelUnavailableError,
    MemoryBudgetError,
    PlanMismatchError,
)
from cqs_attention.executor import accumulator_bytes, estimate_plan_bytes, executor_class
from cqs_attention.kernels import available_kernels, select_kernel
from cqs_attention.kernels.base import BlockMask
from cqs_attention.masks import MaskMod, make_mask_spec
from cqs_attention.merge import accumulator_dtype
from cqs_attention.reference import as_tensor, check_qkv
from cqs_attention.report import RunReport, _set_last

__all__ = ["attention", "resolve_plan"]

# Singer orders tried when the plan is chosen automatically (v = q^2 + q + 1).
_SINGER_ORDERS = (2, 3, 4, 5, 7, 8, 9, 11, 13, 16, 17, 19, 23, 25, 27, 29, 31, 32, 37, 41, 43,
                  47, 49, 53, 59, 61, 64, 67, 71, 73, 79, 81, 83, 89, 97, 101, 103, 107, 109,
                  113, 121, 125, 127, 128)


class WholePlan:
    """A one-task plan (the whole attention in one task): used when the sequence is shorter
    than the smallest design, where splitting into v chunks is impossible."""

    def __init__(self, seq_len: int, kv_len: int, causal: bool) -> None:
        from cqs_design.plans import Rect, Task

        self.seq_len, self.kv_len, self.causal = seq_len, kv_len, causal
        self.window = None
        self.design = None
        self.levels = 0
        rect = Rect(0, seq_len, 0, kv_len, "causal" if causal else "full")
        self.tasks = (Task(id=0, segments=((0, max(seq_len, kv_len)),), rectangles=(rect,)),)

    def __len__(self) -> int:
        return 1

    def task(self, index: int) -> Any:
        return self.tasks[index]

    def __repr__(self) -> str:
        return f"WholePlan(seq_len={self.seq_len}, kv_len={self.kv_len})"


def _bounds(causal: bool, window: Any) -> tuple[float, float]:
    """(left, right) reach of the band a causal/window mask allows (inf = unbounded)."""
    inf = float("inf")
    left = inf if window is None or window[0] is None else window[0]
    right = inf if window is None or window[1] is None else window[1]
    if causal:
        right = min(right, 0)
    return left, right


def _check_given_plan(plan: Any, lq: int, lk: int, causal: bool, window: Any) -> None:
    if plan.seq_len != lq or plan.kv_len != lk:
        raise PlanMismatchError(
            f"plan was built for seq_len={plan.seq_len}, kv_len={plan.kv_len}, but q has "
            f"{lq} tokens and k has {lk}; build it with make_plan({lq}, kv_len={lk}, ...)")
    p_left, p_right = _bounds(bool(getattr(plan, "causal", False)), getattr(plan, "window",
                                                                             None))
    c_left, c_right = _bounds(causal, window)
    if c_left > p_left or c_right > p_right:
        raise PlanMismatchError(
            f"plan was built with causal={getattr(plan, 'causal', False)}, "
            f"window={getattr(plan, 'window', None)}, which drops pairs this call needs "
            f"(causal={causal}, window={window}); build the plan with this call's mask")


#: the budget-driven plan search stops before designs with more rectangles than this (building
#: and estimating such a plan takes seconds to minutes; a budget that needs one is unusual)
_MAX_SCAN_RECTANGLES = 1 << 21


def _plan_rectangles(order: int) -> int:
    """Rectangles of a one-level full plan of the Singer design of ``order``: v*k(k+1)/2."""
    v, k = order * order + order + 1, order + 1
    return v * k * (k + 1) // 2


def resolve_plan(plan: Any, lq: int, lk: int, *, causal: bool, window: Any,
                 memory_budget: int | None, estimate: Any) -> tuple[Any, str]:
    """The plan to run and how it was chosen (``"given"``, ``"design"``, ``"budget"``,
    ``"default"``, ``"whole"``).

    ``estimate(plan) -> bytes`` is the per-task device footprint used with ``memory_budget``.
    """
    from cqs_design.difference_sets import DifferenceSet
    from cqs_design.plans import PlanError, make_plan

    def build(design: Any) -> Any:
        return make_plan(lq, kv_len=lk, design=design, causal=causal, window=window)

    if plan is not None and hasattr(plan, "tasks"):
        _check_given_plan(plan, lq, lk, causal, window)
        return plan, "given"
    if plan is not None:
        if isinstance(plan, bool) or not isinstance(plan, (int, DifferenceSet)):
            raise PlanMismatchError(f"plan must be a Plan, a design (prime power q or "
                                    f"DifferenceSet) or None, got {type(plan).__name__}")
        try:
            return build(plan), "design"
        except PlanError as exc:
            raise PlanMismatchError(f"plan={plan!r}: cannot build a plan for seq_len={lq}, "
                                    f"kv_len={lk}: {exc}") from exc
    if memory_budget is None:
        try:
            return make_plan(lq, kv_len=lk, causal=causal, window=window), "default"
        except PlanError:
            pass
        for order in _SINGER_ORDERS[:1]:
            try:
                return build(order), "default"
            except PlanError:
                break
        return WholePlan(lq, lk, causal), "whole"
    best: tuple[int, str] | None = None
    whole = WholePlan(lq, lk, causal)
    need = estimate(whole)
    if need <= memory_budget:
        return whole, "budget"
    best = (need, "one task (no split)")
    stopped = ""
    for order in _SINGER_ORDERS:
        if order * order + order + 1 > max(lq, lk):
            break
        if _plan_rectangles(order) > _MAX_SCAN_RECTANGLES:
            stopped = (f"; designs finer than q={order} (over {_MAX_SCAN_RECTANGLES} "
                       "rectangles) were not tried: pass plan= to use one")
            break
        try:
            cand = build(order)
        except PlanError:
            break
        need = estimate(cand)
        if need <= memory_budget:
            return cand, "budget"
        if need < best[0]:
            best = (need, f"design q={order} (v={order * order + order + 1})")
    raise MemoryBudgetError(
        f"memory_budget={memory_budget} bytes is too small for any plan: the smallest "
        f"footprint found is {best[0]} bytes ({best[1]}); pass memory_budget >= {best[0]}"
        f"{stopped}")


def place_accumulators(plan: Any, lq: int, lk: int, *, causal: bool, window: Any,
                       budget: int | None, acc_bytes: int, streams: bool,
                       estimate_for: Any) -> tuple[Any, str, bool]:
    """``(plan, source, host_accumulators)`` for a run: where the accumulators live decides
    which footprint model sizes the plan.

    ``estimate_for(host_accumulators) -> estimate(plan) -> bytes``. Without streaming (inputs
    on the compute device) or without a budget the accumulators stay on the device. Streaming,
    they stay on the device when a plan fits in what they leave of the budget; a given plan or
    design keeps them there when its estimate plus ``acc_bytes`` fits; otherwise they live on
    the host and the plan is sized with the host-accumulator model over the whole budget.

    >>> est = lambda host: (lambda p: 10 if host else 40)
    >>> place_accumulators(None, 100, 100, causal=False, window=None, budget=100,
    ...                    acc_bytes=50, streams=True, estimate_for=est)[1:]
    ('budget', False)
    >>> place_accumulators(None, 100, 100, causal=False, window=None, budget=100,
    ...                    acc_bytes=60, streams=True, estimate_for=est)[1:]
    ('budget', True)
    """

    def resolve(host_acc: bool, room: int | None) -> tuple[Any, str]:
        return resolve_plan(plan, lq, lk, causal=causal, window=window,
                            estimate=estimate_for(host_acc), memory_budget=room)

    if not streams or budget is None:
        return (*resolve(False, budget), False)
    if plan is not None:  # a given plan or design: accumulators where they fit beside it
        chosen, source = resolve(False, budget)
        return chosen, source, estimate_for(False)(chosen) + acc_bytes > budget
    if 2 * acc_bytes <= budget:  # beyond half the budget they leave tasks too little room
        try:
            return (*resolve(False, budget - acc_bytes), False)
        except MemoryBudgetError:
            pass
    return (*resolve(True, budget), True)


def _resolve_device(device: Any, q: torch.Tensor) -> torch.device:
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise AttentionInputError(f"device={device!r} is not a torch device") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise AttentionInputError(f"device={device!r} but CUDA is not available here; "
                                      "valid: 'cpu'")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return dev
    if q.device.type != "cpu":
        return q.device
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _ranges_overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.device != b.device or a.numel() == 0 or b.numel() == 0:
        return False
    a0 = a.data_ptr()
    b0 = b.data_ptr()
    a1 = a0 + a.numel() * a.element_size()
    b1 = b0 + b.numel() * b.element_size()
    if not (a.is_contiguous() and b.is_contiguous()):
        # conservative: compare the whole underlying storages
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


def _convert_into(dst: torch.Tensor, src: torch.Tensor, slab_bytes: int = 256 << 20) -> None:
    """``dst.copy_(src)`` across devices and dtypes, converting on ``src``'s device slab by
    slab (a blocking device -> host copy with a dtype change would first build a full-size
    host temporary in ``src``'s dtype)."""
    if src.device == dst.device or src.dtype == dst.dtype or src.dim() < 3:
        dst.copy_(src)
        return
    rows = src.shape[2]
    per_row = max(1, src[:, :, :1].numel() * src.element_size())
    step = max(1, slab_bytes // per_row)
    for s in range(0, rows, step):
        dst[:, :, s:s + step].copy_(src[:, :, s:s + step].to(dst.dtype))


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
    memory_budget: int | None = None,
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
    """Exact attention computed task by task from a CQS plan.

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
        A :class:`cqs_design.plans.Plan` for ``(Lq, Lk)`` (used as given), or a design (an int
        prime power ``q`` for the Singer design, or a ``DifferenceSet``) to build one with
        :func:`cqs_design.plans.make_plan`. None: chosen automatically (see ``memory_budget``).
    memory_budget
        Bytes of device memory the executor may hold for one task (staged chunks, partial
        results, masks, kernel workspace) plus its accumulators when they are kept on the
        device. With ``plan=None`` the plan with the fewest tasks that fits is chosen (Singer
        designs up to q = 43, about two million rectangles; finer ones only through ``plan=``).
        Too small for any plan: :class:`~cqs_attention.errors.MemoryBudgetError` naming the
        smallest that works. Computing on CUDA from host or disk inputs with neither ``plan``
        nor budget, the budget is 80% of the free device memory.
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
        v (not through ``lse``); the backward pass follows the same plan.

    Notes
    -----
    Non-finite inputs propagate as in full attention: a NaN/inf in a query row, or in a key or
    value a row attends, makes that row NaN. The plan used, kernels, bytes moved and timings are
    in :func:`cqs_attention.last_run_stats`.
    """
    q, k, v, scale = check_qkv(q, k, v, scale)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    spec = make_mask_spec(lq, lk, batch=b, heads=h, causal=causal, window=window,
                          document_ids=document_ids, mask_mod=mask_mod)
    dev = _resolve_device(device, q)
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
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(
            memory_budget, int) or memory_budget <= 0):
        raise MemoryBudgetError(f"memory_budget must be a positive int (bytes) or None, got "
                                f"{memory_budget!r}")
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    dist_opts = ckpt_opts = None
    if process_group is not None or dst is not None:
        from cqs_attention.distributed import distributed_options

        dist_opts = distributed_options(process_group, dst, needs_grad=needs_grad)
    if checkpoint_dir is not None or checkpoint_interval is not None:
        from cqs_attention.checkpoint import checkpoint_options

        ckpt_opts = checkpoint_options(checkpoint_dir, checkpoint_interval, dist=dist_opts)
    if out is not None:
        out = _check_out(out, q, v, (q, k, v))
        if needs_grad:
            raise AttentionInputError("out= cannot be used when q, k or v require grad")
    # a kernel must exist for every kind of call this mask can produce, before any work
    gqa = h != k.shape[1]
    kernel = select_kernel(backend, device=dev, dtype=q.dtype, head_dim=d, mask=None, gqa=gqa,
                           needs_grad=needs_grad)
    probes = []
    if spec.causal or spec.window is not None:
        probes.append(BlockMask(causal_offset=0))
    if spec.q_doc is not None or spec.mask_mod is not None or (
            spec.window is not None and spec.window[0] is not None):
        probes.append(BlockMask(dense=torch.ones(1, 1, 1, 1, dtype=torch.bool, device=dev)))
    for probe in probes:
        select_kernel(backend, device=dev, dtype=q.dtype, head_dim=d, mask=probe, gqa=gqa,
                      needs_grad=needs_grad)
    home = out.device if out is not None else q.device

    report = RunReport(memory_budget=memory_budget)
    if lq == 0 or lk == 0:
        res_out = torch.zeros(b, h, lq, d, dtype=q.dtype, device=home)
        res_lse = torch.full((b, h, lq), float("-inf"), dtype=accumulator_dtype(q.dtype),
                             device=home)
        report.plan_source = "none (empty sequence)"
        _set_last(report)
        if out is not None:
            out.copy_(res_out)
            res_out = out
        return (res_out, res_lse) if return_lse else res_out

    budget = memory_budget
    if budget is None and plan is None and dev.type == "cuda":
        # no budget: size tasks to the free device memory, so resident inputs get the coarsest
        # plan that fits (fewest kernel calls) and host/disk inputs stream in large tasks
        budget = int(0.8 * torch.cuda.mem_get_info(dev)[0])
    # the streaming executor holds the task being staged beside the previous one (chunk reuse);
    # accumulators larger than the budget stay on the host, and so do their merge temporaries
    streams = dev.type == "cuda" and home != dev
    acc_total = accumulator_bytes(q, k, v, backward=needs_grad)

    cls = executor_class(dev, home)
    if ckpt_opts is not None:
        cls = ckpt_opts.executor_class(cls)
    if dist_opts is not None:
        cls = dist_opts.executor_class(cls)
    # Accumulators stay on the device when a plan fits in what they leave of the budget;
    # otherwise they stay on the host, and an executor that can (the streaming executor,
    # ``host_accumulators = None``) streams query groups and merges on the device.
    host_merge_ok = streams and not needs_grad and getattr(cls, "host_accumulators",
                                                           False) is None
    plan_budget = budget if dist_opts is None else dist_opts.shared_budget(budget)

    def estimate_for(host_acc: bool) -> Any:
        def estimate(p: Any) -> int:
            """Device bytes of the largest task (backward's when gradients will be needed)."""
            return estimate_plan_bytes(p, batch=b, heads=h, kv_heads=k.shape[1], head_dim=d,
                                       dtype=q.dtype, kernel=kernel, backward=needs_grad,
                                       mask=spec, tasks_alive=2 if streams else 1,
                                       merge_on_device=not host_acc,
                                       query_streamed=host_acc and host_merge_ok)
        return estimate

    chosen, source, host_acc = place_accumulators(
        plan, lq, lk, causal=causal, window=spec.window, budget=plan_budget,
        acc_bytes=acc_total, streams=streams, estimate_for=estimate_for)
    estimate = estimate_for(host_acc)
    if dist_opts is not None:
        dist_opts.check_same(chosen, q, k, v)
    if budget is not None and memory_budget is None:
        source += " (80% of free device memory)"
        report.memory_budget = budget
    report.plan, report.plan_source = chosen, source
    report.design_v = getattr(getattr(chosen, "design", None), "v", 1)
    report.design_k = getattr(getattr(chosen, "design", None), "k", 1)
    report.levels = getattr(chosen, "levels", 1)
    report.task_bytes_estimate = estimate(chosen)
    if memory_budget is not None and report.task_bytes_estimate > memory_budget:
        raise MemoryBudgetError(
            f"memory_budget={memory_budget} bytes is smaller than the {report.task_bytes_estimate}"
            " bytes one task of the given plan needs; pass a finer plan or plan=None")

    executor = cls(chosen, spec, device=dev, scale=scale, backend=backend,
                   memory_budget=budget, progress=progress, report=report)
    if host_merge_ok:
        executor.host_accumulators = host_acc
    acc_dtype = accumulator_dtype(q.dtype)

    if out is not None and isinstance(out, torch.Tensor) and out.device == home:
        executor.out_target = out  # the streaming executor may write the result straight there

    def finalize(acc_out: torch.Tensor, acc_lse: torch.Tensor):
        if out is not None:
            if not (acc_out.data_ptr() == out.data_ptr() and acc_out.dtype == out.dtype):
                _convert_into(out, acc_out)
            res = out
        elif acc_out.device != home and acc_out.dtype != q.dtype:
            res = torch.empty(acc_out.shape, dtype=q.dtype, device=home)
            _convert_into(res, acc_out)
        else:
            res = acc_out.to(device=home, dtype=q.dtype)
        return res, acc_lse.to(device=home, dtype=acc_dtype)

    if needs_grad:
        res_out, res_lse = CQSAttentionFunction.apply(q, k, v, executor, home, finalize)
    else:
        with torch.no_grad():
            acc_out, acc_lse = executor.forward(q, k, v, home=home)
            if dist_opts is not None and not dist_opts.is_destination:
                _set_last(executor.report)
                return None
            res_out, res_lse = finalize(acc_out, acc_lse)
    _set_last(executor.report)
    return (res_out, res_lse) if return_lse else res_out
