"""Kernels through PyTorch's SDPA aten ops that return the log-sum-exp.

Three backends, each a :class:`~cqs_attention.kernels.base.Kernel`:

* :class:`CudnnKernel` -- ``aten._scaled_dot_product_cudnn_attention(compute_log_sumexp=True)``
  (its lse has a trailing singleton dimension);
* :class:`SdpaFlashKernel` -- ``aten._scaled_dot_product_flash_attention`` (flash-attention 2
  inside PyTorch);
* :class:`EfficientKernel` -- ``aten._scaled_dot_product_efficient_attention`` (pads its lse to a
  multiple of 32; also runs float32).

Their ``is_causal`` is aligned top-left, which agrees with our bottom-right convention only on
square blocks, so a causal :class:`~cqs_attention.kernels.base.BlockMask` is split into full
rectangles and square causal blocks (:func:`~cqs_attention.kernels._gpu_common.causal_pieces`).
Backward calls the ops' ``*_backward`` with the GLOBAL ``out`` and ``lse``. GQA is run by
repeating key/value heads and summing their gradients.

>>> import torch
>>> CudnnKernel().not_supported(device=torch.device("cpu"), dtype=torch.bfloat16, head_dim=128,
...                             mask=None, gqa=False, needs_grad=False)
['needs a CUDA device, got cpu']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from cqs_attention.kernels._gpu_common import (
    CallMemory,
    cuda_capability,
    expand_kv,
    fix_lse,
    mask_pieces,
    run_pieces_bwd,
    run_pieces_fwd,
    sum_kv_groups,
)

if TYPE_CHECKING:
    import torch

    from cqs_attention.kernels.base import BlockMask

__all__ = ["CudnnKernel", "EfficientKernel", "SdpaFlashKernel"]


def _dtype_names(dtypes: tuple[str, ...]) -> str:
    return ", ".join(dtypes)


def _op_accepts(check: str, q: Any, k: Any, v: Any, causal: bool) -> bool:
    """Whether PyTorch's own SDPA dispatcher would run this piece on the op (``check`` names
    ``torch.backends.cuda.can_use_*_attention``). The ops are called directly here, which
    skips those checks, and a piece they reject can crash the op: cuDNN's backward ended the
    process with a segmentation fault on an H100 for a window-masked 129 x 300 run."""
    import torch

    fn = getattr(torch.backends.cuda, check, None)
    params_cls = getattr(torch.backends.cuda, "SDPAParams", None)
    if fn is None or params_cls is None:
        return True
    try:
        params = params_cls(q, k, v, None, 0.0, causal, False)
    except TypeError:  # older PyTorch: no enable_gqa argument
        params = params_cls(q, k, v, None, 0.0, causal)
    return bool(fn(params, False))


class _SdpaKernel:
    """Shared checks and the piecewise/GQA plumbing; subclasses implement one piece.

    A piece the op would not accept through PyTorch's dispatcher (see :func:`_op_accepts`)
    runs on the reference kernel instead (exact; it materialises that piece's scores).
    """

    #: the ``torch.backends.cuda`` check of this op, and the switch that enables it
    check: ClassVar[str] = ""
    enabled_flag: ClassVar[str] = ""

    #: causal offsets run as rectangle pieces (no dense band mask is built)
    band_mask_free = True

    name: ClassVar[str] = "sdpa"
    op_name: ClassVar[str] = ""
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "bfloat16")
    min_capability: ClassVar[tuple[int, int]] = (8, 0)
    max_head_dim: ClassVar[int] = 256

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
        if not hasattr(torch.ops.aten, self.op_name):
            reasons.append(f"this torch ({torch.__version__}) has no aten.{self.op_name}")
        enabled = getattr(torch.backends.cuda, self.enabled_flag, None)
        if enabled is not None and not enabled():
            reasons.append(f"disabled in this process (torch.backends.cuda.{self.enabled_flag}() "
                           "is False)")
        cap = cuda_capability(torch.device(device))
        if cap is None:
            reasons.append(f"needs a CUDA device, got {device}")
        elif cap < self.min_capability:
            reasons.append(f"needs compute capability >= {self.min_capability}, got {cap}")
        if str(dtype).removeprefix("torch.") not in self.dtypes:
            reasons.append(f"dtype {dtype} not in ({_dtype_names(self.dtypes)})")
        if head_dim % 8 != 0 or head_dim > self.max_head_dim:
            reasons.append(
                f"head_dim {head_dim} must be a multiple of 8 and <= {self.max_head_dim}"
            )
        if mask is not None and not mask.band_only:
            reasons.append("window edges and dense (partial) masks are not supported; use flex")
        reasons.extend(self._extra_reasons(dtype, needs_grad))
        return reasons

    def _extra_reasons(self, dtype: torch.dtype, needs_grad: bool) -> list[str]:
        return []

    def memory_bytes(self, m: CallMemory, *, backward: bool, mask: str = "none",
                     pieces: int = 1) -> Any:
        """Device bytes one call allocates (see
        :class:`~cqs_attention.kernels._gpu_common.CallMemory`): GQA key/value heads
        repeated, contiguous copies of the pieces' slices, the op's outputs and a float32
        workspace row per query row (output accumulator, ``dq`` accumulator), and for calls
        of several pieces (square causal blocks) their merge or float32 gradient sums."""
        kv_full = m.rows(m.lk, m.d + m.dv, m.e)  # keys and values with every query head
        expand = kv_full if m.heads != m.kv_heads else 0
        if not backward:
            merge = 0
            if pieces > 1:  # pieces share rows: merge_partials in float32
                merge = m.rows(m.lq, 2 * m.dv, m.e) + m.rows(m.lq, 4 * m.dv + 4, m.a)
            return (expand + m.rows(m.lq, m.d, m.e) + kv_full + m.outputs()
                    + m.rows(m.lq, m.dv + 1, m.a) + m.pieces(False, pieces) + merge)
        copies = m.rows(m.lq, m.d + 2 * m.dv, m.e) + kv_full + m.rows(m.lq, 2, m.a)
        grads_full = m.rows(m.lq, m.d, m.e) + kv_full
        ws = m.rows(m.up(m.lq, 128), m.up(m.d, 64), 4) + m.rows(m.up(m.lq, 128), 2, 4)
        sums = 0
        if m.heads != m.kv_heads:
            sums = m.rows(m.lk, m.d + m.dv, m.e, m.kv_heads)
        accs = 0
        if pieces > 1:  # float32 sums with every query head (keys were repeated first)
            accs = m.rows(m.lq, m.d, m.a) + m.rows(m.lk, m.d + m.dv, m.a)
        return expand + copies + grads_full + ws + sums + accs

    # -- one piece: (B, H, Lq, D) with equal heads; causal pieces are square ------------------
    def _fwd_piece(self, q, k, v, causal: bool, scale: float):  # pragma: no cover - abstract
        raise NotImplementedError

    def _bwd_piece(self, dout, q, k, v, out, lse, causal: bool, scale: float):  # pragma: no cover
        raise NotImplementedError

    def fwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        scale: float,
        mask: BlockMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        groups = q.shape[1] // k.shape[1]
        k, v = expand_kv(k, groups), expand_kv(v, groups)
        pieces = mask_pieces(mask, q.shape[2], k.shape[2], square_only=True)
        return run_pieces_fwd(
            lambda a, b, c, causal: self._safe_fwd(a, b, c, causal, scale), q, k, v, pieces
        )

    def _accepts(self, q, k, v, causal) -> bool:
        return not self.check or _op_accepts(self.check, _c(q), _c(k), _c(v), causal)

    def _safe_fwd(self, q, k, v, causal, scale):
        if self._accepts(q, k, v, causal):
            return self._fwd_piece(q, k, v, causal, scale)
        from cqs_attention.kernels.reference import reference_fwd

        out, lse = reference_fwd(q, k, v, scale=scale, mask=_square_causal(causal, q, k))
        return out, lse.float()

    def _safe_bwd(self, dout, q, k, v, out, lse, causal, scale):
        if self._accepts(q, k, v, causal):
            return self._bwd_piece(dout, q, k, v, out, lse, causal=causal, scale=scale)
        from cqs_attention.kernels.reference import reference_bwd

        grads = reference_bwd(dout, q, k, v, out, lse, scale=scale,
                              mask=_square_causal(causal, q, k))
        return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v), strict=True))

    def bwd(
        self,
        dout: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        lse: torch.Tensor,
        *,
        scale: float,
        mask: BlockMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        groups = q.shape[1] // k.shape[1]
        k, v = expand_kv(k, groups), expand_kv(v, groups)
        out = out.to(q.dtype)
        pieces = mask_pieces(mask, q.shape[2], k.shape[2], square_only=True)
        dq, dk, dv = run_pieces_bwd(
            lambda *a: self._safe_bwd(*a[:-1], a[-1], scale),
            dout.to(q.dtype), q, k, v, out, lse.float(), pieces,
        )
        return dq, sum_kv_groups(dk, groups), sum_kv_groups(dv, groups)


def _c(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous()


def _square_causal(causal: bool, q: Any, k: Any) -> Any:
    """The mask of a piece (square when causal: top-left equals bottom-right there)."""
    from cqs_attention.kernels.base import BlockMask

    return BlockMask(causal_offset=k.shape[2] - q.shape[2]) if causal else None


class CudnnKernel(_SdpaKernel):
    """cuDNN fused attention (Hopper's fastest PyTorch-native kernel)."""

    name: ClassVar[str] = "cudnn"
    priority: ClassVar[int] = 40
    op_name: ClassVar[str] = "_scaled_dot_product_cudnn_attention"
    check: ClassVar[str] = "can_use_cudnn_attention"
    enabled_flag: ClassVar[str] = "cudnn_sdp_enabled"
    max_head_dim: ClassVar[int] = 128
    #: cuDNN's own workspace, allocated through PyTorch (an allowance, not a measurement)
    WORKSPACE = 64 << 20

    def memory_bytes(self, m: CallMemory, *, backward: bool, mask: str = "none",
                     pieces: int = 1) -> Any:
        return super().memory_bytes(m, backward=backward, mask=mask,
                                    pieces=pieces) + self.WORKSPACE

    def _fwd_piece(self, q, k, v, causal, scale):
        import torch

        res = torch.ops.aten._scaled_dot_product_cudnn_attention(
            _c(q), _c(k), _c(v), None, True, 0.0, causal, False, scale=scale
        )
        return res[0], fix_lse(res[1], q.shape[2])

    def _bwd_piece(self, dout, q, k, v, out, lse, causal, scale):
        import torch

        dead = torch.zeros((), dtype=torch.int64, device=q.device)
        lq, lk = q.shape[2], k.shape[2]
        dq, dk, dv = torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            _c(dout), _c(q), _c(k), _c(v), _c(out), _c(lse).unsqueeze(-1), dead, dead,
            None, None, None, lq, lk, 0.0, causal, scale=scale,
        )
        return dq, dk, dv


class SdpaFlashKernel(_SdpaKernel):
    """PyTorch's built-in flash-attention 2."""

    name: ClassVar[str] = "sdpa_flash"
    priority: ClassVar[int] = 50
    op_name: ClassVar[str] = "_scaled_dot_product_flash_attention"
    check: ClassVar[str] = "can_use_flash_attention"
    enabled_flag: ClassVar[str] = "flash_sdp_enabled"

    def _fwd_piece(self, q, k, v, causal, scale):
        import torch

        res = torch.ops.aten._scaled_dot_product_flash_attention(
            _c(q), _c(k), _c(v), 0.0, causal, False, scale=scale
        )
        return res[0], fix_lse(res[1], q.shape[2])

    def _bwd_piece(self, dout, q, k, v, out, lse, causal, scale):
        import torch

        rng = torch.zeros(2, dtype=torch.int64, device=q.device)
        unused = torch.zeros((), dtype=torch.int64, device=q.device)
        lq, lk = q.shape[2], k.shape[2]
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
            _c(dout), _c(q), _c(k), _c(v), _c(out), _c(lse), None, None, lq, lk, 0.0, causal,
            rng, unused, scale=scale,
        )
        return dq, dk, dv


