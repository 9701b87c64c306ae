"""Helpers of the GPU tests: a float32 reference computed in row chunks, and a measurement log.

:func:`chunked_reference` is attention straight from the mask definitions (causal, window,
document ids, ``mask_mod``; none of the engine's block classification), in float32 on the
GPU, ``chunk`` query rows at a time, so lengths such as 64K+7 fit; with ``dout`` it also
returns the gradients. :func:`record` appends a JSON line to the file named by
``CQS_GPU_RECORD`` (what the GPU runs commit under ``benchmarks/results/``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from cqs_attention.masks import make_mask_spec, mask_matrix


def record(test: str, **fields: Any) -> None:
    """Append ``{"test": test, **fields}`` to ``$CQS_GPU_RECORD`` (nothing when unset)."""
    path = os.environ.get("CQS_GPU_RECORD")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": test, **fields}, default=str) + "\n")


def chunked_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                      dout: torch.Tensor | None = None, scale: float | None = None,
                      chunk: int = 2048, device: str = "cuda",
                      **masks: Any) -> dict[str, torch.Tensor]:
    """float32 ``out`` and ``lse`` (and ``dq, dk, dv`` given ``dout``) on ``device``."""
    dev = torch.device(device)
    b, h, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    g = h // hkv
    scale = d ** -0.5 if scale is None else scale
    spec = make_mask_spec(lq, lk, batch=b, heads=h, **masks)
    kf = k.to(dev, torch.float32).repeat_interleave(g, 1)
    vf = v.to(dev, torch.float32).repeat_interleave(g, 1)
    out = torch.empty(b, h, lq, v.shape[-1], device=dev)
    lse = torch.empty(b, h, lq, device=dev)

    def probs(r0: int, r1: int, qc: torch.Tensor, lse_c: torch.Tensor | None = None):
        s = (qc @ kf.transpose(-1, -2)) * scale
        m = mask_matrix(spec, dev, rows=(r0, r1))
        if m is not None:
            s = s.masked_fill(~m, float("-inf"))
        if lse_c is None:
            lse_c = torch.logsumexp(s, -1)
        safe = torch.where(torch.isneginf(lse_c), torch.zeros_like(lse_c), lse_c)
        return torch.exp(s - safe[..., None]), lse_c

    with torch.no_grad():
        for r0 in range(0, lq, chunk):
            r1 = min(lq, r0 + chunk)
            p, lse_c = probs(r0, r1, q[:, :, r0:r1].to(dev, torch.float32))
            out[:, :, r0:r1] = p @ vf
            lse[:, :, r0:r1] = lse_c
        res = {"out": out, "lse": lse}
        if dout is None:
            return res
        do = dout.to(dev, torch.float32)
        delta = (do * out).sum(-1)
        dq = torch.empty(b, h, lq, d, device=dev)
        dk = torch.zeros_like(kf)
        dv = torch.zeros_like(vf)
        for r0 in range(0, lq, chunk):
            r1 = min(lq, r0 + chunk)
            qc = q[:, :, r0:r1].to(dev, torch.float32)
            p, _ = probs(r0, r1, qc, lse[:, :, r0:r1])
            doc = do[:, :, r0:r1]
            dv += p.transpose(-1, -2) @ doc
            ds = p * (doc @ vf.transpose(-1, -2) - delta[:, :, r0:r1, None])
            dq[:, :, r0:r1] = (ds @ kf) * scale
            dk += (ds.transpose(-1, -2) @ qc) * scale
        res["dq"] = dq
        res["dk"] = dk.view(b, hkv, g, lk, d).sum(2)
        res["dv"] = dv.view(b, hkv, g, lk, -1).sum(2)
        return res


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, on the GPU in float64 (either may be a host tensor)."""
    dev = torch.device("cuda")
    a, b = a.to(dev, torch.float64), b.to(dev, torch.float64)
    return ((a - b).norm() / b.norm()).item()
