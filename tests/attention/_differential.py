"""Support for the differential tests (issue 13): an independent float64 oracle, a fault
injecting kernel, and plan surgery through the JSON contract.

Everything here uses only the public API of :mod:`cqs_attention` and :mod:`cqs_design`
(``register_kernel``/``unregister_kernel``/``available_kernels``, ``Plan.to_dict``/
``Plan.from_json``), so the tests run unchanged against any execution engine.

The oracle does not call :mod:`cqs_attention` at all: it builds the boolean mask from the
definitions in ``docs/attention.md`` (causal and window aligned bottom-right, document ids,
FlexAttention-style ``mask_mod``), computes the softmax in float64 and gives rows with no
allowed key ``out = 0`` and ``lse = -inf``. It is differentiable in q, k, v (the gradients of
``out``; ``lse`` is not differentiable in :func:`cqs_attention.attention` either).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cqs_attention import attention
from cqs_attention.errors import MemoryBudgetError
from cqs_attention.kernels import available_kernels, register_kernel, unregister_kernel
from cqs_design.plans import Plan

__all__ = [
    "FaultKernel",
    "SimulatedCrash",
    "allowed_mask",
    "budget_ladder",
    "cut_plan_json",
    "has_partly_overlapping_q",
    "lse_err",
    "min_budget",
    "oracle",
    "rel_err",
]


# --- the oracle ------------------------------------------------------------------------------
def allowed_mask(b: int, h: int, lq: int, lk: int, *, causal: bool = False,
                 window: tuple[int | None, int | None] | None = None,
                 document_ids: Any = None, mask_mod: Callable[..., Any] | None = None
                 ) -> torch.Tensor:
    """The ``(B, H, Lq, Lk)`` boolean "may attend" matrix, straight from the definitions."""
    i = torch.arange(lq).view(lq, 1) + (lk - lq)  # query i sits at key position i + Lk - Lq
    j = torch.arange(lk).view(1, lk)
    allowed = torch.ones(b, h, lq, lk, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if window is not None:
        left, right = window
        if left is not None:
            allowed &= j >= i - left
        if right is not None:
            allowed &= j <= i + right
    if document_ids is not None:
        if isinstance(document_ids, (tuple, list)):
            qd, kd = (torch.as_tensor(x) for x in document_ids)
        else:
            qd = kd = torch.as_tensor(document_ids)
        qd = qd.view(-1, lq) if qd.dim() == 2 else qd.view(1, lq)
        kd = kd.view(-1, lk) if kd.dim() == 2 else kd.view(1, lk)
        allowed &= (qd[:, :, None] == kd[:, None, :]).unsqueeze(1)
    if mask_mod is not None:
        bi = torch.arange(b).view(b, 1, 1, 1)
        hi = torch.arange(h).view(1, h, 1, 1)
        qi = torch.arange(lq).view(1, 1, lq, 1)
        ki = torch.arange(lk).view(1, 1, 1, lk)
        allowed &= torch.as_tensor(mask_mod(bi, hi, qi, ki), dtype=torch.bool)
    return allowed


def oracle(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
           **mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``(out, lse)`` of attention; ``out`` differentiable in q, k, v.

    Rows with no allowed key: ``out = 0``, ``lse = -inf``. GQA: query head ``h`` uses key/value
    head ``h // (H // Hkv)``.
    """
    b, h, lq, d = q.shape
    lk = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    g = h // k.shape[1]
    q64, k64, v64 = q.double(), k.double(), v.double()
    k64, v64 = k64.repeat_interleave(g, 1), v64.repeat_interleave(g, 1)
    allowed = allowed_mask(b, h, lq, lk, **mask)
    s = torch.where(allowed, (q64 @ k64.transpose(-1, -2)) * scale,
                    torch.tensor(float("-inf"), dtype=torch.float64))
    m = s.detach().amax(-1, keepdim=True) if lk else torch.zeros(b, h, lq, 1,
                                                                 dtype=torch.float64)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)  # exactly 0 where not allowed
    den = p.sum(-1, keepdim=True)
    out = (p @ v64) / torch.where(den > 0, den, torch.ones_like(den))
    with torch.no_grad():
        lse = (m + torch.log(den)).squeeze(-1)
    return out, lse


