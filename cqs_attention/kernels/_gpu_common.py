"""Helpers shared by the GPU kernels: mask pieces, log-sum-exp fix-ups, GQA, piecewise calls.

Most fast kernels know only two masks: none, or a causal diagonal with their own alignment
(flash-attn: bottom-right; PyTorch's SDPA ops: top-left, which equals bottom-right only on
square blocks). A :class:`~cqs_attention.kernels.base.BlockMask` with any ``causal_offset``
is split here into :class:`Piece` rectangles that such a kernel can run, and the partial
results are put back together exactly (rows no key reaches get ``out = 0``, ``lse = -inf``).

>>> causal_pieces(4, 6, 2, square_only=False)
[Piece(q0=0, q1=4, k0=0, k1=6, causal=True)]
>>> causal_pieces(4, 6, 2, square_only=True)
[Piece(q0=0, q1=4, k0=0, k1=2, causal=False), Piece(q0=0, q1=4, k0=2, k1=6, causal=True)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from cqs_attention.kernels.base import BlockMask

__all__ = [
    "BshdKernel",
    "CallMemory",
    "Piece",
    "causal_pieces",
    "expand_kv",
    "fix_lse",
    "mask_pieces",
    "piece_allowed",
    "run_pieces_bwd",
    "run_pieces_fwd",
    "sum_kv_groups",
]

#: fwd(q, k, v, causal) -> (out, lse (B, H, Lq) float32) on one piece
PieceFwd = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]
#: bwd(dout, q, k, v, out, lse, causal) -> (dq, dk, dv) on one piece
PieceBwd = Callable[..., "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class Piece:
    """Queries ``[q0, q1)`` against keys ``[k0, k1)``, full or causal aligned bottom-right.

    ``causal=True`` means local query ``i`` attends local key ``j`` iff
    ``j <= i + (k1 - k0) - (q1 - q0)``.
    """

    q0: int
    q1: int
    k0: int
    k1: int
    causal: bool


def causal_pieces(lq: int, lk: int, offset: int | None, *, square_only: bool) -> list[Piece]:
    """Split a ``lq x lk`` block with ``causal_offset`` into pieces a simple kernel can run.

    Query ``i`` may attend key ``j`` iff ``j <= i + offset`` (``offset=None``: every key).
    Rows in no piece have no allowed key. With ``square_only``, every causal piece is
    square (then top-left and bottom-right alignment agree); otherwise causal pieces are
    bottom-right aligned rectangles and no two pieces share a row.

    >>> causal_pieces(3, 3, None, square_only=True)
    [Piece(q0=0, q1=3, k0=0, k1=3, causal=False)]
    >>> causal_pieces(5, 3, -1, square_only=True)
    [Piece(q0=1, q1=4, k0=0, k1=3, causal=True), Piece(q0=4, q1=5, k0=0, k1=3, causal=False)]
    """
    if lq <= 0 or lk <= 0:
        return []
    if offset is None or offset >= lk - 1:
        return [Piece(0, lq, 0, lk, False)]
    pieces: list[Piece] = []
    # rows [0, r) see a strict prefix of the keys; rows [r, lq) see them all
    r = min(lq, lk - offset)
    if r > 0 and r + offset > 0:
        kk = r + offset  # keys [0, kk) reach rows [0, r) with bottom-right alignment
        if not square_only:
            pieces.append(Piece(0, r, 0, kk, True))
        elif offset >= 0:
            if offset > 0:
                pieces.append(Piece(0, r, 0, offset, False))
            pieces.append(Piece(0, r, offset, kk, True))
        else:
            pieces.append(Piece(-offset, r, 0, kk, True))
    if r < lq:
        pieces.append(Piece(max(r, 0), lq, 0, lk, False))
    return pieces


def piece_allowed(piece: Piece, i: int, j: int) -> bool:
    """Whether the piece lets local query ``i`` attend local key ``j`` (block coordinates).

    >>> piece_allowed(Piece(0, 2, 0, 3, True), 0, 1), piece_allowed(Piece(0, 2, 0, 3, True), 0, 2)
    (True, False)
    """
    if not (piece.q0 <= i < piece.q1 and piece.k0 <= j < piece.k1):
        return False
    if not piece.causal:
        return True
    return j - piece.k0 <= i - piece.q0 + (piece.k1 - piece.k0) - (piece.q1 - piece.q0)


def mask_pieces(mask: BlockMask | None, lq: int, lk: int, *, square_only: bool) -> list[Piece]:
    """:func:`causal_pieces` of a :class:`BlockMask` (which must have no dense part)."""
    offset = None if mask is None else mask.causal_offset
    return causal_pieces(lq, lk, offset, square_only=square_only)


def fix_lse(lse: torch.Tensor, lq: int) -> torch.Tensor:
    """Normalise a kernel's log-sum-exp to float32 ``(B, H, lq)`` with ``-inf`` for empty rows.

    Drops a trailing singleton dimension (cuDNN), slices padding past ``lq`` (memory-efficient
    attention pads to a multiple of 32) and maps ``+inf`` (flash-attn 2's empty rows) to
    ``-inf``.

    >>> import torch
    >>> fix_lse(torch.tensor([[[[1.0], [float("inf")], [0.0]]]]), 2).tolist()
    [[[1.0, -inf]]]
    """
    import torch

    if lse.dim() == 4 and lse.shape[-1] == 1:
        lse = lse.squeeze(-1)
    lse = lse[..., :lq].float()
    return torch.where(torch.isposinf(lse), torch.full_like(lse, float("-inf")), lse)


def expand_kv(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Repeat each key/value head ``groups`` times (GQA -> MHA), ``(B, Hkv, L, D)``."""
    return t if groups == 1 else t.repeat_interleave(groups, dim=1)


def sum_kv_groups(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Sum gradients of the ``groups`` query heads that share a key/value head."""
    if groups == 1:
        return t
    b, h, n, d = t.shape
    return t.view(b, h // groups, groups, n, d).sum(dim=2)


def run_pieces_fwd(
    call: PieceFwd, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pieces: list[Piece]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``call`` on each piece and assemble ``(out, lse)`` of the whole block.

    Pieces that share rows are merged with :func:`cqs_attention.merge.merge_partials`.
    """
    import torch

    from cqs_attention.merge import merge_partials

    b, h, lq, _ = q.shape
    dv = v.shape[-1]
    if len(pieces) == 1 and pieces[0] == Piece(0, lq, 0, k.shape[2], pieces[0].causal):
        return call(q, k, v, pieces[0].causal)
    out = q.new_zeros(b, h, lq, dv)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    lse = torch.full((b, h, lq), float("-inf"), dtype=lse_dtype, device=q.device)
    rows: dict[tuple[int, int], list[Piece]] = {}
    for p in pieces:
        rows.setdefault((p.q0, p.q1), []).append(p)
    for (q0, q1), group in rows.items():
        acc_o, acc_l = None, None
        for p in group:
            o, l = call(q[:, :, q0:q1], k[:, :, p.k0:p.k1], v[:, :, p.k0:p.k1], p.causal)
            if acc_o is None:
                acc_o, acc_l = o, l
            else:
                acc_o, acc_l = merge_partials(acc_o, acc_l, o, l)
        out[:, :, q0:q1] = acc_o
        lse[:, :, q0:q1] = acc_l
    return out, lse


def run_pieces_bwd(
    call: PieceBwd,
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    pieces: list[Piece],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``call`` (a backward with the GLOBAL out/lse) on each piece and sum the gradients."""
    import torch

    lq, lk = q.shape[2], k.shape[2]
    if len(pieces) == 1 and pieces[0] == Piece(0, lq, 0, lk, pieces[0].causal):
        return call(dout, q, k, v, out, lse, pieces[0].causal)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    dq = torch.zeros(q.shape, dtype=acc, device=q.device)
    dk = torch.zeros(k.shape, dtype=acc, device=k.device)
    dvv = torch.zeros(v.shape, dtype=acc, device=v.device)
    for p in pieces:
        s_q, s_k = slice(p.q0, p.q1), slice(p.k0, p.k1)
        gq, gk, gv = call(dout[:, :, s_q], q[:, :, s_q], k[:, :, s_k], v[:, :, s_k],
                          out[:, :, s_q], lse[:, :, s_q], p.causal)
        dq[:, :, s_q] += gq
        dk[:, :, s_k] += gk
        dvv[:, :, s_k] += gv
    return dq.to(q.dtype), dk.to(k.dtype), dvv.to(v.dtype)


class CallMemory:
    """Sizes of one kernel call, for the memory models (``lq``/``lk`` may be numpy arrays, one
    entry per call; every method then returns an array). Bytes of ``rows`` rows of a
    ``(B, heads, rows, width)`` tensor of ``size``-byte elements: :meth:`rows`.

    Every kernel's ``memory_bytes(m: CallMemory, *, backward, mask, pieces)`` bounds the
    device bytes ONE call allocates while it runs, its outputs included and its inputs
    excluded: the engine's footprint model adds them to the staged rows and accumulators.
    """

    def __init__(self, *, batch: int, heads: int, kv_heads: int, lq: Any, lk: Any,
                 head_dim: int, v_dim: int, elem: int, acc: int) -> None:
        self.batch, self.heads, self.kv_heads = batch, heads, kv_heads
        self.lq, self.lk = lq, lk
        self.d, self.dv, self.e, self.a = head_dim, v_dim, elem, acc

    def rows(self, n: Any, width: float, size: int, heads: int | None = None) -> Any:
        return n * self.batch * (self.heads if heads is None else heads) * width * size

    @staticmethod
    def up(n: Any, multiple: int) -> Any:
        """``n`` rounded up to a multiple (kernels pad rows and head dims to their tiles)."""
        return -(-n // multiple) * multiple

    def outputs(self) -> Any:
        """``out`` in the inputs' dtype and a float32 ``lse``, as every kernel returns them,
        with the temporaries :func:`fix_lse` makes (a mask, a fill and the result)."""
        return self.rows(self.lq, self.dv, self.e) + self.rows(self.lq, 3, self.a) \
            + self.rows(self.lq, 1, 1)

    def grads(self, size: int | None = None) -> Any:
        """``dq, dk, dv`` (``dk, dv`` with the key/value heads)."""
        size = self.e if size is None else size
        return self.rows(self.lq, self.d, size) + self.rows(self.lk, self.d + self.dv, size,
                                                            self.kv_heads)

    def pieces(self, backward: bool, pieces: int) -> Any:
        """What :func:`run_pieces_fwd` / :func:`run_pieces_bwd` add to assemble a call made
        of several pieces: the whole block's outputs (forward) or float32 gradient sums."""
        if pieces <= 1:
            return 0
        if backward:
            return self.grads(self.a)
        return self.rows(self.lq, self.dv, self.e) + self.rows(self.lq, 1, self.a)


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    """``(major, minor)`` of a CUDA device, or None for other devices / no CUDA."""
    import torch

    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


class BshdKernel:
    """Base of the flash-attn kernels: (B, L, H, D) layout, native GQA, bottom-right causal.

    Subclasses set ``name``, ``dtypes``, ``min_capability``/``max_capability``,
    ``head_dims_ok`` and implement ``_available()`` (a reason string or None),
    ``_fwd_bshd(q, k, v, causal, scale) -> (out, lse)`` and
    ``_bwd_bshd(dout, q, k, v, out, lse, causal, scale) -> (dq, dk, dv)``.
    """

    #: causal offsets run as rectangle pieces (no dense band mask is built)
    band_mask_free = True
    #: the backend copies the (B, L, H, D) views it is given into contiguous tensors
    copies_inputs = False
    #: the backward sums the gradients of GQA key/value heads in float32 workspaces
    gqa_fp32_workspace = True

    name = "bshd"
    dtypes: tuple[str, ...] = ("float16", "bfloat16")
    min_capability: tuple[int, int] = (8, 0)
    max_capability: tuple[int, int] | None = None

    def _available(self) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _head_dim_reason(self, head_dim: int) -> str | None:
        if head_dim % 8 != 0 or not 8 <= head_dim <= 256:
            return f"head_dim {head_dim} must be a multiple of 8 in [8, 256]"
        return None

    def not_supported(self, *, device, dtype, head_dim, mask, gqa, needs_grad) -> list[str]:
        import torch

        reasons: list[str] = []
        missing = self._available()
        if missing:
            reasons.append(missing)
        cap = cuda_capability(torch.device(device))
        if cap is None:
            reasons.append(f"needs a CUDA device, got {device}")
        elif cap < self.min_capability or (
            self.max_capability is not None and cap > self.max_capability
        ):
            hi = "" if self.max_capability is None else f" and <= {self.max_capability}"
            reasons.append(f"needs compute capability >= {self.min_capability}{hi}, got {cap}")
        if str(dtype).removeprefix("torch.") not in self.dtypes:
            reasons.append(f"dtype {dtype} not in ({', '.join(self.dtypes)})")
        hd = self._head_dim_reason(head_dim)
        if hd:
            reasons.append(hd)
        if mask is not None and not mask.band_only:
            reasons.append("window edges and dense (partial) masks are not supported; use flex")
        return reasons

    def memory_bytes(self, m: CallMemory, *, backward: bool, mask: str = "none",
                     pieces: int = 1) -> Any:
        """Device bytes one call allocates (see :class:`CallMemory`). Forward: ``out`` and
        ``lse``. Backward (``_flash_attn_bwd`` of FA4, FA2/FA3 alike): ``dq, dk, dv``, a
        float32 ``dq`` accumulator over rows padded to 128 and a head dim padded to 64, two
        float32 row vectors (``dpsum``, ``lse * log2 e``), for GQA float32 ``dk``/``dv``
        accumulators, and the contiguous ``lse`` slice."""
        q_in = m.rows(m.lq, m.d, m.e)
        kv_in = m.rows(m.lk, m.d + m.dv, m.e, m.kv_heads)
        copies = (q_in + kv_in) if self.copies_inputs else 0
        if not backward:
            return copies + m.outputs() + m.pieces(False, pieces)
        lq_r, lk_r = m.up(m.lq, 128), m.up(m.lk, 128)
        d_r, dv_r = m.up(m.d, 64), m.up(m.dv, 64)
        ws = m.rows(lq_r, d_r, 4) + m.rows(lq_r, 2, 4) + m.rows(m.lq, 1, m.a)
        if m.heads != m.kv_heads:
            ws = ws + (m.rows(lk_r, d_r + dv_r, 4, m.kv_heads) if self.gqa_fp32_workspace
                       else m.rows(m.lk, m.d + m.dv, m.e))
        if self.copies_inputs:  # dout and out as well
            copies = copies + m.rows(m.lq, 2 * m.dv, m.e)
        return copies + m.grads() + ws + m.pieces(True, pieces)

    def fwd(self, q, k, v, *, scale, mask=None):
        pieces = mask_pieces(mask, q.shape[2], k.shape[2], square_only=False)

        def call(a, b, c, causal):
            o, lse = self._fwd_bshd(a.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2),
                                    causal, scale)
            return o.transpose(1, 2), fix_lse(lse, a.shape[2])

        return run_pieces_fwd(call, q, k, v, pieces)

    def bwd(self, dout, q, k, v, out, lse, *, scale, mask=None):
        pieces = mask_pieces(mask, q.shape[2], k.shape[2], square_only=False)

        def call(do, a, b, c, o, l, causal):
            t = [x.transpose(1, 2) for x in (do, a, b, c, o)]
            g = self._bwd_bshd(t[0], t[1], t[2], t[3], t[4], l.float().contiguous(), causal,
                               scale)
            return tuple(x.transpose(1, 2) for x in g[:3])

        return run_pieces_bwd(call, dout.to(q.dtype), q, k, v, out.to(q.dtype), lse, pieces)
