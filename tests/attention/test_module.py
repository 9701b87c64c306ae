"""CQSAttention: an SDPA drop-in holding execution options; works under torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention.module import CQSAttention, bool_mask_to_mask_mod, parse_bytes
from cqs_attention.reference import reference_attention


def _rand(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm())


@given(
    batch=st.integers(1, 2),
    kv_heads=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 2]),
    lq=st.integers(1, 40),
    lk=st.integers(1, 40),
    head_dim=st.sampled_from([3, 8]),
    mode=st.sampled_from(["none", "is_causal", "bool", "float"]),
    design=st.sampled_from([None, 2, 3]),
    seed=st.integers(0, 2**16),
)
def test_matches_sdpa(batch, kv_heads, group, lq, lk, head_dim, mode, design, seed) -> None:
    heads = kv_heads * group
    q = _rand(batch, heads, lq, head_dim, seed=seed)
    k = _rand(batch, kv_heads, lk, head_dim, seed=seed + 1)
    v = _rand(batch, kv_heads, lk, head_dim, seed=seed + 2)
    kw: dict = {}
    if mode == "is_causal":
        kw["is_causal"] = True
    elif mode in ("bool", "float"):
        mask = torch.rand(batch, 1, lq, lk, generator=torch.Generator().manual_seed(seed)) > 0.4
        mask[..., 0] = True  # SDPA gives NaN for rows with no allowed key; cqs gives 0
        kw["attn_mask"] = mask if mode == "bool" else torch.zeros(mask.shape, dtype=q.dtype)\
            .masked_fill(~mask, float("-inf"))
    attn = CQSAttention(plan=None if design is None else {"design": design})
    got = attn(q, k, v, scale=0.37, **kw)
    want = F.scaled_dot_product_attention(q, k, v, scale=0.37, enable_gqa=True, **kw)
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    assert _rel(got, want) < 1e-10


def test_causal_keyword_is_bottom_right_and_gradients_match() -> None:
    q = _rand(1, 4, 9, 8, seed=1, dtype=torch.float32).requires_grad_()
    k = _rand(1, 2, 21, 8, seed=2, dtype=torch.float32).requires_grad_()
    v = _rand(1, 2, 21, 8, seed=3, dtype=torch.float32).requires_grad_()
    dout = _rand(1, 4, 9, 8, seed=4, dtype=torch.float32)
    got = CQSAttention(plan={"design": 2})(q, k, v, causal=True, window=(5, None))
    (got * dout).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    want, _ = reference_attention(q64, k64, v64, causal=True, window=(5, None))
    (want * dout.double()).sum().backward()
    assert _rel(got.double(), want) < 1e-5
    for g, t in zip(grads, (q64, k64, v64), strict=True):
        assert _rel(g.double(), t.grad) < 1e-5
    # bottom-right differs from SDPA's top-left is_causal when Lq != Lk
    top_left = CQSAttention()(q, k, v, is_causal=True)
    assert _rel(top_left.double(), want) > 1e-2


def test_plan_policies() -> None:
    from cqs_attention.report import last_run_stats

    q = _rand(1, 2, 50, 8, seed=5)
    want = F.scaled_dot_product_attention(q, q, q, is_causal=True)
    seen = {}

    def policy(*, seq_len, kv_len, causal, window):
        from cqs_design.plans import make_plan

        seen.update(seq_len=seq_len, kv_len=kv_len, causal=causal, window=window)
        return make_plan(seq_len, kv_len=kv_len, design=3, causal=causal, window=window)

    assert _rel(CQSAttention(plan=policy)(q, q, q, causal=True), want) < 1e-12
    assert seen == {"seq_len": 50, "kv_len": 50, "causal": True, "window": None}
    assert last_run_stats().design_v == 13
    assert _rel(CQSAttention(plan={"design": 2})(q, q, q, is_causal=True), want) < 1e-12
    assert last_run_stats().design_v == 7


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="memory_budget"):
        CQSAttention(memory_budget="lots")
    with pytest.raises(ValueError, match="backend"):
        CQSAttention(backend="")
    with pytest.raises(TypeError, match="plan"):
        CQSAttention(plan=3)
    with pytest.raises(ValueError, match="seq_len"):
        CQSAttention(plan={"seq_len": 10})
    attn = CQSAttention(memory_budget="1MiB", plan={"design": 2})
    assert attn.memory_budget == 2**20
    assert "memory_budget=1048576" in repr(attn)
    q = _rand(1, 1, 4, 8, seed=0)
    with pytest.raises(NotImplementedError, match="dropout"):
        attn(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="not both"):
        attn(q, q, q, is_causal=True, causal=True)
    with pytest.raises(NotImplementedError, match="additive"):
        attn(q, q, q, attn_mask=_rand(1, 1, 4, 4, seed=1))


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), (1000, 1000), ("2KiB", 2048), ("1.5 MB", 1_500_000), ("1gib", 2**30)],
)
def test_parse_bytes(text, value) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["-1", "12 parsecs", "", True, [1], float("inf")])
def test_parse_bytes_rejects(bad) -> None:
    with pytest.raises(ValueError, match="memory_budget"):
        parse_bytes(bad)


def test_bool_mask_to_mask_mod_broadcasts() -> None:
    mask = torch.rand(2, 1, 5, 6, generator=torch.Generator().manual_seed(3)) > 0.5
    mod = bool_mask_to_mask_mod(mask)
    b = torch.arange(2).view(-1, 1, 1, 1)
    h = torch.arange(3).view(1, -1, 1, 1)
    got = mod(b, h, torch.arange(5).view(1, 1, -1, 1), torch.arange(6).view(1, 1, 1, -1))
    assert torch.equal(got, mask.expand(2, 3, 5, 6))
    with pytest.raises(TypeError, match="bool"):
        bool_mask_to_mask_mod(mask.float())


class _Block(torch.nn.Module):
    """A tiny self-attention block calling CQSAttention where SDPA would be called."""

    def __init__(self, dim: int = 16, heads: int = 2, attn: torch.nn.Module | None = None):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.attn = attn if attn is not None else CQSAttention(plan={"design": 2})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = self.attn(q, k, v, is_causal=True) if isinstance(self.attn, CQSAttention) \
            else F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, n, d)).relu()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile(backend: str) -> None:
    torch.manual_seed(0)
    block = _Block()
    sdpa_block = _Block(attn=torch.nn.Identity())
    sdpa_block.load_state_dict(block.state_dict(), strict=False)
    x = _rand(2, 19, 16, seed=9, dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(block, backend=backend)
    y = compiled(x)
    want = sdpa_block(x)
    assert _rel(y, want) < 1e-5
    y.sum().backward()
    g = block.qkv.weight.grad.clone()
    block.zero_grad()
    sdpa_block(x).sum().backward()
    assert _rel(g, sdpa_block.qkv.weight.grad) < 1e-5


def test_graph_break_is_where_documented() -> None:
    """Exactly one graph break per CQSAttention call (the executor runs outside the graph)."""
    torch._dynamo.reset()
    block = _Block()
    x = _rand(1, 8, 16, seed=2, dtype=torch.float32)
    explain = torch._dynamo.explain(block)(x)
    assert explain.graph_break_count == 1


@pytest.mark.gpu
def test_cuda_bf16_matches_sdpa_error() -> None:
    """On the GPU in bf16: error vs the float64 reference no worse than SDPA's (+ floor)."""
    g = torch.Generator().manual_seed(11)
    q = torch.randn(2, 8, 1000, 64, generator=g)
    k = torch.randn(2, 2, 1000, 64, generator=g)
    v = torch.randn(2, 2, 1000, 64, generator=g)
    want, _ = reference_attention(q.double(), k.double(), v.double(), causal=True)
    qc, kc, vc = (t.cuda().bfloat16() for t in (q, k, v))
    got = CQSAttention(plan={"design": 3})(qc, kc, vc, is_causal=True).double().cpu()
    sdpa = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, enable_gqa=True)
    err_sdpa = _rel(sdpa.double().cpu(), want)
    assert _rel(got, want) <= 2 * err_sdpa + 1e-3
    assert _rel(got, want) <= 2e-2


@pytest.mark.parametrize("shape", [(3, 20, 8), (20, 8)])
def test_unbatched_inputs_like_sdpa(shape) -> None:
    """Issue: CQSAttention rejected 3-D (H, L, D) input that SDPA accepts."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(*shape[:-2], 20, 20, generator=g) > 0.3
    mask[..., 0] = True  # every row sees a key
    attn = CQSAttention()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for kwargs in ({"is_causal": True}, {"attn_mask": mask}):
        out = attn(q, k, v, **kwargs)
        assert out.shape == q.shape
        torch.testing.assert_close(out, sdpa(q, k, v, **kwargs))
    out, lse = attn(q, k, v, is_causal=True, return_lse=True)
    assert out.shape == q.shape
    assert lse.shape == q.shape[:-1]
