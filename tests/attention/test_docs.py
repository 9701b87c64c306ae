"""The ```python blocks of docs/attention.md and docs/use_in_your_model.md run, in order, in one
namespace per document. (Every module's ``>>>`` examples and every ``>>>`` block of the
markdown docs are run by tests/test_docs_examples.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _run_python_blocks(doc: Path) -> int:
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(), flags=re.S | re.M)
    ns: dict = {}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{doc.name}[block {i}]", "exec"), ns)
        except Exception as exc:
            pytest.fail(f"docs/{doc.name} block {i} failed: {type(exc).__name__}: {exc}\n{code}")
    return len(blocks)


def test_examples_in_docs_attention_run(capsys):
    assert _run_python_blocks(DOCS / "attention.md") >= 8


def test_examples_in_use_in_your_model_run(capsys):
    pytest.importorskip("transformers")
    from cqs_attention.integrations.transformers import unregister

    try:
        assert _run_python_blocks(DOCS / "use_in_your_model.md") >= 2
    finally:
        unregister("cqs")  # the page registers "cqs"; leave the process as it was


def test_docs_say_which_kernels_run_on_a_cpu():
    import torch

    from cqs_attention.kernels import kernel_reasons

    reasons = kernel_reasons(device=torch.device("cpu"), dtype=torch.float32, head_dim=64,
                             mask=None, gqa=False, needs_grad=False)
    assert not reasons["cpu_flash"]  # so "only the reference kernel runs" would be wrong
    for name in ("attention.md", "use_in_your_model.md"):
        text = (DOCS / name).read_text()
        assert "only the `reference` kernel runs" not in text
        assert "On CPU the reference kernel runs" not in text
        assert "`cpu_flash` runs float32 and bfloat16" in text or \
            "`cpu_flash` kernel runs float32 and bfloat16" in text
