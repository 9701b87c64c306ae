"""Bad usage of ``cqs-attention`` and ``python -m cqs_attention.info``: exit 2 and one line on
stderr, never a traceback (issue 14)."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize("argv", [["demo"], ["bench", "--quiet"], ["demo", "--seq-len", "64"]])
def test_cli_without_torch_says_how_to_install_it(argv: list[str]) -> None:
    code = _NO_TORCH + ("from cqs_attention.cli import main\n"
                        "sys.exit(main(sys.argv[1:]))")
    line = _one_line_error(_run(code, *argv))
    assert "needs torch" in line
    assert "pip install 'cqs[attention]'" in line


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["bench", "--help"],
                                  ["--version"]])
def test_cli_help_and_version_work_without_torch(argv: list[str]) -> None:
    """Issue: ``cqs-attention --help`` failed without torch."""
    code = _NO_TORCH + ("from cqs_attention.cli import main\n"
                        "sys.exit(main(sys.argv[1:]))")
    proc = _run(code, *argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    if argv == ["--version"]:
        assert proc.stdout == "cqs-attention 0.1.0\n"
    else:
        assert proc.stdout.startswith("usage: cqs-attention")


def test_cli_argument_errors_come_before_the_torch_check() -> None:
    code = _NO_TORCH + ("from cqs_attention.cli import main\n"
                        "sys.exit(main(sys.argv[1:]))")
    line = _one_line_error(_run(code, "demo", "--budget", "lots"))
    assert line == ("cqs-attention demo: error: --budget 'lots' is not a size; write bytes or "
                    "e.g. '256MiB'")
    # no command: argparse's one line, exit 2
    assert _one_line_error(_run(code)).endswith("the following arguments are required: COMMAND")


def test_info_without_torch_says_how_to_install_it() -> None:
    code = _NO_TORCH + ("sys.argv = ['info', *sys.argv[1:]]\n"
                        "runpy.run_module('cqs_attention.info', run_name='__main__')")
    line = _one_line_error(_run(code))
    assert line.startswith("python -m cqs_attention.info: needs torch")
    proc = _run(code, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m cqs_attention.info")


def test_python_m_cqs_attention_without_torch() -> None:
    code = _NO_TORCH + ("sys.argv = ['cqs-attention', 'demo']\n"
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
    assert "argument --head-dim: must be an integer >= 1, got 0" in _one_line_error(proc)


def test_info_head_dim_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    from cqs_attention.info import main

    assert main(["--head-dim", "24"]) == 0
    assert "head_dim=24" in capsys.readouterr().out


# ------------------------------------------------------------------ demo: host memory ----

def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cqs_attention", *argv], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("seq_len", [10**8, 10**12])
def test_demo_too_large_for_host_memory_is_refused_up_front(seq_len: int) -> None:
    from cqs_attention.cli import demo_host_bytes
    from cqs_attention.info import host_memory_available

    available = host_memory_available()
    need = demo_host_bytes(batch=1, heads=4, kv_heads=2, seq_len=seq_len, head_dim=64,
                           element_size=4, budget=2 * 2**20, on_cpu=True)
    if available is None or need <= available:
        pytest.skip(f"this host has {available} bytes available, enough for {need}")
    line = _one_line_error(_cli("demo", "--device", "cpu", "--seq-len", str(seq_len),
                                "--quiet"))
    assert "needs at least" in line
    assert "of host memory" in line
    assert "is available here" in line


def test_demo_memory_check_uses_the_available_memory(monkeypatch, capsys) -> None:
    import cqs_attention.info
    from cqs_attention.cli import main

    argv = ["demo", "--device", "cpu", "--seq-len", "300", "--heads", "2", "--head-dim", "8",
            "--check-rows", "8", "--budget", "64KiB", "--quiet"]
    monkeypatch.setattr(cqs_attention.info, "host_memory_available", lambda: 50_000)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    # q, k, v, out: 4 x 2*300*8 float32 elements (kv heads default to 2), checked first
    assert "needs at least 75.0 KiB of host memory" in err
    assert "48.8 KiB is available" in err
    assert err.endswith("use a smaller --seq-len (up to about 195)")
    # the inputs fit, but not with the run the planner chose (its bytes are host memory here)
    monkeypatch.setattr(cqs_attention.info, "host_memory_available", lambda: 80_000)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "for the run on the CPU) but 78.1 KiB is available here" in err
    monkeypatch.setattr(cqs_attention.info, "host_memory_available", lambda: 10**9)
    assert main(argv) == 0


def test_demo_budget_larger_than_the_host_is_not_refused(capsys) -> None:
    """A budget is an upper bound: the run holds what its plan needs, not the budget."""
    from cqs_attention.cli import main

    assert main(["demo", "--device", "cpu", "--seq-len", "256", "--heads", "2", "--head-dim",
                 "8", "--budget", "1TiB", "--quiet", "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_demo_huge_batch_is_told_to_lower_the_batch() -> None:
    proc = _cli("demo", "--device", "cpu", "--batch", "1000000", "--quiet")
    line = _one_line_error(proc)
    from cqs_attention.info import host_memory_available

    if host_memory_available() is None:
        pytest.skip("no host memory figure here")
    assert "B=1000000" in line
    assert re.search(r"use a smaller --batch \(up to about \d+ at --seq-len 2048\)", line)


def test_demo_host_bytes_counts_the_float32_draw_and_the_cpu_budget() -> None:
    from cqs_attention.cli import demo_host_bytes

    base = {"batch": 2, "heads": 4, "kv_heads": 2, "seq_len": 100, "head_dim": 8}
    # bf16: q, k, v, out at 2 bytes plus q drawn in float32 first
    assert demo_host_bytes(**base, element_size=2, budget=None, on_cpu=False) == \
        (2 * 6400 + 2 * 3200) * 2 + 6400 * 4
    # the device budget counts on the CPU only
    assert demo_host_bytes(**base, element_size=4, budget=1000, on_cpu=True) == \
        (2 * 6400 + 2 * 3200) * 4 + 1000
    assert demo_host_bytes(**base, element_size=4, budget=1000, on_cpu=False) == \
        (2 * 6400 + 2 * 3200) * 4


# ------------------------------------------------------ demo: errors in the CLI's terms ----

def test_demo_design_too_coarse_gives_cli_advice() -> None:
    line = _one_line_error(_cli("demo", "--device", "cpu", "--design", "2", "--quiet"))
    assert "plan=None" not in line
    assert "finer plan" not in line
    assert "memory_budget" not in line
    assert "the plan of --design 2" in line
    # the advice names the options: a larger --budget, a finer --design, or no --design
    assert re.search(r"(use --budget \d+ or more|a larger --budget)", line)
    assert "a finer --design (a larger prime power)" in line
    assert line.endswith("or omit --design")


def test_demo_budget_too_small_for_any_plan_names_the_option() -> None:
    line = _one_line_error(_cli("demo", "--device", "cpu", "--budget", "1KiB", "--quiet"))
    assert "memory_budget" not in line
    assert "the --budget 1024 bytes (1.0 KiB) is too small for any plan" in line
    assert "use --budget " in line


def test_demo_unknown_backend_names_the_option() -> None:
    line = _one_line_error(_cli("demo", "--device", "cpu", "--seq-len", "64", "--backend",
                                "nope", "--quiet"))
    assert line.startswith("cqs-attention demo: error: --backend 'nope' is not")
    assert "'reference'" in line


def test_demo_short_sequence_checks_every_row(capsys) -> None:
    from cqs_attention.cli import main

    assert main(["demo", "--device", "cpu", "--seq-len", "1", "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    assert "--check-rows" not in captured.err
    import json

    assert json.loads(captured.out)["checked_rows"] == 1


def test_demo_explicit_check_rows_over_seq_len_is_refused() -> None:
    line = _one_line_error(_cli("demo", "--device", "cpu", "--seq-len", "8", "--check-rows",
                                "9", "--quiet"))
    assert line == "cqs-attention demo: error: --check-rows 9 exceeds --seq-len 8"


def test_in_cli_terms_leaves_cli_messages_alone() -> None:
    from cqs_attention.cli import in_cli_terms

    text = "--check-rows 9 exceeds --seq-len 8"
    assert in_cli_terms(text) == text


# ------------------------------------------------------------------------ help texts ----

@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["bench", "--help"]])
def test_help_is_plain_text(argv: list[str]) -> None:
    proc = _cli(*argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: cqs-attention")
    for markup in ("``", ":mod:", ":func:", ":class:", "`"):
        assert markup not in proc.stdout, (markup, proc.stdout)


def test_info_main_called_without_arguments_ignores_sys_argv(monkeypatch, capsys) -> None:
    from cqs_attention.info import main

    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "--unknown"])
    assert main() == 0
    assert "kernels in dispatch order" in capsys.readouterr().out
