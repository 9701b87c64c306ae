"""The fast CPU kernel: PyTorch's flash attention for CPU, which returns the log-sum-exp.

``aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, is_causal, scale=)`` returns
``(out, logsumexp)`` with ``logsumexp`` float32 ``(B, H, Lq)``, and
``aten._scaled_dot_product_flash_attention_for_cpu_backward(dout, q, k, v, out, lse, 0.0,
is_causal, scale=)`` accepts the GLOBAL ``out`` and ``lse``, so each block's gradients are its
exact share. Its ``is_causal`` is aligned top-left (query ``i`` attends key ``j <= i``), which
equals our bottom-right convention only on square blocks; a causal
:class:`~cqs_attention.kernels.base.BlockMask` is therefore split into full rectangles and
square causal blocks (:func:`~cqs_attention.kernels._gpu_common.causal_pieces`). Dense masks
are left to the reference kernel. The ops take GQA key/value heads as they are.

Registered ahead of the reference kernel for float32 and bfloat16 (float64 stays on the
reference kernel, float16 too: the CPU op accumulates it less carefully).

Calls the op gets wrong are routed, whole, to the reference kernel
(:func:`~cqs_attention.kernels.reference.reference_fwd` / ``reference_bwd``, which compute in
float32 and are exact for them), so every call this kernel accepts is answered correctly:

* ``scale <= 0``, or a positive scale that is 0 or subnormal in float32 (the op applies it in
  float32): the op's causal masking breaks (NaN rows); scale is not part of
  ``not_supported``'s arguments, so the call is routed rather than refused.
* a non-finite value in q, k or v, or finite inputs whose scores could overflow
  (``max|q| * max|k| * D * |scale|`` beyond 1e37): for a row whose only visible key in a piece
  scores ``-inf`` the op returns ``out = 0, lse = 0`` (a phantom key of logit 0) where the
  answer is ``lse = -inf``; a NaN score can come out finite; and an infinite value row turns
  the rows a causal piece masks from it into NaN (``0 * inf``). The reference kernel gives rows
  with no finite score ``out = 0, lse = -inf``, propagates NaN to the rows that attend it, and
  keeps masked rows finite.

The check is one pass over q, k and v per call (cheap next to the attention itself); a routed
call materialises its block's scores in float32, as the reference kernel does.

>>> import torch
>>> from cqs_attention.kernels.base import BlockMask
>>> from cqs_attention.kernels.reference import reference_fwd
>>> g = torch.Generator().manual_seed(0)
>>> q, k, v = (torch.randn(1, 2, 6, 8, generator=g) for _ in range(3))
>>> out, lse = CpuFlashKernel().fwd(q, k, v, scale=0.3, mask=BlockMask(causal_offset=0))
>>> ref, ref_lse = reference_fwd(q, k, v, scale=0.3, mask=BlockMask(causal_offset=0))
>>> bool(torch.allclose(out, ref, atol=1e-5)), bool(torch.allclose(lse, ref_lse, atol=1e-5))
(True, True)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from cqs_attention.kernels._gpu_common import mask_pieces, run_pieces_bwd, run_pieces_fwd
from cqs_attention.kernels.base import scale_breaks_masking
from cqs_attention.kernels.reference import reference_bwd, reference_fwd

if TYPE_CHECKING:
    from cqs_attention.kernels.base import BlockMask

__all__ = ["CpuFlashKernel", "cpu_flash_bwd", "cpu_flash_fwd"]

_OP = "_scaled_dot_product_flash_attention_for_cpu"


def _piece_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
               scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q.contiguous(), k.contiguous(), v.contiguous(), 0.0, causal, scale=scale)
    return out, lse.float()


def _piece_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        dout.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(),
        out.contiguous(), lse.float().contiguous(), 0.0, causal, scale=scale)
    return dq, dk, dv


#: scores beyond this bound could overflow float32 to +-inf inside the op
_SCORE_BOUND = 1e37


def _op_is_wrong(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> bool:
    """Whether the CPU op may answer this call wrongly (see the module docstring): a
    non-positive scale, a non-finite input, or scores that could overflow."""
    if scale_breaks_masking(scale):
        return True
    if q.numel() == 0 or k.numel() == 0:
        return False
    qmax = q.abs().amax().item()
    kmax = k.abs().amax().item()
    if not (math.isfinite(qmax) and math.isfinite(kmax)):
        return True  # inf or NaN (amax propagates NaN)
    if not bool(torch.isfinite(v).all()):
        return True
    return qmax * kmax * q.shape[-1] * scale > _SCORE_BOUND


def cpu_flash_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                  mask: BlockMask | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of one block (mask: none or ``causal_offset`` only); lse float32.

    Calls the op gets wrong (``scale <= 0``, non-finite inputs, overflowing scores) run on the
    reference kernel instead.
    """
    if _op_is_wrong(q, k, v, scale):
        out, lse = reference_fwd(q, k, v, scale=scale, mask=mask)
        return out, lse.float()
    pieces = mask_pieces(mask, q.shape[2], k.shape[2], square_only=True)
    return run_pieces_fwd(lambda a, b, c, causal: _piece_fwd(a, b, c, causal, scale),
                          q, k, v, pieces)


