"""The wrong answers, hangs and raw errors found in issue 13, as regression tests grouped by
the behaviour they hold the engine to (each section names the items of the issue it covers).

Only the public API is used (``attention``, ``reference_attention``, the kernel registry,
``make_plan``, ``Plan.from_json``, ``cqs_attention.distributed``), so these tests hold any
execution engine to the same answers. Results are compared with the independent float64
oracle of :mod:`tests.attention._differential` (fp64 to 1e-10, fp32 to 1e-5).

The host-accumulator tests run on the CPU through ``device=torch.device("cpu", 0)``: a
compute device different from the inputs' ``"cpu"``, which takes the branch a CUDA device with
host inputs takes, with budgets swept so that the accumulators do not fit beside a task. The
same tests run on a GPU (``gpu`` marker) with pinned host inputs and ``device="cuda"``.
A refusal passes only where it is the specified answer, and then its exception and reason are
asserted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cqs_attention import attention, available_kernels, reference_attention
from cqs_attention.errors import (
    AttentionInputError,
    KernelUnavailableError,
    MemoryBudgetError,
    PlanMismatchError,
)
from cqs_attention.kernels import register_kernel
from cqs_attention.kernels.base import BlockMask
from cqs_design.plans import Plan, PlanError, make_plan
from tests.attention._differential import (
    FaultKernel,
    SimulatedCrash,
    budget_ladder,
    cut_plan_json,
    has_partly_overlapping_q,
    lse_err,
    min_budget,
    oracle,
    rel_err,
)

CPU0 = torch.device("cpu", 0)
F64_TOL = 1e-10
F32_TOL = 1e-5


def _qkv(b: int = 1, h: int = 2, lq: int = 35, d: int = 8, *, hkv: int | None = None,
         lk: int | None = None, dtype: torch.dtype = torch.float64, seed: int = 0,
         pin: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hkv = h if hkv is None else hkv
    lk = lq if lk is None else lk
    ts = [torch.randn(b, n, ln, d, generator=g, dtype=torch.float64).to(dtype)
          for n, ln in ((h, lq), (hkv, lk), (hkv, lk))]
    return [t.pin_memory() for t in ts] if pin else ts


def _acc_bytes(q: torch.Tensor, v: torch.Tensor) -> int:
    """Bytes of the forward accumulators (out and lse; float64 for float64, else float32)."""
    size = 8 if q.dtype == torch.float64 else 4
    return q.shape[0] * q.shape[1] * q.shape[2] * (v.shape[-1] + 1) * size


def _ladder(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, short: bool = False,
            **kwargs: Any) -> list[int]:
    """Budgets from the smallest this call accepts up (dense just above it, where the
    accumulators must live on the host), found through the public API."""
    with FaultKernel():
        smallest = min_budget(q, k, v, start=_acc_bytes(q, v), cap=1 << 30, **kwargs)
    assert smallest is not None, "no budget up to 1 GiB runs this call"
    return budget_ladder(smallest, (1.0, 1.005, 1.03, 1.5)) if short else budget_ladder(
        smallest)


def _tol(dtype: torch.dtype) -> float:
    return F64_TOL if dtype == torch.float64 else F32_TOL


def _assert_exact(out: torch.Tensor, lse: torch.Tensor, ref: tuple[torch.Tensor, torch.Tensor],
                  tol: float, what: str) -> None:
    e_out, e_lse = rel_err(out, ref[0]), lse_err(lse, ref[1])
    msg = f"{what}: ||out-ref||/||ref|| = {e_out:.3g}, max |lse-ref| = {e_lse:.3g} (tol {tol})"
    assert e_out <= tol, msg
    assert e_lse <= tol, msg


def _sweep(q, k, v, *, device: Any, patterns: list[tuple[int, ...]], plan: Any = None,
           **mask: Any) -> int:
    """Run ``attention`` over the budget ladder with OOMs injected at each pattern of kernel
    calls; every run must be exact. Returns the number of OOMs raised."""
    ref = oracle(q, k, v, **mask)
    ooms = 0
    budgets = _ladder(q, k, v, device=device, plan=plan, **mask)
    for budget in budgets:
        for fail_at in patterns:
            with FaultKernel(fail_at) as fk:
                out, lse = attention(q, k, v, device=device, memory_budget=budget, plan=plan,
                                     return_lse=True, **mask)
            ooms += fk.ooms
            _assert_exact(out, lse, ref, _tol(q.dtype),
                          f"budget={budget}, OOMs at calls {fail_at}, plan={plan!r}, {mask}")
    return ooms


def _kernel(name: str) -> Any:
    return next(kk for kk in available_kernels() if kk.name == name)


# --- host accumulators merge every row once, through OOMs and resumes (items 1, 3) ---------------
#: several OOMs per task; no task needs more than three retries (what a plain retry loop
#: survives), so an engine that fails these has lost work, not run out of retries
_FAILS = [(2, 3, 7), (1, 2, 5), (3, 4, 5), (4, 6, 8)]


def _ooms_with_host_accumulators(device: Any, pin: bool) -> None:
    q, k, v = _qkv(lq=35, pin=pin)
    ooms = 0
    ooms += _sweep(q, k, v, device=device, patterns=_FAILS, plan=2)  # the case
    ooms += _sweep(q, k, v, device=device, patterns=_FAILS)
    ooms += _sweep(q, k, v, device=device, patterns=_FAILS, causal=True)
    q, k, v = _qkv(lq=35, dtype=torch.float32, pin=pin, seed=1)
    ooms += _sweep(q, k, v, device=device, patterns=_FAILS, plan=2, causal=True)
    assert ooms > 0, "no injected OOM fired: the test exercised nothing"


def test_repeated_ooms_merge_every_row_once():
    _ooms_with_host_accumulators(CPU0, pin=False)


@pytest.mark.gpu
def test_repeated_ooms_merge_every_row_once_gpu():
    _ooms_with_host_accumulators("cuda", pin=True)
    q, k, v = _qkv(lq=35, pin=True)  # the H200 reproduction of the issue
    with pytest.raises(MemoryBudgetError) as err:  # far below what any call holds on CUDA
        attention(q, k, v, device="cuda", memory_budget=5551, return_lse=True)
    with FaultKernel((2, 3, 7)):  # the budget the error names runs, exactly, despite the OOMs
        res = attention(q, k, v, device="cuda", memory_budget=err.value.minimum,
                        return_lse=True)
    _assert_exact(*res, oracle(q, k, v), F64_TOL, f"memory_budget={err.value.minimum}")


def _checkpoint_resume(device: Any, pin: bool, tmp_path: Path) -> None:
    q, k, v = _qkv(lq=60, pin=pin, seed=3)
    ref = oracle(q, k, v, causal=True)
    ran = 0
    for budget in _ladder(q, k, v, short=True, causal=True, device=device):
        kw = {"causal": True, "device": device, "memory_budget": budget, "return_lse": True,
              "checkpoint_interval": 1}
        with FaultKernel():
            try:  # checkpointing may need more room than the plain run's smallest budget
                full = attention(q, k, v, checkpoint_dir=tmp_path / f"full{budget}", **kw)
            except MemoryBudgetError:
                continue
        ran += 1
        _assert_exact(*full, ref, F64_TOL, f"uninterrupted, budget={budget}")
        for crash_after in (3, 8, 13):
            path = tmp_path / f"b{budget}-c{crash_after}"
            with FaultKernel(crash_after=crash_after) as fk, pytest.raises(SimulatedCrash):
                attention(q, k, v, checkpoint_dir=path, **kw)
            assert fk.calls == crash_after + 1
            with FaultKernel():  # resume: same kernels, same plan, same directory
                out, lse = attention(q, k, v, checkpoint_dir=path, **kw)
            what = f"budget={budget}, killed after {crash_after} kernel calls, resumed"
            _assert_exact(out, lse, ref, F64_TOL, what)
            _assert_exact(out, lse, full, 1e-12, what + " (vs the uninterrupted run)")
    assert ran >= 2, f"only {ran} budgets ran"


def _checkpointed_ooms(device: Any, pin: bool, tmp_path: Path) -> None:
    """``checkpoint_dir`` must not disable OOM refinement: several OOMs in a row, per task."""
    q, k, v = _qkv(lq=60, pin=pin, seed=4)
    ref = oracle(q, k, v, causal=True)
    fail_at = (2, 3, 4, 14, 15, 16)  # two tasks fail three times in a row
    ran = 0
    for budget in _ladder(q, k, v, short=True, causal=True, device=device):
        with FaultKernel(fail_at) as fk:
            try:
                out, lse = attention(q, k, v, causal=True, device=device, memory_budget=budget,
                                     return_lse=True, checkpoint_dir=tmp_path / str(budget),
                                     checkpoint_interval=1)
            except MemoryBudgetError:
                continue
        ran += 1
        assert fk.ooms >= 3
        _assert_exact(out, lse, ref, F64_TOL, f"checkpointed, budget={budget}, {fk.ooms} OOMs")
    assert ran >= 2


def test_checkpoint_resume_with_host_accumulators(tmp_path):
    _checkpoint_resume(CPU0, False, tmp_path)


def test_checkpointed_run_survives_repeated_ooms(tmp_path):
    _checkpointed_ooms(CPU0, False, tmp_path)


@pytest.mark.gpu
def test_checkpoint_resume_with_host_accumulators_gpu(tmp_path):
    _checkpoint_resume("cuda", True, tmp_path)


@pytest.mark.gpu
def test_checkpointed_run_survives_repeated_ooms_gpu(tmp_path):
    _checkpointed_ooms("cuda", True, tmp_path)


# --- a given plan runs when it is an exact cover and is refused otherwise (items 2, 5) -----------
def _partly_overlapping_query_ranges(device: Any, pin: bool) -> None:
    for lq, design, causal in ((35, 2, False), (35, 2, True), (60, 3, True), (91, 3, False)):
        q, k, v = _qkv(lq=lq, pin=pin, seed=lq)
        plan = cut_plan_json(make_plan(lq, design=design, causal=causal))
        assert plan.validate() is plan
        assert has_partly_overlapping_q(plan)
        ref = oracle(q, k, v, causal=causal)
        out, lse = attention(q, k, v, plan=plan, causal=causal, device="cpu", return_lse=True)
        _assert_exact(out, lse, ref, F64_TOL, f"plain run, L={lq}")
        _sweep(q, k, v, device=device, patterns=[(), (2, 3, 7)], plan=plan, causal=causal)


def test_partly_overlapping_query_ranges():
    _partly_overlapping_query_ranges(CPU0, pin=False)


@pytest.mark.gpu
def test_partly_overlapping_query_ranges_gpu():
    _partly_overlapping_query_ranges("cuda", pin=True)
    for lq in (420, 1000):  # the H200 lengths, fp32 with the GPU kernels
        q, k, v = _qkv(h=4, lq=lq, d=64, dtype=torch.float32, pin=True, seed=lq)
        plan = cut_plan_json(make_plan(lq, causal=True))
        ref = oracle(q, k, v, causal=True)
        for budget in _ladder(q, k, v, plan=plan, causal=True, device="cuda"):
            out, lse = attention(q, k, v, plan=plan, causal=True, device="cuda",
                                 memory_budget=budget, return_lse=True)
            _assert_exact(out, lse, ref, 1e-3, f"L={lq}, budget={budget}")


def test_tampered_plan_attributes_are_refused():
    """A plan whose ``causal`` flag is cleared after it was built claims pairs it never
    covered: the call validates it again and refuses it."""
    q, k, v = _qkv(lq=40, seed=7)
    plan = make_plan(40, design=2, causal=True)
    plan.causal = False  # now claims to cover the upper triangle it never had
    with pytest.raises(PlanMismatchError, match="not an exact cover"):
        attention(q, k, v, plan=plan)


class _DuckPlan:
    """A duck-typed plan that lists one task twice (valid Plans never do)."""

    def __init__(self, plan: Plan) -> None:
        self.seq_len, self.kv_len, self.causal = plan.seq_len, plan.kv_len, plan.causal
        self.window, self.design, self.levels = plan.window, plan.design, plan.levels
        self.tasks = (*plan.tasks, plan.tasks[0])

    def __len__(self) -> int:
        return len(self.tasks)

    def task(self, index: int) -> Any:
        return self.tasks[index]


def test_duck_typed_plans_are_refused():
    """Only a cqs_design Plan is run as given (it can be validated); a look-alike is refused
    whatever its tasks, here one listing a task twice and one with a task missing."""
    q, k, v = _qkv(lq=40, seed=8)
    twice = _DuckPlan(make_plan(40, design=2))
    gap = _DuckPlan(make_plan(40, design=2))
    gap.tasks = gap.tasks[1:-1]
    for duck in (twice, gap):
        with pytest.raises(PlanMismatchError, match="must be a cqs_design Plan"):
            attention(q, k, v, plan=duck)


def test_plan_listing_a_task_twice_does_not_load():
    data = make_plan(40, design=2).to_dict()
    again = json.loads(json.dumps(data["tasks"][0]))
    with pytest.raises(PlanError, match="duplicate task id 0"):
        Plan.from_json(json.dumps({**data, "tasks": [*data["tasks"], again]}))
    again["id"] = len(data["tasks"])  # the same rectangles under a new id: a double cover
    with pytest.raises(PlanError, match="covered twice"):
        Plan.from_json(json.dumps({**data, "tasks": [*data["tasks"], again]}))


def test_plan_with_a_gap_does_not_load():
    data = make_plan(40, design=2).to_dict()
    with pytest.raises(PlanError, match="covered by no rectangle"):
        Plan.from_json(json.dumps({**data, "tasks": data["tasks"][1:]}))


# --- non-finite inputs reach exactly the rows allowed to see them (items 6, 8) -------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_flash_row_with_only_minus_inf_scores(dtype):
    q, k, v = _qkv(lq=6, dtype=dtype, seed=10)
    q = q.abs()
    k[:, :, 0] = float("-inf")  # every score against key 0 is -inf
    out, lse = _kernel("cpu_flash").fwd(q, k, v, scale=0.3, mask=BlockMask(causal_offset=0))
    assert torch.isneginf(lse[:, :, 0]).all(), lse[:, :, 0]
    assert (out[:, :, 0] == 0).all()
    ref = oracle(q, k, v, scale=0.3, causal=True)
    tol = F32_TOL if dtype == torch.float32 else 2e-2
    assert rel_err(out, ref[0]) < tol
    assert lse_err(lse, ref[1]) < tol


def test_minus_inf_key_in_float32_causal_run():
    q, k, v = _qkv(lq=35, dtype=torch.float32, seed=11)
    q = q.abs()
    k[:, :, 15] = float("-inf")  # key 15 starts a chunk of design 2 (5-row chunks)
    ref = oracle(q, k, v, causal=True)
    for plan in (2, None):
        out, lse = attention(q, k, v, causal=True, plan=plan, return_lse=True)
        _assert_exact(out, lse, ref, F32_TOL, f"k[15] = -inf, plan={plan}")


def test_nan_key_propagates_to_the_rows_that_see_it():
    q, k, v = _qkv(lq=35, dtype=torch.float32, seed=12)
    k[:, :, 15] = float("nan")
    out, lse = attention(q, k, v, causal=True, plan=2, return_lse=True)
    assert torch.isnan(out[:, :, 15:]).all()
    assert torch.isnan(lse[:, :, 15:]).all()
    ref = oracle(q[:, :, :15], k[:, :, :15], v[:, :, :15], causal=True)
    _assert_exact(out[:, :, :15], lse[:, :, :15], ref, F32_TOL, "rows before the NaN key")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_bad_value_row_stays_out_of_masked_rows(dtype, bad):
    q, k, v = _qkv(lq=35, dtype=dtype, seed=17)
    vbad = v.clone()
    vbad[:, :, 12] = bad  # inside chunk [10, 15): rows 10, 11 share its causal block
    vzero = v.clone()
    vzero[:, :, 12] = 0
    docs = torch.tensor([0] * 11 + [1] * 24)  # rows 0..10 (doc 0) never see key 12
    for mask, blind in (({"causal": True}, 12), ({"window": (30, 0)}, 12),
                        ({"document_ids": docs}, 11)):
        ref = oracle(q, k, vzero, **mask)
        for name, fn in (("attention", lambda m: attention(q, k, vbad, plan=2, return_lse=True,
                                                           **m)),
                         ("reference_attention", lambda m: reference_attention(q, k, vbad,
                                                                               **m))):
            out, lse = fn(mask)
            what = f"{name}, {mask}: rows that cannot see the {bad} value row"
            assert torch.isfinite(out[:, :, :blind]).all(), what
            _assert_exact(out[:, :, :blind], lse[:, :, :blind],
                          (ref[0][:, :, :blind], ref[1][:, :, :blind]), _tol(dtype), what)
            assert not torch.isfinite(out[:, :, 12]).any(), f"{name}: row 12 sees it"


@pytest.mark.parametrize("name", ["reference", "cpu_flash"])
def test_kernels_with_every_later_value_row_infinite(name):
    """Row 0 of a causal block sees only key 0: it stays exact however many masked value
    rows are infinite; every other row sees an infinite value row."""
    q, k, v = _qkv(lq=9, dtype=torch.float32, seed=23)
    v[:, :, 1:] = float("inf")
    out, lse = _kernel(name).fwd(q, k, v, scale=0.3, mask=BlockMask(causal_offset=0))
    assert torch.equal(out[:, :, 0], v[:, :, 0])  # softmax over one key: exactly its value
    assert not torch.isfinite(out[:, :, 1:]).any()
    assert torch.isfinite(lse).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bad_value_row_gradients_of_blind_rows(dtype):
    q, k, v = _qkv(lq=35, dtype=dtype, seed=18)
    v[:, :, 12] = float("inf")
    q.requires_grad_()
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(19)).to(dtype)
    (dq,) = torch.autograd.grad(attention(q, k, v, causal=True, plan=2), q, dout)
    vzero = v.clone()
    vzero[:, :, 12] = 0
    (want,) = torch.autograd.grad(oracle(q, k, vzero, causal=True)[0], q, dout.double())
    assert torch.isfinite(dq[:, :, :12]).all()
    assert rel_err(dq[:, :, :12], want[:, :, :12]) < _tol(dtype) * 10


# --- any finite score scale, zero and negative included, is answered exactly (item 7) ------------
def _nonpositive_scale(device: str, dtype: torch.dtype, scale: float) -> None:
    q, k, v = (t.to(device) for t in _qkv(lq=40, hkv=1, dtype=dtype, seed=13))
    # any finite scale is accepted (and answered exactly: the fast kernels route such calls
    # to the reference kernel)
    out, lse = attention(q, k, v, causal=True, scale=scale, return_lse=True)
    ref = oracle(q.cpu(), k.cpu(), v.cpu(), scale=scale, causal=True)
    if dtype == torch.float32:
        _assert_exact(out.cpu(), lse.cpu(), ref, F32_TOL, f"scale={scale}")
        return
    # low precision: within twice the reference's own error in the same dtype, plus rounding
    base, base_lse = reference_attention(q.cpu(), k.cpu(), v.cpu(), causal=True, scale=scale)
    assert rel_err(out.cpu(), ref[0]) <= 2 * rel_err(base, ref[0]) + 1e-2
    assert lse_err(lse.cpu(), ref[1]) <= 2 * lse_err(base_lse, ref[1]) + 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [0.0, -0.35])
def test_nonpositive_scale_causal(dtype, scale):
    _nonpositive_scale("cpu", dtype, scale)


@pytest.mark.parametrize("scale", [0.0, -0.35])
def test_cpu_flash_kernel_nonpositive_scale(scale):
    q, k, v = _qkv(lq=7, lk=12, dtype=torch.float32, seed=14)
    for offset in (0, 5, -2):
        out, lse = _kernel("cpu_flash").fwd(q, k, v, scale=scale,
                                            mask=BlockMask(causal_offset=offset))
        allowed = torch.arange(12).view(1, -1) <= torch.arange(7).view(-1, 1) + offset
        ref = oracle(q, k, v, scale=scale, mask_mod=lambda b, h, i, j, a=allowed: a[i, j])
        _assert_exact(out, lse, ref, F32_TOL, f"causal_offset={offset}, scale={scale}")


def test_nonpositive_scale_gradients():
    q, k, v = (t.requires_grad_() for t in _qkv(lq=30, dtype=torch.float32, seed=15))
    out = attention(q, k, v, causal=True, scale=-0.4)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(16))
    got = torch.autograd.grad(out, (q, k, v), dout)
    want = torch.autograd.grad(oracle(q, k, v, scale=-0.4, causal=True)[0], (q, k, v),
                               dout.double())
    for name, a, b in zip("qkv", got, want, strict=True):
        assert rel_err(a, b) < 1e-4, f"d{name}: {rel_err(a, b):.3g}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [0.0, -0.35])
def test_nonpositive_scale_causal_gpu(dtype, scale):
    _nonpositive_scale("cuda", dtype, scale)


# --- unusual but valid inputs are answered exactly (item 11) -------------------------------------
def test_numpy_negative_strides():
    q, k, v = (t.numpy() for t in _qkv(lq=30, seed=21))
    qn, kn, vn = q[:, :, ::-1], k[:, :, ::-1], v[:, ::-1]
    assert min(qn.strides) < 0
    assert min(vn.strides) < 0
    out, lse = attention(qn, kn, vn, causal=True, return_lse=True)
    want = oracle(*(torch.from_numpy(x.copy()) for x in (qn, kn, vn)), causal=True)
    _assert_exact(out, lse, want, F64_TOL, "numpy inputs with negative strides")
    ref_out, _ = reference_attention(qn, kn, vn, causal=True)
    assert rel_err(ref_out, want[0]) < F64_TOL
    dest = np.zeros(q.shape)[:, :, ::-1]
    with pytest.raises(AttentionInputError, match="out"):
        attention(q, k, v, out=dest)


@pytest.mark.parametrize(("lq", "lk"), [(5, 0), (0, 5), (0, 0)])
def test_empty_sequence_gradients_are_zeros(lq, lk):
    q, k, v = (t.requires_grad_() for t in _qkv(lq=lq, lk=lk, seed=22))
    out = attention(q, k, v)
    assert out.shape == q.shape
    assert (out == 0).all()
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out), allow_unused=True)
    for name, g, t in zip("qkv", grads, (q, k, v), strict=True):
        assert g is not None, f"d{name} is not connected"
        assert g.shape == t.shape
        assert (g == 0).all()


# --- what cannot run is refused before any work, with the reason (items 4, 9, 10, 11) ------------
def test_double_backward_is_refused_with_the_reason():
    """Attention is differentiable once: a gradient taken with ``create_graph=True`` (the
    start of a double backward) raises at once, and the plain gradient stays exact."""
    q, k, v = (t.requires_grad_() for t in _qkv(lq=20, seed=5))
    dout = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with pytest.raises(RuntimeError, match="differentiable once: double backward"):
        torch.autograd.grad(attention(q, k, v, causal=True), q, dout, create_graph=True)
    (dq,) = torch.autograd.grad(attention(q, k, v, causal=True), q, dout)
    (want,) = torch.autograd.grad(oracle(q, k, v, causal=True)[0], q, dout)
    assert rel_err(dq, want) < F64_TOL


class _Counting:
    """The real cpu_flash kernel, counting its forward calls."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0
        self.name, self.priority = real.name, getattr(real, "priority", 100)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)

    def not_supported(self, **props: Any) -> list[str]:
        return self.real.not_supported(**props)

    def fwd(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real.fwd(*args, **kwargs)

    def bwd(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real.bwd(*args, **kwargs)


@pytest.fixture
def counting_cpu_flash():
    real = _kernel("cpu_flash")
    wrapper = _Counting(real)
    register_kernel(wrapper)  # replaces the kernel of the same name
    yield wrapper
    register_kernel(real)


@pytest.mark.parametrize(("lq", "lk", "mask"), [
    (100, 30, {"causal": True}), (97, 20, {"causal": True}), (40, 25, {"causal": True}),
    (25, 40, {"causal": True}), (40, 40, {"causal": True}),
    (40, 25, {"window": (6, 2)}), (35, 35, {"document_ids": torch.tensor([0] * 9 + [1] * 26)}),
])
def test_forced_backend_refuses_before_any_work(counting_cpu_flash, lq, lk, mask):
    q, k, v = _qkv(lq=lq, lk=lk, dtype=torch.float32, seed=20)
    if "window" in mask or "document_ids" in mask:  # window edges, documents: dense calls
        with pytest.raises(KernelUnavailableError, match="cpu_flash"):
            attention(q, k, v, backend="cpu_flash", return_lse=True, **mask)
        assert counting_cpu_flash.calls == 0  # refused before any kernel call
        return
    out, lse = attention(q, k, v, backend="cpu_flash", return_lse=True, **mask)
    _assert_exact(out, lse, oracle(q, k, v, **mask), F32_TOL, f"backend=cpu_flash, {mask}")


HANG_WORKER = Path(__file__).with_name("_budget_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("small_rank", [1, 0])
def test_too_small_budget_on_one_rank_fails_fast_everywhere(tmp_path, small_rank):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    port = _free_port()
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, str(HANG_WORKER), str(r), "2", str(port),
                               str(tmp_path), str(small_rank)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(1.0, 90 - (time.monotonic() - t0)))[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
        pytest.fail("the ranks hung for 90 s")
    text = "\n----\n".join(x.decode(errors="replace") for x in logs)
    assert all(p.returncode == 0 for p in procs), text
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, res in enumerate(results):
        assert res["error"] == "MemoryBudgetError", (r, res, text)
        assert res["seconds"] < 15, (r, res)


@pytest.mark.parametrize("device", ["meta", "mps"])
def test_unsupported_device_is_a_clear_error(device):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is available here: the run is legitimate")
    q, k, v = _qkv(lq=20, dtype=torch.float32)
    with pytest.raises((AttentionInputError, KernelUnavailableError), match=device):
        attention(q, k, v, device=device)


@pytest.mark.parametrize(("field", "value"), [("seq_len", 2**64), ("seq_len", -(2**70)),
                                              ("q_end", 2**63), ("k_start", 2**80)])
def test_plan_json_integer_beyond_int64(field, value):
    data = make_plan(20, design=2).to_dict()
    if field in data:
        data[field] = value
    else:
        data["tasks"][0]["rectangles"][0][field] = value
    with pytest.raises(PlanError):
        Plan.from_json(json.dumps(data))
