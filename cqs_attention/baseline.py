"""The plain out-of-core baseline: a query block stays on the device, key/value blocks stream by.

This is what one would write without CQS (the "blockwise / out-of-core" scheme of FlashAttention
on a sequence that does not fit): queries are cut into blocks of ``block_q`` rows; for each query
block, its rows and float32 accumulators stay resident on the device while the key/value blocks
of ``block_kv`` rows are copied in one after the other, each computed with the SAME kernels
:func:`cqs_attention.attention` uses (:func:`cqs_attention.kernels.select_kernel`) and folded into
the accumulators with :func:`cqs_attention.merge.merge_partials_`. It is the yardstick the
benchmarks compare the CQS streamed executor against (same budget, same pinned inputs, same
kernels).

* **Causal** (bottom-right aligned, like flash-attn): key/value blocks entirely above the
  diagonal are skipped (never copied); a block that straddles it is computed only for the query
  rows that reach at least one of its keys, as a full call on the keys all those rows see plus
  one square call with ``BlockMask(causal_offset=0)``; blocks below the diagonal run without a
  mask.
* **Overlap** (CUDA, host inputs): the key/value block of the next step is copied on a separate
  H2D stream into the second of two device buffers (double buffering, ordered with CUDA events)
  while the current block computes; one contiguous copy per ``(batch, head)`` row range,
  ``non_blocking`` from pinned memory (pageable inputs are first copied into pinned staging
  memory, on the host thread). Key/value blocks are visited in serpentine order, so the two
  blocks resident when one query block ends are reused by the next without a copy. A finished
  query block is converted to the output dtype on the compute stream and copied back on a D2H
  stream, double-buffered too. Inputs already on the device are used in place (no copies).

Device footprint (bytes) of one run, ``e`` the element size of the inputs, ``a`` that of the
accumulators (4; 8 for float64), per batch entry::

    block_q  * H   * (e*D                # the resident query block
                      + a*(D+1)          # float32 out/lse accumulators
                      + 2*(e*D + a)      # the kernel's out/lse (x2: causal pieces are assembled)
                      + 2*(e*D [+ a]))   # output staging, double-buffered (host outputs only;
                                         #   + a with return_lse)
  + ceil(block_q/4) * H * a*(2*D + 6)    # merge temporaries (out in float32, weighted term,
                                         #   weights), merging a quarter block at a time
  + block_kv * Hkv * 2*2*e*D             # k and v blocks, double-buffered (2*e*D for device inputs)
  + block_kv * H   * 2*e*D               # GQA only: key/value heads repeated for the kernel
  + block_q * H * e*D + block_kv * Hkv * 2*e*D   # causal only: the diagonal calls' row and key
                                         #   sub-ranges, copied contiguous by the kernels
  + kernel.workspace_bytes(...)          # kernels that declare one (the reference kernel)

(:func:`baseline_footprint`). With ``memory_budget`` and no block sizes, ``block_kv`` takes about a
quarter of the budget and ``block_q`` the rest (long query blocks mean fewer passes over K/V:
bytes to the device = Q + ceil(Lq / block_q) * (K + V), about half that for causal), then both
are balanced over the sequence and rounded to multiples of 128. Workspace that kernels allocate
without declaring it (cuDNN, flash) and allocator rounding are not counted: the GPU test allows
15% of the budget + 64 MiB on top (``GPU_MARGIN`` in tests/attention/test_baseline.py).

The report of the last run (bytes moved, blocks, seconds, a per-stage profile) is
:func:`last_baseline_stats`. Forward only.

>>> import torch
>>> from cqs_attention.baseline import out_of_core_attention, last_baseline_stats
>>> from cqs_attention.reference import reference_attention
>>> g = torch.Generator().manual_seed(0)
>>> q, k, v = (torch.randn(1, 2, 100, 8, generator=g, dtype=torch.float64) for _ in range(3))
>>> out = out_of_core_attention(q, k, v, causal=True, block_q=32, block_kv=24, device="cpu")
>>> ref, _ = reference_attention(q, k, v, causal=True)
>>> bool((out - ref).norm() / ref.norm() < 1e-12)
True
>>> st = last_baseline_stats(); st.q_blocks, st.blocks_computed, st.blocks_skipped
(4, 14, 6)
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cqs_attention._copies import copy_rows_in, copy_rows_out
from cqs_attention.api import _resolve_device
from cqs_attention.errors import AttentionInputError, MemoryBudgetError
from cqs_attention.kernels import available_kernels, select_kernel
from cqs_attention.kernels.base import BlockMask
from cqs_attention.merge import accumulator_dtype, merge_partials_
from cqs_attention.reference import check_qkv

__all__ = [
    "BaselineReport",
    "baseline_blocks",
    "baseline_footprint",
    "last_baseline_stats",
    "out_of_core_attention",
]

#: share of ``memory_budget`` given to the double-buffered key/value blocks when neither block
#: size is given (the rest goes to the query block: fewer passes over K/V)
KV_SHARE = 0.25
#: block sizes are rounded down to multiples of this when they are at least twice as long
GRANULE = 128
#: merges run over ceil(block_q / MERGE_SPLIT) query rows at a time (bounds their temporaries)
MERGE_SPLIT = 4
#: default block sizes on the CPU without a budget
CPU_BLOCK = 1024


@dataclass
class BaselineReport:
    """What the last :func:`out_of_core_attention` call did.

    Attributes
    ----------
    device, home
        Where kernels ran, and where the inputs/outputs live.
    block_q, block_kv
        Block sizes used; ``q_blocks`` query blocks, ``kv_blocks`` key/value blocks per pass.
    blocks_computed, blocks_masked, blocks_skipped
        (query block, key/value block) pairs computed, of which with a causal mask, and pairs
        skipped (entirely above the causal diagonal).
    kernel_calls
        Kernel name -> calls.
    bytes_to_device, bytes_from_device
        Bytes copied onto / back from the device (0 for inputs already there).
    footprint_estimate, memory_budget
        :func:`baseline_footprint` of the blocks used, and the budget (None: unbounded).
    peak_device_bytes
        ``torch.cuda.max_memory_allocated`` increase during the run (CUDA), else the estimate.
    pinned, overlapped
        Inputs in pinned memory; copies overlapped with compute on CUDA streams.
    seconds
        Wall time of the call.
    profile
        Seconds per stage: ``"h2d"``, ``"compute"`` (kernels), ``"merge"`` (merges and output
        conversion), ``"d2h"`` (CUDA event time on CUDA, host time on the CPU) and ``"idle"``
        (wall time minus compute and merge: the compute stream waiting).
    """

    device: str = ""
    home: str = ""
    block_q: int = 0
    block_kv: int = 0
    q_blocks: int = 0
    kv_blocks: int = 0
    blocks_computed: int = 0
    blocks_masked: int = 0
    blocks_skipped: int = 0
    kernel_calls: dict[str, int] = field(default_factory=dict)
    bytes_to_device: int = 0
    bytes_from_device: int = 0
    footprint_estimate: int = 0
    memory_budget: int | None = None
    peak_device_bytes: int = 0
    pinned: bool = False
    overlapped: bool = False
    seconds: float = 0.0
    profile: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)


_LOCAL = threading.local()


def last_baseline_stats() -> BaselineReport | None:
    """The report of the most recent :func:`out_of_core_attention` call in this thread."""
    return getattr(_LOCAL, "last", None)


# -- footprint and block sizes --------------------------------------------------------------------
def baseline_footprint(block_q: int, block_kv: int, *, batch: int, heads: int, kv_heads: int,
                       head_dim: int, dtype: torch.dtype, staged: bool = True,
                       return_lse: bool = False, causal: bool = False,
                       kernel: Any = None) -> int:
    """Device bytes a run with these block sizes holds (the formula in the module docstring).

    ``staged``: inputs/outputs live off the device (buffers for copies); False: on it.
    ``causal``: diagonal calls pass row/key sub-ranges, which kernels copy to contiguous memory.

    >>> baseline_footprint(1024, 512, batch=1, heads=2, kv_heads=2, head_dim=8,
    ...                    dtype=torch.bfloat16)
    364544
    """
    e = torch.empty((), dtype=dtype).element_size()
    a = torch.empty((), dtype=accumulator_dtype(dtype)).element_size()
    d = head_dim
    per_q = e * d + a * (d + 1) + 2 * (e * d + a)
    if staged:
        per_q += 2 * (e * d + (a if return_lse else 0))
    per_kv = (4 if staged else 2) * e * d
    if causal:
        per_q += e * d
        per_kv += 2 * e * d
    merge = math.ceil(block_q / MERGE_SPLIT) * heads * a * (2 * d + 6)
    total = batch * (block_q * heads * per_q + block_kv * kv_heads * per_kv + merge)
    if heads != kv_heads:
        total += batch * block_kv * heads * 2 * e * d
    ws = getattr(kernel, "workspace_bytes", None)
    if ws is not None:
        total += int(ws(batch, heads, kv_heads, block_q, block_kv, head_dim, dtype))
    return int(total)


def _largest(limit: int, fits: Any) -> int:
    """Largest ``n`` in ``[1, limit]`` with ``fits(n)`` (monotone); 0 when even 1 does not fit."""
    if not fits(1):
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _balance(n: int, total: int) -> int:
    """Block length <= ``n`` that splits ``total`` evenly, rounded to GRANULE where it can."""
    if n >= total:
        return total
    if n >= 2 * GRANULE:
        n -= n % GRANULE
    blocks = math.ceil(total / n)
    even = math.ceil(total / blocks)
    up = math.ceil(even / GRANULE) * GRANULE
    return up if up <= n else even


def baseline_blocks(lq: int, lk: int, memory_budget: int | None, *, block_q: int | None = None,
                    block_kv: int | None = None, footprint: Any) -> tuple[int, int]:
    """``(block_q, block_kv)`` for a run: the given ones, else the largest that fit the budget.

    ``footprint(block_q, block_kv) -> bytes`` (monotone in both). Without a budget, missing
    sizes default to ``min(L, 1024)``.

    >>> fp = lambda bq, bkv: 10 * bq + 10 * bkv
    >>> baseline_blocks(100_000, 100_000, 1_000_000, footprint=fp)
    (50048, 33408)
    """
    if memory_budget is None:
        return (block_q or min(lq, CPU_BLOCK), block_kv or min(lk, CPU_BLOCK))
    if block_q is not None and block_kv is not None:
        need = footprint(block_q, block_kv)
        if need > memory_budget:
            raise MemoryBudgetError(
                f"memory_budget={memory_budget} bytes is smaller than the {need} bytes that "
                f"block_q={block_q}, block_kv={block_kv} need; pass smaller blocks or leave "
                "them to the budget")
        return block_q, block_kv
    smallest = footprint(block_q or 1, block_kv or 1)
    if smallest > memory_budget:
        raise MemoryBudgetError(
            f"memory_budget={memory_budget} bytes is too small: even block_q={block_q or 1}, "
            f"block_kv={block_kv or 1} need {smallest} bytes; pass memory_budget >= {smallest}")
    if block_q is not None:
        bkv = _largest(lk, lambda n: footprint(block_q, n) <= memory_budget)
        return block_q, _balance(bkv, lk)
    if block_kv is not None:
        bq = _largest(lq, lambda m: footprint(m, block_kv) <= memory_budget)
        return _balance(bq, lq), block_kv
    bkv = max(1, _largest(lk, lambda n: footprint(1, n) <= KV_SHARE * memory_budget))
    bq = _largest(lq, lambda m: footprint(m, bkv) <= memory_budget)
    bq = _balance(bq, lq)  # even blocks; what balancing freed goes to the key/value blocks
    bkv = _largest(lk, lambda n: footprint(bq, n) <= memory_budget)
    return bq, _balance(bkv, lk)


# -- the schedule ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Step:
    """Query rows ``[a, q1)`` of the block starting at ``q0`` against the key/value block
    ``[k0, k1)``, as kernel calls ``(c0, c1, causal)`` over local key ranges ``[c0, c1)``
    (``causal``: the square diagonal, ``causal_offset=0``)."""

    qi: int
    q0: int
    q1: int
    a: int
    k0: int
    k1: int
    calls: tuple[tuple[int, int, bool], ...]


def _schedule(lq: int, lk: int, bq: int, bkv: int, causal: bool
              ) -> tuple[list[tuple[int, int]], list[list[_Step]], int]:
    """Query blocks, the steps of each, and the number of skipped (empty) block pairs.

    Key/value blocks are visited in serpentine order (reversed for every other query block),
    so the two blocks resident at the end of one query block are the first the next one needs.
    Causal (bottom-right: query ``i`` attends key ``j`` iff ``j <= i + Lk - Lq``): a pair
    entirely above the diagonal is skipped; for one straddling it, only the query rows from
    ``a`` (the first that reaches a key of the block) are computed, as a full call on the keys
    every such row sees and a square causal call on the rest (keys no row reaches are cut).
    """
    off = lk - lq
    blocks, steps, skipped = [], [], 0
    for qi, q0 in enumerate(range(0, lq, bq)):
        q1 = min(lq, q0 + bq)
        blocks.append((q0, q1))
        mine = []
        starts = list(range(0, lk, bkv))
        if qi % 2:  # serpentine: the key/value blocks last used are used again first
            starts.reverse()
        for k0 in starts:
            k1 = min(lk, k0 + bkv)
            n = k1 - k0
            if not causal:
                mine.append(_Step(qi, q0, q1, q0, k0, k1, ((0, n, False),)))
                continue
            a = max(q0, k0 - off)  # first query row that reaches a key of this block
            if a >= q1:
                skipped += 1
                continue
            offset = a + off - k0  # >= 0: local row i sees local keys j <= i + offset
            if offset >= n - 1:
                calls: tuple[tuple[int, int, bool], ...] = ((0, n, False),)
            else:
                diag = ((offset, min(n, offset + q1 - a), True),)
                calls = ((0, offset, False), *diag) if offset > 0 else diag
            mine.append(_Step(qi, q0, q1, a, k0, k1, calls))
        steps.append(mine)
    return blocks, steps, skipped


def _merge_rows(acc_out: torch.Tensor, acc_lse: torch.Tensor, out: torch.Tensor,
                lse: torch.Tensor, fresh: bool, chunk: int) -> None:
    """Fold ``(out, lse)`` into the accumulator views: a copy when they hold nothing yet, else
    :func:`~cqs_attention.merge.merge_partials_` over ``chunk`` rows at a time (bounds its
    temporaries)."""
    if fresh:
        acc_out.copy_(out)
        acc_lse.copy_(lse)
        return
    n = out.shape[2]
    for r in range(0, n, chunk):
        e = min(n, r + chunk)
        merge_partials_(acc_out[:, :, r:e], acc_lse[:, :, r:e], out[:, :, r:e], lse[:, :, r:e])


# -- streams and events that degrade to host timing on the CPU ----------------------------------
class _HostEvent:
    def __init__(self) -> None:
        self.t = time.perf_counter()

    def record(self, stream: Any = None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: _HostEvent) -> float:
        return (other.t - self.t) * 1e3


class _Streams:
    def __init__(self, dev: torch.device, overlap: bool) -> None:
        self.cuda = dev.type == "cuda"
        self.compute = torch.cuda.current_stream(dev) if self.cuda else None
        self.h2d = torch.cuda.Stream(dev) if self.cuda and overlap else self.compute
        self.d2h = torch.cuda.Stream(dev) if self.cuda and overlap else self.compute

    def on(self, stream: Any) -> Any:
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def event(self, stream: Any) -> Any:
        """A timing event recorded now on ``stream``."""
        ev = torch.cuda.Event(enable_timing=True) if self.cuda else _HostEvent()
        ev.record(stream) if self.cuda else ev.record()
        return ev

    @staticmethod
    def wait(stream: Any, event: Any) -> None:
        if stream is not None and event is not None:
            stream.wait_event(event)

    def synchronize(self) -> None:
        if self.cuda:
            for s in {self.compute, self.h2d, self.d2h}:
                s.synchronize()


# -- copies ---------------------------------------------------------------------------------------
def _flat_view(flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return flat[:math.prod(shape)].view(shape)


# -- the public function --------------------------------------------------------------------------
def _pin_is_cheap(nbytes: int) -> bool:
    """torch's pinned allocator rounds sizes up to a power of two: pin the output only when
    that wastes at most a quarter.

    >>> _pin_is_cheap(4 << 30), _pin_is_cheap(5 << 30)
    (True, False)
    """
    return nbytes <= 0 or (1 << (nbytes - 1).bit_length()) <= 1.25 * nbytes


def _check_block(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AttentionInputError(f"{name} must be a positive int or None, got {value!r}")
    return value


def out_of_core_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    scale: float | None = None,
    device: torch.device | str | None = None,
    block_q: int | None = None,
    block_kv: int | None = None,
    memory_budget: int | None = None,
    backend: str = "auto",
    return_lse: bool = False,
    progress: bool | None = None,
    out: torch.Tensor | None = None,
    _staged: bool | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Exact attention by the plain out-of-core scheme (see the module docstring).

    Parameters
    ----------
    q, k, v
        ``(B, H, Lq, D)``, ``(B, Hkv, Lk, D)``, ``(B, Hkv, Lk, D)`` with ``H % Hkv == 0``; on the
        host (pinned for overlapped copies) or on the device; numpy arrays are wrapped.
    causal
        Bottom-right aligned causal mask (query ``i`` attends key ``j`` iff
        ``j <= i + Lk - Lq``).
    scale
        Score scale; default ``1/sqrt(D)``.
    device
        Where kernels run: default q's device if it is an accelerator, else CUDA when
        available, else the CPU.
    block_q, block_kv
        Rows per query block and per key/value block. Missing ones are sized from
        ``memory_budget`` (:func:`baseline_blocks`); with no budget either, 80% of the free
        device memory on CUDA, or 1024 rows on the CPU.
    memory_budget
        Device bytes the run may hold (:func:`baseline_footprint`); too small:
        :class:`~cqs_attention.errors.MemoryBudgetError` naming what would fit.
    backend
        ``"auto"`` or a kernel name, as for :func:`cqs_attention.attention`.
    return_lse
        Also return the float32 (float64 for float64 inputs) log-sum-exp ``(B, H, Lq)``.
    progress
        tqdm bar over steps: None only for runs longer than 2 s on a terminal, True, False.
    out
        Optional ``(B, H, Lq, D)`` tensor of q's dtype to write into (any device); by default
        the output is allocated on q's device (pinned when q, k, v are pinned host tensors and
        torch's power-of-two rounding of pinned allocations wastes at most 25%; a pageable
        output makes each query block's copy back synchronous).
    _staged
        Testing only: True copies through device buffers even when the inputs are on the
        device (exercises the streamed path on the CPU).

    Returns
    -------
    out or (out, lse)
        In q's dtype on q's device. Rows with no allowed key: ``out = 0``, ``lse = -inf``.
        The run's :class:`BaselineReport` is :func:`last_baseline_stats`.

    Raises
    ------
    AttentionInputError
        Bad shapes, dtypes, devices, block sizes, flags, or inputs that require grad (this
        baseline is forward only).
    MemoryBudgetError
        ``memory_budget`` not a positive int, or too small for the blocks.
    KernelUnavailableError
        No kernel (or not the forced ``backend``) runs these inputs on ``device``.

    Examples
    --------
    >>> import torch
    >>> from cqs_attention.reference import reference_attention
    >>> q = torch.randn(2, 4, 300, 16)
    >>> k, v = torch.randn(2, 2, 300, 16), torch.randn(2, 2, 300, 16)
    >>> out, lse = out_of_core_attention(q, k, v, causal=True, block_q=128, block_kv=100,
    ...                                  return_lse=True, device="cpu")
    >>> ref, ref_lse = reference_attention(q, k, v, causal=True)
    >>> bool((out - ref).norm() / ref.norm() < 1e-5), lse.shape
    (True, torch.Size([2, 4, 300]))
    """
    t_start = time.perf_counter()
    q, k, v, scale = check_qkv(q, k, v, scale)
    if not isinstance(causal, bool):
        raise AttentionInputError(f"causal must be a bool, got {causal!r}")
    if not isinstance(return_lse, bool):
        raise AttentionInputError(f"return_lse must be a bool, got {return_lse!r}")
    if progress is not None and not isinstance(progress, bool):
        raise AttentionInputError(f"progress must be None, True or False, got {progress!r}")
    bq, bkv = _check_block("block_q", block_q), _check_block("block_kv", block_kv)
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(
            memory_budget, int) or memory_budget <= 0):
        raise MemoryBudgetError(f"memory_budget must be a positive int (bytes) or None, got "
                                f"{memory_budget!r}")
    if not isinstance(backend, str):
        raise AttentionInputError(f"backend must be a str ('auto' or a kernel name), got "
                                  f"{backend!r}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise AttentionInputError("out_of_core_attention is forward only, but q, k or v "
                                  "requires grad; call it under torch.no_grad() or pass "
                                  "detached tensors")
    dev = _resolve_device(device, q)
    b, h, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise AttentionInputError(f"out must be a torch.Tensor, got {type(out).__name__}")
        if tuple(out.shape) != (b, h, lq, d) or out.dtype != q.dtype:
            raise AttentionInputError(f"out must have shape {(b, h, lq, d)} and dtype {q.dtype}"
                                      f", got {tuple(out.shape)} {out.dtype}")
    names = [kk.name for kk in available_kernels()]
    if backend != "auto" and backend not in names:
        from cqs_attention.errors import KernelUnavailableError

        raise KernelUnavailableError(f"backend={backend!r} is not a registered kernel; "
                                     "valid: 'auto', " + ", ".join(map(repr, names)))
    kernels = {None: select_kernel(backend, device=dev, dtype=q.dtype, head_dim=d, mask=None,
                                   gqa=h != hkv, needs_grad=False)}
    if causal:
        kernels["causal"] = select_kernel(backend, device=dev, dtype=q.dtype, head_dim=d,
                                          mask=BlockMask(causal_offset=0), gqa=h != hkv,
                                          needs_grad=False)
    home = q.device
    staged = dev != home if _staged is None else bool(_staged)
    budget = memory_budget
    if budget is None and bq is None and bkv is None and dev.type == "cuda":
        budget = int(0.8 * torch.cuda.mem_get_info(dev)[0])
    work = [kk for kk in kernels.values() if hasattr(kk, "workspace_bytes")]

    def footprint(m: int, n: int) -> int:
        return baseline_footprint(m, n, batch=b, heads=h, kv_heads=hkv, head_dim=d,
                                  dtype=q.dtype, staged=staged, return_lse=return_lse,
                                  causal=causal, kernel=work[0] if work else None)

    lq1, lk1 = max(lq, 1), max(lk, 1)
    bq, bkv = baseline_blocks(lq1, lk1, budget, block_q=bq, block_kv=bkv, footprint=footprint)
    bq, bkv = min(bq, lq1), min(bkv, lk1)
    report = BaselineReport(device=str(dev), home=str(home), block_q=bq, block_kv=bkv,
                            memory_budget=budget, footprint_estimate=footprint(bq, bkv))
    acc_dt = accumulator_dtype(q.dtype)
    nbytes = b * h * lq * d * q.element_size()
    pinned = out is None and home.type == "cpu" and dev.type == "cuda" and all(
        t.is_pinned() for t in (q, k, v)) and _pin_is_cheap(nbytes)
    if out is None:
        out = torch.empty(b, h, lq, d, dtype=q.dtype, device=home, pin_memory=pinned)
    lse = torch.empty(b, h, lq, dtype=acc_dt, device=out.device) if return_lse else None
    with torch.no_grad():
        if lq > 0 and lk > 0:
            _run(q, k, v, out, lse, causal=causal, scale=scale, dev=dev, bq=bq, bkv=bkv,
                 kernels=kernels, staged=staged, report=report, progress=progress)
        else:
            out.zero_()
            if lse is not None:
                lse.fill_(float("-inf"))
    report.pinned = home.type == "cpu" and all(t.is_pinned() for t in (q, k, v))
    report.seconds = time.perf_counter() - t_start
    _LOCAL.last = report
    return (out, lse) if return_lse else out


