"""The plain out-of-core baseline (cqs_attention.baseline) against the float64 reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention.baseline import (
    _schedule,
    baseline_blocks,
    baseline_footprint,
    last_baseline_stats,
    out_of_core_attention,
)
from cqs_attention.errors import AttentionInputError, KernelUnavailableError, MemoryBudgetError
from cqs_attention.reference import reference_attention
from tests.attention.conftest import _make_qkv, max_abs_lse_err, rel_err


@given(lq=st.integers(1, 70), lk=st.integers(1, 70), bq=st.integers(1, 40),
       bkv=st.integers(1, 40), causal=st.booleans(), gqa=st.booleans(),
       staged=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_float64_reference(lq, lk, bq, bkv, causal, gqa, staged, seed):
    q, k, v = _make_qkv(2, 4, lq, 8, hkv=2 if gqa else 4, lk=lk, seed=seed)
    out, lse = out_of_core_attention(q, k, v, causal=causal, block_q=bq, block_kv=bkv,
                                     return_lse=True, device="cpu", _staged=staged)
    ref, ref_lse = reference_attention(q, k, v, causal=causal)
    assert out.dtype == q.dtype
    assert out.shape == q.shape
    if ref.norm() > 0:
        assert rel_err(out, ref) <= 1e-10
    else:  # causal with Lq > Lk: no row reaches a key only when Lk is tiny; all rows empty
        assert bool((out == 0).all())
    assert max_abs_lse_err(lse, ref_lse) <= 1e-10


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("staged", [False, True])
def test_float32_fast_cpu_kernel(causal, staged):
    q, k, v = _make_qkv(1, 4, 300, 16, lk=260, dtype=torch.float32, seed=3)
    out = out_of_core_attention(q, k, v, causal=causal, block_q=96, block_kv=70,
                                device="cpu", _staged=staged)
    ref, _ = reference_attention(q.double(), k.double(), v.double(), causal=causal)
    assert out.dtype == torch.float32
    assert rel_err(out, ref) <= 1e-5
    assert "cpu_flash" in last_baseline_stats().kernel_calls


@pytest.mark.parametrize("n_blocks", [1, 2, 5])
def test_causal_schedule_skips_above_diagonal(n_blocks):
    L, b = 20 * n_blocks, 20
    _, steps, skipped = _schedule(L, L, b, b, causal=True)
    flat = [s for mine in steps for s in mine]
    assert len(flat) == n_blocks * (n_blocks + 1) // 2
    assert skipped == n_blocks * (n_blocks - 1) // 2
    diag = [s for s in flat if any(c[2] for c in s.calls)]
    assert len(diag) == n_blocks  # masks only on the diagonal blocks
    assert all(s.k0 == s.q0 and s.calls == ((0, b, True),) for s in diag)
    for i, mine in enumerate(steps):  # serpentine order
        ks = [s.k0 for s in mine]
        assert ks == sorted(ks, reverse=i % 2 == 1)


def test_causal_schedule_covers_exactly_the_allowed_pairs():
    for lq, lk, bq, bkv in [(50, 50, 13, 7), (30, 70, 8, 11), (70, 30, 9, 6), (41, 41, 41, 3)]:
        _, steps, _ = _schedule(lq, lk, bq, bkv, causal=True)
        seen = np.zeros((lq, lk), dtype=np.int64)
        for s in (x for mine in steps for x in mine):
            for c0, c1, diag in s.calls:
                for i in range(s.a, s.q1):
                    for j in range(s.k0 + c0, s.k0 + c1):
                        if not diag or j - s.k0 - c0 <= i - s.a:
                            seen[i, j] += 1
        allowed = np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq)
        assert np.array_equal(seen, allowed.astype(np.int64)), (lq, lk, bq, bkv)


def test_report_counts_blocks_and_bytes():
    q, k, v = _make_qkv(1, 2, 100, 8, seed=1)
    out_of_core_attention(q, k, v, causal=True, block_q=25, block_kv=25, device="cpu",
                          _staged=True)
    st_ = last_baseline_stats()
    assert (st_.q_blocks, st_.kv_blocks, st_.blocks_computed, st_.blocks_skipped) == (4, 4, 10, 6)
    assert st_.blocks_masked == 4
    row = 2 * 8 * 8  # heads * head_dim * bytes
    # q once; key/value blocks in the order 0 | 1 0 | 0 1 2 | 3 2 1 0 (serpentine) through two
    # buffers: copied 6 times (reused when already resident), the output once
    assert st_.bytes_to_device == 100 * row + 6 * 2 * 25 * row
    assert st_.bytes_from_device == 100 * row
    d = st_.to_dict()
    json.dumps(d)
    assert set(d["profile"]) >= {"h2d", "compute", "merge", "d2h", "idle"}
    assert d["profile"]["compute"] > 0


def test_kv_block_reused_when_it_is_the_only_one():
    q, k, v = _make_qkv(1, 2, 100, 8, lk=30, seed=1)
    out = out_of_core_attention(q, k, v, block_q=10, block_kv=30, device="cpu", _staged=True)
    ref, _ = reference_attention(q, k, v)
    assert rel_err(out, ref) <= 1e-12
    row = 2 * 8 * 8
    assert last_baseline_stats().bytes_to_device == 100 * row + 2 * 30 * row


@pytest.mark.parametrize("causal", [False, True])
def test_memory_budget_sizes_blocks(causal):
    q, k, v = _make_qkv(1, 2, 200, 8, hkv=1, seed=2)
    budget = 400_000
    out = out_of_core_attention(q, k, v, causal=causal, memory_budget=budget, device="cpu")
    ref, _ = reference_attention(q, k, v, causal=causal)
    assert rel_err(out, ref) <= 1e-10
    st_ = last_baseline_stats()
    assert st_.footprint_estimate <= budget
    assert st_.q_blocks > 1  # the budget forced a split
    def fp(bq, bkv):
        return baseline_footprint(bq, bkv, batch=1, heads=2, kv_heads=1, head_dim=8,
                                  dtype=torch.float64, staged=False, causal=causal,
                                  kernel=_reference_kernel())

    assert fp(st_.block_q, st_.block_kv) == st_.footprint_estimate
    # the blocks are near the largest that fit (balancing shortens them by less than half)
    assert fp(2 * st_.block_q, st_.block_kv) > budget
    assert st_.block_kv == 200 or fp(st_.block_q, 2 * st_.block_kv) > budget


def _reference_kernel():
    from cqs_attention.kernels.reference import ReferenceKernel

    return ReferenceKernel()


def test_memory_budget_too_small_names_the_minimum():
    q, k, v = _make_qkv(1, 2, 50, 8, seed=2)
    with pytest.raises(MemoryBudgetError, match=r"pass memory_budget >= (\d+)") as info:
        out_of_core_attention(q, k, v, memory_budget=100, device="cpu")
    need = int(str(info.value).rsplit(">= ", 1)[1])
    out = out_of_core_attention(q, k, v, memory_budget=need, device="cpu")
    ref, _ = reference_attention(q, k, v)
    assert rel_err(out, ref) <= 1e-10
    assert last_baseline_stats().block_q == 1
    with pytest.raises(MemoryBudgetError, match="block_q=40, block_kv=40"):
        out_of_core_attention(q, k, v, memory_budget=need, block_q=40, block_kv=40,
                              device="cpu")


@given(lq=st.integers(1, 10**7), lk=st.integers(1, 10**7), budget=st.integers(10**4, 10**10),
       cq=st.integers(1, 5000), ck=st.integers(1, 5000))
def test_baseline_blocks_fit_and_balance(lq, lk, budget, cq, ck):
    def fp(m, n):
        return cq * m + ck * n

    if fp(1, 1) > budget:
        with pytest.raises(MemoryBudgetError):
            baseline_blocks(lq, lk, budget, footprint=fp)
        return
    bq, bkv = baseline_blocks(lq, lk, budget, footprint=fp)
    assert 1 <= bq <= lq
    assert 1 <= bkv <= lk
    assert fp(bq, bkv) <= budget
    # balanced: the last block is not much shorter than the others
    for n, total in ((bq, lq), (bkv, lk)):
        blocks = math.ceil(total / n)
        assert total - (blocks - 1) * n > 0


def test_empty_sequences():
    q, k, v = _make_qkv(1, 2, 0, 8, lk=5)
    out, lse = out_of_core_attention(q, k, v, return_lse=True, device="cpu")
    assert out.shape == (1, 2, 0, 8)
    assert lse.shape == (1, 2, 0)
    q, k, v = _make_qkv(1, 2, 4, 8, lk=0)
    out, lse = out_of_core_attention(q, k, v, return_lse=True, device="cpu")
    assert bool((out == 0).all())
    assert bool(torch.isneginf(lse).all())


def test_numpy_inputs_and_out_argument():
    q, k, v = _make_qkv(1, 2, 40, 8, dtype=torch.float32, seed=5)
    ref, _ = reference_attention(q.double(), k.double(), v.double(), causal=True)
    res = out_of_core_attention(q.numpy(), k.numpy(), v.numpy(), causal=True, block_q=16,
                                device="cpu")
    assert rel_err(res, ref) <= 1e-5
    buf = torch.full_like(q, float("nan"))
    got = out_of_core_attention(q, k, v, causal=True, block_q=16, block_kv=8, device="cpu",
                                out=buf)
    assert got is buf
    assert rel_err(buf, ref) <= 1e-5


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"block_q": 0}, AttentionInputError, "block_q must be a positive int"),
    ({"block_kv": True}, AttentionInputError, "block_kv must be a positive int"),
    ({"block_q": 2.5}, AttentionInputError, "block_q must be a positive int"),
    ({"memory_budget": -1}, MemoryBudgetError, "memory_budget must be a positive int"),
    ({"memory_budget": 1.5e9}, MemoryBudgetError, "memory_budget must be a positive int"),
    ({"backend": "nope"}, KernelUnavailableError, "backend='nope' is not a registered"),
    ({"backend": 3}, AttentionInputError, "backend must be a str"),
    ({"causal": "yes"}, AttentionInputError, "causal must be a bool"),
    ({"return_lse": 1}, AttentionInputError, "return_lse must be a bool"),
    ({"progress": "no"}, AttentionInputError, "progress must be None"),
    ({"device": "bogus"}, AttentionInputError, "is not a torch device"),
    ({"scale": float("nan")}, AttentionInputError, "scale must be a finite float"),
    ({"out": torch.zeros(1, 2, 9, 8)}, AttentionInputError, "out must have shape"),
    ({"out": np.zeros((1, 2, 10, 8))}, AttentionInputError, "out must be a torch.Tensor"),
])
def test_bad_arguments(kwargs, exc, match):
    q, k, v = _make_qkv(1, 2, 10, 8)
    kwargs = {"device": "cpu", **kwargs}
    with pytest.raises(exc, match=match):
        out_of_core_attention(q, k, v, **kwargs)


def test_bad_inputs():
    q, k, v = _make_qkv(1, 4, 10, 8, hkv=3)
    with pytest.raises(AttentionInputError, match="not a multiple of k's 3"):
        out_of_core_attention(q, k, v, device="cpu")
    q, k, v = _make_qkv(1, 2, 10, 8)
    with pytest.raises(AttentionInputError, match="must have 4 dims"):
        out_of_core_attention(q[0], k, v, device="cpu")
    with pytest.raises(AttentionInputError, match="share a dtype"):
        out_of_core_attention(q.float(), k, v, device="cpu")
    with pytest.raises(AttentionInputError, match="forward only"):
        out_of_core_attention(q.requires_grad_(True), k, v, device="cpu")
    with torch.no_grad():  # fine without autograd
        out_of_core_attention(q, k, v, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_device_without_cuda():
    q, k, v = _make_qkv(1, 2, 10, 8)
    with pytest.raises(AttentionInputError, match="CUDA is not available"):
        out_of_core_attention(q, k, v, device="cuda")


# -- on a CUDA device ------------------------------------------------------------------------
#: peak device memory may exceed the budget by workspace the kernels allocate without declaring
#: it (cuDNN/flash) and allocator rounding: 15% of the budget + 64 MiB
GPU_MARGIN = (0.15, 64 << 20)


def _gpu_gold(q, k, v, causal, chunk=4096):
    """float32 attention on the GPU, one head and one query chunk at a time."""
    dev = torch.device("cuda")
    b, h, lq, d = q.shape
    g = h // k.shape[1]
    lk = k.shape[2]
    out = torch.empty(q.shape, dtype=torch.float32)
    cols = torch.arange(lk, device=dev)
    for bi in range(b):
        for hh in range(h):
            kh = k[bi, hh // g].to(dev, torch.float32)
            vh = v[bi, hh // g].to(dev, torch.float32)
            for r0 in range(0, lq, chunk):
                r1 = min(lq, r0 + chunk)
                s = (q[bi, hh, r0:r1].to(dev, torch.float32) @ kh.T) / math.sqrt(d)
                if causal:
                    rows = torch.arange(r0, r1, device=dev) + (lk - lq)
                    s.masked_fill_(cols[None, :] > rows[:, None], float("-inf"))
                out[bi, hh, r0:r1] = (torch.softmax(s, dim=-1) @ vh).cpu()
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pinned", [True, False])
def test_gpu_streams_pinned_bf16_within_budget(causal, pinned):
    q, k, v = _make_qkv(1, 16, 65536, 128, hkv=8, dtype=torch.bfloat16, seed=7)
    if pinned:
        q, k, v = (t.pin_memory() for t in (q, k, v))
    budget = sum(t.numel() * t.element_size() for t in (q, k, v)) // 4  # 128 MiB
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = out_of_core_attention(q, k, v, causal=causal, memory_budget=budget, device="cuda",
                                progress=False)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    rep = last_baseline_stats()
    assert out.device.type == "cpu"
    assert out.dtype == torch.bfloat16
    assert out.is_pinned() == pinned
    assert rep.overlapped
    assert rep.pinned == pinned
    assert rep.q_blocks > 1
    assert rep.footprint_estimate <= budget
    assert peak <= budget * (1 + GPU_MARGIN[0]) + GPU_MARGIN[1], (peak, budget)
    assert rel_err(out, _gpu_gold(q, k, v, causal)) <= 2e-2
    assert rep.bytes_to_device >= sum(t.numel() * t.element_size() for t in (q, k, v))
    assert rep.bytes_from_device == out.numel() * out.element_size()
    assert rep.profile["compute"] > 0
    assert rep.profile["h2d"] > 0


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_device_resident_inputs(causal):
    q, k, v = (t.cuda() for t in _make_qkv(1, 4, 4096, 128, dtype=torch.bfloat16, seed=8))
    out, lse = out_of_core_attention(q, k, v, causal=causal, block_q=1024, block_kv=768,
                                     return_lse=True, progress=False)
    assert out.device.type == "cuda"
    assert lse.device.type == "cuda"
    rep = last_baseline_stats()
    assert rep.bytes_to_device == 0
    assert not rep.overlapped
    assert rel_err(out.cpu(), _gpu_gold(q.cpu(), k.cpu(), v.cpu(), causal)) <= 2e-2
