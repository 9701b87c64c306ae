"""``cqs-design plan`` and ``cqs-design plot``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cqs_design.cli import main
from cqs_design.plans import Plan

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def cli(*argv: str, cwd: Path | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    """``python -m cqs_design ARGV`` in a subprocess (this checkout first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "cqs_design", *argv], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout, check=False)


def assert_usage_error(result: subprocess.CompletedProcess[str], match: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert match in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_json_is_a_valid_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--seq-len", "100", "--design", "2", "--causal",
                 "--window", "20", "none", "--json"]) == 0
    out = capsys.readouterr().out
    plan = Plan.from_json(out)
    assert plan.causal
    assert plan.window == (20, None)
    assert json.loads(out)["design"]["v"] == 7


def test_plan_max_task_tokens_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--seq-len", "4096", "--max-task-tokens", "1024", "--validate"]) == 0
    out = capsys.readouterr().out
    assert "v=21" in out
    assert "validated" in out
    max_tokens = int(out.split("task tokens: max ")[1].split()[0])
    assert max_tokens <= 1024


def test_plan_levels_and_cross(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--seq-len", "300", "--kv-len", "200", "--design", "2",
                 "--levels", "2", "--json"]) == 0
    plan = Plan.from_json(capsys.readouterr().out)
    assert (plan.seq_len, plan.kv_len, plan.levels) == (300, 200, 2)


@pytest.mark.parametrize(("argv", "match"), [
    (["plan", "--seq-len", "5"], "no Singer design fits"),
    (["plan", "--seq-len", "50", "--design", "6"], "not a prime power"),
    (["plan", "--seq-len", "50", "--window", "x", "3"], "window side must be"),
    (["plan", "--seq-len", "50", "--window", "-1", "3"], "window side must be"),
    (["plot", "--seq-len", "50", "--design", "2"], "-o/--output"),
    (["plan", "--seq-len", "100", "--max-task-tokens", "1", "--design", "2"],
     "--max-task-tokens and --design cannot be combined"),
    (["plan", "--seq-len", "100", "--schedule", "query_blocks", "--design", "2"],
     "--design applies to --schedule cqs only"),
    (["plan", "--seq-len", "100", "--schedule", "kv_blocks", "--levels", "2"],
     "--levels applies to --schedule cqs only"),
    (["plan", "--seq-len", "100", "--block-q", "10"], "--block-q applies to --schedule"),
    (["plan", "--seq-len", "100", "--summary"], "--summary only changes what --json prints"),
    (["plan", "--seq-len", "100", "--schedule", "rows"], "invalid choice"),
    (["plot", "--seq-len", "100000", "--design", "2", "-o", "x.png"], "too large to draw"),
])
def test_bad_usage_exits_2(argv: list[str], match: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert match in err
    assert "Traceback" not in err


def test_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "cover.png"
    assert main(["plot", "--seq-len", "63", "--design", "2", "--levels", "2", "--causal",
                 "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == PNG
    assert len(data) > 1000


def test_plot_without_design_draws_the_default_plan(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "d.png"
    assert main(["plot", "--seq-len", "50", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG


def test_plot_writes_exactly_the_path_given(tmp_path: Path) -> None:
    """``-o x`` used to write x.png and report "wrote x"."""
    pytest.importorskip("matplotlib")
    r = cli("plot", "--seq-len", "30", "--design", "2", "-o", "x", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote x (PNG, ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert (tmp_path / "x").read_bytes()[:8] == PNG
    r = cli("plot", "--seq-len", "30", "--design", "2", "-o", "c.svg", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["wrote"] == "c.svg"
    assert info["format"] == "svg"
    assert info["tasks"] == 7
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:500]


def test_plot_block_schedule(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "b.png"
    assert main(["plot", "--seq-len", "40", "--schedule", "kv_blocks", "--block-q", "8",
                 "--block-kv", "10", "--causal", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize(("output", "match"), [
    ("/nonexistent/dir/x.png", "directory '/nonexistent/dir' does not exist"),
    ("", "-o/--output is empty"),
    ("   ", "-o/--output is empty"),
    ("{tmp}", "is a directory"),
    ("{tmp}/", "is a directory"),
    ("{tmp}/x.notanimage", "unknown image suffix '.notanimage'"),
])
def test_plot_bad_output_paths(output: str, match: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = cli("plot", "--seq-len", "30", "--design", "2", "-o", output.format(tmp=tmp_path))
    assert_usage_error(r, match)
    assert list(tmp_path.iterdir()) == []
    assert not Path(str(tmp_path) + ".png").exists()


def test_plan_conflicting_options_in_a_subprocess() -> None:
    r = cli("plan", "--seq-len", "100", "--max-task-tokens", "1", "--design", "2")
    assert_usage_error(r, "--max-task-tokens and --design cannot be combined")


def test_plan_at_a_billion_tokens() -> None:
    """It used to fail: "q = 31607 exceeds SINGER_MAX_Q"."""
    r = cli("plan", "--seq-len", "1000000000", "--json", "--summary", timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["seq_len"] == 10**9
    assert info["rectangles"] <= 1 << 25
    assert info["pairs_needed"] == info["pairs_computed"] == 10**18
    assert "stays under" in info["chosen_because"]


def test_plan_block_schedule_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--seq-len", "100", "--kv-len", "70", "--schedule", "query_blocks",
                 "--block-q", "30", "--causal", "--json"]) == 0
    plan = Plan.from_json(capsys.readouterr().out)
    assert (plan.schedule, plan.block_q, plan.block_kv) == ("query_blocks", 30, 70)
    assert main(["plan", "--seq-len", "100", "--schedule", "kv_blocks", "--block-kv", "30"]) == 0
    out = capsys.readouterr().out
    assert "schedule: kv_blocks block_q=100 block_kv=30" in out


def test_summary_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--seq-len", "100", "--design", "2", "--validate", "--json",
                 "--summary"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["validated"] is True
    assert info["design"]["v"] == 7
    assert info["tasks"] == 7


@pytest.mark.parametrize("argv", [["--help"], ["plan", "--help"], ["plot", "--help"]])
def test_help_is_plain_text(argv: list[str]) -> None:
    r = cli(*argv)
    assert r.returncode == 0
    for raw in ("``", ":mod:", ":func:", ":class:", ":meth:"):
        assert raw not in r.stdout
