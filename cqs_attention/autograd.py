"""The autograd.Function behind :func:`cqs_attention.attention`.

Forward runs the plan and saves ``q, k, v`` and the GLOBAL merged ``out`` and ``lse``.
Backward follows the same plan: per task it recomputes the scores of the task's blocks and
calls the kernels' backward with the global ``out`` and ``lse``, so each task's
``dq, dk, dv`` are exact partial sums; they are accumulated in float32 (float64 for float64
inputs) and returned in the inputs' dtypes. The log-sum-exp output is not differentiable.

>>> import torch
>>> import cqs_attention
>>> q = torch.randn(1, 2, 12, 4, dtype=torch.float64, requires_grad=True)
>>> cqs_attention.attention(q, q, q, causal=True).sum().backward()
>>> q.grad.shape
torch.Size([1, 2, 12, 4])
"""

from __future__ import annotations

from typing import Any

import torch

from cqs_attention.executor import PlanExecutor

__all__ = ["CQSAttentionFunction"]


class CQSAttentionFunction(torch.autograd.Function):
    """``apply(q, k, v, executor, home, finalize) -> (out, lse)``.

    ``finalize(acc_out, acc_lse) -> (out, lse)`` converts the accumulators to the returned
    tensors (dtype, device).
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                executor: PlanExecutor, home: torch.device, finalize: Any
                ) -> tuple[torch.Tensor, torch.Tensor]:
        acc_out, acc_lse = executor.forward(q, k, v, home=home)
        out, lse = finalize(acc_out, acc_lse)
        ctx.executor = executor
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor, _dlse: torch.Tensor | None):
        q, k, v, out, lse = ctx.saved_tensors
        executor: PlanExecutor = ctx.executor
        from cqs_attention.report import _set_last

        dq, dk, dv = executor.backward(dout.contiguous(), q, k, v, out, lse)
        _set_last(executor.report)
        return (dq.to(device=q.device, dtype=q.dtype), dk.to(device=k.device, dtype=k.dtype),
                dv.to(device=v.device, dtype=v.dtype), None, None, None)
