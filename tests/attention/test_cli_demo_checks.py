"""``cqs-attention demo`` reports bad arguments at once: before torch is imported (a typo),
and before any input is allocated (a budget too small, a backend that cannot run, a problem
larger than the host). Each case runs the CLI in a subprocess with a time limit.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests._live import ROOT

# Runs main(argv), then says whether torch was imported and the peak memory of the process.
_PROBE = """
import resource, sys
from cqs_attention.cli import main
code = main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules)
print("peak MiB:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
sys.exit(code)
"""


def _probe(*argv: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    return proc, time.monotonic() - start


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(("argv", "message"), [
    (["--device", "tpu"], "--device 'tpu' is not a device here; use auto, cpu, cuda or cuda:N"),
    (["--budget", "lots"], "--budget 'lots' is not a size; write bytes or e.g. '256MiB'"),
    (["--budget", "-5"], "--budget must be a finite size > 0 bytes, got '-5'"),
    (["--budget", "0"], "--budget must be > 0, got '0'"),
    (["--heads", "4", "--kv-heads", "3"], "--kv-heads 3 must divide --heads 4"),
    (["--tolerance", "-1"], "--tolerance must be a finite number > 0, got -1.0"),
    (["--seq-len", "10", "--check-rows", "20"], "--check-rows 20 exceeds --seq-len 10"),
    (["--no-causal", "--window", "none,none"],
     "--window none,none is no window; leave --window out"),
])
def test_argument_errors_come_before_torch(argv: list[str], message: str) -> None:
    """Issue: most demo errors took 3-7 s (torch was imported first)."""
    proc, seconds = _probe("demo", *argv)
    assert _error_line(proc) == f"cqs-attention demo: error: {message}"
    assert "torch imported: False" in proc.stdout
    assert seconds < 30  # about 0.1 s unloaded (no torch import)


@pytest.mark.parametrize(("argv", "message"), [
    (["--window", "-1,0"], "window side must be >= 0, got -1"),
    (["--window", "-5,none"], "window side must be >= 0, got -5"),
])
def test_negative_window_is_explained(argv: list[str], message: str) -> None:
    """Issue: ``--window -1,0`` gave argparse's "expected one argument"."""
    proc = subprocess.run([sys.executable, "-m", "cqs_attention", "demo", *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        f"cqs-attention demo: error: argument --window: {message}"


def test_budget_error_comes_before_any_allocation() -> None:
    """Issue: ``demo --head-dim 100000`` was silent for 40 s (q, k, v of about 10 GB drawn
    first) before its budget error."""
    proc, seconds = _probe("demo", "--device", "cpu", "--head-dim", "100000", "--quiet")
    line = _error_line(proc)
    assert line.startswith("cqs-attention demo: error: the --budget 2097152 bytes (2.0 MiB) is "
                           "too small for any plan")
    peak = int(proc.stdout.split("peak MiB:")[1])
    assert peak < 2048, peak  # q, k, v and the output would be about 10 GiB
    assert seconds < 60, seconds  # about 6 s on the 2-core box (the planner's search)


def test_backend_that_cannot_run_is_refused_before_allocation() -> None:
    proc, _ = _probe("demo", "--device", "cpu", "--backend", "fa4", "--seq-len", "1000000",
                     "--quiet")
    line = _error_line(proc)
    assert line.startswith("cqs-attention demo: error: --backend 'fa4' cannot run this call")
    assert int(proc.stdout.split("peak MiB:")[1]) < 2048  # the inputs would be 1.5 GiB


def test_budget_sizes_are_printed_with_enough_digits_to_differ() -> None:
    """Issue: "use 2122112 or more (2.0 MiB)" when the budget given was 2.0 MiB already."""
    from cqs_attention.cli import in_cli_terms

    text = in_cli_terms("memory_budget=2097152 bytes is too small for any plan: the smallest "
                        "footprint found is 2122112 bytes (x); pass memory_budget >= 2122112")
    assert text == ("the --budget 2097152 bytes (2.00 MiB) is too small for any plan: the "
                    "smallest footprint found is 2122112 bytes (x); use --budget 2122112 or "
                    "more (2.02 MiB)")
