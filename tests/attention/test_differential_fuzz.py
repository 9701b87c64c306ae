"""Differential fuzzing of :func:`cqs_attention.attention` against an independent float64
oracle (issue 13).

Each example draws a case (a small dict of parameters, printed on failure): shapes (batch,
heads, GQA key/value heads, ``Lq != Lk``, odd head dims), the scale (including zero and
negative ones), dtype (mostly float64, some float32), masks (causal, window, document ids,
``mask_mod``; combined), the plan (None, a design, ``make_plan`` plans, refined plans, and
valid JSON plans with odd rectangle shapes built by cutting and shuffling rectangles through
``Plan.from_json``), the device (``cpu``, or ``cpu:0``, which takes the streaming path), the
memory budget (relative to the smallest one the call accepts, found by bisection: there the
accumulators cannot stay beside a task), out-of-memory errors injected at chosen kernel calls
(up to three per run, often in one task), ``return_lse``, gradients, and checkpoint
kill/resume. The result is compared with :func:`tests.attention._differential.oracle`
(float64, built from the mask definitions alone): float64 to 1e-10 (gradients 1e-9), float32
to 1e-5 (gradients within 4x the float32 reference's own error plus 1e-5).

Profiles (``tests/conftest.py``): ``HYPOTHESIS_PROFILE=ci`` is seeded and derandomized (40
examples per test); ``dev`` (the default) draws 20 fresh examples. For a longer run on
demand::

    HYPOTHESIS_PROFILE=thorough python -m pytest tests/attention/test_differential_fuzz.py
    CQS_FUZZ_EXAMPLES=2000 python -m pytest tests/attention/test_differential_fuzz.py

(``thorough``: 500 examples per test; ``CQS_FUZZ_EXAMPLES`` overrides the count of any
profile.)
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from cqs_attention import attention, reference_attention
from cqs_attention.errors import MemoryBudgetError
from cqs_design.plans import PlanError, make_plan
from tests.attention._differential import (
    FaultKernel,
    SimulatedCrash,
    cut_plan_json,
    lse_err,
    min_budget,
    oracle,
    rel_err,
)

_EXAMPLES = os.environ.get("CQS_FUZZ_EXAMPLES")
_fuzz = settings(max_examples=int(_EXAMPLES)) if _EXAMPLES else (lambda f: f)

MASK_MODS = {
    "prefix": lambda b, h, i, j: (j <= i) | (j < 3),
    "stripes": lambda b, h, i, j: (i + j) % 3 != 1,
    "by_head": lambda b, h, i, j: (h % 2 == 0) | (j >= i),
    "by_batch": lambda b, h, i, j: (b == 0) | (j % 2 == 0),
}
DESIGN_V = {2: 7, 3: 13, 4: 21}


def _ids(draw: Any, n: int, docs: int) -> list[int]:
    """Sorted document ids of length ``n`` with values in ``[0, docs)``."""
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=docs - 1, max_size=docs - 1)))
    ids, prev = [], 0
    for d, c in enumerate([*cuts, n]):
        ids += [d] * (c - prev)
        prev = c
    return ids


@st.composite
def cases(draw: Any, *, grads: bool = False, checkpoint: bool = False) -> dict[str, Any]:
    """One fuzz case as plain parameters (tensors are built from ``seed`` by the test)."""
    hkv = draw(st.sampled_from([1, 2]))
    min_len = 1 if (grads or checkpoint) else 0
    max_len = 48 if checkpoint else 70  # checkpointed runs fsync their journal: keep them short
    lq = draw(st.integers(min_len, max_len))
    lk = lq if draw(st.booleans()) else draw(st.integers(min_len, max_len))
    case: dict[str, Any] = {
        "b": draw(st.sampled_from([1, 2])), "hkv": hkv, "h": hkv * draw(st.sampled_from([1, 2])),
        "lq": lq, "lk": lk, "d": draw(st.sampled_from([4, 5, 8, 16])),
        "dtype": draw(st.sampled_from(["float64", "float64", "float64", "float32"])),
        "seed": draw(st.integers(0, 2**16)),
        "device": draw(st.sampled_from(["cpu", "cpu:0"])),
        "return_lse": draw(st.booleans()),
        # mostly the default; zero and negative scales too (issue 13, item 7)
        "scale": draw(st.sampled_from([None, None, None, None, 0.0, -0.4, 0.05, 2.0])),
    }
    mask: dict[str, Any] = {}
    if draw(st.booleans()):
        mask["causal"] = True
    if draw(st.integers(0, 3)) == 0:
        left = draw(st.one_of(st.none(), st.integers(0, 20)))
        right = draw(st.integers(0, 20) if left is None else st.one_of(st.none(),
                                                                         st.integers(0, 20)))
        mask["window"] = (left, right)
    if draw(st.integers(0, 3)) == 0 and lq and lk:
        docs = draw(st.integers(1, 4))
        if lq == lk and draw(st.booleans()):
            mask["document_ids"] = _ids(draw, lq, docs)
        else:
            mask["document_ids"] = (_ids(draw, lq, docs), _ids(draw, lk, docs))
    if draw(st.integers(0, 3)) == 0:
        mask["mask_mod"] = draw(st.sampled_from(sorted(MASK_MODS)))
    case["mask"] = mask
    kind = draw(st.sampled_from(["none", "design", "make_plan", "refined", "json_cut"]))
    feasible = [q for q, v in DESIGN_V.items() if v <= min(lq, lk)]
    if kind != "none" and feasible:
        case["plan"] = {"kind": kind, "design": draw(st.sampled_from(feasible)),
                        "refine": draw(st.lists(st.integers(0, 20), max_size=3)),
                        "cut_seed": draw(st.integers(0, 2**16)),
                        "shuffle": draw(st.booleans())}
    else:
        case["plan"] = None
    # relative to the smallest budget the call accepts (there, accumulators live on the host)
    case["budget_factor"] = draw(st.sampled_from([None, None, 1.0, 1.003, 1.01, 1.1, 2.0]))
    n_ooms = draw(st.integers(0, 3))
    case["fail_at"] = sorted(draw(st.sets(st.integers(1, 16), min_size=n_ooms,
                                          max_size=n_ooms)))
    if checkpoint:
        case["crash_after"] = draw(st.integers(1, 14))
        case["interval"] = draw(st.sampled_from([1, 3]))
    return case


def _build(case: dict[str, Any], requires_grad: bool = False
           ) -> tuple[list[torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(q, k, v), the mask keywords for the oracle and the keywords for ``attention``."""
    g = torch.Generator().manual_seed(case["seed"])
    dtype = getattr(torch, case["dtype"])
    shapes = [(case["b"], case["h"], case["lq"], case["d"]),
              (case["b"], case["hkv"], case["lk"], case["d"]),
              (case["b"], case["hkv"], case["lk"], case["d"])]
    qkv = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_(
        requires_grad) for s in shapes]
    mask = dict(case["mask"])
    if "mask_mod" in mask:
        mask["mask_mod"] = MASK_MODS[mask["mask_mod"]]
    if "document_ids" in mask:
        ids = mask["document_ids"]
        mask["document_ids"] = (tuple(torch.tensor(x) for x in ids) if isinstance(ids, tuple)
                                else torch.tensor(ids))
    kw: dict[str, Any] = {"device": torch.device("cpu", 0) if case["device"] == "cpu:0"
                          else torch.device("cpu")}
    kw["plan"] = _plan(case)
    kw["scale"] = case["scale"]
    if case["budget_factor"] is not None:
        size = 8 if dtype == torch.float64 else 4
        acc = case["b"] * case["h"] * case["lq"] * (case["d"] + 1) * size
        with FaultKernel():
            smallest = min_budget(*qkv, start=acc, cap=1 << 30, **mask, **kw)
        assert smallest is not None, "no budget up to 1 GiB runs this case"
        kw["memory_budget"] = int(smallest * case["budget_factor"]) + 1
        note(f"memory_budget={kw['memory_budget']} (smallest accepted: {smallest})")
    return qkv, mask, kw


