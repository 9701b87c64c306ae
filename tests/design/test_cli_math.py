"""Tests of the ``singer``, ``verify``, ``paired`` and ``normalize`` commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cqs_design import DifferenceSet, singer_difference_set
from cqs_design.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_singer_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "singer", "4")
    assert (code, out, err) == (0, "21 0 1 4 14 16\n", "")
    code, out, _ = run(capsys, "singer", "9", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["v"] == 91
    assert data["k"] == 10
    assert data["lam"] == 1
    assert data["q"] == 9
    assert DifferenceSet.from_dict(data) == singer_difference_set(9)


def test_singer_bad_q(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "singer", "6")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "nearest prime powers are 5 (below) and 7 (above)" in err


def test_verify_yes_and_no(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "13", "9", "3", "1", "0")
    assert code == 0
    assert "(13, 4, 1) difference set: yes" in out
    code, out, _ = run(capsys, "verify", "7", "0", "1", "2")
    assert code == 1
    assert "difference 1 occurs 2 times" in out
    code, out, _ = run(capsys, "verify", "7", "0", "1", "2", "--json")
    data = json.loads(out)
    assert code == 1
    assert data["valid"] is False
    assert "difference 1" in data["reason"]
    code, out, _ = run(capsys, "verify", "21", "0", "1", "4", "14", "16", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["valid"] is True
    assert data["order"] == 4


def test_paired_and_normalize(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "paired", "7", "0", "1", "3")[:2] == (0, "7 0 2 3\n")
    assert run(capsys, "normalize", "7", "2", "3", "5")[:2] == (0, "7 0 1 3\n")
    code, out, _ = run(capsys, "normalize", "13", "5", "6", "8", "1", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["elements"] == [0, 1, 3, 9]
    assert data["input"] == [1, 5, 6, 8]
    assert data["valid"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "7", "0", "1", "7"], "element 7 is out of range"),
        (["verify", "7", "0", "1", "1"], "element 1 appears more than once"),
        (["verify", "7"], "give the elements"),
        (["paired", "1", "0"], "v must be an integer in [2, 4611686018427387904], got 1"),
        (["normalize", "7", "-1"], "element -1 is out of range"),
        (["verify", "7", "0", "x"], "invalid int value"),
        (["singer", "1"], "smallest prime power is 2"),
        (["singer", "16410"], "not a prime power"),
        (["singer", "131072"], "exceeds SINGER_MAX_Q"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse type errors exit through the parser
        code = exc.code
    _out, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) <= 2  # argparse adds its usage line
    assert "Traceback" not in err


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cqs_design", "verify", "7", "0", "1", "3", "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid"] is True


@pytest.mark.parametrize("command", ["verify", "paired", "normalize"])
@pytest.mark.parametrize("v", [10**22, 2**63 - 1, 2**62 + 1])
def test_one_limit_and_one_message_for_v(capsys: pytest.CaptureFixture[str], command: str,
                                         v: int) -> None:
    """Issue: normalize printed "Python int too large to convert to C long" for 10^22 and a
    numpy overflow warning for 2^63 - 1, while verify and paired took both."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run(capsys, command, str(v), "1", "2")
    assert (code, out) == (2, "")
    assert err == f"cqs-design {command}: error: v must be an integer in [2, {2**62}], got {v}\n"


@pytest.mark.parametrize("command", ["verify", "paired", "normalize"])
def test_largest_v_works_without_overflow(capsys: pytest.CaptureFixture[str],
                                          command: str) -> None:
    import warnings

    v = 2**62
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, _ = run(capsys, command, str(v), str(v - 2), str(v - 1))
    if command == "verify":
        assert code == 1
    else:
        assert (code, out) == (0, f"{v} 0 1\n")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == "cqs-design 0.1.0\n"
