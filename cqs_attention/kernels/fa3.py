"""FlashAttention-3 (the ``flash_attn_interface`` module of flash-attn's ``hopper/`` build).

Hopper only (compute capability 9.0), fp16/bf16. Forward
``flash_attn_interface._flash_attn_forward``
returns ``(out, softmax_lse, ...)``; backward ``_flash_attn_backward`` takes the GLOBAL ``out``
and ``lse``. Both are private functions whose arguments changed between releases, so they are
called by keyword.

Not exercised on the project's GPU machine (FA3 is not installed there).

>>> import torch
>>> reasons = Fa3Kernel().not_supported(device=torch.device("cpu"), dtype=torch.bfloat16,
...                                     head_dim=128, mask=None, gqa=False, needs_grad=False)
>>> "needs a CUDA device, got cpu" in reasons
True
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from cqs_attention.kernels._gpu_common import BshdKernel

__all__ = ["Fa3Kernel"]


@lru_cache(maxsize=1)
def _interface():
    try:
        return importlib.import_module("flash_attn_interface"), None
    except Exception as exc:
        return None, f"flash_attn_interface (flash-attn 3) is not importable: {type(exc).__name__}"


class Fa3Kernel(BshdKernel):
    """FA3 via ``flash_attn_interface``; compute capability 9.0, fp16/bf16."""

    name = "fa3"
    priority = 20
    min_capability = (9, 0)
    max_capability = (9, 0)

    def _available(self) -> str | None:
        return _interface()[1]

    def _fwd_bshd(self, q, k, v, causal, scale):
        res = _interface()[0]._flash_attn_forward(q, k, v, softmax_scale=scale, causal=causal)
        return res[0], res[1]

    def _bwd_bshd(self, dout, q, k, v, out, lse, causal, scale):
        import torch

        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _interface()[0]._flash_attn_backward(
            dout, q, k, v, out, lse, dq=dq, dk=dk, dv=dv, softmax_scale=scale, causal=causal
        )
        return dq, dk, dv


#: registered with the dispatcher (lower priority runs first)
KERNELS = [Fa3Kernel()]