def _plan(case: dict[str, Any]) -> Any:
    spec = case["plan"]
    if spec is None:
        return None
    if spec["kind"] == "design":
        return spec["design"]
    mask = case["mask"]
    plan = make_plan(case["lq"], kv_len=case["lk"], design=spec["design"],
                     causal=bool(mask.get("causal")), window=mask.get("window"))
    if spec["kind"] == "refined" and len(plan):
        ids = sorted({plan.task_ids[i % len(plan)] for i in spec["refine"]})
        try:
            plan = plan.refine(ids or None, 2)
        except PlanError as exc:  # tasks too small to divide: run the unrefined plan
            note(f"refine refused: {exc}")
    if spec["kind"] == "json_cut":
        plan = cut_plan_json(plan, seed=spec["cut_seed"], max_cuts=3, shuffle=spec["shuffle"])
    return plan


def _tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


def _check(out: torch.Tensor, lse: torch.Tensor | None, ref: tuple[torch.Tensor, torch.Tensor],
           tol: float, what: str) -> None:
    assert out.shape == ref[0].shape, what
    e_out = rel_err(out, ref[0])
    assert e_out <= tol, f"{what}: ||out-ref||/||ref|| = {e_out:.3g} > {tol}"
    if lse is not None:
        e_lse = lse_err(lse, ref[1])
        assert e_lse <= tol, f"{what}: max |lse-ref| = {e_lse:.3g} > {tol}"