class EfficientKernel(_SdpaKernel):
    """PyTorch's memory-efficient attention (xformers' CUTLASS kernel); also float32."""

    name: ClassVar[str] = "efficient"
    priority: ClassVar[int] = 60
    op_name: ClassVar[str] = "_scaled_dot_product_efficient_attention"
    check: ClassVar[str] = "can_use_efficient_attention"
    enabled_flag: ClassVar[str] = "mem_efficient_sdp_enabled"
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "bfloat16", "float32")
    min_capability: ClassVar[tuple[int, int]] = (5, 0)

    def _extra_reasons(self, dtype: torch.dtype, needs_grad: bool) -> list[str]:
        import torch

        if needs_grad and dtype != torch.float32:
            # measured on an H100 with torch 2.11: the half-precision backward op, given an
            # external out/lse, returned wrong dq (rel. error ~0.7) and crashed at L = 64K
            return [f"backward in {dtype} is unreliable through this op (float32 only)"]
        return []

    def _fwd_piece(self, q, k, v, causal, scale):
        import torch

        res = torch.ops.aten._scaled_dot_product_efficient_attention(
            _c(q), _c(k), _c(v), None, True, 0.0, causal, scale=scale
        )
        return res[0], fix_lse(res[1], q.shape[2])

    def _bwd_piece(self, dout, q, k, v, out, lse, causal, scale):
        import torch
        import torch.nn.functional as F

        lq = q.shape[2]
        pad = (-lq) % 32
        lse_p = F.pad(_c(lse), (0, pad)) if pad else _c(lse)
        dead = torch.zeros((), dtype=torch.int64, device=q.device)
        res = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            _c(dout), _c(q), _c(k), _c(v), None, _c(out), lse_p, dead, dead, 0.0,
            [True, True, True, False], causal, scale=scale,
        )
        return res[0], res[1], res[2]


#: registered with the dispatcher (lower priority runs first)
KERNELS = [CudnnKernel(), SdpaFlashKernel(), EfficientKernel()]