def cpu_flash_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  out: torch.Tensor, lse: torch.Tensor, *, scale: float,
                  mask: BlockMask | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This block's exact share of ``(dq, dk, dv)`` given the GLOBAL ``out`` and ``lse``
    (on the reference kernel for the calls :func:`cpu_flash_fwd` routes there)."""
    if _op_is_wrong(q, k, v, scale):
        dq, dk, dv = reference_bwd(dout, q, k, v, out, lse, scale=scale, mask=mask)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
    pieces = mask_pieces(mask, q.shape[2], k.shape[2], square_only=True)
    return run_pieces_bwd(
        lambda do, a, b, c, o, l, causal: _piece_bwd(do, a, b, c, o, l, causal, scale),
        dout.to(q.dtype), q, k, v, out.to(q.dtype), lse.float(), pieces)


class CpuFlashKernel:
    """:class:`~cqs_attention.kernels.base.Kernel` over the CPU flash-attention aten ops."""

    #: causal offsets run as rectangle pieces (no dense band mask is built)
    band_mask_free = True

    name: ClassVar[str] = "cpu_flash"
    priority: ClassVar[int] = 900
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16)

    def not_supported(self, *, device: torch.device, dtype: torch.dtype, head_dim: int,
                      mask: BlockMask | None, gqa: bool, needs_grad: bool) -> list[str]:
        reasons: list[str] = []
        if not hasattr(torch.ops.aten, _OP):
            reasons.append(f"this torch ({torch.__version__}) has no aten.{_OP}")
        if torch.device(device).type != "cpu":
            reasons.append(f"needs the CPU, got {device}")
        if dtype not in self.dtypes:
            reasons.append(f"dtype {dtype} not in (float32, bfloat16)")
        if mask is not None and not mask.band_only:
            reasons.append("window edges and dense (partial) masks are not supported; use "
                           "reference")
        return reasons

    def memory_bytes(self, m: Any, *, backward: bool, mask: str = "none",
                     pieces: int = 1) -> Any:
        """Bytes one call allocates (see
        :class:`~cqs_attention.kernels._gpu_common.CallMemory`): contiguous copies of the
        pieces' inputs, the op's outputs, and the merge of pieces that share rows."""
        q_in = m.rows(m.lq, m.d, m.e)
        kv_in = m.rows(m.lk, m.d + m.dv, m.e, m.kv_heads)
        if not backward:
            merge = m.rows(m.lq, 4 * m.dv + 4, m.a) if pieces > 1 else 0
            return q_in + kv_in + m.outputs() + m.pieces(False, pieces) + merge
        return (q_in + kv_in + m.rows(m.lq, 2 * m.dv, m.e) + m.rows(m.lq, 2, m.a)
                + m.grads() + m.pieces(True, pieces))

    def fwd(self, q, k, v, *, scale, mask=None):
        return cpu_flash_fwd(q, k, v, scale=scale, mask=mask)

    def bwd(self, dout, q, k, v, out, lse, *, scale, mask=None):
        return cpu_flash_bwd(dout, q, k, v, out, lse, scale=scale, mask=mask)


#: registered with the dispatcher (lower priority runs first; reference is 1000)
KERNELS = [CpuFlashKernel()]
