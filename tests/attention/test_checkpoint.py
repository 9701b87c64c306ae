"""Checkpoint/resume: a real SIGKILL mid-run, bitwise resume, corrupted / truncated /
mismatched checkpoints refused, every task merged exactly once."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cqs_attention import attention, last_run_stats, reference_attention
from cqs_attention.checkpoint import CheckpointError, checkpoint_options, read_journal
from cqs_attention.testing import task_hook
from cqs_design.plans import make_plan

WORKER = Path(__file__).with_name("_ckpt_worker.py")
_spec = importlib.util.spec_from_file_location("_ckpt_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)
N_TASKS = 13  # make_plan(200, design=3): v = 13


class _Crash(Exception):
    pass


def _crash_after(n: int):
    """A task hook that raises before the (n+1)-th task: an in-process stand-in for a kill."""
    seen: list[int] = []

    def hook(task_id: int, attempt: int) -> None:
        if len(seen) == n:
            raise _Crash
        seen.append(task_id)

    return hook


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[torch.Tensor, torch.Tensor]:
    return worker.run(tmp_path_factory.mktemp("full"), checkpoint_interval=1)


@pytest.fixture
def partial(tmp_path) -> Path:
    """A checkpoint directory holding 5 of the 13 tasks."""
    with task_hook(_crash_after(5)), pytest.raises(_Crash):
        worker.run(tmp_path, checkpoint_interval=1)
    assert len(read_journal(tmp_path)["completed"]) == 5
    return tmp_path


def test_uninterrupted_checkpointed_run_is_the_plain_run(uninterrupted, tmp_path):
    q, k, v = worker.inputs()
    plain = attention(q, k, v, causal=True, plan=make_plan(200, design=3, causal=True),
                      return_lse=True)
    assert torch.equal(uninterrupted[0], plain[0])
    assert torch.equal(uninterrupted[1], plain[1])
    ref, _ref_lse = reference_attention(q.double(), k.double(), v.double(), causal=True)
    assert ((uninterrupted[0].double() - ref).norm() / ref.norm()) < 1e-5


def test_sigkill_mid_run_then_resume_is_bitwise_the_uninterrupted_run(uninterrupted, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), "6"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            journal = (read_journal(tmp_path) if (tmp_path / "journal.json").exists()
                       else None)
            if journal is not None and len(journal["completed"]) >= 6:
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = read_journal(tmp_path)["completed"]
    assert len(done_before) == 6
    assert not read_journal(tmp_path)["complete"]
    ran: list[int] = []
    with task_hook(lambda tid, attempt: ran.append(tid)):
        out, lse = worker.run(tmp_path, checkpoint_interval=1)
    assert sorted(ran + done_before) == list(range(N_TASKS))  # each task exactly once
    assert torch.equal(out, uninterrupted[0])
    assert torch.equal(lse, uninterrupted[1])
    journal = read_journal(tmp_path)
    assert journal["complete"]
    assert sorted(journal["completed"]) == list(range(N_TASKS))
    assert len(list(tmp_path.glob("acc-*.bin"))) == 1
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("interval", [1, 3, datetime.timedelta(0), "0.0001s"])
def test_resume_after_crash_is_bitwise(uninterrupted, partial, interval):
    if interval == datetime.timedelta(0):
        interval = datetime.timedelta(microseconds=1)
    out, lse = worker.run(partial, checkpoint_interval=interval)
    assert last_run_stats().tasks == N_TASKS - 5
    assert torch.equal(out, uninterrupted[0])
    assert torch.equal(lse, uninterrupted[1])


def test_completed_checkpoint_runs_nothing(uninterrupted, partial):
    worker.run(partial)
    out, lse = worker.run(partial)
    assert last_run_stats().tasks == 0
    assert torch.equal(out, uninterrupted[0])
    assert torch.equal(lse, uninterrupted[1])


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("what", "match"), [
    ("flip_acc", "corrupted: sha256"), ("truncate_acc", "truncated"),
    ("flip_journal", "corrupted"), ("truncate_journal", "corrupted or truncated"),
    ("flip_manifest", "corrupted"), ("missing_acc", "missing"),
])
def test_damaged_checkpoint_is_refused(partial, what, match):
    acc = next(partial.glob("acc-*.bin"))
    journal = partial / "journal.json"
    if what == "flip_acc":
        _flip(acc, acc.stat().st_size // 2)
    elif what == "truncate_acc":
        acc.write_bytes(acc.read_bytes()[:-4])
    elif what == "flip_journal":
        text = journal.read_text().replace('"complete": false', '"complete": true ')
        journal.write_text(text)
    elif what == "truncate_journal":
        journal.write_bytes(journal.read_bytes()[:-10])
    elif what == "flip_manifest":
        m = partial / "manifest.json"
        m.write_text(m.read_text().replace('"causal": true', '"causal": 1   '))
    else:
        acc.unlink()
    with pytest.raises(CheckpointError, match=match):
        worker.run(partial)


def test_journal_listing_a_task_twice_is_refused(partial):
    import hashlib

    journal = partial / "journal.json"
    raw = json.loads(journal.read_text())
    raw["body"]["completed"].append(raw["body"]["completed"][0])
    raw["sha256"] = hashlib.sha256(json.dumps(raw["body"], sort_keys=True).encode()).hexdigest()
    journal.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="twice"):
        worker.run(partial)


def test_mismatched_checkpoint_is_refused_naming_what_differs(partial):
    q, k, v = worker.inputs()
    plan = make_plan(200, design=3, causal=True)
    q2 = q.clone()
    q2[0, 1, 123, 4] += 1e-3
    with pytest.raises(CheckpointError, match=r"other inputs: inputs\.q_hash"):
        attention(q2, k, v, causal=True, plan=plan, checkpoint_dir=partial)
    with pytest.raises(CheckpointError, match=r"other plan: plan\.digest"):
        attention(q, k, v, causal=True, plan=make_plan(200, design=2, causal=True),
                  checkpoint_dir=partial)
    with pytest.raises(CheckpointError, match=r"other mask: mask\.window"):
        attention(q, k, v, causal=True, window=(50, None), plan=plan, checkpoint_dir=partial)
    with pytest.raises(CheckpointError, match=r"mask\.mask_mod"):
        attention(q, k, v, causal=True, plan=plan, checkpoint_dir=partial,
                  mask_mod=lambda b, h, i, j: i >= j)
    with pytest.raises(CheckpointError, match=r"inputs\.scale"):
        attention(q, k, v, causal=True, plan=plan, scale=0.3, checkpoint_dir=partial)
    with pytest.raises(CheckpointError, match=r"inputs\.dtype"):
        attention(q.double(), k.double(), v.double(), causal=True, plan=plan,
                  checkpoint_dir=partial)
    # nothing was merged or rewritten by the refused calls
    assert len(read_journal(partial)["completed"]) == 5


def test_masks_gqa_and_backward_with_checkpoint(tmp_path, make_qkv):
    q, k, v = make_qkv(1, 4, 90, 8, hkv=2, dtype=torch.float32, seed=3)
    docs = torch.tensor([0] * 40 + [1] * 50)
    kw = {"window": (30, 3), "document_ids": docs, "plan": make_plan(90, design=2, window=(30, 3))}
    with task_hook(_crash_after(3)), pytest.raises(_Crash):
        attention(q, k, v, checkpoint_dir=tmp_path, checkpoint_interval=1, **kw)
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = attention(qg, kg, vg, checkpoint_dir=tmp_path, **kw)
    out.backward(torch.ones_like(out))
    qr, kr, vr = (t.double().requires_grad_(True) for t in (q, k, v))
    ref, _ = reference_attention(qr, kr, vr, window=(30, 3), document_ids=docs)
    ref.backward(torch.ones_like(ref))
    assert ((out.detach().double() - ref).norm() / ref.norm()) < 1e-5
    for a, b in ((qg, qr), (kg, kr), (vg, vr)):
        assert ((a.grad.double() - b.grad).norm() / b.grad.norm()) < 1e-5


@pytest.mark.parametrize("bad", [0, -2, True, 1.5, "soon", "0s", datetime.timedelta(0)])
def test_bad_interval_is_refused(tmp_path, bad):
    with pytest.raises(CheckpointError, match="checkpoint_interval"):
        checkpoint_options(tmp_path, bad)


def test_bad_directory_is_refused(tmp_path):
    q = torch.randn(1, 1, 10, 4)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        attention(q, q, q, checkpoint_dir=f)
    with pytest.raises(CheckpointError, match="without checkpoint_dir"):
        attention(q, q, q, checkpoint_interval=2)
    with pytest.raises(CheckpointError, match="must be a path"):
        attention(q, q, q, checkpoint_dir=3)
