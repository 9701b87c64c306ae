"""The reference kernel: obviously-correct attention of one block, on any device and dtype.

Scores are materialised in float32 (float64 for float64 inputs), masked with ``-inf``, and
reduced with a stable log-sum-exp. It is the CPU kernel, the last resort on the GPU, and the
oracle the other kernels are tested against.

Non-finite inputs behave as in full attention restricted to the allowed pairs: a row with no
finite score (every allowed key scores ``-inf``) gets ``out = 0`` and ``lse = -inf``; a NaN
score, or an infinite or NaN value row, makes NaN (or inf) exactly the rows allowed to attend
it; rows a mask keeps from a non-finite value row stay finite, in the forward and in the
backward (a masked pair contributes exactly nothing, never ``0 * inf``).

>>> import torch
>>> from cqs_attention.kernels.reference import reference_fwd
>>> q = k = v = torch.eye(2).view(1, 1, 2, 2)
>>> out, lse = reference_fwd(q, k, v, scale=1.0)
>>> out.shape, lse.shape, lse.dtype
(torch.Size([1, 1, 2, 2]), torch.Size([1, 1, 2]), torch.float32)
"""

from __future__ import annotations

from typing import Any

import torch

from cqs_attention.kernels.base import BlockMask, block_mask_tensor

