"""Fixtures for the attention tests: seeded random inputs and error measures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def _make_qkv(b: int = 1, h: int = 2, lq: int = 20, d: int = 8, *, hkv: int | None = None,
              lk: int | None = None, dtype: torch.dtype = torch.float64, seed: int = 0,
              requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hkv = h if hkv is None else hkv
    lk = lq if lk is None else lk
    q = torch.randn(b, h, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hkv, lk, d, generator=g, dtype=torch.float64)
    return tuple(t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v))


@pytest.fixture(scope="session")
def make_qkv() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``make_qkv(b, h, lq, d, *, hkv, lk, dtype, seed, requires_grad)`` -> (q, k, v)."""
    return _make_qkv


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """||a - ref|| / ||ref|| in float64 (0 when both are 0)."""
    a, ref = a.double(), ref.double()
    den = ref.norm().item()
    num = (a - ref).norm().item()
    return num if den == 0 else num / den


def max_abs_lse_err(lse: torch.Tensor, ref: torch.Tensor) -> float:
    """Max |lse - ref| over finite rows, after checking the -inf rows agree exactly."""
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref)), "-inf rows differ"
    fin = torch.isfinite(ref)
    if not bool(fin.any()):
        return 0.0
    return (lse.double()[fin] - ref.double()[fin]).abs().max().item()


@pytest.fixture(scope="session")
def errors() -> tuple[Callable[..., float], Callable[..., float]]:
    """(rel_err, max_abs_lse_err)."""
    return rel_err, max_abs_lse_err


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """The tests make many tiny kernel calls, for which torch's thread pool costs more than it
    gives (5x slower on a loaded 2-core machine); restored after the attention tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def home_allocations(monkeypatch):
    """Record which home accumulator tensors (store, index, shape) a run allocates."""
    made: list[tuple[int, tuple[int, ...]]] = []
    from cqs_attention.engine.accumulate import RowStore

    orig = RowStore.home_tensor

    def spy(self, i):
        if not isinstance(self._home[i], torch.Tensor):
            made.append((i, tuple(self._home[i][0])))
        return orig(self, i)

    monkeypatch.setattr(RowStore, "home_tensor", spy)
    return made
