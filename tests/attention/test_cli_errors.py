"""Bad usage of ``cqs-attention`` and ``python -m cqs_attention.info``: exit 2 and one line on
stderr, never a traceback (issue 14)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Runs a CLI with ``import torch`` blocked, as on a machine without the ``attention`` extra.
_NO_TORCH = "import sys, runpy\nsys.modules['torch'] = None\n"


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("argv", [["--help"], [], ["demo"], ["demo", "--help"],
                                  ["bench", "--quiet"]])
def test_cli_without_torch_says_how_to_install_it(argv: list[str]) -> None:
    code = _NO_TORCH + ("from cqs_attention.cli import main\n"
                        "sys.exit(main(sys.argv[1:]))")
    line = _one_line_error(_run(code, *argv))
    assert "needs torch" in line
    assert "pip install 'cqs[attention]'" in line


@pytest.mark.parametrize("argv", [["--help"], []])
def test_info_without_torch_says_how_to_install_it(argv: list[str]) -> None:
    code = _NO_TORCH + ("sys.argv = ['info', *sys.argv[1:]]\n"
                        "runpy.run_module('cqs_attention.info', run_name='__main__')")
    line = _one_line_error(_run(code, *argv))
    assert line.startswith("python -m cqs_attention.info: needs torch")


def test_python_m_cqs_attention_without_torch() -> None:
    code = _NO_TORCH + ("sys.argv = ['cqs-attention', '--help']\n"
                        "runpy.run_module('cqs_attention', run_name='__main__')")
    assert "needs torch" in _one_line_error(_run(code))


def test_info_help_is_honoured() -> None:
    proc = subprocess.run([sys.executable, "-m", "cqs_attention.info", "--help"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m cqs_attention.info")
    assert "--head-dim" in proc.stdout
    assert "kernels in dispatch order" not in proc.stdout


def test_info_bad_option_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "cqs_attention.info", "--head-dim", "0"],
                          capture_output=True, text=True, timeout=300)
    assert "--head-dim must be >= 1" in _one_line_error(proc)


def test_info_head_dim_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    from cqs_attention.info import main

    assert main(["--head-dim", "24"]) == 0
    assert "head_dim=24" in capsys.readouterr().out
