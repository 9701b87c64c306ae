"""Compute: one kernel call of a step, on rows staged by the transport.

:class:`Compute` picks the kernel for each call (the registry's dispatcher, cached per mask
category, dtype, head dim, GQA and direction), slices the query-side and key/value-side
buffers (a view when the call's keys are contiguous in the staged buffer, else one
concatenation) and runs ``fwd`` or ``bwd``. Hooks installed with :func:`call_hook` run before
every kernel call (tests inject out-of-memory errors there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from cqs_attention import kernels as _registry
from cqs_attention.engine.schedule import Call
from cqs_attention.engine.transport import local_offsets
from cqs_attention.kernels import select_kernel
from cqs_attention.kernels.base import BlockMask, mask_category, scale_breaks_masking

__all__ = ["Compute", "Staged", "call_hook"]

Range = tuple[int, int]
_HOOKS: list[Callable[[Call], None]] = []
#: dispatch results shared by all runs, keyed with the registry's version
_DISPATCH: dict[tuple[Any, ...], Any] = {}
_REFERENCE: dict[str, Any] = {}


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

    def __init__(self, rows: Sequence[Range], tensors: list[torch.Tensor], ready: Any) -> None:
        self.rows = tuple((int(s), int(e)) for s, e in rows)
        self.tensors = tensors
        self.ready = ready
        self.starts = local_offsets(self.rows)

    def local(self, g0: int, g1: int) -> int:
        for (s, e), st in zip(self.rows, self.starts, strict=True):
            if s <= g0 and g1 <= e:
                return st + g0 - s
        raise KeyError(f"rows [{g0}, {g1}) are not staged in {self.rows}")

    def take(self, i: int, ranges: Sequence[Range]) -> torch.Tensor:
        """Tensor ``i`` on the concatenation of global ``ranges`` (a view when contiguous)."""
        locs = [(self.local(s, e), e - s) for s, e in ranges]
        t = self.tensors[i]
        if all(locs[j][0] + locs[j][1] == locs[j + 1][0] for j in range(len(locs) - 1)):
            return t[:, :, locs[0][0]:locs[0][0] + sum(n for _, n in locs)]
        return torch.cat([t[:, :, a:a + n] for a, n in locs], dim=2)


class Compute:
    """Kernel dispatch and the calls themselves for one run."""

    def __init__(self, *, device: torch.device, backend: str, scale: float,
                 report: Any) -> None:
        self.device = device
        self.backend = backend
        self.scale = scale
        self.report = report
        self._kernels: dict[tuple[Any, ...], Any] = {}

    def kernel(self, q: torch.Tensor, k: torch.Tensor, mask: BlockMask | None,
               needs_grad: bool) -> Any:
        cat = mask_category(mask)
        key = (cat, q.dtype, q.shape[-1], q.shape[1] != k.shape[1], needs_grad, self.device,
               self.backend, _registry.VERSION[0])
        if (cat != "none" and scale_breaks_masking(self.scale) and self.backend == "auto"
                and self.device.type == "cuda"):
            # cuDNN and the flash kernels break masking for scales that are not positive in
            # float32 (issue 13, item 7; a tiny positive scale rounds to 0 there); the
            # reference kernel is right for every scale
            from cqs_attention.kernels.reference import ReferenceKernel

            return _REFERENCE.setdefault("k", ReferenceKernel())
        kernel = _DISPATCH.get(key)
        if kernel is None:
            kernel = select_kernel(self.backend, device=self.device, dtype=q.dtype,
                                   head_dim=q.shape[-1], mask=mask,
                                   gqa=q.shape[1] != k.shape[1], needs_grad=needs_grad)
            if len(_DISPATCH) > 256:
                _DISPATCH.clear()
            _DISPATCH[key] = kernel
        return kernel

    def forward(self, call: Call, qs: Staged, kvs: Staged
                ) -> tuple[torch.Tensor, torch.Tensor]:
        for hook in list(_HOOKS):
            hook(call)
        a = qs.local(call.q0, call.q1)
        q = qs.tensors[0][:, :, a:a + call.lq]
        k = kvs.take(0, call.key_ranges)
        v = kvs.take(1, call.key_ranges)
        kernel = self.kernel(q, k, call.mask, needs_grad=False)
        out, lse = kernel.fwd(q, k, v, scale=self.scale, mask=call.mask)
        self.report.count_call(kernel.name, lq=call.lq, lk=call.lk)
        return out, lse

    def backward(self, call: Call, qs: Staged, kvs: Staged
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for hook in list(_HOOKS):
            hook(call)
        a = qs.local(call.q0, call.q1)
        q, dout, out, lse = (t[:, :, a:a + call.lq] for t in qs.tensors)
        k = kvs.take(0, call.key_ranges)
        v = kvs.take(1, call.key_ranges)
        kernel = self.kernel(q, k, call.mask, needs_grad=True)
        dq, dk, dv = kernel.bwd(dout, q, k, v, out, lse, scale=self.scale, mask=call.mask)
        self.report.count_call(kernel.name, lq=call.lq, lk=call.lk)
        return dq, dk, dv
