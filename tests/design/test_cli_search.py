"""CLI tests for ``cqs-design search | table | quorum``."""

from __future__ import annotations

import json

import pytest

from cqs_design.cli import main


def test_search_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "13", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 4
    assert out["stats"]["complete"] is True


def test_search_none_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "43", "7", "--multiplier"]) == 1
    assert "0 found" in capsys.readouterr().out


def test_search_bad_parameters_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "12", "4"]) == 2
    err = capsys.readouterr().err
    assert "counting condition" in err
    assert "Traceback" not in err


def test_search_up_to_equivalence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "31", "6", "--up-to", "equivalence", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 1


@pytest.mark.parametrize("fmt", ["md", "csv", "json"])
def test_table(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "--max-order", "12", "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "exhaustive-multiplier-search" in out
    assert "bruck-ryser-chowla" in out


def test_quorum(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quorum", "50", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["minimum_size"] == 8
    assert main(["quorum", "14", "--compute", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["k"] == 5
    assert out["base_sets"]


# --- issue 14 / 16: every bad option refused the same way, subprocess exit codes ------------
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "cqs_design", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize(("args", "message"), [
    (("quorum", "14", "--limit", "0"), "--limit: must be an integer >= 1, got 0"),
    (("quorum", "14", "--limit", "-2"), "--limit: must be an integer >= 1, got -2"),
    (("search", "13", "4", "--limit", "0"), "--limit: must be an integer >= 1, got 0"),
    (("table", "--max-order", "5", "--search-max-order", "-1"),
     "--search-max-order: must be an integer >= 0, got -1"),
    (("table", "--max-order", "5", "--verify-singer", "-3"), "order bound >= 0, got -3"),
    (("quorum", "14", "--time-limit", "0"), "--time-limit: must be a number of seconds > 0"),
    (("search", "13", "4", "--time-limit", "-1"), "--time-limit: must be a number"),
])
def test_bad_options_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_table_takes_json_and_keeps_format_json() -> None:
    new = run_cli("table", "--max-order", "12", "--json")
    old = run_cli("table", "--max-order", "12", "--format", "json")
    assert new.returncode == old.returncode == 0
    rows = json.loads(new.stdout)
    assert [r["order"] for r in rows] == list(range(2, 13))
    keys = ("order", "v", "k", "status", "method", "computed")
    assert [[r[x] for x in keys] for r in rows] == [[r[x] for x in keys]
                                                    for r in json.loads(old.stdout)]
    assert "--format" not in run_cli("table", "--help").stdout  # hidden alias


@pytest.mark.parametrize("command", ["search", "table", "quorum", "singer", "verify"])
def test_help_is_plain_text(command: str) -> None:
    out = run_cli(command, "--help").stdout
    assert out
    for rst in (":mod:", ":func:", "``", ":class:"):
        assert rst not in out
    top = run_cli("--help").stdout
    for rst in (":mod:", ":func:", "``"):
        assert rst not in top


def test_quorum_time_limit_reports_bounds() -> None:
    start = time.perf_counter()
    proc = run_cli("quorum", "112", "--time-limit", "1", "--quiet")
    assert time.perf_counter() - start < 30
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "12 <= minimum <= 21" in proc.stderr
    # with progress (the default) the error is still one line, the last one
    proc = run_cli("quorum", "112", "--time-limit", "1", "--json")
    assert proc.returncode == 2
    assert "v = 112, size 12" in proc.stderr  # the status line
    assert "12 <= minimum <= 21" in proc.stderr.splitlines()[-1]
    assert json.loads(proc.stdout) == {**json.loads(proc.stdout), "v": 112, "complete": False,
                                       "lower_bound": 12, "upper_bound": 21}


def test_quorum_answers_from_the_table_at_once() -> None:
    proc = run_cli("quorum", "95", "--json")
    assert proc.returncode == 0
    row = json.loads(proc.stdout)
    assert row["minimum_size"] == 11
    assert row["status"] == "proven here"


def test_search_ends_when_told() -> None:
    start = time.perf_counter()
    proc = run_cli("search", "993", "32", "--time-limit", "2")
    assert time.perf_counter() - start < 40
    assert proc.returncode == 2
    assert "stopped early (time_limit)" in proc.stderr
