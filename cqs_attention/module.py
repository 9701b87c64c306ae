"""``CQSAttention``: an ``nn.Module`` that holds the execution options of :func:`attention`.

Use it where a model calls :func:`torch.nn.functional.scaled_dot_product_attention`: it takes
the same positional arguments (``query, key, value, attn_mask, dropout_p, is_causal, scale``)
plus the cqs mask keywords (``causal``, ``window``, ``document_ids``, ``mask_mod``), and keeps
the options that decide *how* attention is executed (``memory_budget``, ``backend``, the plan
policy, the ``device`` the tasks run on) in one place.

Semantics that differ from SDPA, on purpose and documented:

* ``is_causal=True`` keeps SDPA's meaning (top-left aligned when ``Lq != Lk``), while
  ``causal=True`` is cqs's bottom-right alignment (query ``i`` attends key ``j`` iff
  ``j <= i + Lk - Lq``, like flash-attn). For ``Lq == Lk`` both are the usual causal mask.
* ``attn_mask`` must be boolean (``True`` = may attend) or an additive float mask whose
  entries are only ``0`` and ``-inf``/very negative; a general additive bias cannot be
  streamed exactly and raises :class:`NotImplementedError`.
* A query row with no allowed key gives output 0 (SDPA's math kernel does the same).
* ``dropout_p > 0`` raises :class:`NotImplementedError`.

``torch.compile``: the plan-driven executor is a Python loop over tasks; it runs outside the
compiled graph (``torch.compiler.disable``), so each ``CQSAttention`` call is exactly one
graph break and everything around it (projections, MLPs, norms) compiles normally.
``fullgraph=True`` therefore fails with an "unsupported"/graph-break error.

>>> import torch
>>> from cqs_attention.module import CQSAttention
>>> attn = CQSAttention(memory_budget=None)
>>> q = k = v = torch.randn(1, 2, 16, 8, dtype=torch.float64)
>>> out = attn(q, k, v, is_causal=True)
>>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
>>> bool(torch.allclose(out, ref))
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from cqs_attention._bytes import check_budget, parse_bytes
from cqs_attention.kernels import check_backend

__all__ = ["CQSAttention", "bool_mask_to_mask_mod", "check_attn_mask_shape", "parse_bytes"]


def bool_mask_to_mask_mod(mask: torch.Tensor) -> Callable[..., torch.Tensor]:
    """Wrap a boolean mask broadcastable to ``(B, H, Lq, Lk)`` as a ``mask_mod``.

    The returned function has FlexAttention's signature ``(b, h, q_idx, kv_idx) -> bool``
    and indexes ``mask`` (size-1 dimensions are broadcast, so a ``(1, 1, Lq, Lk)`` mask
    ignores ``b`` and ``h``).

    Examples
    --------
    >>> m = torch.tensor([[True, False], [True, True]])
    >>> mod = bool_mask_to_mask_mod(m)
    >>> bool(mod(0, 0, 0, 1)), bool(mod(0, 0, 1, 1))
    (False, True)
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.dim() != 4:
        raise ValueError(f"mask must have at most 4 dimensions (B, H, Lq, Lk), got {mask.dim()}")
    return _IndexMaskMod(mask)