def _attention(qkv: list[torch.Tensor], mask: dict[str, Any], kw: dict[str, Any],
               return_lse: bool, **extra: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(out, lse)`` (lse None without ``return_lse``), or None when the budget was refused
    up front with a clear ``MemoryBudgetError``."""
    try:
        res = attention(*qkv, return_lse=return_lse, **mask, **kw, **extra)
    except MemoryBudgetError as exc:
        refusal = str(exc)
    else:
        if return_lse:
            return res
        assert isinstance(res, torch.Tensor)
        return res, None
    assert "memory_budget" in refusal
    event("refused: budget too small")
    return None


@_fuzz
@given(case=cases())
def test_fuzz_forward(case):
    qkv, mask, kw = _build(case)
    ref = oracle(*qkv, scale=case["scale"], **mask)
    with FaultKernel(case["fail_at"]) as fk:
        res = _attention(qkv, mask, kw, case["return_lse"])
        if res is None:
            return
        out, lse = res
    event(f"ooms raised: {fk.ooms}")
    _check(out, lse, ref, _tol(qkv[0].dtype), f"forward, {fk.ooms} OOMs")


@_fuzz
@given(case=cases(grads=True))
def test_fuzz_gradients(case):
    qkv, mask, kw = _build(case, requires_grad=True)
    dout = torch.randn((*qkv[0].shape[:3], qkv[2].shape[-1]),
                       generator=torch.Generator().manual_seed(case["seed"] + 1),
                       dtype=torch.float64)
    ref_out, ref_lse = oracle(*qkv, scale=case["scale"], **mask)
    want = torch.autograd.grad(ref_out, qkv, dout)
    with FaultKernel(case["fail_at"]) as fk:
        res = _attention(qkv, mask, kw, case["return_lse"])
        if res is None:
            return
        out, lse = res
        got = torch.autograd.grad(out, qkv, dout.to(out.dtype))
    dtype = qkv[0].dtype
    _check(out.detach(), lse, (ref_out, ref_lse), _tol(dtype), f"forward, {fk.ooms} OOMs")
    if dtype == torch.float64:
        tols = [1e-9] * 3
    else:  # the float32 reference's own error is the yardstick
        q32, k32, v32 = (t.detach().requires_grad_() for t in qkv)
        base = torch.autograd.grad(reference_attention(q32, k32, v32, scale=case["scale"],
                                                       **mask)[0],
                                   (q32, k32, v32), dout.float())
        tols = [4 * rel_err(b, w) + 1e-5 for b, w in zip(base, want, strict=True)]
    for name, a, w, tol in zip("qkv", got, want, tols, strict=True):
        err = rel_err(a, w)
        assert err <= tol, f"d{name}: relative error {err:.3g} > {tol:.3g} ({fk.ooms} OOMs)"


@_fuzz
@given(case=cases(checkpoint=True))
def test_fuzz_checkpoint_kill_resume(case):
    qkv, mask, kw = _build(case)
    ref = oracle(*qkv, scale=case["scale"], **mask)
    tol = _tol(qkv[0].dtype)
    with tempfile.TemporaryDirectory() as tmp:
        ck = {"checkpoint_interval": case["interval"]}
        with FaultKernel():
            full = _attention(qkv, mask, kw, True, checkpoint_dir=f"{tmp}/full", **ck)
        if full is None:
            return
        _check(*full, ref, tol, "uninterrupted checkpointed run")
        killed = False
        with FaultKernel(crash_after=case["crash_after"]) as fk:
            try:
                _attention(qkv, mask, kw, True, checkpoint_dir=f"{tmp}/run", **ck)
            except SimulatedCrash:
                killed = True
        assert killed == (fk.calls > case["crash_after"])
        event(f"killed: {killed}")
        with FaultKernel(case["fail_at"]) as fk:  # resume, with OOMs injected
            out, lse = _attention(qkv, mask, kw, True, checkpoint_dir=f"{tmp}/run", **ck)
        _check(out, lse, ref, tol, f"resumed after {case['crash_after']} kernel calls, "
                                   f"{fk.ooms} OOMs")
        _check(out, lse, full, max(tol, 1e-12), "resumed vs uninterrupted")


@given(case=st.one_of(cases(), cases(grads=True), cases(checkpoint=True)))
def test_cases_strategy_builds_valid_plans(case):
    """The strategy's plans are valid for their calls (a broken strategy tests nothing)."""
    plan = _plan(case)
    if plan is not None and not isinstance(plan, int):
        assert plan.validate() is plan
        assert (plan.seq_len, plan.kv_len) == (case["lq"], case["lk"])