#: below this norm a reference is rounding noise (e.g. the gradient of q when every row
#: attends exactly one key is 0 up to rounding): the absolute error is compared instead
NOISE_FLOOR = 1e-9


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """``||a - ref|| / ||ref||`` in float64 (the absolute error when ``ref`` is at the rounding
    noise floor)."""
    a, ref = a.detach().double(), ref.detach().double()
    den = ref.norm().item()
    num = (a - ref).norm().item()
    return num / den if den > NOISE_FLOOR else num


def lse_err(lse: torch.Tensor, ref: torch.Tensor) -> float:
    """Max ``|lse - ref|`` over finite rows; ``inf`` when the ``-inf`` rows differ."""
    lse, ref = lse.detach().double(), ref.detach().double()
    if not torch.equal(torch.isneginf(lse), torch.isneginf(ref)):
        return float("inf")
    fin = torch.isfinite(ref)
    if not bool(fin.any()):
        return 0.0
    return (lse[fin] - ref[fin]).abs().max().item()


# --- fault injection -------------------------------------------------------------------------
class SimulatedCrash(BaseException):
    """Raised by :class:`FaultKernel` to stop a run the way a kill would: the library catches
    ``Exception`` subclasses at most, never this."""


class FaultKernel:
    """A kernel that runs every call on the real kernel the dispatcher would pick next, except
    that call number ``n`` (1-based, forward and backward calls counted together) raises
    ``torch.cuda.OutOfMemoryError`` when ``n in fail_at``, and every call after
    ``crash_after`` calls raises :class:`SimulatedCrash`.

    Registered with a priority below every real kernel, so ``backend="auto"`` picks it.
    """

    name = "fault_injector"
    priority = -(10**9)

    def __init__(self, fail_at: Iterable[int] = (), crash_after: int | None = None) -> None:
        self.fail_at = set(fail_at)
        self.crash_after = crash_after
        self.calls = 0
        self.ooms = 0
        self.delegates: set[str] = set()

    def _delegate(self, **props: Any) -> Any:
        for kernel in available_kernels():
            if kernel.name != self.name and not kernel.not_supported(**props):
                return kernel
        return None

    def _props(self, q: torch.Tensor, k: torch.Tensor, mask: Any, needs_grad: bool
               ) -> dict[str, Any]:
        return {"device": q.device, "dtype": q.dtype, "head_dim": q.shape[-1], "mask": mask,
                "gqa": q.shape[1] != k.shape[1], "needs_grad": needs_grad}

    def _count(self) -> None:
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise SimulatedCrash(f"simulated kill at kernel call {self.calls}")
        if self.calls in self.fail_at:
            self.ooms += 1
            raise torch.cuda.OutOfMemoryError(
                f"injected out-of-memory at kernel call {self.calls}")

    def not_supported(self, **props: Any) -> list[str]:
        if self._delegate(**props) is None:
            return ["no other kernel supports this call"]
        return []

    def memory_bytes(self, m: Any, *, backward: bool, mask: str = "none",
                     pieces: int = 1) -> Any:
        """The memory model of the kernel an unmasked call delegates to (so that budgets
        size plans as they would without the injector)."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {2: torch.bfloat16, 4: torch.float32, 8: torch.float64}[m.e]
        kernel = self._delegate(device=device, dtype=dtype, head_dim=m.d, mask=None,
                                gqa=m.heads != m.kv_heads, needs_grad=backward)
        return kernel.memory_bytes(m, backward=backward, mask=mask, pieces=pieces)

    def fwd(self, q, k, v, *, scale, mask=None):
        self._count()
        kernel = self._delegate(**self._props(q, k, mask, False))
        self.delegates.add(kernel.name)
        return kernel.fwd(q, k, v, scale=scale, mask=mask)

    def bwd(self, dout, q, k, v, out, lse, *, scale, mask=None):
        self._count()
        kernel = self._delegate(**self._props(q, k, mask, True))
        self.delegates.add(kernel.name)
        return kernel.bwd(dout, q, k, v, out, lse, scale=scale, mask=mask)

    def __enter__(self) -> FaultKernel:
        register_kernel(self)
        return self

    def __exit__(self, *exc: object) -> None:
        unregister_kernel(self.name)


# --- budgets ---------------------------------------------------------------------------------
def min_budget(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, start: int, cap: int,
               **kwargs: Any) -> int | None:
    """The smallest ``memory_budget`` that ``attention(q, k, v, **kwargs)`` accepts, to 0.2%
    (doubling from ``start``, then bisection on the up-front ``MemoryBudgetError``; inputs
    that require grad are sized for the backward too). None when even ``cap`` is refused.

    Whatever the engine's footprint model, at this budget the accumulators cannot also be on
    the device (else a smaller budget would have run with them on the host), so budgets just
    above it exercise host accumulators; the windows where a given plan runs with host
    accumulators can be narrow (about 1% of the budget), which a coarse sweep misses.
    """
    def runs(budget: int) -> bool:
        try:
            attention(q, k, v, memory_budget=budget, **kwargs)  # (no backward is run)
        except MemoryBudgetError:
            return False
        return True

    lo, hi = 0, max(1, start)  # lo: refused (a budget must be positive)
    while not runs(hi):
        if hi >= cap:
            return None
        lo, hi = hi, min(cap, 2 * hi)
    while hi - lo > max(1, hi // 500):
        mid = (lo + hi) // 2
        if runs(mid):
            hi = mid
        else:
            lo = mid
    return hi


def budget_ladder(smallest: int, factors: Iterable[float] = (1.0, 1.002, 1.005, 1.01, 1.03,
                                                             1.1, 1.5, 3.0)) -> list[int]:
    """Budgets from ``smallest`` up: dense just above it, then coarser."""
    return sorted({int(smallest * f) + 1 for f in factors})


# --- plan surgery ----------------------------------------------------------------------------
def _cut(rect: dict[str, Any], axis: str, at: int) -> list[dict[str, Any]]:
    lo, hi = f"{axis}_start", f"{axis}_end"
    return [dict(rect, **{hi: at}), dict(rect, **{lo: at})]


def _any_allowed(data: dict[str, Any], rect: dict[str, Any]) -> bool:
    """Whether the plan's causal/window mask allows some position of ``rect`` (pieces that it
    does not are dropped: they cover nothing, and a valid plan may not list them)."""
    off = data["kv_len"] - data["seq_len"]
    left, right = data["window"] if data["window"] is not None else (None, None)
    for i in range(rect["q_start"], rect["q_end"]):
        lo = rect["k_start"] if left is None else max(rect["k_start"], i + off - left)
        hi = rect["k_end"] - 1
        if right is not None:
            hi = min(hi, i + off + right)
        if data["causal"]:
            hi = min(hi, i + off)
        if lo <= hi:
            return True
    return False


def cut_plan_json(plan: Plan, *, seed: int | None = None, overlap_q: bool = True,
                  max_cuts: int = 1, shuffle: bool = False) -> Plan:
    """``plan`` with its rectangles cut (through ``to_dict``/``Plan.from_json``): still an
    exact cover, but with rectangle shapes ``make_plan`` never produces.

    ``overlap_q=True`` and ``seed=None``: every rectangle of height >= 2 is cut in two along
    the query axis at a point that differs between the rectangles of a task sharing a query
    range, so a task owns rectangles with partly overlapping query ranges (issue 13, item 2).
    With a ``seed``: up to ``max_cuts`` random cuts per rectangle along either axis; with
    ``shuffle`` the order of rectangles and tasks is permuted too.
    """
    data = plan.to_dict()
    rng = random.Random(seed)
    for task in data["tasks"]:
        rects: list[dict[str, Any]] = []
        for r, rect in enumerate(task["rectangles"]):
            if seed is None:
                a, b = rect["q_start"], rect["q_end"]
                rects += _cut(rect, "q", a + 1 + r % (b - a - 1)) if b - a >= 2 else [rect]
                continue
            pieces = [rect]
            for _ in range(rng.randint(0, max_cuts)):
                i = rng.randrange(len(pieces))
                axis = rng.choice("qk")
                lo, hi = pieces[i][f"{axis}_start"], pieces[i][f"{axis}_end"]
                if hi - lo >= 2:
                    pieces[i:i + 1] = _cut(pieces[i], axis, rng.randint(lo + 1, hi - 1))
            rects += [pc for pc in pieces if _any_allowed(data, pc)]
        if shuffle:
            rng.shuffle(rects)
        task["rectangles"] = rects
    if shuffle:
        rng.shuffle(data["tasks"])
    return Plan.from_json(json.dumps(data))


def has_partly_overlapping_q(plan: Plan) -> bool:
    """True when some task owns two rectangles whose query ranges overlap without being equal."""
    for task in plan.tasks:
        ranges = {(r.q_start, r.q_end) for r in task.rectangles}
        for a0, a1 in ranges:
            for b0, b1 in ranges:
                if (a0, a1) != (b0, b1) and a0 < b1 and b0 < a1:
                    return True
    return False
