"""The resumable journal: a run stopped mid-way (an exception, or SIGKILL of the CLI) and then
resumed gives the same result as a run that was never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cqs_design.ppc.journal import Journal, JournalError
from cqs_design.ppc.sieve import BlockResult
from cqs_design.ppc.verification import PPCResult, verify

ROOT = Path(__file__).resolve().parents[2]


def _essence(r: PPCResult) -> list[dict[str, Any]]:
    """The blocks without their timings."""
    return [{k: v for k, v in b.to_dict().items() if k != "seconds"} for b in r.blocks]


class _Stop(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    reference = verify(60_000, block_size=7_000)
    done: list[int] = []

    def stop_after_three(block: BlockResult) -> None:
        done.append(block.lo)
        if len(done) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        verify(60_000, block_size=7_000, journal=tmp_path, on_block=stop_after_three)
    assert len(list((tmp_path / "blocks").glob("*.json"))) == 3
    resumed = verify(60_000, block_size=7_000, journal=tmp_path)
    assert resumed.info["blocks_resumed"] == 3
    assert _essence(resumed) == _essence(reference)
    again = verify(60_000, block_size=7_000, journal=tmp_path)  # everything journaled
    assert again.info["blocks_resumed"] == again.info["blocks"] == 9
    assert _essence(again) == _essence(reference)


def test_journal_refuses_another_run(tmp_path: Path) -> None:
    verify(5_000, block_size=1_000, journal=tmp_path)
    with pytest.raises(JournalError, match="block_size = 1000 there, 2000 here"):
        verify(5_000, block_size=2_000, journal=tmp_path)
    with pytest.raises(JournalError, match="max_order = 5000 there, 6000 here"):
        verify(6_000, block_size=1_000, journal=tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(JournalError, match=r"not empty and has no meta\.json"):
        Journal.open(other, max_order=10, block_size=5, w_limit=None)


def test_journal_ignores_a_torn_block_file(tmp_path: Path) -> None:
    verify(5_000, block_size=1_000, journal=tmp_path)
    (tmp_path / "blocks" / f"{1002:012d}.json").write_text('{"lo": 1002, "hi"')  # torn
    r = verify(5_000, block_size=1_000, journal=tmp_path)
    assert r.info["blocks_resumed"] == 4
    assert _essence(r) == _essence(verify(5_000, block_size=1_000))


def test_sigkill_mid_run_then_resume_gives_the_same_result(tmp_path: Path) -> None:
    journal, out = tmp_path / "journal", tmp_path / "result.json"
    cmd = [sys.executable, "-m", "cqs_design", "ppc", "--max-order", "600000",
           "--block-size", "20000", "--resume", str(journal), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if len(list((journal / "blocks").glob("*.json"))) >= 3 or proc.poll() is not None:
                break
            time.sleep(0.05)
        finished_early = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed_with = len(list((journal / "blocks").glob("*.json")))
    assert killed_with >= 3
    assert finished_early or killed_with < 30  # it really stopped part of the way
    done = subprocess.run([*cmd, "--out", str(out), "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["info"]["blocks_resumed"] >= killed_with - 1
    assert payload["totals"]["open"] == 0
    assert _essence(PPCResult.load(out)) == _essence(verify(600_000, block_size=20_000))
