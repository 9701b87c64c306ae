"""The execution engine: every mode combination against the float64 reference.

Modes: schedule (CQS, query blocks, refined CQS, plans with partly overlapping query ranges),
streamed through the CPU shim (compute device ``cpu:0``, inputs on ``cpu``) or not,
accumulators on the device or at home, prefetching, out-of-memory errors injected at random
kernel calls, checkpoint crash and resume, the backward pass. Exactness is checked in float64
against :func:`reference_attention` (out, lse and gradients).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention import attention, last_run_stats, reference_attention
from cqs_attention.engine.guard import OOMGuard
from cqs_attention.engine.placement import Dims, choose, footprint
from cqs_attention.engine.schedule import (
    Call,
    mask_categories,
    plan_rectangles,
    split_call,
    task_steps,
)
from cqs_attention.errors import AttentionInputError, MemoryBudgetError, PlanMismatchError
from cqs_attention.kernels.base import BlockMask, mask_category
from cqs_attention.kernels.fa4 import Fa4Kernel
from cqs_attention.kernels.reference import reference_fwd
from cqs_attention.masks import make_mask_spec
from cqs_attention.merge import merge_partials
from cqs_attention.testing import fail_calls, force_placement, task_hook
from cqs_design.plans import Plan, make_plan

SHIM = torch.device("cpu", 0)  # a compute device other than the inputs' "cpu": streamed path


def _qkv(b, h, lq, d, *, hkv=None, lk=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hkv = h if hkv is None else hkv
    lk = lq if lk is None else lk
    return (torch.randn(b, h, lq, d, generator=g, dtype=dtype),
            torch.randn(b, hkv, lk, d, generator=g, dtype=dtype),
            torch.randn(b, hkv, lk, d, generator=g, dtype=dtype))


def _check(out, lse, q, k, v, tol=1e-10, **mask):
    ref, ref_lse = reference_attention(q.double(), k.double(), v.double(), **mask)
    assert ((out.double() - ref).norm() / ref.norm()) <= tol
    fin = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), fin)
    assert (lse.double()[fin] - ref_lse[fin]).abs().max() <= max(tol * 10, 1e-9)


def _overlapping_plan(L: int, causal: bool) -> Plan:
    """A valid exact cover in which each task's rectangles are cut in two along the query
    axis with PARTLY OVERLAPPING query ranges (issue 13, item 2)."""
    base = make_plan(L, design=2, causal=causal).to_dict()
    for t in base["tasks"]:
        rects = []
        for r in t["rectangles"]:
            n = r["q_end"] - r["q_start"]
            kn = r["k_end"] - r["k_start"]
            if n >= 4 and kn >= 2 and r["kind"] == "full":
                cut = r["k_start"] + kn // 2
                mid = r["q_start"] + n // 2
                # left key half: all rows; right key half: rows split at mid -> the two
                # query ranges [q_start, q_end) and [mid, q_end) overlap partly
                rects.append({**r, "k_end": cut})
                rects.append({**r, "k_start": cut, "q_end": mid})
                rects.append({**r, "k_start": cut, "q_start": mid})
            else:
                rects.append(r)
        t["rectangles"] = rects
    return Plan.from_json(json.dumps(base))


# -- the mode matrix ---------------------------------------------------------------------------
MODES = st.fixed_dictionaries({
    "L": st.integers(21, 70),
    "h": st.sampled_from([(2, 2), (4, 2)]),
    "causal": st.booleans(),
    "plan": st.sampled_from(["auto", "cqs2", "cqs3", "blocks", "refined", "overlap"]),
    "streamed": st.booleans(),
    "acc": st.sampled_from([None, "host", "device"]),
    "prefetch": st.sampled_from([None, True, False]),
    "ooms": st.lists(st.integers(0, 40), max_size=6),
    "seed": st.integers(0, 2**16),
})


def _plan_of(kind, L, causal, seed):
    if kind == "auto":
        return None
    if kind == "cqs2":
        return make_plan(L, design=2, causal=causal)
    if kind == "cqs3":
        return make_plan(L, design=3, causal=causal)
    if kind == "blocks":
        return make_plan(L, schedule="query_blocks", block_q=7 + seed % 9,
                         block_kv=5 + seed % 11, causal=causal)
    if kind == "refined":
        p = make_plan(L, design=2, causal=causal)
        return p.refine([p.task_ids[seed % len(p)]], 2)
    return _overlapping_plan(L, causal)


@given(MODES)
def test_every_mode_matches_float64(m):
    L, causal = m["L"], m["causal"]
    h, hkv = m["h"]
    q, k, v = _qkv(1, h, L, 8, hkv=hkv, seed=m["seed"])
    plan = _plan_of(m["plan"], L, causal, m["seed"])
    kw = {"causal": causal, "plan": plan, "return_lse": True}
    if m["streamed"]:
        kw["device"] = SHIM
        kw["memory_budget"] = 1 << 22
    with force_placement(m["acc"], m["prefetch"]), fail_calls(m["ooms"]):
        out, lse = attention(q, k, v, **kw)
    _check(out, lse, q, k, v, causal=causal)


@given(MODES)
def test_every_mode_backward_matches_float64(m):
    L, causal = m["L"], m["causal"]
    h, hkv = m["h"]
    q, k, v = _qkv(1, h, L, 8, hkv=hkv, seed=m["seed"])
    plan = _plan_of(m["plan"], L, causal, m["seed"])
    kw = {"causal": causal, "plan": plan}
    if m["streamed"]:
        kw["device"] = SHIM
        kw["memory_budget"] = 1 << 22
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    g = torch.Generator().manual_seed(m["seed"] + 1)
    dout = torch.randn(q.shape, generator=g, dtype=q.dtype)
    with force_placement(m["acc"], m["prefetch"]), fail_calls(m["ooms"]):
        out = attention(qg, kg, vg, **kw)
        out.backward(dout)
    qr, kr, vr = (t.clone().requires_grad_(True) for t in (q, k, v))
    ref, _ = reference_attention(qr, kr, vr, causal=causal)
    ref.backward(dout)
    for a, b in ((out, ref), (qg.grad, qr.grad), (kg.grad, kr.grad), (vg.grad, vr.grad)):
        assert ((a - b).norm() / b.norm()) <= 1e-10


@pytest.mark.parametrize("acc", ["host", "device"])
@pytest.mark.parametrize("crash_after", [1, 4, 9])
@pytest.mark.parametrize("ooms", [(), (1, 2, 6)])
def test_checkpoint_crash_and_resume_is_the_uninterrupted_run(tmp_path, acc, crash_after, ooms):
    q, k, v = _qkv(1, 2, 91, 8, seed=crash_after)
    kw = {"causal": True, "plan": make_plan(91, design=3, causal=True), "device": SHIM,
          "memory_budget": 1 << 22, "return_lse": True}

    class Crash(BaseException):
        pass

    def crash(tid, attempt, seen=set()):  # noqa: B006 - state across calls on purpose
        seen.add(tid)
        if len(seen) > crash_after:
            raise Crash

    with force_placement(acc), fail_calls(ooms), task_hook(crash), pytest.raises(Crash):
        attention(q, k, v, checkpoint_dir=tmp_path, checkpoint_interval=1, **kw)
    with force_placement(acc):
        out, lse = attention(q, k, v, checkpoint_dir=tmp_path, **kw)
    _check(out, lse, q, k, v, causal=True)
    with force_placement(acc):
        plain, _plain_lse = attention(q, k, v, **kw)
    assert torch.allclose(out, plain, atol=1e-13)


def test_checkpoint_disables_nothing_oom_still_refines(tmp_path):
    """An OOM that persists at every retry is split down to small steps, checkpointed too."""
    q, k, v = _qkv(1, 2, 40, 8, seed=3)
    kw = {"causal": True, "plan": make_plan(40, design=2, causal=True), "device": SHIM,
          "memory_budget": 1 << 22, "return_lse": True}

    def big(call):
        if call.lq > 3:
            raise torch.cuda.OutOfMemoryError("calls over 3 rows do not fit")

    from cqs_attention.testing import call_hook

    with force_placement("host"), call_hook(big):
        out, lse = attention(q, k, v, checkpoint_dir=tmp_path, **kw)
    assert last_run_stats().refinements > 0
    _check(out, lse, q, k, v, causal=True)


# -- wrong answers of issue 13 ---------------------------------------------------------------
def test_repeated_oom_mid_task_never_merges_rows_twice():
    """Issue 13 item 1: L=35, 7 chunks of 5 rows, kernel calls 2, 3 and 7 failing."""
    q, k, v = _qkv(1, 2, 35, 8, seed=1)
    for calls in ([2, 3, 7], [1, 2, 3, 4, 5], [0, 2, 4, 6, 8, 10]):
        with force_placement("host"), fail_calls(calls) as failed:
            out, lse = attention(q, k, v, causal=True, plan=make_plan(35, design=2, causal=True),
                                 device=SHIM, memory_budget=5551 * 100, return_lse=True)
        assert failed == calls
        _check(out, lse, q, k, v, causal=True)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("acc", ["host", "device"])
def test_partly_overlapping_query_ranges_in_one_task(causal, acc):
    """Issue 13 item 2: valid plans whose tasks have partly overlapping query ranges."""
    for L in (28, 42, 70):
        plan = _overlapping_plan(L, causal)
        q, k, v = _qkv(1, 2, L, 8, seed=L)
        with force_placement(acc):
            out, lse = attention(q, k, v, causal=causal, plan=plan, device=SHIM,
                                 memory_budget=1 << 22, return_lse=True)
        _check(out, lse, q, k, v, causal=causal)


def test_double_backward_raises():
    """Issue 13 item 4: the backward is not differentiable; say so instead of a wrong value."""
    q = torch.randn(1, 2, 20, 4, dtype=torch.float64, requires_grad=True)
    out = attention(q, q, q, causal=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(out.sum(), q, create_graph=True)
    (gq,) = torch.autograd.grad(attention(q, q, q, causal=True).sum(), q)  # once is fine
    assert gq.shape == q.shape


def test_given_plans_are_validated():
    """Issue 13 item 5: a tampered plan is refused; a duck-typed plan is refused."""
    q = torch.randn(1, 1, 21, 4, dtype=torch.float64)
    p = make_plan(21, design=2, causal=True)
    p.causal = False  # now claims to cover the upper triangle, which it does not
    with pytest.raises(PlanMismatchError, match="exact cover"):
        attention(q, q, q, plan=p)

    class Duck:
        seq_len = kv_len = 21
        causal = False
        window = None
        tasks = make_plan(21, design=2).tasks + make_plan(21, design=2).tasks[:1]

    with pytest.raises(PlanMismatchError, match="cqs_design Plan"):
        attention(q, q, q, plan=Duck())


def test_validation_is_cached_by_content(monkeypatch):
    from cqs_attention.engine.placement import DECISIONS

    DECISIONS.clear()  # no earlier test's
    p = make_plan(49, design=2, causal=True)
    q = torch.randn(1, 1, 49, 4, dtype=torch.float64)
    calls = []
    orig = Plan.validate

    def counting(self):
        calls.append(1)
        return orig(self)

    monkeypatch.setattr(Plan, "validate", counting)
    for _ in range(3):
        attention(q, q, q, causal=True, plan=p)
    # a plan of the same content, another object: proven once all the same
    attention(q, q, q, causal=True, plan=make_plan(49, design=2, causal=True))
    assert len(calls) == 1
    p.window = (5, 0)  # content changed: validated again (and now invalid)
    with pytest.raises(PlanMismatchError, match="outside the mask"):
        attention(q, q, q, causal=True, window=(5, 0), plan=p)
    assert len(calls) == 2


def test_lk_zero_with_grad_gives_zero_gradients():
    """Issue 13 item 11: with Lk = 0 the output is connected to the graph."""
    q = torch.randn(1, 2, 5, 4, requires_grad=True)
    k = torch.randn(1, 2, 0, 4, requires_grad=True)
    out = attention(q, k, k)
    out.sum().backward()
    assert q.grad is not None
    assert torch.equal(q.grad, torch.zeros_like(q))


@pytest.mark.parametrize("device", ["meta", "mps", "xla"])
def test_devices_without_kernels_are_refused_up_front(device):
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(AttentionInputError,
                       match=r"cannot run attention kernels|not a torch device"):
        attention(q, q, q, device=device)


def test_cpu_flash_backend_with_lq_greater_than_lk_is_refused_up_front():
    """Issue 13 item 10: the kernel probe asks for the call kinds the plan produces."""
    from cqs_attention.errors import KernelUnavailableError

    q = torch.randn(1, 2, 40, 8)
    k = torch.randn(1, 2, 21, 8)
    started = []
    # design 2 puts two causal blocks of one query range in one call: a dense mask, which
    # cpu_flash cannot apply
    with task_hook(lambda tid, a: started.append(tid)), \
            pytest.raises(KernelUnavailableError, match=r"cpu_flash: .*dense"):
        attention(q, k, k, causal=True, backend="cpu_flash", plan=2)
    assert not started, "refused after work started"


# -- pieces ------------------------------------------------------------------------------------
@given(st.integers(1, 12), st.integers(1, 12), st.integers(-14, 14), st.sampled_from("qk"),
       st.booleans())
def test_split_call_covers_the_same_pairs(lq, lk, offset, axis, dense):
    g = torch.Generator().manual_seed(lq * 100 + lk)
    mask_dense = (torch.rand(1, 1, lq, lk, generator=g) > 0.3) if dense else None
    mask = BlockMask(causal_offset=offset, dense=mask_dense)
    call = Call(3, 3 + lq, ((10, 10 + lk // 2), (30, 30 + lk - lk // 2)), mask)
    q = torch.randn(1, 1, 40, 4, dtype=torch.float64, generator=g)
    kv = torch.randn(1, 1, 80, 4, dtype=torch.float64, generator=g)

    def run(c):
        keys = torch.cat([kv[:, :, s:e] for s, e in c.key_ranges], dim=2)
        return reference_fwd(q[:, :, c.q0:c.q1], keys, keys, scale=0.5, mask=c.mask)

    whole_out, whole_lse = run(call)
    parts = split_call(call, axis)
    out = torch.zeros_like(whole_out)
    lse = torch.full_like(whole_lse, float("-inf"))
    for p in parts:
        o, lo = run(p)
        sl = slice(p.q0 - call.q0, p.q1 - call.q0)
        out[:, :, sl], lse[:, :, sl] = merge_partials(out[:, :, sl], lse[:, :, sl], o, lo)
    assert torch.allclose(out, whole_out, atol=1e-12)
    fin = torch.isfinite(whole_lse)
    assert torch.equal(torch.isfinite(lse), fin)
    assert torch.allclose(lse[fin], whole_lse[fin], atol=1e-12)


@given(st.integers(8, 60), st.integers(8, 60), st.booleans(),
       st.sampled_from([None, (3, 0), (None, 2), (5, 5)]),
       st.sampled_from(["cqs", "query_blocks", "kv_blocks"]), st.integers(2, 9))
def test_mask_categories_cover_the_calls_made(lq, lk, causal, window, sched, blk):
    kw = {"kv_len": lk, "causal": causal, "window": window}
    # every drawn case has a plan: lengths >= 8 exceed design 2's 7 chunks
    plan = (make_plan(lq, design=2, **kw) if sched == "cqs" else
            make_plan(lq, schedule=sched, block_q=blk, block_kv=blk + 1, **kw))
    spec = make_mask_spec(lq, lk, batch=1, heads=1, causal=causal, window=window)
    rects = plan_rectangles(plan)
    stationary = "q" if sched == "query_blocks" else "kv"
    cats = mask_categories(rects, spec, stationary)
    seen = set()
    for i in range(len(rects)):
        for s in task_steps(rects, i, spec, stationary=stationary):
            for c in s.calls:
                seen.add(mask_category(c.mask))
    assert seen <= cats


def test_guard_policy_halves_the_longer_axis_and_fails_when_nothing_splits():
    g = OOMGuard()
    kw = {"lineage": 0, "last": None}
    assert g.on_oom(failures=1, rows=64, keys=64, **kw) == "retry"
    assert g.prefetch is False
    assert g.on_oom(failures=2, rows=64, keys=64, **kw) == "split_k"
    assert g.on_oom(failures=2, rows=64, keys=8, **kw) == "split_q"
    # a split step's lineage goes on: ties alternate with the axis halved last
    assert g.on_oom(failures=1, lineage=2, rows=32, keys=32, last="q") == "split_k"
    assert g.on_oom(failures=1, lineage=2, rows=32, keys=32, last="k") == "split_q"
    acts = [g.on_oom(failures=n, lineage=5, rows=1, keys=1, last="k") for n in range(1, 5)]
    assert acts == ["retry", "retry", "retry", "fail"]


def test_persistent_oom_fails_with_a_clear_error():
    q = torch.randn(1, 1, 21, 4, dtype=torch.float64)

    def always(call):
        raise torch.cuda.OutOfMemoryError("never fits")

    from cqs_attention.testing import call_hook

    with call_hook(always), pytest.raises(torch.cuda.OutOfMemoryError, match="single rows"):
        attention(q, q, q, plan=2)


# -- placement -----------------------------------------------------------------------------------
def test_footprint_grows_with_prefetch_and_home_accumulators_fit_smaller_budgets():
    d = Dims(1, 16, 16, 4096, 4096, 128, torch.bfloat16)
    rects = plan_rectangles(make_plan(4096, design=4, causal=True))
    kw = {"stationary": "kv", "streamed": True, "backward": False, "kernels": [Fa4Kernel()]}
    dev = footprint(rects, d, accumulators="device", prefetch=False, **kw)
    host = footprint(rects, d, accumulators="host", prefetch=False, **kw)
    host2 = footprint(rects, d, accumulators="host", prefetch=True, **kw)
    assert host < dev
    assert host < host2
    assert dev >= d.accumulator_bytes(False)


def test_planner_runs_one_call_when_it_fits_and_refuses_hopeless_budgets():
    d = Dims(1, 2, 2, 256, 256, 16, torch.float32)
    c = choose(d, budget=None, streamed=True, backward=False, causal=True, window=None,
               kernels=[Fa4Kernel()])
    assert c.kind == "whole"
    assert c.accumulators == "none"
    with pytest.raises(MemoryBudgetError, match="smallest footprint found is"):
        choose(d, budget=100, streamed=True, backward=False, causal=True, window=None,
               kernels=[Fa4Kernel()])


@pytest.mark.parametrize("backward", [False, True])
def test_planner_respects_the_budget(backward):
    d = Dims(1, 4, 4, 2048, 2048, 32, torch.float32)
    total = 3 * 4 * 2048 * 32 * 4
    c = choose(d, budget=total // 4, streamed=True, backward=backward, causal=True,
               window=None, kernels=[Fa4Kernel()])
    assert c.footprint <= total // 4
    assert c.candidates
    assert all(fp <= total // 4 for _, fp, _ in c.candidates)


def test_budget_that_runs_the_forward_runs_the_backward():
    q, k, v = _qkv(1, 2, 256, 64, seed=4)
    budget = 3 * q.numel() * 8 // 2
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = attention(qg, kg, vg, causal=True, device=SHIM, memory_budget=budget)
    fwd = last_run_stats()
    out.sum().backward()
    bwd = last_run_stats()
    assert bwd.direction == "backward"
    assert fwd.task_bytes_estimate <= budget
    assert bwd.task_bytes_estimate <= budget
    ref, _ = reference_attention(*(t.clone().requires_grad_(True) for t in (q, k, v)),
                                 causal=True)
    assert ((out - ref).norm() / ref.norm()) < 1e-10


def test_report_says_what_ran_and_why():
    q, k, v = _qkv(1, 2, 300, 16, seed=2)
    attention(q, k, v, causal=True, device=SHIM, memory_budget=3 * q.numel() * 8 // 4)
    r = last_run_stats()
    assert r.schedule in ("query_blocks", "cqs", "kv_blocks")
    assert r.accumulators in ("host", "device")
    assert "predicted" in r.chosen_because
    assert r.predicted_seconds > 0
    assert r.bytes_to_device >= 3 * q.numel() * 8 * 0.9  # every input row staged at least once
    assert r.timings["total"] > 0


def test_rows_with_no_allowed_key_are_zero_and_minus_inf():
    q, k, v = _qkv(1, 2, 40, 8, lk=12, seed=9)
    for acc in ("host", "device"):
        with force_placement(acc):
            out, lse = attention(q, k, v, causal=True, plan=2, device=SHIM,
                                 memory_budget=1 << 22, return_lse=True)
        empty = torch.isneginf(reference_attention(q, k, v, causal=True)[1])
        assert empty.any()
        assert torch.equal(out[empty.unsqueeze(-1).expand_as(out)],
                           torch.zeros_like(out)[empty.unsqueeze(-1).expand_as(out)])
        assert torch.isneginf(lse[empty]).all()
        _check(out, lse, q, k, v, causal=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_streamed_no_worse_than_monolithic(dtype):
    q, k, v = _qkv(1, 2, 200, 32, seed=5, dtype=dtype)
    ref, _ = reference_attention(q.double(), k.double(), v.double(), causal=True)
    mono = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    mono_err = float((mono.double() - ref).norm() / ref.norm())
    for acc in ("host", "device"):
        with force_placement(acc):
            out = attention(q, k, v, causal=True, plan=3, device=SHIM, memory_budget=1 << 24)
        err = float((out.double() - ref).norm() / ref.norm())
        assert err <= (1e-5 if dtype == torch.float32 else 2e-2)
        assert err <= 2 * mono_err + 1e-6


def test_numpy_inputs_out_of_core_and_memmap_output(tmp_path):
    q, k, v = _qkv(1, 2, 64, 8, seed=6, dtype=torch.float32)
    out = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32,
                                    shape=tuple(q.shape))
    from cqs_attention import out_of_core_attention

    res = out_of_core_attention(q.numpy(), k.numpy(), v.numpy(), causal=True, block_q=16,
                                block_kv=24, out=out, memory_budget=1 << 20)
    assert last_run_stats().schedule == "given query_blocks"
    ref, _ = reference_attention(q.double(), k.double(), v.double(), causal=True)
    assert float((torch.from_numpy(np.asarray(out)).double() - ref).norm() / ref.norm()) < 1e-5
    assert res is not None


# -- issue 14: clear errors from the Python API ----------------------------------------------
def test_memory_budget_accepts_the_same_forms_as_the_module():
    q = torch.randn(1, 1, 64, 8, dtype=torch.float64)
    attention(q, q, q, memory_budget="2GiB", device=SHIM)
    assert last_run_stats().memory_budget == 2 << 30
    with pytest.raises(MemoryBudgetError, match="not a size"):
        attention(q, q, q, memory_budget="lots")


def test_unusable_checkpoint_dir_is_a_checkpoint_error(tmp_path):
    from cqs_attention import CheckpointError

    q = torch.randn(1, 1, 21, 4, dtype=torch.float64)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot be used"):
        attention(q, q, q, plan=2, checkpoint_dir=blocker / "sub")


def test_merge_partials_names_mismatched_shapes():
    a, la = torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        merge_partials(a, la, torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4))


def test_cached_plans_never_reuse_another_calls_mask():
    """Two calls with the same shapes and different mask_mods / document ids (the planner's
    choice is cached by signature; the masks must not be)."""
    q, k, v = _qkv(1, 1, 1, 3, lk=2, seed=0)
    for mod in (lambda b, h, i, j: j <= i, lambda b, h, i, j: j >= i, None):
        out = attention(q, k, v, mask_mod=mod)
        ref, _ = reference_attention(q, k, v, mask_mod=mod)
        assert torch.allclose(out, ref, atol=1e-12)
    q, k, v = _qkv(1, 2, 12, 4, seed=1)
    for docs in (torch.tensor([0] * 6 + [1] * 6), torch.tensor([0] * 3 + [1] * 9)):
        out = attention(q, k, v, document_ids=docs)
        ref, _ = reference_attention(q, k, v, document_ids=docs)
        assert torch.allclose(out, ref, atol=1e-12)


def test_fast_path_for_repeated_single_calls_is_exact_and_reported():
    from cqs_attention.engine.placement import DECISIONS

    q, k, v = _qkv(1, 2, 33, 8, seed=21)
    DECISIONS.clear()
    for causal in (True, True, False, True):
        out, lse = attention(q, k, v, causal=causal, progress=False, return_lse=True)
        _check(out, lse, q, k, v, causal=causal)
        r = last_run_stats()
        assert r.accumulators == "none"
        assert sum(r.kernel_calls.values()) == 1
    assert len(DECISIONS) == 2  # one decision per signature (causal and full)


def test_rows_are_not_finalised_while_the_started_task_still_needs_them():
    """Found by the thorough profile: a side kept from the previous task was closed when the
    next task's first step overlapped it, and rows that step was about to merge were written
    to the output as final (refined causal plan, host accumulators, rows 16-17 off by 0.25)."""
    q, k, v = _qkv(1, 2, 21, 8, seed=11)
    plan = _plan_of("refined", 21, True, 11)
    for prefetch in (True, False):
        with force_placement("host", prefetch):
            out, lse = attention(q, k, v, causal=True, plan=plan, device=SHIM,
                                 memory_budget=1 << 22, return_lse=True)
        _check(out, lse, q, k, v, causal=True)
