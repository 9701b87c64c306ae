"""Row copies between host and device for (B, H, L, ...) tensors, for the transport.

A slice ``t[:, :, r0:r1]`` of a ``(B, H, L, ...)`` tensor is not contiguous, and PyTorch
copies a non-contiguous host tensor to the device through a synchronous temporary. So rows
move as one contiguous copy per (batch, head): asynchronous DMA from pinned memory, and from
pageable memory through a pinned staging buffer (a host memcpy first).

>>> import torch
>>> src, dst = torch.arange(24.0).view(1, 2, 6, 2), torch.zeros(1, 2, 3, 2)
>>> copy_rows_in(dst, src, 2, 5, cuda=False)
(48, 0.0)
>>> bool(torch.equal(dst, src[:, :, 2:5]))
True
>>> back = torch.zeros(1, 2, 6, 2)
>>> copy_rows_out(back, 1, dst), bool(torch.equal(back[:, :, 1:4], dst))
(48, True)
"""

from __future__ import annotations

import time

import torch

__all__ = ["copy_rows_in", "copy_rows_out"]


def copy_rows_in(dst: torch.Tensor, src: torch.Tensor, r0: int, r1: int, *,
                 cuda: bool) -> tuple[int, float]:
    """Rows ``[r0, r1)`` of ``src`` (B, H, L, ...) into ``dst`` (B, H, r1 - r0, ...), which may
    be a view. With ``cuda``, host rows not in pinned contiguous memory go through a pinned
    staging buffer. Returns ``(bytes copied, seconds of host staging copy)``."""
    staged = 0.0
    if cuda and src.device.type == "cpu" and not (src.is_pinned() and src.is_contiguous()):
        t0 = time.perf_counter()
        staging = torch.empty((*src.shape[:2], r1 - r0, *src.shape[3:]), dtype=src.dtype,
                              pin_memory=True)
        staging.copy_(src[:, :, r0:r1])
        staged = time.perf_counter() - t0
        src, r0, r1 = staging, 0, r1 - r0
    non_blocking = cuda and src.device.type == "cpu"
    if r0 == 0 and r1 == src.shape[2] and src.is_contiguous() and dst.is_contiguous():
        dst.copy_(src, non_blocking=non_blocking)
    else:
        for b in range(dst.shape[0]):
            for h in range(dst.shape[1]):
                dst[b, h].copy_(src[b, h, r0:r1], non_blocking=non_blocking)
    return dst.numel() * dst.element_size(), staged


def copy_rows_out(dst: torch.Tensor, r0: int, src: torch.Tensor) -> int:
    """``src`` (B, H, n, ...) into rows ``[r0, r0 + n)`` of ``dst``, asynchronously when ``dst``
    is pinned host memory and ``src`` is on a CUDA device. Returns bytes."""
    non_blocking = dst.device.type == "cpu" and src.device.type == "cuda" and dst.is_pinned()
    n = src.shape[2]
    if r0 == 0 and n == dst.shape[2] and dst.is_contiguous() and src.is_contiguous():
        dst.copy_(src, non_blocking=non_blocking)
    else:
        for b in range(src.shape[0]):
            for h in range(src.shape[1]):
                dst[b, h, r0:r0 + n].copy_(src[b, h], non_blocking=non_blocking)
    return src.numel() * src.element_size()
