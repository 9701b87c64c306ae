"""FlexAttention (``torch.nn.attention.flex_attention``), compiled, for blocks with partial masks.

The only GPU kernel here that runs a dense boolean mask: the mask becomes a ``mask_mod`` that
reads the tensor, and :func:`create_block_mask` skips the tiles it empties. It must run
compiled: eager FlexAttention materialises the whole score matrix. The log-sum-exp comes back
through ``return_aux=AuxRequest(lse=True)`` on newer torch and ``return_lse=True`` on older.

Backward: FlexAttention has no entry point that takes an external (GLOBAL) ``lse``, so the block
is recomputed under autograd and its local ``(out_l, lse_l)`` are back-propagated with the
weights of the global merge: with ``w = exp(lse_l - lse)``,
``d out_l = w * dout`` and ``d lse_l = w * (rowsum(dout * out_l) - rowsum(dout * out))``, which
is exactly this block's share of the gradient of the merged output.

>>> import torch
>>> FlexKernel().not_supported(device=torch.device("cpu"), dtype=torch.float32, head_dim=64,
...                            mask=None, gqa=False, needs_grad=False)
['needs a CUDA device, got cpu (eager FlexAttention materialises the scores)']
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cqs_attention.kernels._gpu_common import cuda_capability

if TYPE_CHECKING:
    import torch

    from cqs_attention.kernels.base import BlockMask

__all__ = ["FlexKernel", "flex_block_mask", "grads_from_local"]


@lru_cache(maxsize=1)
def _flex_module():
    try:
        import torch.nn.attention.flex_attention as fa
    except Exception as exc:
        return None, f"FlexAttention is not importable: {type(exc).__name__}"
    return fa, None


#: recompilations of the compiled flex_attention allowed before dynamo falls back to eager
#: (which would materialise the scores): masks, GQA, dtypes and shapes each add a few
RECOMPILE_LIMIT = 64


@lru_cache(maxsize=2)
def _flex_fn(compiled: bool):
    import torch

    fa = _flex_module()[0]
    if not compiled:
        return fa.flex_attention
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    if getattr(cfg, name, RECOMPILE_LIMIT) < RECOMPILE_LIMIT:
        setattr(cfg, name, RECOMPILE_LIMIT)
    return torch.compile(fa.flex_attention)


def _call_flex(fn, q, k, v, block_mask, scale, gqa):
    """Run flex and return ``(out, lse)`` whatever this torch's lse spelling is."""
    fa = _flex_module()[0]
    params = inspect.signature(fa.flex_attention).parameters
    if hasattr(fa, "AuxRequest") and "return_aux" in params:
        out, aux = fn(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa,
                      return_aux=fa.AuxRequest(lse=True))
        return out, aux.lse
    return fn(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa, return_lse=True)


def _mask_mod(mask: BlockMask, lq: int, lk: int, device: torch.device):
    """The ``mask_mod`` of a :class:`BlockMask` for a ``lq x lk`` call.

    The kernel evaluates it on whole tiles, so positions past ``lq``/``lk`` (the padding of a
    partial last tile) reach it too: they are masked out, and a dense tensor is read at
    clamped indices only, never out of range. The offsets and lengths travel in one captured
    int32 tensor rather than as Python constants, so calls that differ only in them reuse the
    compiled kernel instead of recompiling.
    """
    import torch

    no_hi, no_lo = lk, -lq  # offsets that never cut a lq x lk block
    hi = mask.causal_offset if mask.causal_offset is not None else no_hi
    lo = mask.lower_offset if mask.lower_offset is not None else no_lo
    dense = mask.dense
    if dense is None:
        params = torch.tensor([hi, lo, lq, lk], dtype=torch.int32, device=device)

        def band_mod(b, h, q_idx, kv_idx):
            return ((q_idx < params[2]) & (kv_idx < params[3]) & (kv_idx <= q_idx + params[0])
                    & (kv_idx >= q_idx + params[1]))

        return band_mod
    dense = dense.to(device=device, dtype=torch.bool)
    while dense.dim() < 4:
        dense = dense.unsqueeze(0)
    dense = dense.expand(dense.shape[0], dense.shape[1], lq, lk).contiguous()
    params = torch.tensor([hi, lo, lq, lk, int(dense.shape[0] > 1), int(dense.shape[1] > 1)],
                          dtype=torch.int32, device=device)

    def dense_mod(b, h, q_idx, kv_idx):
        q_in, k_in = q_idx < params[2], kv_idx < params[3]
        qi = torch.where(q_in, q_idx, params[2] - 1)  # in range even on padding
        ki = torch.where(k_in, kv_idx, params[3] - 1)
        inside = q_in & k_in
        band = (kv_idx <= q_idx + params[0]) & (kv_idx >= q_idx + params[1])
        return inside & band & dense[b * params[4], h * params[5], qi, ki]

    return dense_mod


