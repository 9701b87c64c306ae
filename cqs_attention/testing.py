"""Hooks for tests: inject failures into runs of the engine.

* :func:`task_hook`: ``fn(task_id, attempt)`` runs before a plan task's first step and before
  every retry of one of its steps (``attempt`` counts the out-of-memory errors of that task
  so far); it may raise ``torch.cuda.OutOfMemoryError`` (handled like a real one) or any
  other exception (ends the run, as a crash would).
* :func:`call_hook`: ``fn(call)`` runs before every kernel call.
* :func:`fail_calls`: raise out-of-memory errors at chosen kernel call numbers.

>>> import torch
>>> from cqs_attention import attention, reference_attention
>>> q = torch.randn(1, 2, 40, 8, dtype=torch.float64)
>>> with fail_calls({1, 2, 5}):
...     out = attention(q, q, q, causal=True, plan=2)
>>> bool(torch.allclose(out, reference_attention(q, q, q, causal=True)[0]))
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch

from cqs_attention.engine.compute import call_hook
from cqs_attention.engine.driver import TASK_HOOKS
from cqs_attention.engine.placement import FORCE

__all__ = ["call_hook", "fail_calls", "force_placement", "task_hook"]


@contextlib.contextmanager
def task_hook(fn: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, call ``fn(task_id, attempt)`` as described in the module docstring."""
    TASK_HOOKS.append(fn)
    try:
        yield
    finally:
        TASK_HOOKS.remove(fn)


@contextlib.contextmanager
def fail_calls(indices: Iterable[int],
               error: Callable[[str], BaseException] = torch.cuda.OutOfMemoryError
               ) -> Iterator[list[int]]:
    """Raise ``error`` before the kernel calls numbered ``indices`` (0-based, counting every
    attempted call inside the block). Yields the list of call numbers that failed."""
    targets = set(indices)
    count = [0]
    failed: list[int] = []

    def hook(_call: object) -> None:
        n = count[0]
        count[0] += 1
        if n in targets:
            failed.append(n)
            raise error(f"injected failure at kernel call {n}")

    with call_hook(hook):
        yield failed


@contextlib.contextmanager
def force_placement(accumulators: str | None = None, prefetch: bool | None = None
                    ) -> Iterator[None]:
    """Within the block, streamed runs keep their accumulators where ``accumulators`` says
    (``"host"`` or ``"device"``) and prefetch or not as ``prefetch`` says, whatever the cost
    model prefers (the budget still applies)."""
    opts: dict[str, object] = {}
    if accumulators is not None:
        if accumulators not in ("host", "device"):
            raise ValueError(f"accumulators must be 'host' or 'device', got {accumulators!r}")
        opts["accumulators"] = accumulators
    if prefetch is not None:
        opts["prefetch"] = bool(prefetch)
    FORCE.append(opts)
    try:
        yield
    finally:
        FORCE.remove(opts)
