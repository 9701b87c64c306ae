"""transformers plugin: options checked by ``register()``; ``output_attentions=True`` warns like
transformers' own ``sdpa`` integration (issue 14)."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
masking_utils = pytest.importorskip("transformers.masking_utils")
if not hasattr(masking_utils, "AttentionMaskInterface"):  # pragma: no cover
    pytest.skip("transformers too old (no AttentionMaskInterface)", allow_module_level=True)

from transformers import AttentionInterface  # noqa: E402

from cqs_attention.errors import KernelUnavailableError  # noqa: E402
from cqs_attention.integrations.transformers import register, unregister  # noqa: E402


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"memory_budget": 0}, ValueError, "memory_budget must be > 0 bytes"),
    ({"memory_budget": "lots"}, ValueError, "memory_budget 'lots' is not a size"),
    ({"backend": "nope"}, KernelUnavailableError, "valid: 'auto', .*'reference'"),
])
def test_register_checks_options_and_registers_nothing(options, error, match) -> None:
    with pytest.raises(error, match=match):
        register("cqs_bad_option", **options)
    assert "cqs_bad_option" not in AttentionInterface._global_mapping
    assert "cqs_bad_option" not in masking_utils.AttentionMaskInterface._global_mapping


def test_register_accepts_budget_strings() -> None:
    try:
        register("cqs_budget_string", memory_budget="2GiB")
        fn = AttentionInterface._global_mapping["cqs_budget_string"]
        assert fn.cqs_module.memory_budget == 2 * 2**30
    finally:
        unregister("cqs_budget_string")


def test_wrong_shape_4d_mask_names_the_shapes() -> None:
    import torch

    from cqs_attention.errors import AttentionInputError
    from cqs_attention.integrations.transformers import make_attention_function
    from cqs_attention.module import CQSAttention

    fn = make_attention_function(CQSAttention())
    q = torch.randn(2, 4, 5, 8, dtype=torch.float64)
    kv = torch.randn(2, 2, 5, 8, dtype=torch.float64)
    mask = torch.ones(3, 1, 5, 5, dtype=torch.bool)  # batch 3 for a batch of 2
    with pytest.raises(AttentionInputError, match=r"attn_mask has shape \(3, 1, 5, 5\), which "
                                                  r"does not broadcast to .* = \(2, 4, 5, 5\)"):
        fn(torch.nn.Module(), q, kv, kv, mask)


def _tiny_llama(impl: str):
    import torch

    cfg = transformers.LlamaConfig(vocab_size=31, hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=impl)


def test_output_attentions_warns_once_like_sdpa(caplog, monkeypatch) -> None:
    import torch

    from cqs_attention.integrations import transformers as plugin

    monkeypatch.setattr(plugin, "_WARNED", set())
    register("cqs_warn")
    try:
        model = _tiny_llama("cqs_warn")
        ids = torch.randint(0, 31, (1, 9))
        with caplog.at_level("WARNING", logger=plugin.__name__):
            out = model(ids, output_attentions=True)
            model(ids, output_attentions=True)
            model(ids)
    finally:
        unregister("cqs_warn")
    records = [r for r in caplog.records if r.name == plugin.__name__]
    assert [r.getMessage() for r in records] == [plugin.OUTPUT_ATTENTIONS_WARNING]
    assert "output_attentions=True" in records[0].getMessage()
    assert "`eager`" in records[0].getMessage()
    assert not out.attentions  # empty, as with sdpa


def test_no_warning_without_output_attentions(caplog, monkeypatch) -> None:
    import torch

    from cqs_attention.integrations import transformers as plugin

    monkeypatch.setattr(plugin, "_WARNED", set())
    register("cqs_nowarn")
    try:
        with caplog.at_level("WARNING", logger=plugin.__name__):
            _tiny_llama("cqs_nowarn")(torch.randint(0, 31, (1, 9)))
    finally:
        unregister("cqs_nowarn")
    assert not [r for r in caplog.records if r.name == plugin.__name__]
