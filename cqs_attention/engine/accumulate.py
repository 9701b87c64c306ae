"""Accumulate: the accumulator rows of one side of the attention, on the device or at home.

A :class:`RowStore` owns float32 (float64 for float64 inputs) accumulator tensors whose dim 2
is the row (token) axis: ``(out, lse)`` for the forward, ``dq`` or ``(dk, dv)`` for the
backward. Steps merge into a :class:`Residency`: device tensors holding some rows.

* ``placement="device"``: the accumulators live on the compute device, initialised once; a
  residency is the global tensors themselves (local row = global row). Nothing moves.
* ``placement="host"``: the accumulators live in (pinned) home memory; a residency is a device
  buffer over the rows of a step's side. Opening it copies the rows that hold data (``written``)
  to the device and initialises the others there (a row's first visit sends nothing); closing it
  writes the rows back on the D2H stream. With ``finalize_to`` (forward only), a row that no
  later task touches (``remaining == 0``) is written straight into the final output, converted
  to its dtype, instead of back into the accumulators.
* ``full=True`` (checkpointed and distributed runs): the home accumulators are initialised in
  full and every row counts as written, so a snapshot is always the complete state; no row is
  finalised during the run.

A run of one kernel call (accumulators ``"none"``) has a :class:`ResultStore` instead: the
call's outputs are the results, taken as they are (no accumulator, no merge); it cannot take a
second call, so the driver switches placement rather than split its step.

The merge itself is :func:`cqs_attention.merge.merge_partials_` (the package's one
log-sum-exp merge) for ``(out, lse)`` and a sum for gradients; both compute every temporary
before the first write, so an out-of-memory error leaves the accumulators untouched. The
driver records merged call ids, so every call is merged exactly once.

>>> import torch
>>> from cqs_attention.engine.transport import Transport
>>> tr = Transport(torch.device("cpu", 0), streamed=True)
>>> store = RowStore([torch.zeros(1, 1, 6, 2), torch.full((1, 1, 6), float("-inf"))],
...                  inits=[0.0, float("-inf")], transport=tr, placement="host")
>>> res = store.open(((2, 4),))
>>> res.tensors[0].shape, res.local(3)
(torch.Size([1, 1, 2, 2]), 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from cqs_attention.engine.transport import Transport, host_empty, local_offsets, row_layout
from cqs_attention.merge import merge_partials_
from cqs_design.plans.intervals import ranges_overlap

__all__ = ["Residency", "ResultStore", "Results", "RowStore"]

Range = tuple[int, int]


def _runs(flags: np.ndarray, base: int) -> list[tuple[int, int, bool]]:
    """Maximal runs ``(start, end, value)`` of a bool array, offset by ``base``.

    >>> _runs(np.array([True, True, False, True]), 10)
    [(10, 12, True), (12, 13, False), (13, 14, True)]
    """
    if len(flags) == 0:
        return []
    cut = np.flatnonzero(flags[1:] != flags[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(flags)]])
    return [(base + int(s), base + int(e), bool(flags[s])) for s, e in zip(starts, ends,
                                                                          strict=True)]


class Residency:
    """Accumulator rows ``rows`` held on the device (``tensors``, row axis 2)."""

    __slots__ = ("_starts", "dirty", "global_view", "ready", "rows", "tensors")

    def __init__(self, rows: Sequence[Range], tensors: list[torch.Tensor], *,
                 global_view: bool, ready: Any = None) -> None:
        self.rows, self._starts = row_layout(rows)
        self.tensors = tensors
        self.global_view = global_view
        self.ready = ready
        self.dirty = False

    def local(self, g: int) -> int:
        """Row index in ``tensors`` of global row ``g``."""
        if self.global_view:
            return g
        for (s, e), st in zip(self.rows, self._starts, strict=True):
            if s <= g < e or (g == e and s < e):
                return st + g - s
        raise KeyError(f"row {g} is not held in {self.rows}")

    def slices(self, g0: int, g1: int) -> list[torch.Tensor]:
        """Views of rows ``[g0, g1)`` (which must lie in one range)."""
        a = self.local(g0)
        return [t[:, :, a:a + g1 - g0] for t in self.tensors]

    def merge(self, g0: int, g1: int, out: torch.Tensor, lse: torch.Tensor) -> None:
        """Merge a call's ``(out, lse)`` for rows ``[g0, g1)`` into ``(out, lse)``
        accumulators, in log-sum-exp space (allocating before the first write)."""
        acc_out, acc_lse = self.slices(g0, g1)
        merge_partials_(acc_out, acc_lse, out, lse)
        self.dirty = True

    def add(self, ranges: Sequence[Range], grads: Sequence[torch.Tensor]) -> None:
        """Add gradients whose rows are the concatenation of ``ranges`` (in place: nothing is
        allocated, so an out-of-memory error cannot leave a call half added)."""
        pos = 0
        for s, e in ranges:
            n = e - s
            for acc, g in zip(self.slices(s, e), grads, strict=True):
                acc.add_(g[:, :, pos:pos + n])
            pos += n
        self.dirty = True


class Results(Residency):
    """The outputs of the one kernel call of a run without accumulators, taken as they are."""

    __slots__ = ("taken",)

    def __init__(self, rows: int) -> None:
        super().__init__(((0, rows),), [], global_view=True)
        self.taken = False

    def _take(self, ranges: Sequence[Range], tensors: Sequence[torch.Tensor]) -> None:
        if self.taken or tuple(ranges) != self.rows:
            raise RuntimeError(f"internal error: a run without accumulators got a second call "
                               f"or one over rows {tuple(ranges)}, not {self.rows}")
        self.tensors = list(tensors)
        self.taken = True

    def merge(self, g0: int, g1: int, out: torch.Tensor, lse: torch.Tensor) -> None:
        self._take(((g0, g1),), [out, lse])

    def add(self, ranges: Sequence[Range], grads: Sequence[torch.Tensor]) -> None:
        self._take(ranges, grads)


class ResultStore:
    """The "store" of a run of one kernel call (accumulators ``"none"``): every side opens
    the same :class:`Results`, which takes the call's outputs. ``accumulates`` is False: a
    step of such a run cannot be split (the driver switches placement instead)."""

    accumulates = False

    def __init__(self, rows: int) -> None:
        self.results = Results(rows)

    def open(self, rows: Sequence[Range]) -> Residency:
        return self.results

    def close(self, res: Residency, *, final_ok: bool) -> Any:
        return None


class RowStore:
    """Accumulators of one side (see the module docstring); ``accumulates``: steps may be
    split (every call merges).

    Parameters
    ----------
    home
        The accumulator tensors where they live (device tensors for ``placement="device"``),
        row axis 2; with ``placement="host"`` and ``full=False`` they may be uninitialised.
    inits
        Initial value of each tensor (``0`` for sums and ``out``, ``-inf`` for ``lse``).
    placement
        ``"device"`` or ``"host"``.
    full
        Home accumulators initialised in full (checkpoints, distributed).
    finalize_to
        Per tensor, None or the final tensor (another dtype allowed) receiving rows on their
        last visit; requires ``remaining``.
    remaining
        Per row, how many not-yet-started tasks still touch it (the driver decrements it when
        a task starts).
    """

    accumulates = True

    def __init__(self, home: list[torch.Tensor], *, inits: Sequence[float], transport: Transport,
                 placement: Literal["device", "host"], full: bool = False,
                 finalize_to: Sequence[torch.Tensor | None] | None = None,
                 remaining: np.ndarray | None = None) -> None:
        self._home = list(home)
        self.inits = list(inits)
        self.tr = transport
        self.placement = placement
        self.full = full
        self.finalize_to = list(finalize_to) if finalize_to is not None else None
        self.remaining = remaining
        n = self._shape(0)[2]
        self.written = np.full(n, full or placement == "device", dtype=bool)
        self.final = np.zeros(n, dtype=bool)
        self._writes: list[tuple[tuple[Range, ...], Any]] = []  # outstanding write-backs
        self._open: list[Residency] = []
        if full and placement == "host":
            for t, v in zip(self.home, self.inits, strict=True):
                t.fill_(v)

    def _shape(self, i: int) -> tuple[int, ...]:
        h = self._home[i]
        return tuple(h.shape) if isinstance(h, torch.Tensor) else tuple(h[0])

    def home_tensor(self, i: int) -> torch.Tensor:
        """Home tensor ``i``, allocated on first use when given as ``(shape, dtype, pin)``
        (a forward whose rows all go straight to the output never allocates its float32
        ``out`` at home)."""
        h = self._home[i]
        if not isinstance(h, torch.Tensor):
            shape, dtype, pin = h
            h = self._home[i] = host_empty(shape, dtype, pin=pin)
        return h

    @property
    def home(self) -> list[torch.Tensor]:
        """Every home tensor (allocating those not allocated yet; see :meth:`home_tensor`)."""
        return [self.home_tensor(i) for i in range(len(self._home))]

    # -- open / close ----------------------------------------------------------------------
    def open(self, rows: Sequence[Range]) -> Residency:
        """A residency over ``rows``: the device view (device placement) or a device buffer
        with written rows copied in and the others initialised (host placement)."""
        if self.placement == "device":
            return Residency(rows, self.home, global_view=True)
        rows = tuple((int(s), int(e)) for s, e in rows if e > s)
        n = sum(e - s for s, e in rows)
        for r in self._open:
            if ranges_overlap(r.rows, rows):
                raise RuntimeError(f"internal error: rows {rows} opened while rows {r.rows} "
                                   "are still being accumulated")
        shapes = [self._shape(i) for i in range(len(self._home))]
        dtypes = [h.dtype if isinstance(h, torch.Tensor) else h[1] for h in self._home]
        bufs = [self.tr.alloc((*sh[:2], n, *sh[3:]), dt, fill=v)
                for sh, dt, v in zip(shapes, dtypes, self.inits, strict=True)]
        pieces = []
        for (s, e), pos in zip(rows, local_offsets(rows), strict=True):
            for a, b, w in _runs(self.written[s:e], s):
                if w:
                    pieces.append((a, b, pos + a - s))
        if pieces:
            waits = [ev for r, ev in self._writes if ranges_overlap(r, rows)]
            ready = self.tr.load(bufs, self.home, pieces, wait=waits)
        else:
            ready = self.tr.ready()  # the fill, on the transport's stream
        res = Residency(rows, bufs, global_view=False, ready=ready)
        self._open.append(res)
        return res

    def close(self, res: Residency, *, final_ok: bool) -> Any:
        """Write a host residency back (nothing for device placement); with ``final_ok`` rows
        no later task touches go to ``finalize_to``. Returns the write-back event."""
        if res.global_view:
            return None
        self._open = [r for r in self._open if r is not res]
        try:
            return self._write_back(res, final_ok=final_ok)
        finally:
            self.tr.release(res.tensors)  # after the write-back was queued

    def _write_back(self, res: Residency, *, final_ok: bool) -> Any:
        if not res.dirty:
            return None
        finals: list[tuple[int, int, int]] = []
        backs: list[tuple[int, int, int]] = []
        can_final = (final_ok and self.finalize_to is not None and not self.full
                     and self.remaining is not None)
        for (s, e), pos in zip(res.rows, local_offsets(res.rows), strict=True):
            done = self.remaining[s:e] == 0 if can_final else np.zeros(e - s, dtype=bool)
            for a, b, f in _runs(done, s):
                (finals if f else backs).append((a, b, pos + a - s))
        ev = None
        if backs:
            ev = self.tr.scatter(self.home, [(a, b) for a, b, _ in backs], res.tensors,
                                 local=[p for _, _, p in backs])
            for a, b, _ in backs:
                self.written[a:b] = True
        if finals:
            dst = [f if f is not None else self.home_tensor(i)
                   for i, f in enumerate(self.finalize_to)]
            ev = self.tr.scatter(dst, [(a, b) for a, b, _ in finals], res.tensors,
                                 local=[p for _, _, p in finals])
            for a, b, _ in finals:
                self.final[a:b] = True
                self.written[a:b] = True
        self._writes.append((res.rows, ev))
        if len(self._writes) > 64:
            self._writes = self._writes[-64:]
        res.dirty = False
        return ev

    # -- the end ---------------------------------------------------------------------------
    def unwritten_rows(self) -> list[Range]:
        """Rows never merged into (no allowed key): they keep the initial values."""
        return [(a, b) for a, b, w in _runs(self.written, 0) if not w]

    def pending_rows(self) -> list[Range]:
        """Rows written to the home accumulators but not finalised."""
        return [(a, b) for a, b, f in _runs(self.written & ~self.final, 0) if f]
