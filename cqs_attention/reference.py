"""Reference attention: the whole score matrix at once, returning ``(out, lse)``.

:func:`reference_attention` is public API (``cqs_attention.reference_attention``): an
obviously correct and slow implementation (it materialises ``(B, H, Lq, Lk)`` scores) to check
:func:`cqs_attention.attention` and other kernels against, as the tests and the CLI demo do.
Block by block, through :mod:`cqs_attention.kernels.reference`, the same code is the CPU
kernel. The module also holds the input checks every entry point shares (:func:`as_tensor`,
:func:`check_qkv`).
Computation is in float32 (float64 for float64 inputs); ``out`` has q's dtype, ``lse`` is
float32 (float64 for float64 inputs). Rows with no allowed key give ``out = 0``,
``lse = -inf``.

>>> import torch
>>> from cqs_attention.reference import reference_attention
>>> g = torch.Generator().manual_seed(0)
>>> q, k, v = (torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
>>> out, lse = reference_attention(q, k, v, causal=True)
>>> full = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
>>> bool(torch.allclose(out, full))
True
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from cqs_attention.errors import AttentionInputError
from cqs_attention.kernels.base import BlockMask
from cqs_attention.kernels.reference import reference_fwd
from cqs_attention.masks import MaskMod, MaskSpec, make_mask_spec, mask_matrix

__all__ = ["as_tensor", "check_qkv", "reference_attention"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_tensor(x: Any, name: str, *, copy_negative_strides: bool = False) -> torch.Tensor:
    """``x`` as a torch tensor without copying (numpy arrays and memmaps are wrapped).

    torch cannot wrap a numpy array with a negative stride (``a[:, :, ::-1]``): with
    ``copy_negative_strides`` such an array is copied (inputs: the copy is only read), else it
    is refused with an :class:`~cqs_attention.errors.AttentionInputError` naming ``name``
    (a destination must be written in place, so a copy would lose the result).

    >>> as_tensor(np.zeros((1, 1, 2, 2), dtype=np.float32), "q").dtype
    torch.float32
    >>> as_tensor(np.zeros((1, 1, 2, 2))[:, :, ::-1], "q", copy_negative_strides=True).stride()
    (4, 4, 2, 1)
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype not in (np.float16, np.float32, np.float64):
            raise AttentionInputError(f"{name} must be a floating-point array (float16, "
                                      f"float32, float64), got numpy dtype {x.dtype}")
        if any(st < 0 for st in x.strides):
            if not copy_negative_strides:
                raise AttentionInputError(
                    f"{name} is a numpy array with negative strides {x.strides}, which torch "
                    f"cannot wrap; pass np.ascontiguousarray({name})")
            x = np.ascontiguousarray(x)
        with warnings.catch_warnings():  # read-only memmaps: we never write to inputs
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(x)
    raise AttentionInputError(f"{name} must be a torch.Tensor or numpy array, got "
                              f"{type(x).__name__}")


def check_qkv(q: Any, k: Any, v: Any, scale: float | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Validate q, k, v (layout ``(B, H, L, D)``, GQA) and scale; return tensors and scale.

    >>> z = torch.zeros(1, 3, 3, 8)
    >>> check_qkv(torch.zeros(1, 4, 3, 8), z, z, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cqs_attention.errors.AttentionInputError: q has 4 heads, which is not a multiple of k's 3 ...
    """
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor)
            and isinstance(v, torch.Tensor)):  # numpy arrays and memmaps: wrapped
        q = as_tensor(q, "q", copy_negative_strides=True)
        k = as_tensor(k, "k", copy_negative_strides=True)
        v = as_tensor(v, "v", copy_negative_strides=True)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise AttentionInputError(f"{name} must have 4 dims (batch, heads, seq, head_dim), "
                                      f"got shape {tuple(t.shape)}")
        if t.dtype not in _FLOATS:
            raise AttentionInputError(f"{name} must be float16, bfloat16, float32 or float64, "
                                      f"got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionInputError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, "
                                  f"{v.dtype}")
    if not (q.device == k.device == v.device):
        raise AttentionInputError(f"q, k, v must be on one device, got {q.device}, {k.device}, "
                                  f"{v.device}")
    b, h, _, d = q.shape
    k_shape = k.shape
    if k_shape != v.shape:
        raise AttentionInputError(f"k and v must have the same shape, got {tuple(k_shape)} "
                                  f"and {tuple(v.shape)}")
    if k_shape[0] != b:
        raise AttentionInputError(f"k has batch {k_shape[0]}, q has batch {b}; they must match")
    if k_shape[3] != d:
        raise AttentionInputError(f"k has head_dim {k_shape[3]}, q has {d}; they must match")
    if d == 0:
        raise AttentionInputError("head_dim must be positive, got 0")
    hkv = k_shape[1]
    if hkv == 0 or h % hkv != 0:
        raise AttentionInputError(f"q has {h} heads, which is not a multiple of k's {hkv} "
                                  "heads (GQA/MQA needs H % Hkv == 0)")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(
            scale):
        raise AttentionInputError(f"scale must be a finite float or None, got {scale!r}")
    return q, k, v, float(scale)


def reference_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    window: tuple[int | None, int | None] | None = None,
    document_ids: Any = None,
    mask_mod: MaskMod | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the whole score matrix; returns ``(out, lse)``.

    Parameters are those of :func:`cqs_attention.attention` (masks documented in
    :mod:`cqs_attention.masks`). ``scale`` defaults to ``1/sqrt(head_dim)``.

    >>> q = torch.ones(1, 1, 2, 2)
    >>> out, lse = reference_attention(q, q, q, window=(0, 0), document_ids=torch.tensor([0, 1]))
    >>> out.tolist(), [round(x, 4) for x in lse.flatten().tolist()]
    ([[[[1.0, 1.0], [1.0, 1.0]]]], [1.4142, 1.4142])
    """
    q, k, v, scale = check_qkv(q, k, v, scale)
    spec = make_mask_spec(q.shape[2], k.shape[2], batch=q.shape[0], heads=q.shape[1],
                          causal=causal, window=window, document_ids=document_ids,
                          mask_mod=mask_mod)
    return _reference_attention(q, k, v, spec, scale)


def _reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                         scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    dense = mask_matrix(spec, q.device)
    mask = None if dense is None else BlockMask(dense=dense)
    return reference_fwd(q, k, v, scale=scale, mask=mask)
