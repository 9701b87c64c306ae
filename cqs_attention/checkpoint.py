"""Checkpoint and resume of long :func:`cqs_attention.attention` runs.

``attention(..., checkpoint_dir=path, checkpoint_interval=n)`` journals the finished tasks and
the float32 accumulators ``(out, lse)`` to ``path`` every ``n`` merged tasks (or every
``timedelta`` / ``"30s"``, ``"5min"``, ``"1h"``; default ``"60s"``) and once more at the end.
Calling again with the same inputs, plan, mask and directory skips the journaled tasks and
continues from the stored accumulators, so the result is bitwise the one of an uninterrupted
run. Backward passes are not checkpointed.

Files in ``path`` (all JSON with a sha256 of their body; every file written to a temporary
name, fsync'ed, then ``os.replace``'d, so a kill leaves the old or the new version):

* ``manifest.json``: the fingerprint of the call: q/k/v shapes, dtypes and a content hash
  (all bytes for inputs up to 16 MiB, else 257 sampled rows of every (batch, head)), scale,
  the plan digest (:func:`plan_digest`), the task ids this process runs, the mask (causal,
  window, a hash of ``document_ids``, ``mask_mod``'s qualified name and code).
* ``acc-NNNNNNNN.bin``: raw accumulators, ``out`` then ``lse`` (little-endian, C order).
* ``journal.json``: the commit point: the task ids merged (in order), the accumulator file
  with its size and sha256, and whether the run completed.

A checkpoint that is corrupted, truncated or written for other inputs, plan or mask raises
:class:`CheckpointError` naming what differs; it is never merged. A journal listing a task
twice, or a task this call does not run, is refused too.

>>> import tempfile, torch
>>> from cqs_attention import attention
>>> q = torch.randn(1, 2, 40, 8)
>>> d = tempfile.mkdtemp()
>>> a = attention(q, q, q, causal=True, checkpoint_dir=d, checkpoint_interval=2)
>>> b = attention(q, q, q, causal=True, checkpoint_dir=d)  # resumes: nothing left to do
>>> torch.equal(a, b)
True
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cqs_attention.merge import accumulator_dtype

__all__ = [
    "CheckpointError",
    "CheckpointOptions",
    "Journal",
    "checkpoint_options",
    "plan_digest",
    "read_journal",
]

VERSION = 1
_FULL_HASH_BYTES = 16 << 20
_SAMPLE_ROWS = 257


class CheckpointError(ValueError):
    """A checkpoint directory cannot be used: corrupted, truncated, or written for another
    call (the message names what differs)."""


# -- fingerprints --------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bytes_of(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of all of ``t`` (up to 16 MiB) or of 257 evenly spaced rows along dim 2.

    >>> tensor_digest(torch.zeros(1, 1, 4, 2))[:12]
    'full:66687aa'
    """
    nbytes = t.numel() * t.element_size()
    if t.dim() < 3 or nbytes <= _FULL_HASH_BYTES:
        return "full:" + _sha(_bytes_of(t))
    idx = torch.unique(torch.linspace(0, t.shape[2] - 1, _SAMPLE_ROWS).round().long())
    return f"rows{len(idx)}:" + _sha(_bytes_of(t.detach().index_select(2, idx.to(t.device))))


