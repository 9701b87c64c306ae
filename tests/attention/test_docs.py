"""Every ```python block of docs/attention.md runs, in order, in one namespace."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

import cqs_attention

DOC = Path(__file__).resolve().parents[2] / "docs" / "attention.md"
MODULES = ["api", "autograd", "errors", "executor", "info", "masks", "merge", "reference",
           "report", "kernels", "kernels.reference", "baseline", "streaming", "_copies"]


def test_examples_in_docs_attention_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    ns: dict = {}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{DOC.name}[block {i}]", "exec"), ns)
        except Exception as exc:
            pytest.fail(f"docs/attention.md block {i} failed: {type(exc).__name__}: {exc}\n"
                        f"{code}")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = __import__(f"cqs_attention.{name}", fromlist=["x"])
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert res.failed == 0
    if name in ("merge", "masks", "reference", "api"):
        assert res.attempted > 0


def test_package_docstring():
    assert doctest.testmod(cqs_attention, verbose=False).failed == 0
