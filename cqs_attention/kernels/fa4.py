"""FlashAttention-4 (``flash_attn.cute``, CuTe DSL) on Hopper and Blackwell.

Forward is ``flash_attn.cute.interface._flash_attn_fwd(..., return_lse=True)``; backward is
``_flash_attn_bwd(q, k, v, out, dout, lse, ...)``, which accepts the GLOBAL ``out``/``lse`` (the
public ``flash_attn_func`` keeps them only inside its autograd context). Layout there is
``(B, L, H, D)``; we pass transposed views. GQA is native; causal is bottom-right aligned, so any
``causal_offset`` maps to one causal rectangle plus full rows (no merging).

>>> import torch
>>> reasons = Fa4Kernel().not_supported(device=torch.device("cpu"), dtype=torch.float32,
...                                     head_dim=128, mask=None, gqa=False, needs_grad=False)
>>> "needs a CUDA device, got cpu" in reasons
True
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from cqs_attention.kernels._gpu_common import BshdKernel

__all__ = ["Fa4Kernel"]


@lru_cache(maxsize=1)
def _interface():
    try:
        return importlib.import_module("flash_attn.cute.interface"), None
    except Exception as exc:  # ImportError, or a broken CUDA/CuTe install
        return None, f"flash_attn.cute (flash-attn-4) is not importable: {type(exc).__name__}"


class Fa4Kernel(BshdKernel):
    """FA4 through ``flash_attn.cute``; compute capability 9.x-12.x, fp16/bf16."""

    name = "fa4"
    priority = 10
    min_capability = (9, 0)

    def _available(self) -> str | None:
        return _interface()[1]

    def _fwd_bshd(self, q, k, v, causal, scale):
        iface = _interface()[0]
        res = iface._flash_attn_fwd(q, k, v, softmax_scale=scale, causal=causal,
                                    return_lse=True)
        return res[0], res[1]

    def _bwd_bshd(self, dout, q, k, v, out, lse, causal, scale):
        iface = _interface()[0]
        res = iface._flash_attn_bwd(q, k, v, out, dout, lse, softmax_scale=scale,
                                    causal=causal)
        return res[0], res[1], res[2]


#: registered with the dispatcher (lower priority runs first)
KERNELS = [Fa4Kernel()]