def plan_digest(plan: Any) -> str:
    """sha256 identifying a plan: its lengths, mask, design and every rectangle of every task.

    Hashes the plan's coordinate arrays (same content as its JSON, far cheaper for big
    plans).

    >>> from cqs_design.plans import make_plan
    >>> plan_digest(make_plan(30, design=2)) == plan_digest(make_plan(30, design=2))
    True
    >>> plan_digest(make_plan(30, design=2)) == plan_digest(make_plan(30, design=3))
    False
    """
    h = hashlib.sha256()
    design = getattr(plan, "design", None)
    meta = {"type": type(plan).__name__, "seq_len": plan.seq_len, "kv_len": plan.kv_len,
            "causal": bool(getattr(plan, "causal", False)),
            "window": None if getattr(plan, "window", None) is None else list(plan.window),
            "levels": getattr(plan, "levels", None),
            "design": None if design is None else [design.v, list(design.elements)],
            "schedule": getattr(plan, "schedule", "cqs"),
            "ids": [int(i) for i in (plan.task_ids if hasattr(plan, "task_ids")
                                     else [t.id for t in plan.tasks])]}
    h.update(json.dumps(meta, sort_keys=True).encode())
    if hasattr(plan, "arrays"):
        for name, arr in sorted(plan.arrays().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    else:
        for t in plan.tasks:
            h.update(repr((t.id, t.rectangles)).encode())
    return h.hexdigest()


def _mask_mod_id(fn: Any) -> str | None:
    if fn is None:
        return None
    code = getattr(fn, "__code__", None)
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    if code is None:
        return name
    return name + ":" + _sha(code.co_code + repr(code.co_consts).encode())[:16]


def make_manifest(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, spec: Any,
                  scale: float, plan: Any, task_ids: list[int], rank: tuple[int, int] | None
                  ) -> dict[str, Any]:
    """The fingerprint of one call, grouped by what it identifies."""
    acc = accumulator_dtype(q.dtype)
    return {
        "inputs": {
            "q_shape": list(q.shape), "k_shape": list(k.shape), "v_shape": list(v.shape),
            "dtype": str(q.dtype), "q_hash": tensor_digest(q), "k_hash": tensor_digest(k),
            "v_hash": tensor_digest(v), "scale": repr(float(scale)),
        },
        "plan": {"digest": plan_digest(plan),
                 "task_ids": _sha(np.asarray(task_ids, dtype=np.int64).tobytes()),
                 "tasks": len(task_ids), "rank": None if rank is None else list(rank)},
        "mask": {
            "causal": bool(spec.causal),
            "window": None if spec.window is None else list(spec.window),
            "document_ids": None if spec.q_doc is None else
            tensor_digest(spec.q_doc) + "/" + tensor_digest(spec.kv_doc),
            "mask_mod": _mask_mod_id(spec.mask_mod),
        },
        "accumulators": {"out_shape": [*q.shape[:3], v.shape[-1]], "dtype": str(acc)},
    }


# -- files ---------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _dump(body: dict[str, Any]) -> bytes:
    text = json.dumps(body, sort_keys=True)
    return json.dumps({"body": body, "sha256": _sha(text.encode())}, sort_keys=True).encode()


def _load(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_bytes())
        body, digest = raw["body"], raw["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is corrupted or truncated (not the JSON a checkpoint "
                              "writes); refusing to resume from it: delete the directory to "
                              "start over") from exc
    if _sha(json.dumps(body, sort_keys=True).encode()) != digest:
        raise CheckpointError(f"{path} is corrupted: its sha256 does not match its content; "
                              "refusing to resume from it: delete the directory to start over")
    return body


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for group in sorted(set(old) | set(new)):
        a, b = old.get(group, {}), new.get(group, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{group}.{key}: checkpoint {a.get(key)!r}, this call {b.get(key)!r}")
    return out


@dataclass
class _State:
    completed: list[int]
    out: torch.Tensor | None
    lse: torch.Tensor | None
    complete: bool
    seq: int


def read_journal(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The verified journal body of a checkpoint directory (None when there is none yet).

    Keys: ``completed`` (task ids merged, in order), ``complete``, ``seq``, ``accumulators``.
    """
    path = Path(directory) / "journal.json"
    return _load(path) if path.exists() else None


class _Store:
    """One checkpoint directory bound to one call's manifest."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.dir = directory
        self.manifest = manifest
        self.manifest_sha = _sha(json.dumps(manifest, sort_keys=True).encode())

    def open(self, task_ids: list[int]) -> _State | None:
        """Check the directory against the manifest; the stored state, or None when fresh."""
        self.dir.mkdir(parents=True, exist_ok=True)
        mpath, jpath = self.dir / "manifest.json", self.dir / "journal.json"
        if not mpath.exists():
            if jpath.exists():
                raise CheckpointError(f"{self.dir} has a journal.json but no manifest.json; "
                                      "refusing to resume from it")
            _atomic_write(mpath, _dump(self.manifest))
            return None
        old = _load(mpath)
        diffs = _diff(old, self.manifest)
        if diffs:
            what = sorted({d.split(".")[0] for d in diffs})
            raise CheckpointError(
                f"checkpoint in {self.dir} was written for other {' and '.join(what)}: "
                + "; ".join(diffs) + ". Use another checkpoint_dir, or delete this one to "
                "start over")
        if not jpath.exists():
            return None
        body = _load(jpath)
        if body.get("manifest") != self.manifest_sha:
            raise CheckpointError(f"{jpath} belongs to another manifest; refusing to resume")
        done = [int(i) for i in body["completed"]]
        if len(set(done)) != len(done):
            raise CheckpointError(f"{jpath} lists a task twice; refusing to resume")
        extra = set(done) - set(task_ids)
        if extra:
            raise CheckpointError(f"{jpath} lists tasks {sorted(extra)[:10]} that this call "
                                  "does not run; refusing to resume")
        return _State(done, *self._read_acc(body), bool(body["complete"]), int(body["seq"]))

    def _read_acc(self, body: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        info = body["accumulators"]
        path = self.dir / info["file"]
        shape = self.manifest["accumulators"]["out_shape"]
        dtype = getattr(torch, self.manifest["accumulators"]["dtype"].split(".")[-1])
        esz = torch.empty((), dtype=dtype).element_size()
        n_out = int(np.prod(shape))
        n_lse = int(np.prod(shape[:3]))
        want = (n_out + n_lse) * esz
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"accumulator file {path} named by the journal is missing; "
                                  "refusing to resume") from exc
        if len(data) != want or len(data) != info["bytes"]:
            raise CheckpointError(f"accumulator file {path} is truncated or has the wrong size "
                                  f"({len(data)} bytes, expected {want}); refusing to resume")
        if _sha(data) != info["sha256"]:
            raise CheckpointError(f"accumulator file {path} is corrupted: sha256 mismatch; "
                                  "refusing to resume")
        flat = torch.frombuffer(bytearray(data), dtype=dtype)
        return flat[:n_out].reshape(shape), flat[n_out:].reshape(shape[:3])

    def save(self, state: _State, acc_out: torch.Tensor, acc_lse: torch.Tensor) -> None:
        state.seq += 1
        name = f"acc-{state.seq:08d}.bin"
        data = _bytes_of(acc_out) + _bytes_of(acc_lse)
        _atomic_write(self.dir / name, data)
        body = {"version": VERSION, "manifest": self.manifest_sha, "seq": state.seq,
                "completed": list(state.completed), "complete": state.complete,
                "accumulators": {"file": name, "bytes": len(data), "sha256": _sha(data)}}
        _atomic_write(self.dir / "journal.json", _dump(body))
        for old in self.dir.glob("acc-*.bin"):
            if old.name != name:
                old.unlink(missing_ok=True)


# -- options and the journal --------------------------------------------------------
@dataclass
class CheckpointOptions:
    """Where and how often one call checkpoints."""

    directory: Path
    every_tasks: int | None = None
    every_seconds: float | None = None
    rank: tuple[int, int] | None = None


_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}


def checkpoint_options(checkpoint_dir: Any, checkpoint_interval: Any = None, *,
                       dist: Any = None) -> CheckpointOptions:
    """Validate ``checkpoint_dir`` / ``checkpoint_interval``.

    ``checkpoint_interval``: a positive int (merged tasks), a positive ``timedelta``, or a
    string ``"<number><s|min|h>"``; None: ``"60s"``. With a process group each rank uses the
    sub-directory ``rank<r>-of-<n>``.

    >>> checkpoint_options("/tmp/x", "5min").every_seconds
    300.0
    >>> checkpoint_options("/tmp/x", 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cqs_attention.checkpoint.CheckpointError: checkpoint_interval must be a positive int ...
    """
    if checkpoint_dir is None:
        raise CheckpointError("checkpoint_interval was given without checkpoint_dir; pass a "
                              "directory path")
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint_dir must be a path (str or os.PathLike), got "
                              f"{type(checkpoint_dir).__name__}")
    directory = Path(checkpoint_dir)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"checkpoint_dir={str(directory)!r} exists and is not a directory")
    bad = CheckpointError("checkpoint_interval must be a positive int (tasks), a timedelta or "
                          "a string like '30s', '5min', '1h'; got " + repr(checkpoint_interval))
    tasks = seconds = None
    iv = "60s" if checkpoint_interval is None else checkpoint_interval
    if isinstance(iv, bool):
        raise bad
    if isinstance(iv, int):
        if iv <= 0:
            raise bad
        tasks = iv
    elif isinstance(iv, datetime.timedelta):
        seconds = iv.total_seconds()
    elif isinstance(iv, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|min|m|h)\s*", iv)
        if m is None:
            raise bad
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise bad
    if seconds is not None and not seconds > 0:
        raise bad
    rank = None
    if dist is not None:
        rank = (dist.rank, dist.world_size)
        directory = directory / f"rank{dist.rank}-of-{dist.world_size}"
    return CheckpointOptions(directory, tasks, seconds, rank)