def check_attn_mask_shape(mask: torch.Tensor, target: tuple[int, int, int, int]) -> None:
    """:class:`~cqs_attention.errors.AttentionInputError` unless ``mask`` broadcasts to
    ``target = (B, H, Lq, Lk)`` the way SDPA's ``attn_mask`` must.

    >>> check_attn_mask_shape(torch.ones(6, 6, dtype=torch.bool), (2, 4, 6, 6))
    >>> check_attn_mask_shape(torch.ones(5, 6, dtype=torch.bool), (2, 4, 6, 6))
    Traceback (most recent call last):
    ...
    cqs_attention.errors.AttentionInputError: attn_mask has shape (5, 6), which does not \
broadcast to (B, H, Lq, Lk) = (2, 4, 6, 6); pass a mask of shape (Lq, Lk) = (6, 6), \
(B, 1, Lq, Lk) = (2, 1, 6, 6) or (B, H, Lq, Lk) (size-1 dimensions broadcast)
    """
    shape = tuple(mask.shape)
    fits = len(shape) <= 4 and all(
        have in (1, want) for have, want in zip(reversed(shape), reversed(target), strict=False))
    if not fits:
        from cqs_attention.errors import AttentionInputError

        b, _, lq, lk = target
        raise AttentionInputError(
            f"attn_mask has shape {shape}, which does not broadcast to (B, H, Lq, Lk) = "
            f"{tuple(target)}; pass a mask of shape (Lq, Lk) = {(lq, lk)}, (B, 1, Lq, Lk) = "
            f"{(b, 1, lq, lk)} or (B, H, Lq, Lk) (size-1 dimensions broadcast)")


class _IndexMaskMod:
    """``mask_mod`` reading a (possibly broadcast) 4D boolean tensor."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def __call__(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
        m = self.mask
        kv = torch.as_tensor(kv_idx)
        idx = [torch.as_tensor(x).to(m.device) for x in (b, h, q_idx, kv_idx)]
        for dim in range(4):  # size-1 (broadcast) dimensions of the mask ignore the index
            if m.shape[dim] == 1:
                idx[dim] = torch.zeros_like(idx[dim])
        return m[idx[0], idx[1], idx[2], idx[3]].to(kv.device)


class _AndMaskMod:
    """The intersection of several ``mask_mod`` functions."""

    def __init__(self, *mods: Callable[..., Any]) -> None:
        self.mods = mods

    def __call__(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
        result = None
        for mod in self.mods:
            value = torch.as_tensor(mod(b, h, q_idx, kv_idx))
            result = value if result is None else result & value
        return result


def _top_left_causal(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
    """SDPA's ``is_causal`` mask: query ``i`` attends key ``j`` iff ``j <= i``."""
    return torch.as_tensor(kv_idx <= q_idx)


