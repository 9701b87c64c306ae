"""Helpers shared by the benchmark scripts (imported from the script's own folder).

>>> round(tflops(1024, 2, 64, False, 1e-3), 6)
0.536871
"""

from __future__ import annotations

from typing import Any

from cqs_attention.info import host_memory_available

__all__ = ["RUN_REPORT_KEYS", "BenchDevice", "fill_randn", "host_memory_available",
           "report_summary", "tflops"]

#: the fields of an attention run report the benchmarks keep in their JSON
RUN_REPORT_KEYS = ("plan_source", "schedule", "accumulators", "prefetch", "chosen_because",
                   "predicted_seconds", "design_v", "design_k", "levels", "tasks",
                   "kernel_calls", "bytes_to_device", "bytes_from_device", "peak_device_bytes",
                   "timings", "accumulator_device", "oom_retries", "refinements", "profile",
                   "memory_budget", "task_bytes_estimate")


def report_summary(rep: Any, keys: tuple[str, ...] = RUN_REPORT_KEYS) -> dict | None:
    """The JSON-friendly fields ``keys`` of a report with ``to_dict()`` (missing ones are
    left out: reports evolve); None for None."""
    if rep is None:
        return None
    d = rep.to_dict()
    return {k: d[k] for k in keys if k in d}


def tflops(L: int, heads: int, head_dim: int, causal: bool, seconds: float, batch: int = 1,
           backward: bool = False) -> float:
    """4·B·H·L²·D per second in TFLOP/s, halved for causal; backward counts 2.5x."""
    flop = 4.0 * batch * heads * L * L * head_dim * (0.5 if causal else 1.0)
    return flop * (2.5 if backward else 1.0) / seconds / 1e12


class BenchDevice:
    """Synchronisation, peak memory and pinned copies on the benchmark device (CUDA; the CPU
    only for smoke tests of the scripts)."""

    def __init__(self, name: Any) -> None:
        import torch

        self.torch = torch
        self.dev = torch.device(name)
        self.cuda = self.dev.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def name(self) -> str:
        return self.torch.cuda.get_device_name(self.dev) if self.cuda else "cpu"

    def start_peak(self) -> int:
        """Empty the cache, reset the peak counter; returns the bytes allocated now."""
        if not self.cuda:
            return 0
        self.torch.cuda.empty_cache()
        self.torch.cuda.reset_peak_memory_stats(self.dev)
        return self.torch.cuda.memory_allocated(self.dev)

    def peak_bytes(self, base: int) -> int | None:
        return self.torch.cuda.max_memory_allocated(self.dev) - base if self.cuda else None

    def peak_gib(self, base: int) -> float | None:
        peak = self.peak_bytes(base)
        return None if peak is None else peak / 2**30

    def pin(self, t: Any) -> Any:
        """A pinned host copy of ``t`` (a plain host copy without CUDA)."""
        return t.cpu().pin_memory() if self.cuda else t.cpu().clone()


def fill_randn(t: Any, *, seed: int, device: Any, slab_rows: int = 1 << 20) -> None:
    """Fill the (B, H, L, D) host tensor ``t`` with standard normal values in ``t``'s dtype,
    generated on ``device`` slab by slab (host memory never holds more than ``t``)."""
    import torch

    b, h, L, d = t.shape
    g = torch.Generator(device=device).manual_seed(seed)
    for bi in range(b):
        for hi in range(h):
            for r0 in range(0, L, slab_rows):
                n = min(slab_rows, L - r0)
                x = torch.randn(n, d, generator=g, device=device, dtype=t.dtype)
                t[bi, hi, r0:r0 + n].copy_(x)
