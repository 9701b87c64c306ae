"""The autograd.Function behind :func:`cqs_attention.attention`.

Forward runs the engine (:func:`cqs_attention.engine.run.run_forward`) and saves ``q, k, v``
and the GLOBAL merged ``out`` and ``lse``. Backward runs the engine again with the plan the
planner chose for the backward under the same budget (key/value-stationary: ``dk``/``dv``
rows stay with their keys while ``dq`` rows stream), passing the global ``out`` and ``lse`` to
every kernel backward, so each call's ``dq, dk, dv`` are exact partial sums. Gradients are
accumulated in float32 (float64 for float64 inputs) and returned in the inputs' dtypes. The
log-sum-exp output is not differentiable, and the backward itself is not: a backward with
``create_graph=True`` (the start of a double backward) raises a ``RuntimeError`` saying so.

>>> import torch
>>> import cqs_attention
>>> q = torch.randn(1, 2, 12, 4, dtype=torch.float64, requires_grad=True)
>>> cqs_attention.attention(q, q, q, causal=True).sum().backward()
>>> q.grad.shape
torch.Size([1, 2, 12, 4])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from cqs_attention.engine.run import run_backward, run_forward
from cqs_attention.report import RunReport, _set_last, current_slot, fill_plan_summary

__all__ = ["CQSAttentionFunction"]


class CQSAttentionFunction(torch.autograd.Function):
    """``apply(q, k, v, choice, backward_choice, ctx) -> (out, lse)`` (see the module doc)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, choice: Any,
                bwd_choice: Any, run_ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse = run_forward(q, k, v, choice, run_ctx)
        ctx.run_ctx = run_ctx
        ctx.bwd_choice = bwd_choice
        ctx.report_slot = current_slot()  # the backward may run on another thread
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor, _dlse: torch.Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError("cqs attention is differentiable once: double backward "
                               "(create_graph=True through attention) is not supported")
        q, k, v, out, lse = ctx.saved_tensors
        fwd = ctx.run_ctx
        choice = ctx.bwd_choice
        rep = RunReport(direction="backward", memory_budget=fwd.report.memory_budget)
        fill_plan_summary(rep, choice, given=fwd.report.plan_source == "given",
                          default_budget=fwd.report.plan_source.endswith("memory)"))
        run_ctx = dataclasses.replace(fwd, report=rep, journal=None)
        if fwd.dist is not None:
            run_ctx.positions = [int(p) for p in fwd.dist.positions(choice.plan)]
        with torch.no_grad():
            dq, dk, dv = run_backward(dout.contiguous().to(q.dtype), q, k, v, out, lse,
                                      choice, run_ctx)
        _set_last(rep, ctx.report_slot)
        return dq, dk, dv, None, None, None
