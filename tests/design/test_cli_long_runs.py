"""No silent minute in ``cqs-design``: the long commands (``quorum`` past the stored table,
``search``) show progress from the start, ``quorum`` stops by default with the known bounds,
``search`` uses the multiplier theorem where it applies, and Ctrl-C (SIGINT) stops them.

Time limits are generous (the shared 2-core box can be loaded) but real: each first progress
line appears within about a second there.
"""

from __future__ import annotations

import json
import time

import pytest

from cqs_design.cli import main
from tests._live import LiveProcess

#: seconds within which the first progress output must appear (about 1 s unloaded)
FIRST_OUTPUT = 20


def test_quorum_past_the_table_shows_progress_and_stops_on_ctrl_c() -> None:
    with LiveProcess("cqs_design", "quorum", "112") as run:
        run.wait_for(r"v = 112, size 12: [0-9.]+k? nodes", stream="stderr",
                     timeout=FIRST_OUTPUT)
        run.wait_for(r"nodes/s", stream="stderr", timeout=FIRST_OUTPUT + 10)  # it moves
        run.interrupt()
        code, waited = run.finish(timeout=30)
    assert code == 130
    assert waited < 15
    assert run.stderr.rstrip().endswith("cqs-design quorum: interrupted")
    assert "Traceback" not in run.stderr


def test_quorum_has_a_default_time_limit_that_reports_the_bounds(monkeypatch, capsys) -> None:
    import cqs_design.cli.search as search_cli

    assert search_cli.DEFAULT_QUORUM_TIME_LIMIT == 60
    monkeypatch.setattr(search_cli, "DEFAULT_QUORUM_TIME_LIMIT", 1.0)
    start = time.perf_counter()
    assert main(["quorum", "112", "--quiet"]) == 2
    assert time.perf_counter() - start < 30
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not decided in 1.0 s: 12 <= minimum <= 21" in err


def test_quorum_time_limit_none_means_no_limit(capsys) -> None:
    assert main(["quorum", "30", "--compute", "--time-limit", "none", "--quiet",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["k"] == 7


@pytest.mark.parametrize(("args", "code", "found"), [
    (("search", "133", "12"), 0, 36),
    (("search", "157", "13"), 1, 0),
])
def test_search_uses_the_multiplier_theorem_by_default(args, code, found) -> None:
    with LiveProcess("cqs_design", *args, "--json") as run:
        rc, _ = run.finish(timeout=60)  # 0.1 s of search; was more than 60 s
    assert rc == code, run.stderr
    out = json.loads(run.stdout)
    assert out["count"] == found
    assert out["stats"]["complete"] is True
    assert out["stats"]["method"] == "multiplier-orbits"
    assert out["method"].startswith("Hall's multiplier theorem applies")


def test_search_says_which_method_it_used(capsys) -> None:
    assert main(["search", "13", "4", "--quiet"]) == 0
    assert "method: Hall's multiplier theorem applies" in capsys.readouterr().out
    assert main(["search", "13", "4", "--quiet", "--no-multiplier"]) == 0
    out = capsys.readouterr().out
    assert "search: backtrack" in out
    assert "method: plain backtracking (--no-multiplier)" in out
    assert main(["search", "15", "7", "--lam", "3", "--quiet"]) == 0
    assert "the multiplier theorem does not apply: no multiplier prime" in \
        capsys.readouterr().out


def test_backtracking_search_shows_progress_and_stops_on_ctrl_c() -> None:
    with LiveProcess("cqs_design", "search", "133", "12", "--no-multiplier") as run:
        run.wait_for(r"search \(133,12,1\)", stream="stderr", timeout=FIRST_OUTPUT)
        run.wait_for(r"nodes=", stream="stderr", timeout=FIRST_OUTPUT + 20)
        run.interrupt()
        code, waited = run.finish(timeout=30)
    assert code == 130
    assert waited < 15
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("cqs-design search: search for (133,12,1) difference sets "
                           "interrupted after")
    assert "INCOMPLETE" in last


def test_quiet_silences_progress(capsys) -> None:
    assert main(["quorum", "40", "--compute", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["table", "--max-order", "5", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
