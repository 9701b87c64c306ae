"""The kernel contract every attention backend implements.

A *kernel* computes attention of one query block against one key/value block and returns
the partial result ``(out, lse)``; the executor merges partial results exactly with
:func:`cqs_attention.merge.merge_partials`.

Shapes (the layout of :func:`torch.nn.functional.scaled_dot_product_attention`):

* ``q``: ``(B, H, Lq, D)``; ``k``, ``v``: ``(B, Hkv, Lk, D)`` with ``H % Hkv == 0`` (GQA/MQA:
  query head ``h`` uses key/value head ``h // (H // Hkv)``).
* ``out``: ``(B, H, Lq, D)`` in ``q.dtype``; ``lse``: ``(B, H, Lq)`` float32, natural log.
* A row with no allowed key returns ``out = 0`` and ``lse = -inf`` (never NaN, never +inf).

Backward: ``bwd(dout, q, k, v, out, lse, ...)`` receives the GLOBAL merged ``out`` and ``lse``
of the full attention (not this block's partial ones), so the returned ``dq, dk, dv`` are
exact additive partial gradients: ``P = exp(S - lse)``, ``dS = P * (dout @ v^T - delta)``
with ``delta = rowsum(dout * out)``. ``dk``/``dv`` have ``Hkv`` heads (summed over the
query heads of each group).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

__all__ = ["FLOAT32_TINY", "BlockMask", "Kernel", "block_mask_tensor", "mask_category",
           "scale_breaks_masking"]

#: the smallest normal float32
FLOAT32_TINY = 1.1754943508222875e-38


def scale_breaks_masking(scale: float) -> bool:
    """Whether fast kernels may mask wrongly with this score scale: it is not positive, or it
    is positive but rounds to zero or a subnormal in float32, the precision in which the
    kernels apply it (``scale=3.7e-236`` is 0 there). Such calls belong to the reference
    kernel, which is right for every scale.

    >>> scale_breaks_masking(0.125), scale_breaks_masking(0.0), scale_breaks_masking(3.7e-236)
    (False, True, True)
    """
    return not scale >= FLOAT32_TINY


@dataclass(frozen=True)
class BlockMask:
    """The mask applied inside one (query block, key block) call, in LOCAL block indices.

    Parameters
    ----------
    causal_offset
        If not None, query ``i`` may attend key ``j`` only when ``j <= i + causal_offset``
        (``0`` is the square causal diagonal; bottom-right alignment of a ``Lq x Lk`` block is
        ``Lk - Lq``).
    lower_offset
        If not None, query ``i`` may attend key ``j`` only when ``j >= i + lower_offset`` (the
        left edge of a sliding window). Together with ``causal_offset`` it describes any band
        analytically, so a window mask never needs a ``Lq x Lk`` tensor.
    dense
        Optional boolean tensor broadcastable to ``(B, H, Lq, Lk)``; ``True`` = may attend.
        Combined (AND) with the offsets.

    >>> BlockMask(causal_offset=0).band_only, BlockMask(lower_offset=-3).band_only
    (True, False)
    """

    causal_offset: int | None = None
    dense: torch.Tensor | None = field(default=None, compare=False, repr=False)
    lower_offset: int | None = None

    @property
    def is_full(self) -> bool:
        return self.causal_offset is None and self.dense is None and self.lower_offset is None

    @property
    def band_only(self) -> bool:
        """True when the mask is at most a causal diagonal (``causal_offset``): what kernels
        with only a causal flag can run, cut into rectangles."""
        return self.dense is None and self.lower_offset is None

    @functools.cached_property
    def category(self) -> str:
        """:func:`mask_category` of this mask (worked out once: the fields never change)."""
        if self.is_full:
            return "none"
        return "causal" if self.band_only else "dense"


def block_mask_tensor(mask: BlockMask | None, lq: int, lk: int,
                      device: torch.device) -> torch.Tensor | None:
    """The boolean ``allowed`` tensor (broadcastable to ``(B, H, lq, lk)``) of a BlockMask;
    None when it allows everything. The one builder of a mask tensor: the reference kernel,
    the block classification and the reference's whole-matrix mask all call it.

    >>> block_mask_tensor(BlockMask(causal_offset=0), 2, 2, torch.device("cpu"))[0, 0].tolist()
    [[True, False], [True, True]]
    >>> m = BlockMask(causal_offset=0, lower_offset=0)  # the diagonal only
    >>> block_mask_tensor(m, 2, 2, torch.device("cpu"))[0, 0].tolist()
    [[True, False], [False, True]]
    """
    if mask is None or mask.is_full:
        return None
    allowed = None
    if mask.causal_offset is not None or mask.lower_offset is not None:
        a = torch.arange(lq, device=device).view(-1, 1)
        c = torch.arange(lk, device=device).view(1, -1)
        if mask.causal_offset is not None:
            allowed = (c <= a + mask.causal_offset).view(1, 1, lq, lk)
        if mask.lower_offset is not None:
            low = (c >= a + mask.lower_offset).view(1, 1, lq, lk)
            allowed = low if allowed is None else allowed & low
    if mask.dense is not None:
        d = mask.dense.to(device=device, dtype=torch.bool)
        while d.dim() < 4:
            d = d.unsqueeze(0)
        allowed = d if allowed is None else allowed & d
    return allowed


def mask_category(mask: BlockMask | None) -> str:
    """``"none"``, ``"causal"`` (a causal offset only) or ``"dense"`` (a lower band or a
    boolean tensor): the kinds of call the kernels declare support for.

    >>> mask_category(None), mask_category(BlockMask(causal_offset=2))
    ('none', 'causal')
    >>> mask_category(BlockMask(causal_offset=2, lower_offset=-1))
    'dense'
    """
    return "none" if mask is None else mask.category


@runtime_checkable
class Kernel(Protocol):
    """What a backend provides (see the module docstring for shapes and semantics)."""

    name: str

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
        """Reasons this kernel cannot run this call; empty when it can."""
        ...

    def fwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        scale: float,
        mask: BlockMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(out, lse)`` of ``q`` attending ``k, v`` under ``mask``."""
        ...

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
        """Return ``(dq, dk, dv)``: this block's exact share, given the GLOBAL out and lse."""
        ...
