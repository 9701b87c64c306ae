"""The comparison column of bench_attention.py: a small, independent query-block loop.

What one would write without cqs_attention's engine (FlashAttention's out-of-core scheme): a
query block and its float32 accumulators stay on the device while key/value blocks stream
from pinned host memory, double-buffered on a copy stream; each block is one kernel call
(the same kernel object the engine would use), merged with a plain log-sum-exp update; the
finished block goes back converted to the input dtype. Causal: blocks above the diagonal are
skipped, the diagonal block runs with a causal offset. It lives here, in the benchmark only,
so that the engine is compared against code that shares none of its scheduling.

>>> import torch
>>> from cqs_attention.kernels import select_kernel
>>> g = torch.Generator().manual_seed(0)
>>> q, k, v = (torch.randn(1, 2, 100, 8, generator=g, dtype=torch.float64) for _ in "qkv")
>>> kern = select_kernel("auto", device=torch.device("cpu"), dtype=q.dtype, head_dim=8,
...                      mask=None, gqa=False, needs_grad=False)
>>> out = query_block_loop(q, k, v, causal=True, budget=1 << 20, device="cpu", kernel=kern,
...                        block_q=32, block_kv=24)
>>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
>>> bool((out - ref).abs().max() < 1e-12)
True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cqs_attention.kernels.base import BlockMask


def _rows_in(dst: torch.Tensor, src: torch.Tensor, r0: int, r1: int, cuda: bool) -> None:
    for b in range(src.shape[0]):
        for h in range(src.shape[1]):
            dst[b, h].copy_(src[b, h, r0:r1], non_blocking=cuda)


def blocks_for(budget: int, heads: int, kv_heads: int, d: int, esize: int) -> tuple[int, int]:
    """``(block_q, block_kv)``: a quarter of the budget to double-buffered key/value blocks,
    the rest to the query block, its accumulators and the kernel's output; multiples of 128."""
    kv_row = 2 * 2 * kv_heads * d * esize
    q_row = heads * (d * esize + (d + 1) * 4 + d * esize + 4 + 2 * d * 4 + 12)
    bkv = max(128, int(budget * 0.25 // kv_row) // 128 * 128)
    bq = max(128, int(budget * 0.75 // q_row) // 128 * 128)
    return bq, bkv


def query_block_loop(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                     budget: int, device: Any, kernel: Any, block_q: int | None = None,
                     block_kv: int | None = None) -> torch.Tensor:
    """Attention of host (pinned) ``q, k, v`` computed on ``device`` (see the module doc)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    b, h, L, d = q.shape
    lk = k.shape[2]
    hkv = k.shape[1]
    scale = 1 / math.sqrt(d)
    if block_q is None or block_kv is None:
        bq, bkv = blocks_for(budget, h, hkv, d, q.element_size())
        block_q, block_kv = block_q or bq, block_kv or bkv
    off = lk - L
    out = torch.empty(q.shape, dtype=q.dtype, pin_memory=cuda)
    copy = torch.cuda.Stream(dev) if cuda else None
    back = torch.cuda.Stream(dev) if cuda else None
    cur = torch.cuda.current_stream(dev) if cuda else None
    kbuf = [torch.empty(b, hkv, block_kv, d, dtype=k.dtype, device=dev) for _ in range(2)]
    vbuf = [torch.empty(b, hkv, block_kv, d, dtype=v.dtype, device=dev) for _ in range(2)]
    ready: list[Any] = [None, None]
    free: list[Any] = [None, None]

    def fetch(slot: int, k0: int, k1: int) -> None:
        if cuda:
            copy.wait_event(free[slot]) if free[slot] is not None else None
            with torch.cuda.stream(copy):
                _rows_in(kbuf[slot][:, :, :k1 - k0], k, k0, k1, True)
                _rows_in(vbuf[slot][:, :, :k1 - k0], v, k0, k1, True)
                ev = torch.cuda.Event()
                ev.record(copy)
            ready[slot] = ev
        else:
            _rows_in(kbuf[slot][:, :, :k1 - k0], k, k0, k1, False)
            _rows_in(vbuf[slot][:, :, :k1 - k0], v, k0, k1, False)

    jobs = []
    for q0 in range(0, L, block_q):
        q1 = min(L, q0 + block_q)
        last_key = lk if not causal else min(lk, q1 + off)
        for k0 in range(0, max(0, last_key), block_kv):
            jobs.append((q0, q1, k0, min(lk, k0 + block_kv)))
    slot_of = {}
    if jobs:
        fetch(0, jobs[0][2], jobs[0][3])
        slot_of[0] = 0
    qb = acc = lse = None
    for i, (q0, q1, k0, k1) in enumerate(jobs):
        if i + 1 < len(jobs):
            slot_of[i + 1] = 1 - slot_of[i]
            fetch(slot_of[i + 1], jobs[i + 1][2], jobs[i + 1][3])
        first = i == 0 or jobs[i - 1][0] != q0
        if first:
            qb = torch.empty(b, h, q1 - q0, d, dtype=q.dtype, device=dev)
            _rows_in(qb, q, q0, q1, cuda)
            acc = torch.zeros(b, h, q1 - q0, d, dtype=torch.float32, device=dev)
            lse = torch.full((b, h, q1 - q0), float("-inf"), dtype=torch.float32, device=dev)
        s = slot_of[i]
        if cuda:
            cur.wait_event(ready[s])
        kb, vb = kbuf[s][:, :, :k1 - k0], vbuf[s][:, :, :k1 - k0]
        co = q0 - k0 + off
        mask = BlockMask(causal_offset=co) if causal and co < (k1 - k0) - 1 else None
        o, lo = kernel.fwd(qb, kb, vb, scale=scale, mask=mask)
        if cuda:
            ev = torch.cuda.Event()
            ev.record(cur)
            free[s] = ev
        new = torch.logaddexp(lse, lo)
        safe = torch.where(torch.isneginf(new), torch.zeros_like(new), new)
        acc.mul_(torch.exp(lse - safe).unsqueeze(-1)).add_(
            o.float() * torch.exp(lo - safe).unsqueeze(-1))
        lse = new
        last = i + 1 == len(jobs) or jobs[i + 1][0] != q0
        if last:
            res = acc.to(q.dtype)
            if cuda:
                back.wait_stream(cur)
                with torch.cuda.stream(back):
                    for bi in range(b):
                        for hi in range(h):
                            out[bi, hi, q0:q1].copy_(res[bi, hi], non_blocking=True)
                    res.record_stream(back)
            else:
                out[:, :, q0:q1] = res
    covered = {j[0] for j in jobs}
    for q0 in range(0, L, block_q):  # rows with no key at all (causal, Lq > Lk)
        if q0 not in covered:
            out[:, :, q0:min(L, q0 + block_q)] = 0
    if cuda:
        torch.cuda.synchronize(dev)
    return out
