"""``CQSAttention`` and the transformers ``register()`` check their options at construction
(issue 14): a bad budget or backend fails there, not at the first call."""

from __future__ import annotations

import pytest
import torch

from cqs_attention.errors import AttentionInputError, KernelUnavailableError
from cqs_attention.module import CQSAttention


@pytest.mark.parametrize("budget", [0, "0B", "0 MiB", 0.2])
def test_zero_budget_fails_at_construction(budget) -> None:
    with pytest.raises(ValueError, match="memory_budget must be > 0 bytes"):
        CQSAttention(memory_budget=budget)


@pytest.mark.parametrize(("budget", "match"), [
    ("lots", "memory_budget 'lots' is not a size"),
    ("2 parsecs", "unknown unit 'parsecs'"),
    (-1, "memory_budget must be a finite size > 0 bytes, got -1"),
    (-5, "memory_budget must be a finite size > 0 bytes, got -5"),
    ("-5MiB", "memory_budget must be a finite size > 0 bytes, got '-5MiB'"),
    (True, "memory_budget must be a number of bytes"),
])
def test_unparsable_budget_fails_at_construction(budget, match) -> None:
    with pytest.raises(ValueError, match=match):
        CQSAttention(memory_budget=budget)


@pytest.mark.parametrize(("budget", "expected"), [("2GiB", 2 * 2**30), ("64 kB", 64_000),
                                                  (4096, 4096), (None, None)])
def test_budget_forms_accepted(budget, expected) -> None:
    assert CQSAttention(memory_budget=budget).memory_budget == expected


def test_unknown_backend_fails_at_construction_naming_the_valid_ones() -> None:
    with pytest.raises(KernelUnavailableError, match=r"backend='nope' is not a registered "
                                                     r"kernel; valid: 'auto', .*'reference'"):
        CQSAttention(backend="nope")


@pytest.mark.parametrize("backend", ["auto", "reference", "cpu_flash"])
def test_known_backends_construct(backend: str) -> None:
    assert CQSAttention(backend=backend).backend == backend


# ----------------------------------------------------------------- attn_mask shape ----

def _qkv(b=2, h=2, lq=6, lk=6, d=4):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, h, lq, d, generator=g, dtype=torch.float64),
            torch.randn(b, h, lk, d, generator=g, dtype=torch.float64),
            torch.randn(b, h, lk, d, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(5, 6), (6, 7), (3, 2, 6, 6), (2, 3, 6, 6), (1, 2, 2, 6, 6)])
def test_wrong_shape_attn_mask_names_the_shapes(shape) -> None:
    q, k, v = _qkv()
    with pytest.raises(AttentionInputError) as info:
        CQSAttention()(q, k, v, attn_mask=torch.ones(shape, dtype=torch.bool))
    message = str(info.value)
    assert f"attn_mask has shape {shape}" in message
    assert "(B, H, Lq, Lk) = (2, 2, 6, 6)" in message
    assert "(Lq, Lk) = (6, 6)" in message
    assert "mask_mod" not in message


@pytest.mark.parametrize("shape", [(6,), (1, 1, 1, 6), (2, 1, 1, 6), (2, 1, 6, 6), (6, 6),
                                   (2, 2, 1, 6)])
def test_broadcast_attn_mask_matches_sdpa(shape) -> None:
    q, k, v = _qkv()
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(shape, generator=g) < 0.7
    mask[..., 0] = True  # no fully masked row (SDPA gives NaN there, cqs gives 0)
    got = CQSAttention()(q, k, v, attn_mask=mask)
    full = mask.expand(2, 2, 6, 6)  # SDPA itself wants at least (Lq, Lk)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=full)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(1, 1, 1, 6), (6, 6), (2, 1, 6, 6)])
def test_attention_with_a_general_mask_mod_matches_sdpa(shape) -> None:
    """The same masks as a plain mask_mod (no CQSAttention): isolates the executor."""
    import cqs_attention

    q, k, v = _qkv()
    g = torch.Generator().manual_seed(1)
    full = (torch.rand(shape, generator=g) < 0.7).expand(2, 2, 6, 6).clone()
    full[..., 0] = True
    got = cqs_attention.attention(q, k, v, mask_mod=lambda b, h, i, j: full[b, h, i, j])
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=full)
    torch.testing.assert_close(got, want)