class Journal:
    """The checkpoint journal of one run: which tasks are committed, and the accumulators.

    The driver calls :meth:`commit` after every task whose steps are all merged; when a
    save is due (every ``every_tasks`` commits or ``every_seconds``), ``snapshot()`` is called:
    it flushes the run (every accumulator row written back, every copy finished), so the saved
    accumulators hold exactly the committed tasks, and the journal lists exactly those.

    Parameters
    ----------
    opts
        From :func:`checkpoint_options`.
    manifest
        From :func:`make_manifest`.
    task_ids
        The ids of the tasks this process runs (its shard, for a rank).
    """

    def __init__(self, opts: CheckpointOptions, manifest: dict[str, Any],
                 task_ids: list[int]) -> None:
        self.opts = opts
        self.store = _Store(opts.directory, manifest)
        self.task_ids = task_ids
        self.state = _State([], None, None, False, 0)
        self._since = 0
        self._last = time.perf_counter()
        self.seconds = 0.0

    def resume(self) -> tuple[set[int], tuple[torch.Tensor, torch.Tensor] | None, bool]:
        """``(done task ids, stored (out, lse) or None, complete)``; checks the directory."""
        t0 = time.perf_counter()
        try:
            state = self.store.open(self.task_ids)
        except OSError as exc:
            raise CheckpointError(f"checkpoint_dir={str(self.opts.directory)!r} cannot be "
                                  f"used: {exc.strerror or exc}") from None
        if state is not None:
            self.state = state
        self.seconds += time.perf_counter() - t0
        acc = None if self.state.out is None else (self.state.out, self.state.lse)
        return set(self.state.completed), acc, self.state.complete

    def commit(self, task_id: int, snapshot: Any) -> None:
        """Record ``task_id`` as merged; save when due (``snapshot() -> (out, lse)``)."""
        if task_id in set(self.state.completed[-1:]) or task_id in self.state.completed:
            raise RuntimeError(f"task {task_id} would be committed twice (checkpoint journal)")
        self.state.completed.append(task_id)
        self._since += 1
        now = time.perf_counter()
        opts = self.opts
        due = ((opts.every_tasks is not None and self._since >= opts.every_tasks)
               or (opts.every_seconds is not None and now - self._last >= opts.every_seconds))
        if due:
            acc_out, acc_lse = snapshot()
            self.store.save(self.state, acc_out, acc_lse)
            self._since, self._last = 0, time.perf_counter()
            self.seconds += self._last - now

    def finish(self, snapshot: Any) -> None:
        """Save the final accumulators and mark the journal complete."""
        if self.state.complete:
            return
        t0 = time.perf_counter()
        acc_out, acc_lse = snapshot()
        self.state.complete = True
        self.store.save(self.state, acc_out, acc_lse)
        self.seconds += time.perf_counter() - t0
