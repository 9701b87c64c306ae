"""cqs attention as a transformers backend: same logits and gradients as eager/sdpa.

Tiny randomly initialised Llama, Mistral (sliding window smaller than the sequence) and Qwen2
models from configs (no downloads), float64 on CPU, inputs with left AND right padding.
"""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
masking_utils = pytest.importorskip("transformers.masking_utils")
if not hasattr(masking_utils, "AttentionMaskInterface"):  # pragma: no cover
    pytest.skip("transformers too old (no AttentionMaskInterface)", allow_module_level=True)

import torch  # noqa: E402

from cqs_attention.integrations.transformers import (  # noqa: E402
    CQSMask,
    cqs_mask_interface,
    make_attention_function,
    register,
    unregister,
)
from cqs_attention.module import CQSAttention  # noqa: E402
from cqs_attention.report import last_run_stats  # noqa: E402

VOCAB, SEQ = 97, 23  # 23 tokens: not a multiple of the 7 chunks of the q=2 design


@pytest.fixture(scope="module", autouse=True)
def _registered():
    # design q=2 (7 chunks) so a 23-token sequence really is split into several tasks
    register("cqs", plan={"design": 2})
    register("cqs_auto")
    yield
    unregister("cqs")
    unregister("cqs_auto")


def _config(kind: str):
    common = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 64}
    if kind == "llama":
        return transformers.LlamaConfig(**common)
    if kind == "mistral":
        return transformers.MistralConfig(sliding_window=6, **common)
    if kind == "qwen2":
        return transformers.Qwen2Config(**common)
    raise AssertionError(kind)


def _pair(kind: str, impl: str, baseline: str = "eager"):
    torch.manual_seed(1234)
    cfg = _config(kind)
    base = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=baseline,
                                                         dtype=torch.float64)
    ours = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=impl,
                                                         dtype=torch.float64)
    ours.load_state_dict(base.state_dict())
    assert ours.config._attn_implementation == impl
    return base, ours


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, SEQ), generator=g)
    mask = torch.ones(3, SEQ, dtype=torch.long)
    mask[1, :5] = 0  # left padding
    mask[2, -4:] = 0  # right padding
    return ids, mask


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("baseline", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
def test_logits_and_gradients_match(kind: str, baseline: str) -> None:
    base, ours = _pair(kind, "cqs", baseline)
    ids, mask = _inputs()
    keep = mask.bool()
    weights = torch.randn(3, SEQ, VOCAB, generator=torch.Generator().manual_seed(5),
                          dtype=torch.float64)
    grads = []
    logits = []
    for model in (base, ours):
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        (out * weights)[keep].sum().backward()
        logits.append(out.detach()[keep])
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None})
    assert torch.isfinite(logits[1]).all()
    assert _rel(logits[1], logits[0]) < 1e-10
    assert grads[0].keys() == grads[1].keys()
    assert len(grads[1]) > 10
    for name, g_ref in grads[0].items():
        assert torch.isfinite(grads[1][name]).all(), name
        assert _rel(grads[1][name], g_ref) < 1e-8, name


def test_sliding_window_is_honoured() -> None:
    """The Mistral window (6) is smaller than the sequence: dropping it changes the logits."""
    base, ours = _pair("mistral", "cqs")
    ids, mask = _inputs(1)
    keep = mask.bool()
    with torch.no_grad():
        ref = base(input_ids=ids, attention_mask=mask).logits[keep]
        got = ours(input_ids=ids, attention_mask=mask).logits[keep]
        stats = last_run_stats()  # the last layer's call ran a real multi-task plan
        assert stats.design_v == 7
        assert stats.tasks > 1
        assert stats.plan.window == (5, None)  # window 6: q - kv <= 5
        assert stats.pairs_computed < SEQ * SEQ / 2  # chunk pairs outside it never computed
        ours.config.sliding_window = None
        unwindowed = ours(input_ids=ids, attention_mask=mask).logits[keep]
    assert _rel(got, ref) < 1e-10
    assert _rel(unwindowed, ref) > 1e-3


def test_auto_plan_and_generate_match() -> None:
    """Greedy generation (prefill + cached single-token decode steps) gives the same tokens."""
    base, ours = _pair("mistral", "cqs_auto")
    ids, mask = _inputs(2)
    ids, mask = ids[:2], mask[:2]  # left padding only, as generation expects
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        want = base.generate(ids, attention_mask=mask, **kwargs)
        got = ours.generate(ids, attention_mask=mask, **kwargs)
    assert torch.equal(got, want)


def test_packed_sequences_use_the_exact_fallback() -> None:
    """position_ids restarting inside a row (packing) is not a recognised pattern: the exact
    transformers mask function is used as mask_mod and still matches eager."""
    base, ours = _pair("llama", "cqs")
    ids, _ = _inputs(3)
    ids = ids[:1]
    pos = torch.cat([torch.arange(10), torch.arange(SEQ - 10)]).unsqueeze(0)
    with torch.no_grad():
        ref = base(input_ids=ids, position_ids=pos, use_cache=False).logits
        got = ours(input_ids=ids, position_ids=pos, use_cache=False).logits
        unpacked = base(input_ids=ids, use_cache=False).logits
    assert _rel(got, ref) < 1e-10
    assert _rel(unpacked, ref) > 1e-3  # packing matters for these inputs


