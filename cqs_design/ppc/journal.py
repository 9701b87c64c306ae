"""The on-disk journal of a verification run: one file per finished block, so it can resume.

Layout of a journal directory::

    meta.json                  min_order, max_order, block_size, w_limit, format
    blocks/000000000002.json   one BlockResult per finished block, named by its first order

Each block file is written to a temporary name and renamed, so a run killed at any moment
leaves only whole blocks; :meth:`Journal.done` lists them and a resumed run skips them.  A
journal refuses to resume a run with other parameters (another ``max_order`` or block size
would give other blocks).

>>> import tempfile
>>> from cqs_design.ppc.sieve import BlockResult
>>> with tempfile.TemporaryDirectory() as d:
...     j = Journal.open(d, max_order=100, block_size=50, w_limit=100)
...     j.write(BlockResult(2, 52, {"brc": 1}))
...     sorted(Journal.open(d, max_order=100, block_size=50, w_limit=100).done())
[2]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cqs_design.ppc.sieve import BlockResult

__all__ = ["FORMAT", "Journal", "JournalError"]

FORMAT = "cqs-ppc-journal/1"


class JournalError(ValueError):
    """A journal directory that cannot be used for this run (the message says why)."""


def _write_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


class Journal:
    """A directory of finished blocks for one ``(max_order, block_size, w_limit)`` run."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, max_order: int, block_size: int,
             w_limit: int | None, min_order: int = 2) -> Journal:
        """Open (or create) the journal at ``path`` for these parameters.

        Raises
        ------
        JournalError
            If ``path`` holds a journal of a run with other parameters, or is not a journal.
        """
        root = Path(path)
        meta = {"format": FORMAT, "min_order": min_order, "max_order": max_order,
                "block_size": block_size, "w_limit": w_limit}
        meta_path = root / "meta.json"
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except json.JSONDecodeError as exc:
                raise JournalError(f"{meta_path} is not valid JSON: {exc}") from None
            if old.get("format") != FORMAT:
                raise JournalError(f"{root} is not a {FORMAT} journal")
            diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
            if diff:
                raise JournalError(
                    f"journal {root} belongs to another run: "
                    + ", ".join(f"{k} = {a} there, {b} here" for k, (a, b) in diff.items()))
        elif root.exists() and any(root.iterdir()):
            raise JournalError(f"{root} exists, is not empty and has no meta.json")
        else:
            (root / "blocks").mkdir(parents=True, exist_ok=True)
            _write_atomic(meta_path, meta)
        (root / "blocks").mkdir(exist_ok=True)
        return cls(root, meta)

    def _block_path(self, lo: int) -> Path:
        return self.path / "blocks" / f"{lo:012d}.json"

    def done(self) -> dict[int, BlockResult]:
        """The finished blocks, by first order (unreadable leftovers are ignored)."""
        out = {}
        for f in sorted((self.path / "blocks").glob("*.json")):
            try:
                r = BlockResult.from_dict(json.loads(f.read_text()))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            out[r.lo] = r
        return out

    def write(self, result: BlockResult) -> None:
        """Record a finished block (atomically)."""
        _write_atomic(self._block_path(result.lo), result.to_dict())
