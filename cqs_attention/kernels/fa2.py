"""FlashAttention-2 (the ``flash_attn`` package) on Ampere and later, when installed.

Forward/backward are ``flash_attn.flash_attn_interface._flash_attn_forward`` /
``_flash_attn_backward`` (the backward takes the GLOBAL ``out`` and ``lse``). FA2 reports
``lse = +inf`` for rows with no allowed key; :func:`fix_lse` maps it to ``-inf``. The keyword
names of these private functions changed across releases (``window_size`` became
``window_size_left``/``window_size_right`` in 2.6.x); both spellings are handled.

Not exercised on the project's GPU machine (flash-attn 2 is not installed there).

>>> import torch
>>> reasons = Fa2Kernel().not_supported(device=torch.device("cpu"), dtype=torch.bfloat16,
...                                     head_dim=128, mask=None, gqa=False, needs_grad=False)
>>> "needs a CUDA device, got cpu" in reasons
True
"""

from __future__ import annotations

import importlib
import inspect
from functools import lru_cache

from cqs_attention.kernels._gpu_common import BshdKernel

__all__ = ["Fa2Kernel"]


@lru_cache(maxsize=1)
def _interface():
    try:
        return importlib.import_module("flash_attn.flash_attn_interface"), None
    except Exception as exc:
        return None, f"flash_attn (flash-attn 2) is not importable: {type(exc).__name__}"


def _window_kwargs(fn) -> dict:
    params = inspect.signature(fn).parameters
    if "window_size_left" in params:
        return {"window_size_left": -1, "window_size_right": -1}
    return {"window_size": (-1, -1)}


class Fa2Kernel(BshdKernel):
    """FA2 via ``flash_attn``; compute capability >= 8.0, fp16/bf16."""

    name = "fa2"
    priority = 30
    min_capability = (8, 0)
    copies_inputs = True  # .contiguous() on the (B, L, H, D) views
    gqa_fp32_workspace = False  # GQA: dk, dv expanded to the query heads, then summed

    def _available(self) -> str | None:
        return _interface()[1]

    def _fwd_bshd(self, q, k, v, causal, scale):
        fn = _interface()[0]._flash_attn_forward
        res = fn(q.contiguous(), k.contiguous(), v.contiguous(), dropout_p=0.0,
                 softmax_scale=scale, causal=causal, softcap=0.0, alibi_slopes=None,
                 return_softmax=False, **_window_kwargs(fn))
        return res[0], res[1]

    def _bwd_bshd(self, dout, q, k, v, out, lse, causal, scale):
        import torch

        fn = _interface()[0]._flash_attn_backward
        q, k, v, out, dout = (t.contiguous() for t in (q, k, v, out, dout))
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        fn(dout, q, k, v, out, lse, dq, dk, dv, dropout_p=0.0, softmax_scale=scale,
           causal=causal, softcap=0.0, alibi_slopes=None, deterministic=False, rng_state=None,
           **_window_kwargs(fn))
        return dq, dk, dv


#: registered with the dispatcher (lower priority runs first)
KERNELS = [Fa2Kernel()]