def test_mask_interface_recognises_structure() -> None:
    mu = masking_utils
    pad = torch.ones(2, 9, dtype=torch.bool)
    pad[0, :2] = False
    m = cqs_mask_interface(2, 9, 9, 0, 0, mu.sliding_window_causal_mask_function(4), pad)
    assert isinstance(m, CQSMask)
    assert (m.causal, m.window) == (True, (3, None))  # kv > q - 4  <=>  q - kv <= 3
    assert torch.equal(m.padding, pad)
    m = cqs_mask_interface(2, 9, 9, 0, 0, mu.causal_mask_function, torch.ones(2, 9).bool())
    assert (m.causal, m.window, m.padding) == (True, None, None)
    m = cqs_mask_interface(1, 9, 9, 0, 0, mu.sliding_window_bidirectional_mask_function(2))
    assert (m.causal, m.window) == (False, (2, 2))
    # an or_mask overlay is not recognised: exact fallback
    overlay = mu.or_masks(mu.causal_mask_function, lambda b, h, q, kv: kv == 0)
    m = cqs_mask_interface(1, 9, 9, 0, 0, overlay)
    assert m.causal is None
    assert m.mask_mod is not None
    # decode step: 1 query at position 8 over 9 keys (bottom-right aligned) keeps structure
    m = cqs_mask_interface(1, 1, 9, 8, 0, mu.causal_mask_function)
    assert m.causal is True
    # a static cache (keys beyond the written ones) is not bottom-right aligned: fallback
    m = cqs_mask_interface(1, 3, 16, 0, 0, mu.causal_mask_function)
    assert m.causal is None


def test_fallback_mask_mod_matches_sdpa_mask() -> None:
    mu = masking_utils
    pad = torch.ones(2, 11, dtype=torch.bool)
    pad[1, :3] = False
    fn = mu.or_masks(mu.causal_mask_function, lambda b, h, q, kv: kv == 0)
    m = cqs_mask_interface(2, 11, 11, 0, 0, fn, pad)
    want = mu.sdpa_mask(batch_size=2, q_length=11, kv_length=11, mask_function=fn,
                        attention_mask=pad, allow_is_causal_skip=False, use_vmap=True)
    b = torch.arange(2).view(-1, 1, 1, 1)
    q = torch.arange(11).view(1, 1, -1, 1)
    kv = torch.arange(11).view(1, 1, 1, -1)
    got = m.mask_mod(b, torch.zeros(1, 1, 1, 1, dtype=torch.long), q, kv)
    assert torch.equal(got.expand_as(want), want)


class _Module(torch.nn.Module):
    def __init__(self, is_causal: bool = True) -> None:
        super().__init__()
        self.is_causal = is_causal


def test_attention_function_direct_calls() -> None:
    fn = make_attention_function(CQSAttention(plan={"design": 2}))
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 4, 10, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, 10, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, 10, 8, generator=g, dtype=torch.float64)
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    # no mask: causal from the module, like sdpa; custom scaling honoured
    out, weights = fn(_Module(True), q, k, v, None, scaling=0.3)
    assert weights is None
    assert out.shape == (2, 10, 4, 8)
    want = torch.nn.functional.scaled_dot_product_attention(q, kr, vr, is_causal=True, scale=0.3)
    assert _rel(out.transpose(1, 2), want) < 1e-12
    # a user 4D bool mask and an eager-style float mask
    bool_mask = torch.rand(2, 1, 10, 10, generator=g) > 0.3
    bool_mask[..., 0] = True
    want = torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=bool_mask)
    out, _ = fn(_Module(False), q, k, v, bool_mask)
    assert _rel(out.transpose(1, 2), want) < 1e-12
    float_mask = torch.zeros(2, 1, 10, 10, dtype=torch.float64).masked_fill(
        ~bool_mask, torch.finfo(torch.float64).min)
    out, _ = fn(_Module(False), q, k, v, float_mask)
    assert _rel(out.transpose(1, 2), want) < 1e-12


def test_unsupported_features_raise() -> None:
    fn = make_attention_function(CQSAttention())
    q = torch.randn(1, 2, 4, 8)
    module = _Module()
    with pytest.raises(NotImplementedError, match="softcap"):
        fn(module, q, q, q, None, softcap=30.0)
    module.train()
    with pytest.raises(NotImplementedError, match="dropout"):
        fn(module, q, q, q, None, dropout=0.1)
    with pytest.raises(NotImplementedError, match="additive"):
        fn(module, q, q, q, torch.randn(1, 1, 4, 4))
    with pytest.raises(TypeError, match="attention_mask"):
        fn(module, q, q, q, "causal")


def test_register_validates() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        register("cqs_bad", budget=10)
    with pytest.raises(ValueError, match="transformers' own"):
        register("sdpa")
    with pytest.raises(ValueError, match="name"):
        register("")
    assert register("cqs_tmp", memory_budget="1MiB") == "cqs_tmp"
    assert "cqs_tmp" in transformers.AttentionInterface()
    unregister("cqs_tmp")
    assert "cqs_tmp" not in transformers.AttentionInterface()
