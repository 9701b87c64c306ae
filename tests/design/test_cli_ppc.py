"""``cqs-design ppc``: the run, the check of a result file, one order, and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cqs_design.cli import main


def test_run_prints_the_summary_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ppc", "--max-order", "3000", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| orders 2..3000 | 2999 |" in out
    assert "| prime powers (Singer: a cyclic plane exists) | 466 |" in out
    assert "| open (no test excludes it) | 0 |" in out
    assert "excluded by cover" in out


def test_run_json_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert main(["ppc", "--max-order", "20000", "--block-size", "5000", "--out", str(out),
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["totals"]["open"] == 0
    assert payload["open_orders"] == []
    assert payload["orders"] == 19999
    assert main(["ppc", "--check", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is True
    assert rep["certificates_checked"] > 0
    assert main(["ppc", "--check", str(out), "--all"]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_finds_a_tampered_result(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert main(["ppc", "--max-order", "5000", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    data = json.loads(out.read_text())
    cert = data["blocks"][0]["certificates"][0]
    cert["orders"][0][3] += 5  # claim a larger prime power of a multiplicative order
    out.write_text(json.dumps(data))
    assert main(["ppc", "--check", str(out)]) == 1
    assert "does not divide the order" in capsys.readouterr().out
    data["blocks"][0]["counts"]["mann"] += 1  # bookkeeping
    out.write_text(json.dumps(data))
    assert main(["ppc", "--check", str(out), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any("counts add up to" in p for p in problems)


def test_one_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ppc", "--order", "674"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("order 674: excluded; cover:")
    assert main(["ppc", "--order", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "prime-power"
    assert main(["ppc", "--order", "1000000000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] is True


@pytest.mark.parametrize("argv", [
    ["ppc"],
    ["ppc", "--max-order", "100", "--check", "x.json"],
    ["ppc", "--max-order", "1"],
    ["ppc", "--max-order", "ten"],
    ["ppc", "--max-order", "3000000000"],
    ["ppc", "--check", "/nonexistent/result.json"],
    ["ppc", "--order", "10000000000000"],
])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err
    assert "Traceback" not in err


def test_malformed_result_and_foreign_journal_exit_2(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    assert main(["ppc", "--check", str(bad)]) == 2
    assert "not a" in capsys.readouterr().err
    j = tmp_path / "j"
    assert main(["ppc", "--max-order", "3000", "--resume", str(j), "--no-progress"]) == 0
    assert main(["ppc", "--max-order", "4000", "--resume", str(j), "--no-progress"]) == 2
    assert "belongs to another run" in capsys.readouterr().err
