"""Attention masks in global token coordinates, and cheap classification of blocks.

Four mask kinds compose by AND (a key is attended only when every given mask allows it):

* ``causal``: query ``i`` attends key ``j`` iff ``j <= i + (Lk - Lq)`` (bottom-right aligned,
  like flash-attn; for self-attention ``j <= i``).
* ``window=(left, right)``: ``i' - left <= j <= i' + right`` with ``i' = i + (Lk - Lq)``
  (the same bottom-right alignment; ``None`` on a side = unbounded).
* ``document_ids``: packed sequences; ``i`` attends ``j`` iff they carry the same id. Either
  one integer tensor ``(L,)`` / ``(B, L)`` (self-attention) or a pair ``(q_ids, kv_ids)``.
* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` with FlexAttention's signature. It is evaluated
  vectorised on broadcast index tensors (``b: (B,1,1,1)``, ``h: (1,H,1,1)``,
  ``q_idx: (1,1,lq,1)``, ``kv_idx: (1,1,1,lk)``) and must return a bool tensor broadcastable
  to ``(B, H, lq, lk)``; ordinary FlexAttention mask_mods written with tensor ops do.

:meth:`MaskSpec.classify` sorts a ``(query range, key range)`` block into ``"empty"`` (never
computed), ``"full"`` (dense kernel without mask) or ``"partial"`` (a
:class:`~cqs_attention.kernels.base.BlockMask` in local coordinates): analytically for
causal/window, by min/max of the document ids, and by evaluating ``mask_mod`` on the block
only when the other masks leave it non-empty.

>>> spec = make_mask_spec(8, 8, batch=1, heads=1, causal=True)
>>> spec.classify(4, 8, 0, 4).kind, spec.classify(0, 4, 4, 8).kind, spec.classify(0, 4, 0, 4).kind
('full', 'empty', 'partial')
>>> spec.classify(0, 4, 0, 4).mask.causal_offset
0
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from cqs_attention.errors import MaskError
from cqs_attention.kernels.base import BlockMask, block_mask_tensor
from cqs_design.plans.mask import Mask

__all__ = ["BlockClass", "MaskMod", "MaskSpec", "make_mask_spec", "mask_matrix"]

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BlockClass:
    """How a block is computed: ``kind`` and, for ``"partial"``, its local mask."""

    kind: Literal["empty", "full", "partial"]
    mask: BlockMask | None = None


_EMPTY = BlockClass("empty")
_FULL = BlockClass("full")


@dataclass(frozen=True, eq=False, init=False)
class MaskSpec:
    """A validated mask for a ``(B, H, q_len, kv_len)`` attention (build with make_mask_spec)."""

    q_len: int
    kv_len: int
    batch: int
    heads: int
    causal: bool = False
    window: tuple[int | None, int | None] | None = None
    q_doc: torch.Tensor | None = None  # (Bd, q_len) int64, Bd in {1, batch}
    kv_doc: torch.Tensor | None = None  # (Bd, kv_len)
    mask_mod: MaskMod | None = None

    def __init__(self, q_len: int, kv_len: int, batch: int, heads: int, causal: bool = False,
                 window: tuple[int | None, int | None] | None = None,
                 q_doc: torch.Tensor | None = None, kv_doc: torch.Tensor | None = None,
                 mask_mod: MaskMod | None = None) -> None:
        # read-only after this (frozen): the fields are written once, in one update of the
        # instance dict; the generated __init__ of a frozen dataclass makes one
        # object.__setattr__ call per field, twice the cost (measured: 1.1 us against 0.55 us,
        # of a tiny call's 37 us overhead on the CPU)
        self.__dict__.update(q_len=q_len, kv_len=kv_len, batch=batch, heads=heads,
                             causal=causal, window=window, q_doc=q_doc, kv_doc=kv_doc,
                             mask_mod=mask_mod)

    @property
    def offset(self) -> int:
        """Bottom-right alignment: query ``i`` sits at key position ``i + offset``."""
        return self.kv_len - self.q_len

    @functools.cached_property
    def band(self) -> Mask:
        """The causal / window part as a :class:`cqs_design.plans.mask.Mask`: the one place
        the band rule is written (its edges, its blocks, its local offsets).

        >>> make_mask_spec(8, 8, batch=1, heads=1, causal=True, window=(2, 3)).band.upper_shift
        0
        """
        return Mask.of(self.q_len, self.kv_len, causal=self.causal, window=self.window)

    @property
    def is_empty_spec(self) -> bool:
        """True when no mask is given (every pair is attended)."""
        return (not self.causal and self.window is None and self.q_doc is None
                and self.mask_mod is None)

    def dense_bytes_per_pair(self) -> int:
        """Bytes of a dense mask per (query, key) pair: the batches and heads document ids
        and ``mask_mod`` tell apart (0 when the mask is a band at most, which needs none).

        >>> make_mask_spec(4, 4, batch=2, heads=3, causal=True).dense_bytes_per_pair()
        0
        >>> make_mask_spec(4, 4, batch=2, heads=3,
        ...                mask_mod=lambda b, h, q, k: k <= q + h).dense_bytes_per_pair()
        3
        """
        if self.q_doc is None and self.mask_mod is None:
            return 0
        bm = 1 if self.q_doc is None else self.q_doc.shape[0]
        hm = 1
        if self.mask_mod is not None:
            m = _eval_mask_mod(self.mask_mod, self.batch, self.heads, 0, 1, 0, 1,
                               torch.device("cpu"))
            bm, hm = max(bm, m.shape[0]), m.shape[1]
        return bm * hm

    def key_range(self, q0: int, q1: int) -> tuple[int, int]:
        """The smallest key range ``[k0, k1)`` that rows ``[q0, q1)`` may attend (band only).

        >>> make_mask_spec(8, 8, batch=1, heads=1, window=(2, 0)).key_range(4, 6)
        (2, 6)
        """
        k0, k1 = int(self.band.lo(q0)), int(self.band.hi(q1 - 1))
        return k0, max(k0, k1)

    # -- classification ---------------------------------------------------------------------
    def classify(self, q0: int, q1: int, k0: int, k1: int,
                 device: torch.device | str | None = None) -> BlockClass:
        """Classify the block ``rows [q0, q1) x keys [k0, k1)`` (global, ends exclusive).

        The band of causal and window masks is described analytically (``causal_offset``,
        ``lower_offset``); a dense mask (``BlockMask.dense``) is built on ``device`` (default
        CPU) only for document ids and ``mask_mod``, when they cut the block.

        >>> spec = make_mask_spec(8, 8, batch=1, heads=1, window=(2, 0))
        >>> m = spec.classify(4, 8, 0, 8).mask
        >>> m.causal_offset, m.lower_offset, m.dense is None
        (4, 2, True)
        """
        if q1 <= q0 or k1 <= k0:
            return _EMPTY
        empty, cut_upper, cut_lower = self.band.block_cuts(q0, q1, k0, k1)
        if empty:
            return _EMPTY
        # the band's edges in local coordinates, only where they cut the block
        upper, lower = self.band.block_offsets(q0, k0)
        causal_offset = upper if cut_upper else None
        lower_offset = lower if cut_lower else None
        parts: list[torch.Tensor] = []
        dev = torch.device("cpu") if device is None else torch.device(device)
        if self.q_doc is not None:
            qd, kd = self.q_doc[:, q0:q1], self.kv_doc[:, k0:k1]
            qmin, qmax = qd.amin(1), qd.amax(1)
            kmin, kmax = kd.amin(1), kd.amax(1)
            if bool(((qmax < kmin) | (kmax < qmin)).all()):
                return _EMPTY
            if not bool(((qmin == qmax) & (kmin == kmax) & (qmin == kmin)).all()):
                qd, kd = qd.to(dev), kd.to(dev)
                parts.append((qd[:, :, None] == kd[:, None, :]).unsqueeze(1))
        if self.mask_mod is not None:
            m = _eval_mask_mod(self.mask_mod, self.batch, self.heads, q0, q1, k0, k1, dev)
            if not bool(m.any()):
                return _EMPTY
            if not bool(m.all()):
                parts.append(m)
        band = BlockMask(causal_offset=causal_offset, lower_offset=lower_offset)
        if not parts:  # the band alone: decided analytically, no tensor
            return _FULL if band.is_full else BlockClass("partial", band)
        dense = parts[0]
        for p in parts[1:]:
            dense = dense & p
        combined = dense
        if not band.is_full:
            combined = dense & block_mask_tensor(band, q1 - q0, k1 - k0, dev)
        if not bool(combined.any()):
            return _EMPTY
        if bool(combined.all()):
            return _FULL
        return BlockClass("partial", BlockMask(causal_offset=causal_offset, dense=dense,
                                               lower_offset=lower_offset))


def _eval_mask_mod(mask_mod: MaskMod, batch: int, heads: int, q0: int, q1: int, k0: int,
                   k1: int, device: torch.device) -> torch.Tensor:
    """Evaluate ``mask_mod`` on a block; returns bool ``(Bm, Hm, lq, lk)`` with Bm, Hm in {1, *}."""
    b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
    h = torch.arange(heads, device=device).view(1, -1, 1, 1)
    qi = torch.arange(q0, q1, device=device).view(1, 1, -1, 1)
    ki = torch.arange(k0, k1, device=device).view(1, 1, 1, -1)
    try:
        m = mask_mod(b, h, qi, ki)
    except Exception as exc:
        raise MaskError(
            f"mask_mod raised {type(exc).__name__}: {exc} when evaluated on broadcast index "
            f"tensors (b: ({batch},1,1,1), h: (1,{heads},1,1), q_idx: (1,1,{q1 - q0},1), "
            f"kv_idx: (1,1,1,{k1 - k0})); it must be written with tensor ops, like a "
            "FlexAttention mask_mod") from exc
    if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
        got = type(m).__name__ if not isinstance(m, torch.Tensor) else f"a {m.dtype} tensor"
        raise MaskError(f"mask_mod must return a bool tensor, got {got}")
    shape = (batch, heads, q1 - q0, k1 - k0)
    try:
        target = torch.broadcast_shapes(m.shape, shape)
    except RuntimeError as exc:
        raise MaskError(f"mask_mod returned shape {tuple(m.shape)}, which does not broadcast "
                        f"to {shape}") from exc
    if tuple(target) != shape:
        raise MaskError(f"mask_mod returned shape {tuple(m.shape)}, which does not broadcast "
                        f"to {shape}")
    if m.dim() < 4:
        m = m.view((1,) * (4 - m.dim()) + tuple(m.shape))
    return m.expand(m.shape[0], m.shape[1], q1 - q0, k1 - k0)


def _as_ids(x: Any, length: int, batch: int, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise MaskError(f"{what} must be an integer tensor or numpy array, got "
                        f"{type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise MaskError(f"{what} must have an integer dtype, got {x.dtype}")
    given = tuple(x.shape)  # named as passed, before the batch dimension is added
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[1] != length or x.shape[0] not in (1, batch):
        raise MaskError(f"{what} must have shape ({length},) or ({batch}, {length}), got "
                        f"{given}")
    return x.detach().to(device="cpu", dtype=torch.int64).contiguous()


def make_mask_spec(
    q_len: int,
    kv_len: int,
    *,
    batch: int,
    heads: int,
    causal: bool = False,
    window: tuple[int | None, int | None] | None = None,
    document_ids: Any = None,
    mask_mod: MaskMod | None = None,
) -> MaskSpec:
    """Validate mask arguments and build a :class:`MaskSpec`.

    ``mask_mod`` is probed on a few index pairs here, so a mask_mod that raises or returns the
    wrong type fails before any work starts.

    >>> spec = make_mask_spec(4, 4, batch=1, heads=2, document_ids=[0, 0, 1, 1])
    Traceback (most recent call last):
    ...
    cqs_attention.errors.MaskError: document_ids must be an integer tensor or numpy array, got list
    >>> import torch
    >>> make_mask_spec(4, 4, batch=1, heads=2,
    ...                document_ids=torch.tensor([0, 0, 1, 1])).classify(0, 2, 2, 4).kind
    'empty'
    """
    if not isinstance(causal, bool):
        raise MaskError(f"causal must be a bool, got {causal!r}")
    if window is not None:
        if (not isinstance(window, (tuple, list)) or len(window) != 2
                or any(w is not None and (isinstance(w, bool) or not isinstance(w, int)
                                          or w < 0) for w in window)):
            raise MaskError(f"window must be (left, right) with non-negative ints or None, "
                            f"got {window!r}")
        window = (window[0], window[1])
        if window == (None, None):
            window = None
    q_doc = kv_doc = None
    if document_ids is not None:
        if isinstance(document_ids, (tuple, list)) and len(document_ids) == 2 and all(
                isinstance(d, (torch.Tensor, np.ndarray)) for d in document_ids):
            q_doc = _as_ids(document_ids[0], q_len, batch, "document_ids[0] (query ids)")
            kv_doc = _as_ids(document_ids[1], kv_len, batch, "document_ids[1] (key ids)")
        else:
            if q_len != kv_len:
                raise MaskError(
                    "document_ids for cross-attention (q_len != kv_len) must be a pair "
                    f"(q_ids of length {q_len}, kv_ids of length {kv_len})")
            q_doc = kv_doc = _as_ids(document_ids, q_len, batch, "document_ids")
        if q_doc.shape[0] != kv_doc.shape[0]:
            bd = max(q_doc.shape[0], kv_doc.shape[0])
            q_doc, kv_doc = q_doc.expand(bd, -1), kv_doc.expand(bd, -1)
    if mask_mod is not None:
        if not callable(mask_mod):
            raise MaskError(f"mask_mod must be callable (b, h, q_idx, kv_idx) -> bool tensor, "
                            f"got {type(mask_mod).__name__}")
        if q_len > 0 and kv_len > 0:
            for qa, ka in {(0, 0), (q_len - 1, kv_len - 1), (q_len - 1, 0)}:
                _eval_mask_mod(mask_mod, batch, heads, qa, qa + 1, ka, ka + 1,
                               torch.device("cpu"))
    return MaskSpec(q_len=q_len, kv_len=kv_len, batch=batch, heads=heads, causal=causal,
                    window=window, q_doc=q_doc, kv_doc=kv_doc, mask_mod=mask_mod)


def mask_matrix(spec: MaskSpec, device: torch.device | str | None = None,
                rows: tuple[int, int] | None = None) -> torch.Tensor | None:
    """The boolean mask ``(Bm, Hm, q_len, kv_len)`` straight from the definitions (of query
    ``rows`` ``(r0, r1)`` only, when given: ``(Bm, Hm, r1 - r0, kv_len)``).

    Returns None when every pair is attended. This is the reference's mask: it does not use
    the block classification (tests compare the two).

    >>> spec = make_mask_spec(3, 3, batch=1, heads=1, causal=True)
    >>> mask_matrix(spec)[0, 0].int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    >>> mask_matrix(spec, rows=(1, 2))[0, 0].int().tolist()
    [[1, 1, 0]]
    """
    if spec.is_empty_spec:
        return None
    r0, r1 = (0, spec.q_len) if rows is None else rows
    dev = torch.device("cpu") if device is None else torch.device(device)
    m = torch.ones(1, 1, r1 - r0, spec.kv_len, dtype=torch.bool, device=dev)
    upper, lower = spec.band.block_offsets(r0, 0)  # the rows as one block against every key
    band = block_mask_tensor(BlockMask(causal_offset=upper, lower_offset=lower), r1 - r0,
                             spec.kv_len, dev)
    if band is not None:
        m = m & band
    if spec.q_doc is not None:
        qd, kd = spec.q_doc[:, r0:r1].to(dev), spec.kv_doc.to(dev)
        m = m & (qd[:, :, None] == kd[:, None, :]).unsqueeze(1)
    if spec.mask_mod is not None:
        m = m & _eval_mask_mod(spec.mask_mod, spec.batch, spec.heads, r0, r1, 0,
                               spec.kv_len, dev)
    return m
