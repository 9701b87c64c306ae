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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = ["BlockMask", "Kernel"]


@dataclass(frozen=True)
class BlockMask:
    """The mask applied inside one (query block, key block) call, in LOCAL block indices.

    Parameters
    ----------
    causal_offset
        If not None, query ``i`` may attend key ``j`` only when ``j <= i + causal_offset``
        (``0`` is the square causal diagonal; bottom-right alignment of a ``Lq x Lk`` block is
        ``Lk - Lq``).
    dense
        Optional boolean tensor broadcastable to ``(B, H, Lq, Lk)``; ``True`` = may attend.
        Combined (AND) with ``causal_offset``.
    """

    causal_offset: int | None = None
    dense: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def is_full(self) -> bool:
        return self.causal_offset is None and self.dense is None


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
