"""Compute: one kernel call of a step, on rows staged by the transport.

The planner chose the kernel of every kind of call a run makes before any work
(:func:`cqs_attention.engine.placement.choose_kernel`, applied by
:func:`~cqs_attention.engine.placement.plan_call`); :class:`Compute` looks it up, slices the
query-side and key/value-side buffers (a view when the call's keys are contiguous in the staged
buffer, else one concatenation) and runs ``fwd`` or ``bwd``. Hooks installed with
:func:`call_hook` run before every kernel call (tests inject out-of-memory errors there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from cqs_attention.engine.placement import choose_kernel
from cqs_attention.engine.schedule import Call
from cqs_attention.engine.transport import row_layout
from cqs_attention.kernels.base import BlockMask, Kernel, mask_category
from cqs_attention.report import RunCounters

__all__ = ["Compute", "Staged", "call_hook"]

Range = tuple[int, int]
_HOOKS: list[Callable[[Call], None]] = []
@contextlib.contextmanager
def call_hook(fn: Callable[[Call], None]) -> Iterator[None]:
    """Within the block, call ``fn(call)`` before every kernel call of every run (it may raise
    ``torch.cuda.OutOfMemoryError`` to simulate running out of memory there)."""
    _HOOKS.append(fn)
    try:
        yield
    finally:
        _HOOKS.remove(fn)


class Staged:
    """Input rows ``rows`` of several tensors, contiguous on the device (row axis 2)."""

    __slots__ = ("ready", "rows", "starts", "tensors")

    def __init__(self, rows: Sequence[Range], tensors: list[torch.Tensor], ready: Any) -> None:
        self.rows, self.starts = row_layout(rows)
        self.tensors = tensors
        self.ready = ready

    def local(self, g0: int, g1: int) -> int:
        if len(self.rows) == 1:  # the common case: one range, at offset 0
            s, e = self.rows[0]
            if s <= g0 and g1 <= e:
                return g0 - s
        else:
            for (s, e), st in zip(self.rows, self.starts, strict=True):
                if s <= g0 and g1 <= e:
                    return st + g0 - s
        raise KeyError(f"rows [{g0}, {g1}) are not staged in {self.rows}")

    def take(self, i: int, ranges: Sequence[Range]) -> torch.Tensor:
        """Tensor ``i`` on the concatenation of global ``ranges`` (a view when contiguous)."""
        t = self.tensors[i]
        if len(ranges) == 1:
            s, e = ranges[0]
            a = self.local(s, e)
            return t if a == 0 and e - s == t.shape[2] else t[:, :, a:a + e - s]
        locs = [(self.local(s, e), e - s) for s, e in ranges]
        if all(locs[j][0] + locs[j][1] == locs[j + 1][0] for j in range(len(locs) - 1)):
            return t[:, :, locs[0][0]:locs[0][0] + sum(n for _, n in locs)]
        return torch.cat([t[:, :, a:a + n] for a, n in locs], dim=2)


class Compute:
    """The kernel calls of one run.

    ``kernels`` maps ``(mask category, needs_grad)`` to the kernel the planner chose for
    those calls; a category it did not foresee (a call split after an out-of-memory error
    may lose its mask) is chosen by :func:`choose_kernel` when first met.
    """

    __slots__ = ("_kernels", "_own", "backend", "counters", "device", "scale")

    def __init__(self, *, device: torch.device, backend: str, scale: float,
                 counters: RunCounters,
                 kernels: dict[tuple[str, bool], Kernel] | None = None) -> None:
        self.device = device
        self.backend = backend
        self.scale = scale
        self.counters = counters
        self._kernels = kernels if kernels is not None else {}
        self._own = kernels is None  # the planner's dict is shared: copied before a write

    def kernel(self, q: torch.Tensor, k: torch.Tensor, mask: BlockMask | None,
               needs_grad: bool) -> Kernel:
        key = (mask_category(mask), needs_grad)
        kernel = self._kernels.get(key)
        if kernel is None:
            if not self._own:
                self._kernels, self._own = dict(self._kernels), True
            kernel = self._kernels[key] = choose_kernel(
                self.backend, device=self.device, dtype=q.dtype, head_dim=q.shape[-1],
                gqa=q.shape[1] != k.shape[1], category=key[0], needs_grad=needs_grad,
                scale=self.scale)
        return kernel

    def forward(self, call: Call, qs: Staged, kvs: Staged
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if _HOOKS:
            for hook in list(_HOOKS):
                hook(call)
        q = qs.take(0, ((call.q0, call.q1),))
        k = kvs.take(0, call.key_ranges)
        v = kvs.take(1, call.key_ranges)
        kernel = self.kernel(q, k, call.mask, needs_grad=False)
        out, lse = kernel.fwd(q, k, v, scale=self.scale, mask=call.mask)
        self.counters.count_call(kernel.name, lq=call.lq, lk=call.lk)
        return out, lse

    def backward(self, call: Call, qs: Staged, kvs: Staged
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if _HOOKS:
            for hook in list(_HOOKS):
                hook(call)
        a = qs.local(call.q0, call.q1)
        q, dout, out, lse = (t[:, :, a:a + call.lq] for t in qs.tensors)
        k = kvs.take(0, call.key_ranges)
        v = kvs.take(1, call.key_ranges)
        kernel = self.kernel(q, k, call.mask, needs_grad=True)
        dq, dk, dv = kernel.bwd(dout, q, k, v, out, lse, scale=self.scale, mask=call.mask)
        self.counters.count_call(kernel.name, lq=call.lq, lk=call.lk)
        return dq, dk, dv
