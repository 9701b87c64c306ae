"""The description of one validated :func:`cqs_attention.attention` call, as the engine takes it.

:func:`cqs_attention.attention` checks its arguments (before any work) and builds one
:class:`AttentionRequest`; :func:`cqs_attention.engine.run.execute` plans and runs it. Every
field is already valid here: the engine never re-checks an argument.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from cqs_attention._collectives import DistributedOptions
from cqs_attention.checkpoint import CheckpointOptions
from cqs_attention.masks import MaskSpec

__all__ = ["AttentionRequest"]


class AttentionRequest(NamedTuple):
    """One call of :func:`cqs_attention.attention`, validated (read-only: a named tuple, the
    cheapest immutable record to build once per call).

    Attributes
    ----------
    q, k, v
        The inputs, ``(B, H, Lq, D)``, ``(B, Hkv, Lk, D)``, ``(B, Hkv, Lk, Dv)`` (torch tensors;
        numpy arrays and memmaps already wrapped).
    spec
        The mask, in global token coordinates.
    scale
        The score scale.
    plan
        The plan passed with ``plan=`` (validated against the call: lengths, mask, exact
        cover), or None for the planner's choice.
    plan_digest
        The given plan's content digest (:func:`cqs_attention.checkpoint.plan_digest`), which
        keys the planner's decisions for it.
    memory_budget
        The budget passed, in bytes (None: none given).
    device, home
        Where kernels run, and where the inputs and the result live.
    backend
        ``"auto"`` or the name of a registered kernel.
    needs_grad
        Whether autograd will need the backward (q, k or v require grad).
    return_lse
        Whether the caller wants the log-sum-exp too.
    out
        The caller's output tensor (checked: shape, dtype, contiguous, no overlap), or None.
    progress
        The progress bar setting (None: only for long runs on a terminal).
    dist
        How the call is spread over a process group, or None.
    checkpoint
        Where and how often the call is journaled, or None.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    spec: MaskSpec
    scale: float
    plan: Any
    memory_budget: int | None
    device: torch.device
    home: torch.device
    backend: str
    needs_grad: bool
    plan_digest: str | None = None
    return_lse: bool = False
    out: torch.Tensor | None = None
    progress: bool | None = None
    dist: DistributedOptions | None = None
    checkpoint: CheckpointOptions | None = None
