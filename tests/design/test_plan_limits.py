"""Plans never blow up: the default design stays under the rectangle limits at every length,
multi-level plans are sized before they are built, and huge lengths stay exact."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqs_design.plans import DEFAULT_MAX_TASK_TOKENS, PlanError, make_plan
from cqs_design.plans import plan as plan_module
from cqs_design.plans.build import TooManyPieces, count_level_one
from cqs_design.plans.design import (
    DEFAULT_MAX_RECTANGLES,
    DEFAULT_MAX_REFINED_RECTANGLES,
    MAX_REFINED_RECTANGLES,
    MAX_TOKENS,
    _choose_design,
    _singer,
    estimate_rectangles,
    workable_design,
)
from cqs_design.plans.mask import Mask

lengths = st.one_of(st.integers(7, 10**4), st.integers(7, 10**12),
                    st.builds(lambda e: int(10**e), st.floats(0.85, 12.0)))
windows = st.one_of(st.none(), st.tuples(st.one_of(st.none(), st.integers(0, 10**6)),
                                         st.one_of(st.none(), st.integers(0, 10**6))))


@given(n=lengths, cross=st.one_of(st.none(), lengths), causal=st.booleans(), window=windows)
@settings(deadline=None)
def test_default_design_stays_under_the_limit_at_every_length(n, cross, causal, window) -> None:
    """The chooser alone (nothing built): for every length up to 10^12 it returns a design
    whose exact rectangle count is under DEFAULT_MAX_RECTANGLES."""
    kv = n if cross is None else cross
    left, right = window if window is not None else (None, None)
    mask = Mask(n, kv, causal, left, right)
    ds, reason = _choose_design(n, kv, DEFAULT_MAX_TASK_TOKENS, 1, False, mask)
    assert ds.v <= min(n, kv)
    assert count_level_one(mask, ds.v) <= DEFAULT_MAX_RECTANGLES
    assert reason


@pytest.mark.parametrize("n", [7, 100, 10**6, 10**9, 10**12])
def test_default_plan_builds_and_validates(n: int) -> None:
    plan = make_plan(n).validate()
    assert plan.num_rectangles <= DEFAULT_MAX_RECTANGLES
    assert plan.design is not None
    assert plan.design.v ** 2 == plan.num_rectangles
    if n >= 10**9:
        assert "stays under" in plan.chosen_because


def test_default_plan_at_a_billion_tokens_asks_for_no_huge_q() -> None:
    """It used to fall back to q = 31607 (v ~ 10^9) and fail in the Singer construction."""
    plan = make_plan(10**9)
    assert plan.design is not None
    assert plan.design.k - 1 < 100
    assert "q=31607" not in plan.chosen_because


def test_small_lengths() -> None:
    assert make_plan(7).design.v == 7
    for n in range(1, 7):
        with pytest.raises(PlanError, match="smallest, q=2, needs 7 tokens"):
            make_plan(n)


def test_unchanged_where_the_task_size_was_reachable() -> None:
    """Up to about a million tokens the default is what it always was: the smallest design
    whose tasks fit DEFAULT_MAX_TASK_TOKENS."""
    for n, q in [(10**5, 7), (10**6, 64)]:
        plan = make_plan(n)
        assert plan.design.k - 1 == q
        assert plan.stats().max_task_tokens <= DEFAULT_MAX_TASK_TOKENS


def test_explicit_task_budget_out_of_reach_is_refused_quickly() -> None:
    with pytest.raises(PlanError, match=r"max_task_tokens=16384 is too small: .* q=73"):
        make_plan(10**9, max_task_tokens=16384)


@given(st.integers(20, 3000), st.integers(20, 3000), st.sampled_from([2, 3, 4, 5]),
       st.sampled_from([2, 3, 4]), st.integers(2, 3), st.booleans())
def test_multi_level_estimate_bounds_unmasked_plans(n: int, kv: int, q: int, q2: int,
                                                    levels: int, cross: bool) -> None:
    kv = kv if cross else n
    try:
        plan = make_plan(n, kv_len=kv, design=q, levels=levels, sub_design=q2)
    except PlanError:
        return  # too short for these levels
    ds, sub = _singer(q), _singer(q2)
    est = estimate_rectangles(Mask(n, kv), ds.v, ds.k, levels, (sub.v, sub.k))
    assert plan.num_rectangles <= est


@given(st.integers(7, 5000), st.integers(7, 5000), st.sampled_from([2, 3, 5, 7]),
       st.booleans(), windows)
def test_one_level_count_is_exact(n: int, kv: int, q: int, causal: bool, window) -> None:
    ds = _singer(q)
    if min(n, kv) < ds.v:
        return
    left, right = window if window is not None else (None, None)
    plan = make_plan(n, kv_len=kv, design=ds, causal=causal, window=window)
    assert plan.num_rectangles == count_level_one(Mask(n, kv, causal, left, right), ds.v)
    assert plan.num_rectangles == estimate_rectangles(Mask(n, kv, causal, left, right),
                                                      ds.v, ds.k)


def test_multi_level_plans_are_sized_before_building() -> None:
    """make_plan(10**7, design=61, levels=2) would need ~5.7e10 rectangles: refused from the
    estimate alone (nothing is built), naming a design that fits."""
    with pytest.raises(PlanError, match=r"2-level plan with the v=3783 design would have about "
                       r"[\d,]+ rectangles, more than MAX_REFINED_RECTANGLES.*use design=13 "
                       r"\(v=183"):
        make_plan(10**7, design=61, levels=2)
    q, est = workable_design(Mask(10**7, 10**7), levels=2)
    assert est <= MAX_REFINED_RECTANGLES
    v = 16 * 16 + 16 + 1  # the next prime power, 16, is over the limit
    assert estimate_rectangles(Mask(10**7, 10**7), v, 17, 2) > MAX_REFINED_RECTANGLES
    assert q == 13


def test_default_multi_level_design_is_sized() -> None:
    """make_plan(10**7, levels=2) (which used to be OOM-killed) chooses a design whose
    estimate is under the default multi-level cap; checked without building it."""
    mask = Mask(10**7, 10**7)
    ds, reason = _choose_design(10**7, 10**7, DEFAULT_MAX_TASK_TOKENS, 2, False, mask)
    assert estimate_rectangles(mask, ds.v, ds.k, 2) <= DEFAULT_MAX_REFINED_RECTANGLES
    assert "2-level plan stays under" in reason
    for n in (10**9, 10**12):
        ds, _ = _choose_design(n, n, DEFAULT_MAX_TASK_TOKENS, 3, False, Mask(n, n))
        assert estimate_rectangles(Mask(n, n), ds.v, ds.k, 3) <= DEFAULT_MAX_REFINED_RECTANGLES


def test_refine_checks_the_exact_count_before_allocating(monkeypatch) -> None:
    plan = make_plan(3000, design=3, causal=True, window=(400, None))
    monkeypatch.setattr(plan_module, "MAX_REFINED_RECTANGLES", 1000)
    with pytest.raises(PlanError, match=r"new rectangles, more than the [\d,]+ left under "
                       r"MAX_REFINED_RECTANGLES=1,000; use design=(\d+)") as info:
        plan.refine(None, 7)
    hinted = int(str(info.value).split("use design=")[1].split()[0])
    assert plan.refine(None, hinted).validate().num_rectangles <= 1000
    # the same guard stops a level of make_plan whose estimate was too low
    with pytest.raises(PlanError, match="more than the"):
        make_plan(3000, design=3, causal=True, window=(400, None), levels=3)


def test_subdivide_refuses_before_building() -> None:
    from cqs_design.plans.build import subdivide

    plan = make_plan(500, design=2)
    a = plan.arrays()
    rects = {"qs": a["q_start"], "qe": a["q_end"], "ks": a["k_start"], "ke": a["k_end"],
             "kind": a["kind"], "task": a["task"]}
    seg = plan._segments("all")
    with pytest.raises(TooManyPieces) as info:
        subdivide(plan._mask, rects, seg, seg, 13, _singer(3).elements, max_pieces=10)
    assert info.value.pieces > 10


def test_lengths_beyond_the_limit_are_refused() -> None:
    with pytest.raises(PlanError, match=rf"seq_len must be an integer in \[1, {MAX_TOKENS}\]"):
        make_plan(MAX_TOKENS + 1)
    with pytest.raises(PlanError, match="kv_len must be an integer in"):
        make_plan(100, kv_len=10**23)


@pytest.mark.parametrize(("kwargs", "pairs"), [
    ({"design": 2}, 10**24),
    ({"design": 2, "causal": True}, 10**12 * (10**12 + 1) // 2),
    ({"design": 3, "kv_len": 10**11, "causal": True}, None),
])
def test_stats_are_exact_at_a_trillion_tokens(kwargs, pairs) -> None:
    plan = make_plan(10**12, **kwargs)
    s = plan.stats()
    kv = kwargs.get("kv_len", 10**12)
    expected = Mask(10**12, kv, kwargs.get("causal", False)).count()
    assert s.pairs_needed == s.pairs_computed == expected
    if pairs is not None:
        assert expected == pairs
    assert s.tokens_moved > 0
    if "kv_len" not in kwargs:  # self-attention: a task holds k of the v chunks
        assert math.isclose(s.max_task_tokens, plan.design.k * 10**12 / plan.design.v,
                            rel_tol=1e-6)


@given(st.integers(1, 10**12), st.integers(1, 1 << 24))
def test_chunk_bounds_are_exact_beyond_int64_products(n: int, v: int) -> None:
    """c * n overflows int64 for n = 10^12 and v > 9.2 million; the bounds must not."""
    from cqs_design.plans.build import chunk_bounds

    v = min(v, n)
    b = chunk_bounds(n, v)
    for c in {0, 1, v // 2, v - 1, v}:
        assert int(b[c]) == c * n // v


@pytest.mark.parametrize("window", [(1000, 0), (0, 0), (10**6, None), (None, 5)])
@pytest.mark.parametrize("n", [10**9, 10**12])
def test_windowed_default_plans_stay_small(n: int, window) -> None:
    """Windows leave few rectangles per chunk, so the rectangle cap alone would allow millions
    of chunks (a Singer set of q ~ 4000 and minutes of work); DEFAULT_MAX_CHUNKS bounds it."""
    from cqs_design.plans.design import DEFAULT_MAX_CHUNKS

    plan = make_plan(n, window=window, causal=window[1] is None).validate()
    assert plan.design.v <= DEFAULT_MAX_CHUNKS
    assert plan.num_rectangles <= DEFAULT_MAX_RECTANGLES
    s = plan.stats()
    assert s.pairs_computed >= s.pairs_needed > 0


def test_segment_helpers_never_overflow() -> None:
    """task * (length + 1) overflows int64 for millions of tasks at 10^12 tokens: the
    encodings use ranks of the coordinates instead."""
    import numpy as np

    from cqs_design.plans.check import check_segments
    from cqs_design.plans.intervals import _merge_intervals

    tasks = np.array([0, 0, 10_000_000, 10_000_000, 10_000_000], dtype=np.int64)
    s = np.array([10**12 - 50, 5, 7, 10**12 - 9, 20], dtype=np.int64)
    e = np.array([10**12, 30, 20, 10**12, 40], dtype=np.int64)
    ptr, ss, se = _merge_intervals(tasks, s, e, 10_000_001, 10**12 + 1)
    assert ptr[1] == 2
    assert ptr[-1] == 4
    assert list(zip(ss.tolist(), se.tolist(), strict=True)) == [
        (5, 30), (10**12 - 50, 10**12), (7, 40), (10**12 - 9, 10**12)]
    seg_task = np.array([0, 0, 10_000_000, 10_000_000], dtype=np.int64)
    lo = np.array([10**12 - 40, 6, 10**12 - 9], dtype=np.int64)
    hi = np.array([10**12, 30, 10**12], dtype=np.int64)
    t = np.array([0, 0, 10_000_000], dtype=np.int64)
    assert check_segments(t, lo, hi, seg_task, ss, se, 10**12 + 1) is None
    assert check_segments(t, lo - 41, hi, seg_task, ss, se, 10**12 + 1) == 0


@given(st.integers(7, 300), st.integers(7, 300), st.sampled_from([2, 3, 5]), st.booleans(),
       windows, st.sampled_from(["all", "q", "k"]))
def test_sparse_segments_equal_the_bitmap(n: int, kv: int, q: int, causal: bool, window,
                                          which: str) -> None:
    from cqs_design.plans.intervals import _bitmap_segments, _sparse_cell_segments

    if min(n, kv) < q * q + q + 1:
        return
    plan = make_plan(n, kv_len=kv, design=q, causal=causal, window=window)
    a = plan._a
    dense = _bitmap_segments(a, len(plan), which)
    if dense is None:
        return
    parts = ([("q0", "q1")] if which == "q" else [("k0", "k1")] if which == "k" else
             [("q0", "q1"), ("k0", "k1")])
    sparse = _sparse_cell_segments(a, len(plan), parts, a["kb"] if which == "k" else a["qb"])
    for x, y in zip(dense, sparse, strict=True):
        assert x.tolist() == y.tolist()