__all__ = ["ReferenceKernel", "reference_bwd", "reference_fwd"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _grouped(q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None):
    """Reshape for GQA: q -> (B, Hkv, G, Lq, D), k -> (B, Hkv, 1, Lk, D), mask to match."""
    b, h, lq, d = q.shape
    hkv = k.shape[1]
    g = h // hkv
    qg = q.reshape(b, hkv, g, lq, d)
    if allowed is not None:
        hm = allowed.shape[1]
        if hm == 1:
            allowed = allowed.unsqueeze(2)
        else:
            allowed = allowed.expand(allowed.shape[0], h, lq, allowed.shape[-1]).reshape(
                allowed.shape[0], hkv, g, lq, allowed.shape[-1])
    return qg, k.unsqueeze(2), allowed


def _scores(q, k, scale, mask):
    """Masked scores ``(B, Hkv, G, Lq, Lk)`` and the grouped ``allowed`` tensor (or None)."""
    acc = _acc(q.dtype)
    allowed = block_mask_tensor(mask, q.shape[2], k.shape[2], q.device)
    qg, kg, allowed = _grouped(q.to(acc), k.to(acc), allowed)
    s = torch.matmul(qg, kg.transpose(-1, -2)) * scale
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return s, allowed


def reference_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                  mask: BlockMask | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of one block; out in ``q.dtype``, lse float32 (float64 for float64)."""
    b, h, lq, _ = q.shape
    acc = _acc(q.dtype)
    s, allowed = _scores(q, k, scale, mask)  # (B, Hkv, G, Lq, Lk)
    lse = torch.logsumexp(s, dim=-1)
    safe = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
    p = torch.exp(s - safe.unsqueeze(-1))
    vf = v.to(acc).unsqueeze(2)  # (B, Hkv, 1, Lk, Dv)
    bad = None if allowed is None else ~torch.isfinite(vf).all(-1)  # (B, Hkv, 1, Lk)
    if bad is not None and bool(bad.any()):
        out = _masked_pv(p, vf, allowed, bad)
    else:
        out = torch.matmul(p, vf)
    return out.reshape(b, h, lq, v.shape[-1]).to(q.dtype), lse.reshape(b, h, lq)


def _masked_pv(p: torch.Tensor, vf: torch.Tensor, allowed: torch.Tensor,
               bad: torch.Tensor) -> torch.Tensor:
    """``P @ V`` where the value rows with a non-finite entry (``bad``) reach only the rows
    ``allowed`` to attend them (a masked pair is skipped, not multiplied ``0 * inf``)."""
    clean = torch.where(bad.unsqueeze(-1), torch.zeros_like(vf), vf)
    out = torch.matmul(p, clean)
    idx = torch.nonzero(bad.reshape(-1, bad.shape[-1]).any(0)).flatten()  # the bad keys
    per_key = p[..., :1].numel() * vf.shape[-1]
    step = max(1, (1 << 24) // max(1, per_key))  # bounded temporaries, however many bad keys
    allowed = allowed.expand(p.shape)
    for s in range(0, len(idx), step):
        sel = idx[s:s + step]
        pb = p.index_select(-1, sel)  # (B, Hkv, G, Lq, n)
        # only the non-finite rows: a head whose row at this key is finite has it in `clean`
        # already (the keys are the union over heads and batches)
        vb = vf.index_select(-2, sel)  # (B, Hkv, 1, n, Dv)
        vb = torch.where(bad.index_select(-1, sel).unsqueeze(-1), vb, torch.zeros_like(vb))
        contrib = pb.unsqueeze(-1) * vb.unsqueeze(-3)  # (B, Hkv, G, Lq, n, Dv)
        keep = allowed.index_select(-1, sel).unsqueeze(-1)
        out = out + torch.where(keep, contrib, torch.zeros_like(contrib)).sum(-2)
    return out


def reference_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  out: torch.Tensor, lse: torch.Tensor, *, scale: float,
                  mask: BlockMask | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This block's exact share of ``(dq, dk, dv)`` given the GLOBAL ``out`` and ``lse``.

    Returned in float32 (float64 for float64 inputs); dk, dv have k's head count.
    """
    b, h, lq, d = q.shape
    hkv = k.shape[1]
    g = h // hkv
    acc = _acc(q.dtype)
    s, allowed = _scores(q, k, scale, mask)  # (B, Hkv, G, Lq, Lk)
    lse_g = lse.to(acc).reshape(b, hkv, g, lq, 1)
    lse_g = torch.where(torch.isneginf(lse_g), torch.full_like(lse_g, float("inf")), lse_g)
    p = torch.exp(s - lse_g)
    do = dout.to(acc).reshape(b, hkv, g, lq, -1)
    vf = v.to(acc).unsqueeze(2)
    dv = torch.matmul(p.transpose(-1, -2), do).sum(2)
    dp = torch.matmul(do, vf.transpose(-1, -2))
    delta = (do * out.to(acc).reshape(b, hkv, g, lq, -1)).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    if allowed is not None:  # masked pairs: exactly 0, even where dp is inf
        ds = torch.where(allowed, ds, torch.zeros_like(ds))
    dq = torch.matmul(ds, k.to(acc).unsqueeze(2)) * scale
    dk = (torch.matmul(ds.transpose(-1, -2), q.to(acc).reshape(b, hkv, g, lq, d)) * scale).sum(2)
    return dq.reshape(b, h, lq, d), dk, dv


class ReferenceKernel:
    """The :class:`~cqs_attention.kernels.base.Kernel` wrapping reference_fwd/reference_bwd."""

    name = "reference"
    priority = 1000

    def not_supported(self, *, device: torch.device, dtype: torch.dtype, head_dim: int,
                      mask: BlockMask | None, gqa: bool, needs_grad: bool) -> list[str]:
        if dtype not in _FLOATS:
            return [f"dtype {dtype} is not one of float16, bfloat16, float32, float64"]
        return []

    def memory_bytes(self, m: Any, *, backward: bool, mask: str = "none",
                     pieces: int = 1) -> Any:
        """Device bytes one call allocates (see
        :class:`~cqs_attention.kernels._gpu_common.CallMemory`): the scores are materialised
        in the accumulation dtype, up to 4 score matrices at once in the forward (scores,
        masked scores, shifted scores, probabilities) and 7 in the backward (with ``dP``,
        ``dS`` and its masked copy), plus the boolean mask and the inputs converted."""
        scores = m.lq * m.lk * m.batch * m.heads
        inputs = m.rows(m.lq, m.d, m.a) + m.rows(m.lk, m.d + m.dv, m.a, m.kv_heads)
        if not backward:
            return 4 * scores * m.a + 2 * scores + inputs + m.rows(m.lq, m.dv, m.a) \
                + m.outputs()
        return (7 * scores * m.a + 2 * scores + inputs + m.rows(m.lq, 2 * m.dv + 2, m.a)
                + m.grads(m.a))

    def fwd(self, q, k, v, *, scale, mask=None):
        return reference_fwd(q, k, v, scale=scale, mask=mask)

    def bwd(self, dout, q, k, v, out, lse, *, scale, mask=None):
        return reference_bwd(dout, q, k, v, out, lse, scale=scale, mask=mask)
