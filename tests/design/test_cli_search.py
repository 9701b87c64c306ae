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