def _run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
         lse: torch.Tensor | None, *, causal: bool, scale: float, dev: torch.device, bq: int,
         bkv: int, kernels: dict[Any, Any], staged: bool, report: BaselineReport,
         progress: bool | None) -> None:
    """The unchecked run: schedule, buffers, the pipelined loop (``staged``: copy through
    device buffers, overlapped on CUDA streams; else use the inputs in place)."""
    from tqdm.auto import tqdm

    b, h, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    acc_dt = accumulator_dtype(q.dtype)
    cuda = dev.type == "cuda"
    st = _Streams(dev, overlap=staged)
    report.overlapped = cuda and staged
    blocks, steps, skipped = _schedule(lq, lk, bq, bkv, causal)
    flat = [s for mine in steps for s in mine]
    report.q_blocks, report.kv_blocks = len(blocks), math.ceil(lk / bkv)
    report.blocks_skipped = skipped
    for (q0, q1), mine in zip(blocks, steps, strict=True):
        if not mine:  # no key reaches these rows (causal with Lq > Lk)
            out[:, :, q0:q1].zero_()
            if lse is not None:
                lse[:, :, q0:q1].fill_(float("-inf"))
    if not flat:
        return
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        mem0 = torch.cuda.memory_allocated(dev)
    t_wall = time.perf_counter()
    pairs: dict[str, list[tuple[Any, Any]]] = {"h2d": [], "compute": [], "merge": [],
                                               "d2h": []}
    ctx = torch.cuda.device(dev) if cuda else contextlib.nullcontext()
    with ctx:
        acc_out = torch.empty(b, h, bq, d, dtype=acc_dt, device=dev)
        acc_lse = torch.empty(b, h, bq, dtype=acc_dt, device=dev)
        if staged:
            qbuf = torch.empty(b * h * bq * d, dtype=q.dtype, device=dev)
            kbuf = [torch.empty(b * hkv * bkv * d, dtype=k.dtype, device=dev) for _ in "ab"]
            vbuf = [torch.empty(b * hkv * bkv * d, dtype=v.dtype, device=dev) for _ in "ab"]
            obuf = [torch.empty(b * h * bq * d, dtype=q.dtype, device=dev) for _ in "ab"]
            lbuf = [torch.empty(b * h * bq, dtype=acc_dt, device=dev) for _ in "ab"]
        slots: list[tuple[int, int] | None] = [None, None]
        kv_ready: list[Any] = [None, None]
        kv_free: list[Any] = [None, None]
        o_free: list[Any] = [None, None]
        state: dict[str, Any] = {"q_ready": None, "q_free": None, "q": None}

        def issue_q(qi: int) -> None:
            q0, q1 = blocks[qi]
            if not staged:
                state["q"] = q[:, :, q0:q1]
                return
            with st.on(st.h2d):
                st.wait(st.h2d, state["q_free"])
                e0 = st.event(st.h2d)
                view = _flat_view(qbuf, (b, h, q1 - q0, d))
                report.bytes_to_device += copy_rows_in(view, q, q0, q1, cuda=cuda)[0]
                e1 = st.event(st.h2d)
            pairs["h2d"].append((e0, e1))
            state["q"], state["q_ready"] = view, e1

        def issue_kv(step: _Step, avoid: int | None) -> int:
            key = (step.k0, step.k1)
            if key in slots:
                return slots.index(key)
            slot = 1 - avoid if avoid is not None else 0
            slots[slot] = key
            if not staged:
                kv_ready[slot] = (k[:, :, step.k0:step.k1], v[:, :, step.k0:step.k1])
                return slot
            n = step.k1 - step.k0
            with st.on(st.h2d):
                st.wait(st.h2d, kv_free[slot])
                e0 = st.event(st.h2d)
                kv = []
                for src, buf in ((k, kbuf[slot]), (v, vbuf[slot])):
                    view = _flat_view(buf, (b, hkv, n, d))
                    nbytes, _ = copy_rows_in(view, src, step.k0, step.k1, cuda=cuda)
                    report.bytes_to_device += nbytes
                    kv.append(view)
                e1 = st.event(st.h2d)
            pairs["h2d"].append((e0, e1))
            kv_ready[slot] = (kv[0], kv[1], e1)
            return slot

        def finish_q(qi: int) -> None:
            q0, q1 = blocks[qi]
            n = q1 - q0
            e0 = st.event(st.compute)
            if not staged:
                out[:, :, q0:q1].copy_(acc_out[:, :, :n])
                if lse is not None:
                    lse[:, :, q0:q1].copy_(acc_lse[:, :, :n])
                pairs["merge"].append((e0, st.event(st.compute)))
                return
            slot = qi % 2
            st.wait(st.compute, o_free[slot])
            ov = _flat_view(obuf[slot], (b, h, n, d))
            ov.copy_(acc_out[:, :, :n])
            lv = None
            if lse is not None:
                lv = _flat_view(lbuf[slot], (b, h, n))
                lv.copy_(acc_lse[:, :, :n])
            e1 = st.event(st.compute)
            pairs["merge"].append((e0, e1))
            with st.on(st.d2h):
                st.wait(st.d2h, e1)
                d0 = st.event(st.d2h)
                report.bytes_from_device += copy_rows_out(out, q0, ov)
                if lv is not None:
                    report.bytes_from_device += copy_rows_out(lse, q0, lv)
                d1 = st.event(st.d2h)
            pairs["d2h"].append((d0, d1))
            o_free[slot] = d1

        disable = False if progress is True else (True if progress is False else None)
        bar = tqdm(total=len(flat), desc="out-of-core attention", unit="block",
                   disable=disable, delay=0 if progress else 2.0, leave=False)
        try:
            issue_q(flat[0].qi)
            slot_of = [issue_kv(flat[0], None)]
            done: list[Any] = []
            chunk = max(1, math.ceil(bq / MERGE_SPLIT))
            fresh = True
            for t, step in enumerate(flat):
                slot = slot_of[t]
                if t + 1 < len(flat):  # prefetch the next key/value block into the other slot
                    slot_of.append(issue_kv(flat[t + 1], slot))
                first = t == 0 or flat[t - 1].qi != step.qi
                last = t + 1 == len(flat) or flat[t + 1].qi != step.qi
                with st.on(st.compute):
                    if first:
                        st.wait(st.compute, state["q_ready"])
                        acc_out.zero_()
                        acc_lse.fill_(float("-inf"))
                        fresh = True
                    ready = kv_ready[slot]
                    if staged:
                        st.wait(st.compute, ready[2])
                    kt, vt = ready[0], ready[1]
                    r0, r1 = step.a - step.q0, step.q1 - step.q0
                    qv = state["q"][:, :, r0:]
                    for c_0, c_1, diag in step.calls:
                        mask = BlockMask(causal_offset=0) if diag else None
                        kernel = kernels["causal" if diag else None]
                        c0 = st.event(st.compute)
                        o, l_ = kernel.fwd(qv, kt[:, :, c_0:c_1], vt[:, :, c_0:c_1], scale=scale,
                                           mask=mask)
                        c1 = st.event(st.compute)
                        _merge_rows(acc_out[:, :, r0:r1], acc_lse[:, :, r0:r1], o, l_, fresh,
                                   chunk)
                        fresh = False
                        del o, l_
                        c2 = st.event(st.compute)
                        pairs["compute"].append((c0, c1))
                        pairs["merge"].append((c1, c2))
                        report.kernel_calls[kernel.name] = report.kernel_calls.get(kernel.name,
                                                                                   0) + 1
                        report.blocks_masked += diag
                    kv_free[slot] = c2
                    done.append(c2)
                    report.blocks_computed += 1
                    if last:
                        state["q_free"] = c2
                        finish_q(step.qi)
                if last and t + 1 < len(flat):
                    issue_q(flat[t + 1].qi)
                if t >= 2:  # keep the host at most two steps ahead of the device
                    done[t - 2].synchronize()
                bar.update(1)
        finally:  # buffers the copy streams use are released only once those are idle
            st.synchronize()
            bar.close()
        wall = time.perf_counter() - t_wall
        prof = {name: sum(e0.elapsed_time(e1) for e0, e1 in evs) / 1e3
                for name, evs in pairs.items()}
        prof["idle"] = max(0.0, wall - prof["compute"] - prof["merge"])
        prof["wall"] = wall
        report.profile = prof
        if cuda:
            report.peak_device_bytes = torch.cuda.max_memory_allocated(dev) - mem0
        else:
            report.peak_device_bytes = report.footprint_estimate
