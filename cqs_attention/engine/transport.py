"""Transport: moving rows of ``(B, H, L, ...)`` tensors between home memory and the compute
device, ordered with streams and events (a synchronous shim when the device is the CPU).

* :meth:`Transport.gather` builds one contiguous device buffer per tensor over a list of row
  ranges. Inputs already on the device are used in place (a view for one range, a concatenation
  otherwise); host inputs are copied on the H2D stream (straight from pinned memory, through a
  pinned staging buffer from pageable memory) and an event marks the end of the copies.
* :meth:`Transport.scatter` writes device rows back into home tensors on the D2H stream after
  a given event; pageable destinations go through a pinned buffer and a host copy that runs
  once the D2H event has fired (:meth:`poll` / :meth:`drain`).
* Every copy is counted in the run's counters (``bytes_to_device``, ``bytes_from_device``).

**Memory the run holds is what the footprint model counts, never more.** The staging and
accumulator buffers of a streamed run are allocated by the transport itself
(:meth:`Transport.alloc`, from the H2D stream's pool on CUDA) and stay referenced by it until
:meth:`Transport.release` hands them back; :meth:`Transport.reclaim`, which runs before every
new allocation, waits for the work of every stream queued up to each release and only then
drops the buffers. So a buffer is never reused while a copy or a kernel may still touch it (no
``record_stream``), and a freed buffer never lingers in the allocator while new ones are
allocated: the host cannot run ahead of the device by more than the buffers the driver holds
(the current step's sides and the prefetched next side).

The CPU shim (compute device ``cpu:0`` with inputs on ``cpu``, as tests use) copies rows into
separate buffers exactly as the GPU path does, synchronously, so the streaming logic runs and
is tested on a machine without a GPU.

>>> import torch
>>> tr = Transport(torch.device("cpu", 0), streamed=True)
>>> x = torch.arange(24.0).view(1, 2, 6, 2)
>>> (buf,), ev = tr.gather([x], ((1, 2), (4, 6)))
>>> buf[0, 0, :, 0].tolist()
[2.0, 8.0, 10.0]
>>> home = torch.zeros(1, 2, 6, 2)
>>> tr.scatter([home], ((1, 2), (4, 6)), [buf], after=None) is None
True
>>> bool(torch.equal(home[:, :, 4:6], x[:, :, 4:6]))
True
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cqs_attention.engine.copies import copy_rows_in, copy_rows_out
from cqs_attention.report import RunCounters

__all__ = ["Transport", "host_empty", "local_offsets", "row_layout"]

Range = tuple[int, int]


#: host tensors at least this large are page-locked with cudaHostRegister, at their size
REGISTER_BYTES = 64 << 20


def host_empty(shape: Sequence[int], dtype: torch.dtype, *, pin: bool) -> torch.Tensor:
    """An uninitialised host tensor, page-locked when ``pin``.

    PyTorch's pinned allocator rounds every allocation up to a power of two (a 17 GB float32
    tensor takes 32 GB). Large tensors are therefore ordinary host memory page-locked with
    ``cudaHostRegister`` at their exact size, and unregistered when their memory is freed.

    >>> host_empty((2, 3), torch.float32, pin=False).shape
    torch.Size([2, 3])
    """
    import math

    import numpy as np

    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if not pin or nbytes < REGISTER_BYTES:
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=pin)
    import weakref

    page = 4096
    raw = np.empty(nbytes + page, dtype=np.uint8)
    start = (-raw.ctypes.data) % page
    buf = raw[start:start + nbytes]  # page-aligned
    cudart = torch.cuda.cudart()
    ptr = buf.ctypes.data
    err = int(cudart.cudaHostRegister(ptr, nbytes, 0))
    if err != 0:  # fall back to PyTorch's allocator rather than fail
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
    # the numpy buffer outlives every tensor viewing it; unregister just before it is freed
    weakref.finalize(raw, cudart.cudaHostUnregister, ptr)
    return torch.from_numpy(buf).view(dtype).view(tuple(shape))


def local_offsets(rows: Sequence[Range]) -> list[int]:
    """Start of each range inside the concatenated buffer.

    >>> local_offsets(((3, 5), (9, 10)))
    [0, 2]
    """
    out, pos = [], 0
    for s, e in rows:
        out.append(pos)
        pos += e - s
    return out


def row_layout(rows: Sequence[Range]) -> tuple[tuple[Range, ...], list[int]]:
    """``rows`` as a tuple of ``(int, int)`` ranges, and :func:`local_offsets` of them.

    >>> row_layout([(3, 5), (9, 10)])
    (((3, 5), (9, 10)), [0, 2])
    """
    if len(rows) == 1:  # the common case (one call's rows)
        (s, e), = rows
        return ((int(s), int(e)),), [0]
    out = tuple([(int(s), int(e)) for s, e in rows])
    return out, local_offsets(out)


class Transport:
    """Copies between home memory and ``device`` (see the module docstring).

    Parameters
    ----------
    device
        The compute device.
    streamed
        True when the tensors live elsewhere than ``device`` (host or disk), so rows are copied.
    counters
        The run's counters: bytes copied each way and ``profile["host_copy"]``.
    """

    __slots__ = ("_owned", "_pending", "_retired", "counters", "cuda", "d2h", "device", "h2d",
                 "streamed")

    def __init__(self, device: torch.device, *, streamed: bool,
                 counters: RunCounters | None = None) -> None:
        self.device = device if type(device) is torch.device else torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.streamed = streamed
        self.counters = RunCounters() if counters is None else counters
        if self.cuda and streamed:
            self.h2d = torch.cuda.Stream(self.device)
            self.d2h = torch.cuda.Stream(self.device)
        else:
            self.h2d = self.d2h = None
        self._pending: deque[tuple[Any, Callable[[], None]]] = deque()
        #: buffers handed out by alloc() and not released yet, by id
        self._owned: dict[int, torch.Tensor] = {}
        #: released buffers with the events after which no stream touches them any more
        self._retired: list[tuple[list[torch.Tensor], list[Any]]] = []

    # -- buffers ----------------------------------------------------------------------------
    def alloc(self, shape: Sequence[int], dtype: torch.dtype,
              fill: float | None = None) -> torch.Tensor:
        """A device buffer owned by the transport until :meth:`release` (filled with ``fill``
        on the H2D stream when given). Released buffers are reclaimed first."""
        self.reclaim()
        with self._h2d_ctx():
            if fill is None:
                t = torch.empty(tuple(shape), dtype=dtype, device=self.device)
            else:
                t = torch.full(tuple(shape), fill, dtype=dtype, device=self.device)
        if self.h2d is not None:
            self._owned[id(t)] = t
        return t

    def release(self, tensors: Sequence[torch.Tensor | None]) -> None:
        """Hand back buffers from :meth:`alloc` that the run no longer uses; every kernel and
        copy that uses them must be queued already."""
        if self.h2d is None:
            return
        held = [self._owned.pop(id(t)) for t in tensors if t is not None and id(t) in self._owned]
        if held:
            events = [self.event(s) for s in (None, self.h2d, self.d2h)]
            self._retired.append((held, events))

    def reclaim(self) -> None:
        """Wait until no stream uses a released buffer any more, then free them all."""
        if not self._retired:
            return
        for _bufs, events in self._retired:
            for ev in events:
                ev.synchronize()
        self._retired.clear()

    def _h2d_ctx(self) -> Any:
        return torch.cuda.stream(self.h2d) if self.h2d is not None else _null()

    # -- events ------------------------------------------------------------------------------
    def event(self, stream: Any = None) -> Any:
        """An event recorded on ``stream`` (default: the compute stream); None on the CPU."""
        if not self.cuda:
            return None
        ev = torch.cuda.Event()
        ev.record(stream if stream is not None else torch.cuda.current_stream(self.device))
        return ev

    def wait(self, events: Sequence[Any], stream: Any = None) -> None:
        """Make ``stream`` (default: the compute stream) wait for ``events`` (GPU-side)."""
        if not self.cuda:
            return
        s = stream if stream is not None else torch.cuda.current_stream(self.device)
        for ev in events:
            if ev is not None:
                s.wait_event(ev)

    # -- home -> device ------------------------------------------------------------------------
    def gather(self, tensors: Sequence[torch.Tensor], rows: Sequence[Range], *,
               wait: Sequence[Any] = ()) -> tuple[list[torch.Tensor], Any]:
        """Contiguous device buffers of ``rows`` of each tensor, and the event after which they
        are complete (None when already complete for the compute stream)."""
        rows = [(int(s), int(e)) for s, e in rows if e > s]
        if not self.streamed:
            whole = len(rows) == 1 and rows[0][0] == 0
            out = []
            for t in tensors:
                if whole and rows[0][1] == t.shape[2]:
                    out.append(t)  # all rows: the tensor itself
                    continue
                parts = [t[:, :, s:e] for s, e in rows]
                out.append(parts[0] if len(parts) == 1 else
                           torch.cat(parts, dim=2) if parts else t[:, :, 0:0])
            return out, None
        n = sum(e - s for s, e in rows)
        bufs = [self.alloc((*t.shape[:2], n, *t.shape[3:]), t.dtype) for t in tensors]
        pieces = [(s, e, pos) for (s, e), pos in zip(rows, local_offsets(rows), strict=True)]
        return bufs, self.load(bufs, tensors, pieces, wait=wait)

    def load(self, bufs: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor],
             pieces: Sequence[tuple[int, int, int]], *, wait: Sequence[Any] = ()) -> Any:
        """Copy rows ``[s, e)`` of each home tensor to row ``pos`` of its device buffer (from
        :meth:`alloc`), for every ``(s, e, pos)`` in ``pieces``, on the H2D stream after
        ``wait`` (and after whatever the H2D stream did before, such as filling the buffers);
        returns the completion event (None on the CPU)."""
        with self._h2d_ctx():
            self.wait(wait, self.h2d)
            for buf, t in zip(bufs, tensors, strict=True):
                for s, e, pos in pieces:
                    nbytes, staged = copy_rows_in(buf[:, :, pos:pos + e - s], t, s, e,
                                                  cuda=self.cuda)
                    self.counters.add_bytes_to_device(nbytes)
                    if staged:
                        self.counters.add_profile("host_copy", staged)
            return self.event(self.h2d)

    def ready(self) -> Any:
        """An event after everything queued on the H2D stream so far (buffers filled there
        are complete after it); None on the CPU or without streams."""
        return self.event(self.h2d) if self.h2d is not None else None

    # -- device -> home ------------------------------------------------------------------------
    def scatter(self, dsts: Sequence[torch.Tensor], rows: Sequence[Range],
                srcs: Sequence[torch.Tensor], *, after: Any = None,
                local: Sequence[int] | None = None) -> Any:
        """Write ``srcs`` (device buffers laid out as the concatenation of ``rows``, or at
        ``local`` offsets) into ``rows`` of ``dsts``, converting dtype when they differ.

        Runs on the D2H stream after ``after`` and the compute stream's current work; returns
        the event marking the end of the copies (None on the CPU).
        """
        rows = [(int(s), int(e)) for s, e in rows]
        offs = local_offsets(rows) if local is None else list(local)
        if not self.cuda:
            for dst, src in zip(dsts, srcs, strict=True):
                for (s, e), pos in zip(rows, offs, strict=True):
                    dst[:, :, s:e].copy_(src[:, :, pos:pos + e - s])
                    self.counters.add_bytes_from_device(
                        (e - s) * src[:, :, :1].numel() * src.element_size())
            return None
        if not self.streamed:  # home is the device: plain copies on the compute stream
            for dst, src in zip(dsts, srcs, strict=True):
                for (s, e), pos in zip(rows, offs, strict=True):
                    dst[:, :, s:e].copy_(src[:, :, pos:pos + e - s])
            return self.event()
        cur = torch.cuda.current_stream(self.device)
        self.d2h.wait_stream(cur)
        self.wait([after], self.d2h)
        with torch.cuda.stream(self.d2h):
            for dst, src in zip(dsts, srcs, strict=True):
                # src is a transport buffer (freed only after this stream's work, see
                # release); a converted copy comes from this stream's own pool
                if src.dtype != dst.dtype:  # convert on the device, then copy
                    src = src.to(dst.dtype)
                pinned = dst.is_pinned()
                for (s, e), pos in zip(rows, offs, strict=True):
                    piece = src[:, :, pos:pos + e - s]
                    if pinned:
                        nbytes = copy_rows_out(dst, s, piece)
                    else:
                        tmp = torch.empty(piece.shape, dtype=piece.dtype, pin_memory=True)
                        nbytes = copy_rows_out(tmp, 0, piece)
                        self._pending.append(
                            (None, lambda d=dst, t=tmp, a=s, b=e: d[:, :, a:b].copy_(t)))
                    self.counters.add_bytes_from_device(nbytes)
            ev = self.event(self.d2h)
        # host copies out of pinned temporaries wait for this event
        self._pending = deque((ev if e is None else e, fn) for e, fn in self._pending)
        return ev

    def poll(self, block: bool = False) -> None:
        """Run the host copies whose D2H copies have finished (all of them with ``block``)."""
        while self._pending:
            ev, fn = self._pending[0]
            if ev is not None and not block and not ev.query():
                return
            if ev is not None:
                ev.synchronize()
            t0 = time.perf_counter()
            fn()
            self.counters.add_profile("host_copy", time.perf_counter() - t0)
            self._pending.popleft()

    def drain(self) -> None:
        """Wait for every copy and host copy of this transport; released buffers are freed.

        Without streams (inputs on the device) there are no copies to wait for, and the
        device is not synchronised: a run of one kernel call on resident inputs returns as
        soon as its work is queued (measured on an H100: a synchronise per call cost 13% of
        a 16K forward)."""
        self.poll(block=True)
        if self.h2d is not None:
            torch.cuda.synchronize(self.device)
        self._retired.clear()

    def close(self) -> None:
        """The end of the run: wait for everything, free every buffer the transport holds."""
        self.drain()
        self._owned.clear()


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
