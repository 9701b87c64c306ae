"""``cqs-design plan`` and ``cqs-design plot``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cqs_design.cli import main
from cqs_design.plans import Plan


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
    (["plot", "--seq-len", "50", "-o", "x.png"], "--design"),
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
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000
