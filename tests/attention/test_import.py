"""``import cqs_attention`` stays light: the public names load on first use (issue 14)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cqs_attention


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(*sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_does_not_load_torch_dynamo() -> None:
    loaded = _modules_after("import cqs_attention")
    assert "cqs_attention" in loaded
    assert "torch._dynamo" not in loaded
    assert "torch" not in loaded


def test_attention_function_does_not_load_torch_dynamo() -> None:
    loaded = _modules_after("import cqs_attention\ncqs_attention.attention")
    assert "cqs_attention.api" in loaded
    assert "torch._dynamo" not in loaded


def test_cli_help_does_not_import_torch() -> None:
    code = ("from cqs_attention.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code)
    assert "cqs_attention.cli" in loaded
    assert "torch" not in loaded


@pytest.mark.parametrize("name", cqs_attention.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(cqs_attention, name) is not None
    assert name in dir(cqs_attention)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cqs_attention.nope


def test_all_lists_exactly_the_lazy_names() -> None:
    expected = {*cqs_attention._LAZY, *cqs_attention._SUBMODULES, "__version__"}
    assert set(cqs_attention.__all__) == expected
