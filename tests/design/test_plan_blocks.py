"""Query-stationary and key/value-stationary block plans: exact cover, structure, JSON, refine."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cqs_design.coverage import allowed_matrix, cover_counts
from cqs_design.plans import DEFAULT_MAX_TASK_TOKENS, Plan, PlanError, make_plan

SCHEDULES = ("query_blocks", "kv_blocks")


@st.composite
def block_args(draw: Any, max_len: int = 70, max_block: int = 80) -> dict[str, Any]:
    seq_len = draw(st.integers(1, max_len), label="seq_len")
    kv_len = draw(st.one_of(st.just(seq_len), st.integers(1, max_len)), label="kv_len")
    side = st.one_of(st.none(), st.integers(0, max(seq_len, kv_len) + 2))
    window = draw(st.one_of(st.none(), st.tuples(side, side)), label="window")
    return {"seq_len": seq_len, "kv_len": kv_len,
            "schedule": draw(st.sampled_from(SCHEDULES), label="schedule"),
            "block_q": draw(st.integers(1, max_block), label="block_q"),
            "block_kv": draw(st.integers(1, max_block), label="block_kv"),
            "causal": draw(st.booleans(), label="causal"), "window": window}


def _build(args: dict[str, Any]) -> Plan:
    a = dict(args)
    return make_plan(a.pop("seq_len"), **a)


def _expected(args: dict[str, Any]) -> dict[int, list[tuple[int, int, int, int, str]]]:
    """Brute force from the dense mask: task id -> its rectangles, in plan order."""
    plan_mask = allowed_matrix(make_plan(args["seq_len"], kv_len=args["kv_len"],
                                         schedule="query_blocks", causal=args["causal"],
                                         window=args["window"]))
    n, kv, bq, bk = args["seq_len"], args["kv_len"], args["block_q"], args["block_kv"]
    off = kv - n
    tasks: dict[int, list[tuple[int, int, int, int, str]]] = {}
    for i in range(-(-n // bq)):
        for j in range(-(-kv // bk)):
            qs, qe, ks, ke = i * bq, min((i + 1) * bq, n), j * bk, min((j + 1) * bk, kv)
            if not plan_mask[qs:qe, ks:ke].any():
                continue
            rows, cols = np.ogrid[qs:qe, ks:ke]
            crossed = args["causal"] and bool((cols > rows + off).any())
            tid = i if args["schedule"] == "query_blocks" else j
            tasks.setdefault(tid, []).append((qs, qe, ks, ke, "causal" if crossed else "full"))
    return {t: sorted(r) for t, r in sorted(tasks.items())}


@given(block_args())
def test_block_plans_cover_exactly_and_match_the_definition(args: dict[str, Any]) -> None:
    plan = _build(args)
    assert plan.validate() is plan
    counts = cover_counts(plan)
    assert (counts == allowed_matrix(plan)).all()
    expected = _expected(args)
    assert plan.task_ids == tuple(expected)
    for index, (tid, rects) in enumerate(expected.items()):
        task = plan.task(index)
        assert task.id == tid
        got = [(r.q_start, r.q_end, r.k_start, r.k_end, r.kind) for r in task.rectangles]
        assert got == rects
        # plan order: j order for query blocks, i order for key/value blocks
        key = 2 if args["schedule"] == "query_blocks" else 0
        assert [r[key] for r in got] == sorted(r[key] for r in got)
        used = np.zeros(max(plan.seq_len, plan.kv_len) + 1, dtype=bool)
        for r in task.rectangles:
            used[r.q_start:r.q_end] = True
            used[r.k_start:r.k_end] = True
        step = np.diff(np.concatenate([[0], used.view(np.int8)]))
        runs = list(zip(np.flatnonzero(step == 1).tolist(), np.flatnonzero(step == -1).tolist(),
                        strict=True))
        assert list(task.segments) == runs
        ta = plan.task_arrays(index)
        assert ta["q_start"].tolist() == [r[0] for r in rects]
        assert ta["segments"].tolist() == [list(s) for s in runs]
    assert plan.tasks == tuple(plan.task(i) for i in range(len(plan)))
    a = plan.arrays()
    assert len(a["q_start"]) == plan.num_rectangles == sum(len(r) for r in expected.values())
    s = plan.stats()
    assert s.pairs_needed == int(allowed_matrix(plan).sum())
    if plan.window is None:
        assert s.pairs_computed == s.pairs_needed
    qt, kt = plan.side_tokens()
    assert len(qt) == len(kt) == len(plan)


@given(block_args(max_len=60, max_block=30), st.sampled_from([2, 3]), st.data())
def test_refined_block_plans_stay_exact(args: dict[str, Any], q: int, data: Any) -> None:
    plan = _build(args)
    v = q * q + q + 1
    qt, kt = plan.side_tokens()
    usable = np.flatnonzero(np.minimum(qt, kt) >= v).tolist()
    if not usable:
        return
    chosen = data.draw(st.lists(st.sampled_from(usable), min_size=1, unique=True))
    refined = plan.refine([plan.task_ids[i] for i in chosen], q)
    assert refined.validate() is refined
    assert (cover_counts(refined) == allowed_matrix(refined)).all()
    assert (refined.schedule, refined.block_q, refined.block_kv, refined.design) == (
        plan.schedule, plan.block_q, plan.block_kv, None)
    assert refined.levels == 2
    back = Plan.from_json(refined.to_json())
    assert back.to_dict() == refined.to_dict()


@given(block_args(max_len=40))
def test_block_plan_json_round_trip(args: dict[str, Any]) -> None:
    plan = _build(args)
    d = json.loads(plan.to_json())
    assert d["schema"] == 2
    assert d["design"] is None
    assert (d["schedule"], d["block_q"], d["block_kv"]) == (
        args["schedule"], args["block_q"], args["block_kv"])
    back = Plan.from_json(plan.to_json())
    assert back.to_dict() == plan.to_dict()
    assert back.stats() == plan.stats()
    assert (back.schedule, back.block_q, back.block_kv) == (
        plan.schedule, plan.block_q, plan.block_kv)


@given(st.integers(1, 10**7), st.integers(1, 10**7), st.sampled_from(SCHEDULES),
       st.booleans(), st.one_of(st.none(), st.tuples(
           st.one_of(st.none(), st.integers(0, 10**6)),
           st.one_of(st.none(), st.integers(0, 10**6)))), st.integers(0, 1))
def test_large_block_plans_validate(n: int, kv: int, schedule: str, causal: bool, window: Any,
                                    cross: int) -> None:
    kv = kv if cross else n
    block_q, block_kv = max(1, n // 300), max(1, kv // 300)
    plan = make_plan(n, kv_len=kv, schedule=schedule, block_q=block_q, block_kv=block_kv,
                     causal=causal, window=window).validate()
    from cqs_design._plan_mask import Mask

    left, right = window if window is not None else (None, None)
    s = plan.stats()
    assert s.pairs_needed == Mask(n, kv, causal, left, right).count()
    assert s.pairs_computed >= s.pairs_needed


def test_defaults_and_metadata() -> None:
    big = DEFAULT_MAX_TASK_TOKENS * 3 + 5
    plan = make_plan(big, kv_len=100, schedule="query_blocks")
    assert (plan.block_q, plan.block_kv) == (DEFAULT_MAX_TASK_TOKENS, 100)
    assert len(plan) == 4
    assert plan.design is None
    assert plan.schedule == "query_blocks"
    assert "block_q=16384" in plan.chosen_because
    assert "block_kv=100" in plan.chosen_because
    assert "default" in plan.chosen_because
    assert "schedule='query_blocks'" in repr(plan)
    assert "block_q=16384" in repr(plan)
    kvp = make_plan(50, schedule="kv_blocks", block_q=10, block_kv=20)
    assert "key/value-stationary" in kvp.chosen_because
    assert "given" in kvp.chosen_because
    cqs = make_plan(100, design=2)
    assert (cqs.schedule, cqs.block_q, cqs.block_kv) == ("cqs", None, None)
    assert repr(cqs).startswith("Plan(seq_len=100, kv_len=100, causal=False, window=None, "
                                "design=DifferenceSet(")


def test_tasks_the_mask_empties_are_dropped_and_keep_their_ids() -> None:
    # cross-attention, causal, fewer keys: the first 10 query rows see no key at all
    plan = make_plan(30, kv_len=20, schedule="query_blocks", block_q=5, block_kv=5, causal=True)
    assert plan.task_ids == (2, 3, 4, 5)
    plan = make_plan(20, schedule="kv_blocks", block_q=5, block_kv=5, window=(0, 0))
    assert plan.task_ids == (0, 1, 2, 3)
    assert plan.num_rectangles == 4


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"schedule": "rows"}, PlanError, "schedule must be one of 'cqs', 'query_blocks'"),
    ({"schedule": "query_blocks", "design": 2}, PlanError, "design applies to schedule='cqs'"),
    ({"schedule": "kv_blocks", "levels": 2}, PlanError, "levels applies to schedule='cqs'"),
    ({"schedule": "kv_blocks", "sub_design": 2}, PlanError, "sub_design applies"),
    ({"schedule": "query_blocks", "max_task_tokens": 10}, PlanError, "max_task_tokens applies"),
    ({"block_q": 10}, PlanError, "block_q applies to the block schedules"),
    ({"schedule": "cqs", "block_kv": 10}, PlanError, "block_kv applies to the block schedules"),
    ({"schedule": "query_blocks", "block_q": 0}, PlanError, r"block_q must be (an integer )?>= 1"),
    ({"schedule": "query_blocks", "block_kv": 2.5}, TypeError, "block_kv must be an integer"),
    ({"schedule": "query_blocks", "levels": 0}, PlanError, "levels must be"),
])
def test_bad_block_arguments(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        make_plan(100, **kwargs)


def test_too_many_blocks_or_rectangles_refused_before_building() -> None:
    with pytest.raises(PlanError, match=r"block_q=1 cuts 10000000000 tokens .* MAX_BLOCKS"):
        make_plan(10**10, schedule="query_blocks", block_q=1)
    with pytest.raises(PlanError, match=r"more than MAX_RECTANGLES.*use larger blocks"):
        make_plan(10**9, schedule="kv_blocks", block_q=10**4, block_kv=10**4)


def _block_doc() -> dict[str, Any]:
    return make_plan(30, schedule="kv_blocks", block_q=7, block_kv=11, causal=True).to_dict()


@pytest.mark.parametrize(("key", "value", "match"), [
    ("schedule", "rows", "schedule: must be one of"),
    ("schedule", 3, "schedule: must be one of"),
    ("block_q", None, "block_q: must be an integer"),
    ("block_kv", 0, "block_kv: must be >= 1"),
    ("design", {"v": 7, "elements": [0, 1, 3]}, "design: must be null for schedule 'kv_blocks'"),
])
def test_bad_block_fields_are_named(key: str, value: Any, match: str) -> None:
    d = _block_doc()
    Plan.from_dict(copy.deepcopy(d))
    d[key] = value
    with pytest.raises(PlanError, match=match):
        Plan.from_dict(d)


def test_block_fields_with_a_cqs_plan_are_refused() -> None:
    d = make_plan(14, design=2).to_dict()
    d["block_q"] = 4
    with pytest.raises(PlanError, match="block_q: must be null for schedule 'cqs'"):
        Plan.from_dict(d)


def test_schema_1_documents_still_load() -> None:
    d = make_plan(28, design=2, causal=True).to_dict()
    for key in ("schedule", "block_q", "block_kv"):
        del d[key]
    d["schema"] = 1
    plan = Plan.from_dict(d)
    assert (plan.schedule, plan.block_q, plan.block_kv) == ("cqs", None, None)
    assert plan.design is not None
    assert plan.design.v == 7
    d["schedule"] = "query_blocks"
    with pytest.raises(PlanError, match="schema 1 knows only 'cqs'"):
        Plan.from_dict(d)


def test_broken_block_plan_is_caught() -> None:
    d = _block_doc()
    d["tasks"][1]["rectangles"].pop()
    with pytest.raises(PlanError, match=r"position \(\d+, \d+\) is attended but covered by no"):
        Plan.from_dict(d)
