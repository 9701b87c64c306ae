"""Every command that ``--help`` lists, of both command lines, refuses bad input the same way:
exit code 2 and one line on stderr naming the option and what is valid, never a traceback.

The commands are read from the parsers, so a new command fails
:func:`test_every_command_has_bad_input_cases` until it has cases here.
"""

from __future__ import annotations

import argparse

import pytest

BAD: dict[str, list[tuple[list[str], str]]] = {
    "cqs-design": [
        (["singer", "x"], "argument q: invalid int value: 'x'"),
        (["singer", "6"], "q = 6 is not a prime power"),
        (["verify", "7"], "give the elements after V"),
        (["verify", "7", "7"], "element 7 is out of range: elements must lie in [0, 7)"),
        (["paired", "0", "0"], "v must be an integer in [2, 4611686018427387904], got 0"),
        (["normalize", str(10**22), "1", "2"], "v must be an integer in [2, "),
        (["search", "13", "5"], "counting condition k(k-1) = lam(v-1) fails"),
        (["search", "13", "4", "--time-limit", "nan"], "must be a number of seconds > 0"),
        (["search", "15", "7", "--lam", "3", "--multiplier"],
         "the multiplier theorem gives no multiplier"),
        (["table", "--max-order", "0"], "max_order must be an integer in [2, 1000000], got 0"),
        (["quorum", "5000"], "v must be an integer in [2, 4096], got 5000"),
        (["quorum", "14", "--time-limit", "x"], "expected seconds > 0 or 'none', got 'x'"),
        (["plan", "--seq-len", "0"], "seq_len must be an integer in [1, 1099511627776], got 0"),
        (["plan", "--seq-len", "100", "--design", "6"], "design=6 is not a prime power"),
        (["plot", "--seq-len", "100", "-o", "/nonexistent/dir/x.png"],
         "directory '/nonexistent/dir' does not exist"),
        (["ppc", "--max-order", "1"], "argument --max-order: must be an order >= 2, got 1"),
        (["ppc", "--order", "x"], "argument --order: expected an integer >= 1, got 'x'"),
        (["ppc", "--check", "/nonexistent.json"], "no such file: /nonexistent.json"),
        (["ppc", "--max-order", "100", "--min-order", "500"],
         "min_order must be an integer in [2, 100], got 500"),
        (["ppc", "--max-order", "100", "--shard", "2/2"],
         "argument --shard: must be K/M with 0 <= K < M, got '2/2'"),
        (["ppc", "--max-order", "100", "--shard", "x"],
         "argument --shard: must be K/M with 0 <= K < M, got 'x'"),
        (["ppc", "--max-order", "100", "--shard", "0/2"],
         "shard 0/2 needs a journal: without one its blocks are lost and no run can assemble "
         "the whole result"),
    ],
    "cqs-attention": [
        (["demo", "--seq-len", "0"], "argument --seq-len: must be an integer >= 1, got 0"),
        (["demo", "--device", "tpu"], "--device 'tpu' is not a device here"),
        (["demo", "--budget", "-5"], "--budget must be a finite size > 0 bytes, got '-5'"),
        (["demo", "--window", "-1,0"], "argument --window: window side must be >= 0, got -1"),
        (["demo", "--device", "cpu", "--design", "6"], "--design 6 is not a prime power"),
        (["demo", "--device", "cpu", "--backend", "nope"], "--backend 'nope' is not a"),
        (["bench", "--script", "/nonexistent.py"], "--script /nonexistent.py: no such file"),
        (["bench", "--", "--reps", "0"], "argument --reps: must be an integer >= 1, got 0"),
        (["bench", "--", "--plot", "/nonexistent.json", "x.png"],
         "/nonexistent.json: no such file"),
    ],
}


def _parser(cli: str) -> argparse.ArgumentParser:
    if cli == "cqs-design":
        from cqs_design.cli import build_parser
    else:
        from cqs_attention.cli import build_parser
    return build_parser()


def _main(cli: str):
    if cli == "cqs-design":
        from cqs_design.cli import main
    else:
        from cqs_attention.cli import main
    return main


def _commands(cli: str) -> set[str]:
    sub = next(a for a in _parser(cli)._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


@pytest.mark.parametrize("cli", sorted(BAD))
def test_every_command_has_bad_input_cases(cli: str) -> None:
    tried = {argv[0] for argv, _ in BAD[cli]}
    missing = _commands(cli) - tried
    assert not missing, f"add bad-input cases for {cli} {sorted(missing)} to {__file__}"


@pytest.mark.parametrize(("cli", "argv", "message"),
                         [(cli, argv, msg) for cli, cases in BAD.items()
                          for argv, msg in cases],
                         ids=[f"{cli} {' '.join(argv)}"[:60] for cli, cases in BAD.items()
                              for argv, _ in cases])
def test_bad_input_is_one_line_and_exit_2(cli: str, argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = _main(cli)(argv)
    except SystemExit as exc:  # argparse's own errors exit through the parser
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert message in lines[0]
    prog = "bench_attention" if argv[:2] == ["bench", "--"] else f"{cli} {argv[0]}"
    assert lines[0].startswith(f"{prog}: error: ")