def flex_block_mask(mask: BlockMask | None, b: int, h: int, lq: int, lk: int, device,
                    *, compiled: bool = True):
    """A FlexAttention block mask for a :class:`BlockMask` (None for a full block)."""
    import torch

    if mask is None or mask.is_full:
        return None
    fa = _flex_module()[0]
    dense = mask.dense
    db = dh = 1
    if dense is not None:
        shape = (1,) * (4 - dense.dim()) + tuple(dense.shape)
        db, dh = shape[0], shape[1]
    return fa.create_block_mask(_mask_mod(mask, lq, lk, torch.device(device)),
                                b if db > 1 else None,
                                h if dh > 1 else None, lq, lk, device=device,
                                _compile=compiled)


#: calls shorter than one FlexAttention tile on either side, with at most this many (query,
#: key) pairs, run on the reference kernel: Inductor failed to compile FlexAttention's
#: backward for a 97 x 97 call on an H100 (torch 2.11), and such calls are cheap anyway
TINY_PAIRS = 1 << 20
TILE = 128


def _tiny(lq: Any, lk: Any) -> Any:
    """Whether calls of ``lq x lk`` go to the reference kernel (numpy arrays allowed)."""
    import numpy as np

    return np.logical_and(np.minimum(lq, lk) < TILE, np.asarray(lq) * lk <= TINY_PAIRS)