def and_mask_mods(*mods: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """The intersection of the given ``mask_mod`` functions, ``None`` ignored."""
    present = [m for m in mods if m is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return _AndMaskMod(*present)


def float_mask_to_bool(mask: torch.Tensor) -> torch.Tensor:
    """Turn an additive float mask of ``0`` and ``-inf`` (or ``finfo.min``) into a bool mask.

    Raises :class:`NotImplementedError` for any other value: a general additive bias changes
    the softmax weights and cannot be expressed as which pairs may attend.
    """
    very_negative = torch.finfo(mask.dtype).min / 2
    allowed = mask == 0
    blocked = mask <= very_negative
    if not bool((allowed | blocked).all()):
        raise NotImplementedError(
            "attn_mask is an additive float mask with values other than 0 and -inf; cqs "
            "attention supports only masks that say which pairs may attend (bool, or float "
            "0/-inf). Pass a bool mask or a mask_mod instead."
        )
    return allowed


PlanPolicy = Any  # None | Plan | Mapping[str, Any] (make_plan keywords) | Callable[..., Plan]


class CQSAttention(nn.Module):
    """Exact streamed attention as a module, usable in place of an SDPA call.

    Parameters
    ----------
    memory_budget
        Device memory the executor may hold (bytes, or a string like ``"2GiB"``); ``None``
        lets :func:`cqs_attention.attention` choose.
    backend
        Kernel name or ``"auto"`` (first kernel that supports the call).
    plan
        The plan policy: ``None`` (automatic), a fixed ``cqs_design.plans.Plan`` (only for
        inputs of its length), a mapping of :func:`cqs_design.plans.make_plan` keywords such
        as ``{"design": 3, "levels": 1}`` (a plan is made per call for the call's length and
        mask; calls shorter than the design's ``v`` chunks, such as single-token decode
        steps, run as one task), or a callable
        ``plan(seq_len=, kv_len=, causal=, window=) -> Plan | None``.
    device
        Where tasks run (``None``: the device of ``query``). Inputs elsewhere (host memory,
        disk) are streamed there chunk by chunk.
    progress
        Show a progress bar over tasks (default ``False``: modules run inside models).

    Raises
    ------
    ValueError
        If ``memory_budget`` is not a size > 0 (or ``None``), or ``plan`` is a mapping that
        sets a per-call keyword.
    KernelUnavailableError
        If ``backend`` is neither ``"auto"`` nor a registered kernel (the message lists them).
    TypeError
        If ``plan`` or ``progress`` has the wrong type.

    Examples
    --------
    >>> import torch
    >>> attn = CQSAttention(plan={"design": 2})
    >>> q = torch.randn(2, 4, 30, 16, dtype=torch.float64)
    >>> kv = torch.randn(2, 2, 30, 16, dtype=torch.float64)          # GQA: 2 key/value heads
    >>> out = attn(q, kv, kv, causal=True)
    >>> out.shape
    torch.Size([2, 4, 30, 16])
    """

    def __init__(
        self,
        *,
        memory_budget: int | str | None = None,
        backend: str = "auto",
        plan: PlanPolicy = None,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.memory_budget = check_budget(memory_budget)
        self.backend = check_backend(backend)
        if plan is not None and not (isinstance(plan, Mapping) or callable(plan)
                                     or hasattr(plan, "tasks")):
            raise TypeError(f"plan must be None, a Plan, a mapping of make_plan keywords or a "
                            f"callable returning a Plan, got {type(plan).__name__}")
        if isinstance(plan, Mapping):
            bad = sorted(set(plan) & {"seq_len", "kv_len", "causal", "window"})
            if bad:
                raise ValueError(f"plan mapping must not set {bad}: they come from each call")
            plan = dict(plan)
        self.plan = plan
        self.device = torch.device(device) if device is not None else None
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {progress!r}")
        self.progress = progress

    def extra_repr(self) -> str:
        return (f"memory_budget={self.memory_budget}, backend={self.backend!r}, "
                f"plan={_describe_policy(self.plan)}, device={self.device}")

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        *,
        causal: bool | None = None,
        window: tuple[int | None, int | None] | None = None,
        document_ids: torch.Tensor | None = None,
        mask_mod: Callable[..., Any] | None = None,
        return_lse: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attention of ``query`` over ``key, value`` (layout ``(B, H, L, D)``).

        Like SDPA, 3-D ``(H, L, D)`` and 2-D ``(L, D)`` inputs are accepted too (the missing
        leading dimensions are added, and removed from the result); ``enable_gqa`` is accepted
        for signature compatibility; GQA/MQA (fewer key/value heads dividing the query heads)
        is always on.

        >>> q = torch.randn(2, 16, 8, dtype=torch.float64)                  # (H, L, D)
        >>> out = CQSAttention()(q, q, q, is_causal=True)
        >>> out.shape
        torch.Size([2, 16, 8])
        >>> bool(torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(
        ...     q, q, q, is_causal=True)))
        True
        """
        dims = {t.dim() for t in (query, key, value) if isinstance(t, torch.Tensor)}
        if dims in ({2}, {3}):  # SDPA's unbatched layouts: add (B,) or (B, H), drop them after
            missing = 4 - dims.pop()
            lead = (1,) * missing
            if isinstance(attn_mask, torch.Tensor) and attn_mask.dim() > 2:
                attn_mask = attn_mask.reshape(*lead, *attn_mask.shape)
            res = self.forward(
                query.reshape(*lead, *query.shape), key.reshape(*lead, *key.shape),
                value.reshape(*lead, *value.shape), attn_mask, dropout_p, is_causal, scale,
                enable_gqa, causal=causal, window=window, document_ids=document_ids,
                mask_mod=mask_mod, return_lse=return_lse)
            if return_lse:
                out, lse = res
                return out.reshape(out.shape[missing:]), lse.reshape(lse.shape[missing:])
            return res.reshape(res.shape[missing:])
        if dropout_p:
            raise NotImplementedError(f"dropout_p={dropout_p!r}: cqs attention has no dropout; "
                                      "use dropout_p=0.0")
        if causal is not None and is_causal:
            raise ValueError("give either is_causal (SDPA, top-left aligned) or causal "
                             "(cqs, bottom-right aligned), not both")
        lq, lk = query.shape[-2], key.shape[-2]
        extra_mod = None
        if is_causal:
            if lq == lk:
                causal = True
            else:
                extra_mod = _top_left_causal
        if attn_mask is not None:
            if not isinstance(attn_mask, torch.Tensor):
                raise TypeError(f"attn_mask must be a tensor or None, got "
                                f"{type(attn_mask).__name__}")
            check_attn_mask_shape(attn_mask, (query.shape[0], query.shape[1], lq, lk))
            bool_mask = (attn_mask if attn_mask.dtype == torch.bool
                         else float_mask_to_bool(attn_mask))
            extra_mod = and_mask_mods(extra_mod, bool_mask_to_mask_mod(bool_mask))
        return run_attention(
            query, key, value,
            causal=bool(causal), window=window, document_ids=document_ids,
            mask_mod=and_mask_mods(mask_mod, extra_mod), scale=scale,
            plan=self.plan, memory_budget=self.memory_budget, device=self.device,
            backend=self.backend, return_lse=return_lse, progress=self.progress,
        )


def _describe_policy(plan: PlanPolicy) -> str:
    if plan is None:
        return "auto"
    if isinstance(plan, Mapping):
        return repr(plan)
    if hasattr(plan, "tasks"):
        return f"<Plan seq_len={getattr(plan, 'seq_len', '?')} tasks={len(plan.tasks)}>"
    return getattr(plan, "__name__", type(plan).__name__)


def resolve_plan(
    policy: PlanPolicy, *, seq_len: int, kv_len: int, causal: bool,
    window: tuple[int | None, int | None] | None,
) -> Any:
    """The ``plan=`` argument for one call of :func:`attention` under a plan policy."""
    if policy is None or hasattr(policy, "tasks"):
        return policy
    if isinstance(policy, Mapping):
        from cqs_design.plans import PlanError, make_plan

        design = policy.get("design")
        v = (design * design + design + 1 if isinstance(design, int)
             else getattr(design, "v", None))
        if v is not None and min(seq_len, kv_len) < v:
            return None  # shorter than the design's chunks (e.g. a decode step): one task
        try:
            return make_plan(seq_len, kv_len=kv_len, causal=causal, window=window, **policy)
        except PlanError:
            if design is not None:
                raise
            return None  # too short for any design: the automatic plan (one task)
    return policy(seq_len=seq_len, kv_len=kv_len, causal=causal, window=window)


@torch.compiler.disable
def run_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    causal: bool,
    window: tuple[int | None, int | None] | None,
    document_ids: torch.Tensor | None,
    mask_mod: Callable[..., Any] | None,
    scale: float | None,
    plan: PlanPolicy,
    memory_budget: int | None,
    device: torch.device | None,
    backend: str,
    return_lse: bool,
    progress: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Resolve the plan policy and call :func:`cqs_attention.api.attention`.

    Runs outside any ``torch.compile`` graph (the executor is a data-dependent Python loop).
    """
    from cqs_attention.api import attention

    resolved = resolve_plan(plan, seq_len=query.shape[-2], kv_len=key.shape[-2],
                            causal=causal, window=window)
    return attention(
        query, key, value,
        causal=causal, window=window, document_ids=document_ids, mask_mod=mask_mod,
        scale=scale, plan=resolved, memory_budget=memory_budget, device=device,
        backend=backend, return_lse=return_lse, progress=progress,
    )
