"""The one log-sum-exp merge of partial attention results.

Two partial results ``(out_a, lse_a)`` and ``(out_b, lse_b)`` of the same query rows, computed
over disjoint sets of keys, combine exactly into the result over the union of the keys::

    lse = logaddexp(lse_a, lse_b)
    out = out_a * exp(lse_a - lse) + out_b * exp(lse_b - lse)

The numerator and denominator are never rebuilt as ``exp(lse)`` (that overflows). A row with
no allowed key on either side has ``lse = -inf`` and ``out = 0``; merging two such rows keeps
``-inf`` and ``0`` (no NaN).

>>> import torch
>>> from cqs_attention.merge import merge_partials
>>> out, lse = merge_partials(torch.ones(1, 1, 2, 1), torch.tensor([[[0.0, float("-inf")]]]),
...                           3 * torch.ones(1, 1, 2, 1), torch.tensor([[[0.0, float("-inf")]]]))
>>> out.flatten().tolist(), lse.flatten().tolist()
([2.0, 0.0], [0.6931471824645996, -inf])
"""

from __future__ import annotations

import torch

__all__ = ["accumulator_dtype", "merge_partials", "merge_partials_"]


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype partial results are accumulated in: float64 for float64, else float32.

    >>> accumulator_dtype(torch.bfloat16)
    torch.float32
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def _weights(lse_a: torch.Tensor, lse_b: torch.Tensor):
    lse = torch.logaddexp(lse_a, lse_b)
    # logaddexp(-inf, -inf) = -inf, and -inf - -inf = NaN: rows with nothing on either side.
    empty = torch.isneginf(lse)
    safe = torch.where(empty, torch.zeros_like(lse), lse)
    wa = torch.exp(lse_a - safe).masked_fill_(empty, 0.0)
    wb = torch.exp(lse_b - safe).masked_fill_(empty, 0.0)
    return lse, wa, wb


def merge_partials(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial attention results of the same rows; returns new tensors.

    Parameters
    ----------
    out_a, out_b
        ``(..., L, D)`` partial outputs (any float dtype).
    lse_a, lse_b
        ``(..., L)`` log-sum-exps of the partial scores (``-inf`` for rows with no key).

    Returns
    -------
    out, lse
        In :func:`accumulator_dtype` of ``out_a`` (float32 unless float64).

    >>> import torch
    >>> o, l = merge_partials(torch.zeros(1, 1), torch.tensor([0.0]),
    ...                       torch.ones(1, 1), torch.tensor([0.0]))
    >>> o.item()
    0.5
    """
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape:
        raise ValueError(f"merge_partials: shapes differ: ({tuple(out_a.shape)}, "
                         f"{tuple(lse_a.shape)}) and ({tuple(out_b.shape)}, "
                         f"{tuple(lse_b.shape)})")
    acc = accumulator_dtype(out_a.dtype)
    lse_a = lse_a.to(acc)
    lse_b = lse_b.to(acc, copy=False)
    lse, wa, wb = _weights(lse_a, lse_b)
    out = out_a.to(acc) * wa.unsqueeze(-1) + out_b.to(acc) * wb.unsqueeze(-1)
    return out, lse


def merge_partials_(
    acc_out: torch.Tensor, acc_lse: torch.Tensor, out: torch.Tensor, lse: torch.Tensor
) -> None:
    """Merge ``(out, lse)`` INTO the accumulators ``(acc_out, acc_lse)`` in place.

    ``acc_out``/``acc_lse`` may be views (slices of a global accumulator). ``out``/``lse`` are
    converted to the accumulators' dtype and device.

    >>> import torch
    >>> a, l = torch.zeros(1, 1), torch.tensor([float("-inf")])
    >>> merge_partials_(a, l, torch.full((1, 1), 2.0), torch.tensor([1.0]))
    >>> a.item(), l.item()
    (2.0, 1.0)
    """
    if out.shape != acc_out.shape or lse.shape != acc_lse.shape:
        raise ValueError(f"merge_partials_: shapes differ: accumulators {tuple(acc_out.shape)}"
                         f" / {tuple(acc_lse.shape)}, partial result {tuple(out.shape)} / "
                         f"{tuple(lse.shape)}")
    lse = lse.to(device=acc_lse.device, dtype=acc_lse.dtype)
    out = out.to(device=acc_out.device)
    new_lse, wa, wb = _weights(acc_lse, lse)
    # the weights are allocated before the first write and the in-place updates allocate
    # nothing (out is read in its own dtype and promoted element by element), so an
    # out-of-memory error leaves the accumulators untouched (the engine relies on it)
    acc_out.mul_(wa.unsqueeze(-1)).addcmul_(out, wb.unsqueeze(-1))
    acc_lse.copy_(new_lse)