class FlexKernel:
    """Compiled FlexAttention: any :class:`BlockMask` (causal offset and/or dense), GQA."""

    name = "flex"
    priority = 70
    #: bytes a call allocates whatever its size (block-mask tables, captured offsets, small
    #: buffers of the compiled kernel, the allocator's rounding): measured on an H100, a 129 x
    #: 300 window call held about 1.3 MB
    CALL_ALLOWANCE = 4 << 20
    dtypes = ("float16", "bfloat16", "float32")

    def __init__(self, *, compiled: bool = True) -> None:
        self.compiled = compiled

    def not_supported(
        self,
        *,
        device: torch.device,
        dtype: torch.dtype,
        head_dim: int,
        mask: BlockMask | None,
        gqa: bool,
        needs_grad: bool,
    ) -> list[str]:
        import torch

        reasons: list[str] = []
        missing = _flex_module()[1]
        if missing:
            reasons.append(missing)
        cap = cuda_capability(torch.device(device))
        if cap is None and self.compiled:
            reasons.append(
                f"needs a CUDA device, got {device} (eager FlexAttention materialises the scores)"
            )
        elif cap is not None and cap < (8, 0):
            reasons.append(f"needs compute capability >= (8, 0), got {cap}")
        if str(dtype).removeprefix("torch.") not in self.dtypes:
            reasons.append(f"dtype {dtype} not in ({', '.join(self.dtypes)})")
        if head_dim % 16 != 0 or not 16 <= head_dim <= 256:
            reasons.append(f"head_dim {head_dim} must be a multiple of 16 in [16, 256]")
        return reasons

    def memory_bytes(self, m: Any, *, backward: bool, mask: str = "none",
                     pieces: int = 1) -> Any:
        """Device bytes one call allocates (see
        :class:`~cqs_attention.kernels._gpu_common.CallMemory`); a dense mask tensor is
        counted by the footprint model itself. Forward: the block mask's tile tables, ``out``
        (twice: rows with no key are zeroed into a copy) and ``lse``. Backward: the forward
        recomputed under autograd, the float32 temporaries of :func:`grads_from_local`, and
        the gradients (with a float32 allowance for the kernel's own accumulators). Calls
        smaller than a tile run on the reference kernel (:data:`TINY_PAIRS`)."""
        import numpy as np

        from cqs_attention.kernels.reference import ReferenceKernel

        tiles = 4 * 4 * m.batch * m.heads * m.up(m.lq, 128) // 128 * (m.up(m.lk, 128) // 128)
        fwd = tiles + m.outputs() + m.rows(m.lq, m.dv, m.e) + self.CALL_ALLOWANCE
        if backward:
            temps = m.rows(m.lq, 5 * m.dv + 4, m.a) + m.rows(m.lq, m.dv, m.e)
            fwd = fwd + temps + m.grads() + m.grads(m.a)
        tiny = ReferenceKernel().memory_bytes(m, backward=backward, mask=mask, pieces=pieces)
        return np.where(_tiny(m.lq, m.lk), np.maximum(fwd, tiny), fwd)

    def _forward(self, q, k, v, scale, mask):
        bm = flex_block_mask(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device,
                             compiled=self.compiled)
        out, lse = _call_flex(_flex_fn(self.compiled), q, k, v, bm, scale,
                              q.shape[1] != k.shape[1])
        return out, lse

    def fwd(self, q, k, v, *, scale, mask=None):
        import torch

        if q.shape[2] == 0 or k.shape[2] == 0:
            return (q.new_zeros(*q.shape[:3], v.shape[-1]),
                    torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device))
        if _tiny(q.shape[2], k.shape[2]):
            from cqs_attention.kernels.reference import reference_fwd

            out, lse = reference_fwd(q, k, v, scale=scale, mask=mask)
            return out, lse.float()
        with torch.no_grad():
            out, lse = self._forward(q, k, v, scale, mask)
        lse = lse.float()
        empty = torch.isneginf(lse) | torch.isnan(lse)
        if bool(empty.any()):
            out = out.masked_fill(empty.unsqueeze(-1), 0)
            lse = lse.masked_fill(empty, float("-inf"))
        return out, lse

    def bwd(self, dout, q, k, v, out, lse, *, scale, mask=None):
        import torch

        if q.shape[2] == 0 or k.shape[2] == 0:
            return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        if _tiny(q.shape[2], k.shape[2]):
            from cqs_attention.kernels.reference import reference_bwd

            grads = reference_bwd(dout, q, k, v, out, lse, scale=scale, mask=mask)
            return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v), strict=True))
        return grads_from_local(
            lambda a, b, c: self._forward(a, b, c, scale, mask), dout, q, k, v, out, lse
        )


def grads_from_local(forward, dout, q, k, v, out, lse):
    """This block's exact share of the gradient, from a differentiable LOCAL ``forward``.

    ``forward(q, k, v) -> (out_l, lse_l)`` must be differentiable in both outputs; ``out`` and
    ``lse`` are the GLOBAL merged results. With ``w = exp(lse_l - lse)`` the block's local
    results enter the merged output as ``w * out_l``, so back-propagating
    ``d out_l = w * dout`` and ``d lse_l = w * (rowsum(dout * out_l) - rowsum(dout * out))``
    gives its gradients.
    """
    import torch

    qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
    with torch.enable_grad():
        out_l, lse_l = forward(qq, kk, vv)
        lse_g = lse.to(torch.float64 if q.dtype == torch.float64 else torch.float32)
        lse_lf = lse_l.detach().to(lse_g.dtype)
        dead = torch.isneginf(lse_g) | torch.isneginf(lse_lf) | torch.isnan(lse_lf)
        w = torch.exp(torch.where(dead, torch.zeros_like(lse_g), lse_lf - lse_g))
        w = w.masked_fill(dead, 0.0)
        d32 = dout.to(lse_g.dtype)
        g_out = (d32 * w.unsqueeze(-1)).to(out_l.dtype)
        rs_l = (d32 * torch.nan_to_num(out_l.detach().to(lse_g.dtype))).sum(-1)
        rs_g = (d32 * out.to(lse_g.dtype)).sum(-1)
        g_lse = (w * (rs_l - rs_g)).to(lse_l.dtype)
        dq, dk, dv = torch.autograd.grad([out_l, lse_l], [qq, kk, vv], [g_out, g_lse])
    return dq, dk, dv


#: registered with the dispatcher (lower priority runs first)
KERNELS = [FlexKernel()]
