"""Plans: exact cover by brute force (small) and validate() (large); broken plans caught."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cqs_design import DifferenceSet, singer_difference_set
from cqs_design.coverage import allowed_matrix, cover_counts, owner_matrix
from cqs_design.plans import Plan, PlanError, make_plan
from cqs_design.plans.build import level_one, owner_table
from cqs_design.plans.check import check_cover
from cqs_design.plans.mask import Mask
from cqs_design.strategies import difference_sets, plans

# --- the design itself --------------------------------------------------------------------


@given(difference_sets(max_q=7))
def test_blocks_decompose_complete_graph(ds: DifferenceSet) -> None:
    """The v blocks D + i are k-cliques that partition the edges of K_v."""
    g = nx.Graph()
    for block in ds.blocks():
        for a, b in itertools.combinations(block, 2):
            assert not g.has_edge(a, b), f"edge {a}-{b} in two blocks"
            g.add_edge(a, b)
    assert nx.utils.graphs_equal(g, nx.complete_graph(ds.v))
    assert len(ds.blocks()) == ds.v
    assert all(len(b) == ds.k for b in ds.blocks())


@given(difference_sets(max_q=8))
def test_owner_table_matches_blocks(ds: DifferenceSet) -> None:
    """owner(a, b) is the one task holding both chunks; the diagonal goes to task c - D[0]."""
    v = ds.v
    t = owner_table(ds.elements, v)
    a, b = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
    owner = (a - t[(a - b) % v]) % v
    blocks = [set(blk) for blk in ds.blocks()]
    for x in range(v):
        for y in range(v):
            holders = [i for i, blk in enumerate(blocks) if x in blk and y in blk]
            if x == y:
                assert owner[x, y] == (x - ds.elements[0]) % v
                assert owner[x, y] in holders
            else:
                assert holders == [owner[x, y]]


# --- exact cover, brute force --------------------------------------------------------------


@given(plans(max_seq_len=90))
def test_every_allowed_pair_exactly_once(plan: Plan) -> None:
    counts = cover_counts(plan)
    allowed = allowed_matrix(plan)
    bad = np.argwhere(counts != allowed)
    assert len(bad) == 0, f"first bad position {tuple(bad[0])}: count {counts[tuple(bad[0])]}"
    plan.validate()
    s = plan.stats()
    assert s.pairs_needed == int(allowed.sum())
    # pairs computed: all rectangle pairs (causal ones below the diagonal)
    if plan.window is None:
        assert s.pairs_computed == s.pairs_needed


@given(plans(max_seq_len=90))
def test_tasks_are_consistent(plan: Plan) -> None:
    """Segments are merged, contain every rectangle, and hold nothing the rectangles don't use."""
    for t in plan.tasks:
        assert t.rectangles, "empty task kept"
        segs = t.segments
        assert all(s < e for s, e in segs)
        assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(segs))
        used = np.zeros(max(plan.seq_len, plan.kv_len), dtype=bool)
        for r in t.rectangles:
            used[r.q_start:r.q_end] = True
            used[r.k_start:r.k_end] = True
        seg_mask = np.zeros_like(used)
        for s, e in segs:
            seg_mask[s:e] = True
        assert (used == seg_mask).all()
        keys = [(r.q_start, r.k_start) for r in t.rectangles]
        assert keys == sorted(keys)
    assert len(set(plan.task_ids)) == len(plan)


@pytest.mark.parametrize("causal", [False, True])
@given(ds=difference_sets(max_q=3), extra=st.integers(0, 50))
def test_level_one_structure(causal: bool, ds: DifferenceSet, extra: int) -> None:
    """One level: v tasks of k chunks, chunk sizes differ by <= 1, causal halves the work."""
    n = ds.v + extra
    plan = make_plan(n, design=ds, causal=causal)
    sizes = np.diff((np.arange(ds.v + 1) * n) // ds.v)
    assert sizes.max() - sizes.min() <= 1
    assert len(plan) == ds.v
    pairs = ds.v * (ds.v + 1) // 2 if causal else ds.v * ds.v
    assert plan.num_rectangles == pairs
    if causal:
        for t in plan.tasks:  # diagonal blocks of more than one token are "causal"
            for r in t.rectangles:
                diag = r.q_start == r.k_start and r.q_end - r.q_start > 1
                assert r.kind == ("causal" if diag else "full")
    owner = owner_matrix(plan)
    for c in range(ds.v):  # the diagonal of chunk c belongs to task c - D[0]
        assert owner[(c * n) // ds.v, (c * n) // ds.v] == (c - ds.elements[0]) % ds.v


def test_reference_cover_matches_dense_for_all_small_masks() -> None:
    for (n, kv), causal, win, lv in itertools.product(
            [(7, 7), (30, 30), (20, 29), (29, 20), (60, 60)], [False, True],
            [None, (3, None), (2, 1), (None, 0), (0, 0)], [1, 2]):
        try:
            plan = make_plan(n, kv_len=kv, design=2, causal=causal, window=win, levels=lv)
        except PlanError:
            assert lv == 2
            continue
        assert (cover_counts(plan) == allowed_matrix(plan)).all()
        plan.validate()


# --- exact cover at scale ----------------------------------------------------------------


@given(plans(max_seq_len=10**7, max_q=8, refine=False))
def test_large_plans_validate(plan: Plan) -> None:
    plan.validate()
    s = plan.stats()
    assert s.pairs_computed >= s.pairs_needed > 0
    assert s.tokens_moved >= s.max_task_tokens >= s.min_task_tokens > 0


@given(st.integers(10**6, 10**9), st.sampled_from([2, 3, 5]), st.booleans())
def test_large_two_level_plans_validate(n: int, q: int, causal: bool) -> None:
    plan = make_plan(n, design=q, levels=2, causal=causal).validate()
    assert plan.levels == 2
    assert plan.stats().pairs_needed == Mask(n, n, causal).count()


def test_blockwise_checks_agree() -> None:
    mask = Mask(500, 400, True, 30, None)
    a = level_one(mask, 21, singer_difference_set(4).elements)
    b = level_one(mask, 21, singer_difference_set(4).elements, block=7)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    args = (mask, a["qb"], a["kb"], a["q0"], a["q1"], a["k0"], a["k1"])
    assert check_cover(*args) is None
    assert check_cover(*args, block=5) is None
    # drop one rectangle: the same first uncovered position, whatever the block size
    keep = np.ones(len(a["q0"]), dtype=bool)
    keep[len(keep) // 2] = False
    cut = (mask, a["qb"], a["kb"], a["q0"][keep], a["q1"][keep], a["k0"][keep], a["k1"][keep])
    p1, p2 = check_cover(*cut), check_cover(*cut, block=3)
    assert p1 is not None
    assert p2 is not None
    assert (p1.i, p1.j) == (p2.i, p2.j)


# --- broken plans are caught at the right position ----------------------------------------


def _first_bad(plan_dict: dict, n: int, kv: int, causal: bool, window) -> tuple[int, int]:
    """Brute force: first position in two rectangles (as plain rectangles: validate() wants
    them disjoint even where a causal kind masks the overlap) or allowed but uncovered."""
    mask = Mask(n, kv, causal, *(window or (None, None))).dense()
    i, j = np.ogrid[:n, :kv]
    raw = np.zeros((n, kv), dtype=np.int32)
    eff = np.zeros((n, kv), dtype=np.int32)
    for t in plan_dict["tasks"]:
        for r in t["rectangles"]:
            cells = np.zeros((n, kv), dtype=bool)
            cells[r["q_start"]:r["q_end"], r["k_start"]:r["k_end"]] = True
            raw += cells  # rectangles must be disjoint as rectangles
            if r["kind"] == "causal":
                cells &= j <= i + (kv - n)
            eff += cells & mask
    bad = np.argwhere((raw >= 2) | (mask & (eff == 0)))
    assert len(bad), "the mutation did not break the cover"
    return int(bad[0][0]), int(bad[0][1])


@pytest.mark.parametrize("mutation", ["drop", "duplicate", "shift"])
@given(plan=plans(max_seq_len=60, refine=False, window=False), data=st.data())
def test_validate_names_first_bad_position(mutation: str, plan: Plan, data) -> None:
    d = plan.to_dict()
    tasks = d["tasks"]
    ti = data.draw(st.integers(0, len(tasks) - 1), label="task")
    rects = tasks[ti]["rectangles"]
    ri = data.draw(st.integers(0, len(rects) - 1), label="rectangle")
    r = dict(rects[ri])
    if mutation == "drop":
        del rects[ri]
        if not rects:
            del tasks[ti]
    elif mutation == "duplicate":
        other = data.draw(st.integers(0, len(tasks) - 1), label="into task")
        tasks[other]["rectangles"].append(r)
    else:
        n = d["kv_len"]
        delta = data.draw(st.sampled_from([-1, 1]), label="delta")
        if not 0 <= r["k_start"] + delta and r["k_end"] + delta <= n:
            delta = -delta
        if not (0 <= r["k_start"] + delta and r["k_end"] + delta <= n):
            return  # a rectangle spanning every key cannot shift (rare)
        r["k_start"] += delta
        r["k_end"] += delta
        rects[ri] = r
    expected = _first_bad(d, d["seq_len"], d["kv_len"], d["causal"], None)
    with pytest.raises(PlanError, match=rf"position \({expected[0]}, {expected[1]}\)"):
        Plan.from_dict(d)


def test_validate_rejects_full_rectangle_across_the_diagonal() -> None:
    d = make_plan(14, design=2, causal=True).to_dict()
    for t in d["tasks"]:
        for r in t["rectangles"]:
            r["kind"] = "full"
    with pytest.raises(PlanError, match=r"position \(0, 1\) is masked by causality"):
        Plan.from_dict(d)


def test_validate_rejects_causal_rectangle_in_full_plan() -> None:
    d = make_plan(14, design=2).to_dict()
    d["tasks"][0]["rectangles"][0]["kind"] = "causal"
    with pytest.raises(PlanError, match="kind 'causal' but the plan is not causal"):
        Plan.from_dict(d)


def test_validate_rejects_rectangle_outside_mask() -> None:
    d = make_plan(28, design=2, causal=True).to_dict()
    d["tasks"][0]["rectangles"].append(
        {"q_start": 0, "q_end": 1, "k_start": 27, "k_end": 28, "kind": "causal"})
    with pytest.raises(PlanError, match="entirely outside the mask"):
        Plan.from_dict(d)


def test_validate_rejects_rectangle_outside_segments() -> None:
    d = make_plan(14, design=2).to_dict()
    d["tasks"][0]["segments"] = d["tasks"][0]["segments"][:1]
    with pytest.raises(PlanError, match=r"task 0 has (query|key) range .* outside the segments"):
        Plan.from_dict(d)


# --- make_plan arguments -------------------------------------------------------------------


def test_too_short_names_largest_usable_design() -> None:
    with pytest.raises(PlanError, match=r"seq_len=20 .* v=21 .* q=3 \(v=13\)"):
        make_plan(20, design=4)
    with pytest.raises(PlanError, match=r"kv_len=10 .* q=2 \(v=7\)"):
        make_plan(100, kv_len=10, design=3)
    with pytest.raises(PlanError, match="smallest, q=2, needs 7 tokens"):
        make_plan(5)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"seq_len": 0}, PlanError, r"seq_len must be an integer in \[1, \d+\], got 0"),
    ({"seq_len": 10.0}, TypeError, "seq_len must be an integer"),
    ({"seq_len": True}, TypeError, "seq_len must be an integer"),
    ({"seq_len": 50, "design": 6}, PlanError, "design=6 is not a prime power"),
    ({"seq_len": 50, "design": DifferenceSet(7, [0, 1, 2])}, PlanError, "not a cyclic"),
    ({"seq_len": 50, "levels": 0}, PlanError, "levels must be an integer >= 1"),
    ({"seq_len": 50, "window": (1, 2, 3)}, PlanError, "window must be None or a pair"),
    ({"seq_len": 50, "window": (-1, 2)}, PlanError,
     r"window left must be an integer in \[0, \d+\], got -1"),
    ({"seq_len": 50, "causal": "yes"}, TypeError, "causal must be a bool"),
    ({"seq_len": 50, "max_task_tokens": 0}, PlanError, "max_task_tokens must be an integer >= 1"),
    ({"seq_len": 10**6, "max_task_tokens": 10}, PlanError, "max_task_tokens=10 is too small"),
    ({"seq_len": 30, "design": 2, "levels": 3}, PlanError, "task .* tokens=.* shorter"),
])
def test_make_plan_rejects_bad_arguments(kwargs, exc, match) -> None:
    n = kwargs.pop("seq_len")
    with pytest.raises(exc, match=match):
        make_plan(n, **kwargs)


def _fits(n: int, q: int, budget: int, levels: int) -> bool:
    """Reference for the design choice: the token bound after each level, and every level
    leaving at least v tokens (lower bound) to divide again."""
    v, k = q * q + q + 1, q + 1
    hi, lo = n, n
    for _ in range(levels):
        if lo < v:
            return False
        hi, lo = k * -(-hi // v), k * (lo // v)
    return hi <= budget


@given(st.integers(100, 10**7), st.integers(0, 10**6), st.integers(1, 2))
def test_design_chosen_from_max_task_tokens(n: int, extra: int, levels: int) -> None:
    budget = max(30, n // 20) + extra  # keeps the chosen design (and the test) small
    candidates = [q for q in range(2, 200) if q * q + q + 1 <= n and _is_pp(q)]
    fitting = [q for q in candidates if _fits(n, q, budget, levels)]
    if not fitting:
        with pytest.raises(PlanError, match="is too small"):
            make_plan(n, max_task_tokens=budget, levels=levels)
        return
    plan = make_plan(n, max_task_tokens=budget, levels=levels)
    assert "smallest Singer design" in plan.chosen_because
    assert plan.design.k - 1 == fitting[0]
    assert plan.stats().max_task_tokens <= budget


def _is_pp(n: int) -> bool:
    from cqs_design.singer import is_prime_power

    return is_prime_power(n)


def test_default_design_is_reported() -> None:
    plan = make_plan(10**5)
    assert plan.chosen_because
    assert plan.stats().max_task_tokens <= 16384
    assert make_plan(100, design=2).chosen_because == ""


# --- levels and refine -----------------------------------------------------------------------


def test_refine_inherits_ownership() -> None:
    plan = make_plan(210, design=2)
    hybrid = plan.refine([2], 2)
    own = owner_matrix(plan)
    sub = owner_matrix(hybrid)
    ids_before = plan.task_ids
    ids_after = hybrid.task_ids
    # positions of untouched tasks keep their (id) owner; task 2's positions go to new tasks
    before = np.vectorize(lambda x: ids_before[x] if x >= 0 else -1)(own)
    after = np.vectorize(lambda x: ids_after[x] if x >= 0 else -1)(sub)
    moved = before == 2
    assert (after[~moved] == before[~moved]).all()
    assert set(np.unique(after[moved]).tolist()) == set(range(7, 7 + 7))
    assert hybrid.levels == 2
    assert [t.level for t in hybrid.tasks].count(2) == 7


def test_refine_errors() -> None:
    plan = make_plan(21, design=2)
    with pytest.raises(PlanError, match="no task with id 99"):
        plan.refine([99], 2)
    with pytest.raises(PlanError, match="shorter than the design's v=13"):
        plan.refine([0], 3)


def test_stats_counts() -> None:
    n = 1000
    s = make_plan(n, design=3, causal=True, window=(100, None)).stats()
    assert s.pairs_needed == int(Mask(n, n, True, 100, None).dense().sum())
    assert s.pairs_computed >= s.pairs_needed
    s = make_plan(n, design=3).stats()
    assert s.pairs_computed == s.pairs_needed == n * n
    assert s.tokens_moved == sum(t.tokens for t in make_plan(n, design=3).tasks)
    assert s.tasks == 13
    assert s.max_task_tokens - s.min_task_tokens <= 4


@given(st.integers(1, 60), st.integers(1, 60), st.booleans(),
       st.one_of(st.none(), st.integers(0, 70)), st.one_of(st.none(), st.integers(0, 70)),
       st.integers(0, 60), st.integers(0, 60))
def test_mask_closed_forms_match_dense(n, kv, causal, left, right, y0, y1) -> None:
    m = Mask(n, kv, causal, left, right)
    dense = m.dense()
    assert m.count() == int(dense.sum())
    y0, y1 = sorted((min(y0, n), min(y1, n)))
    assert m.row_count(y0, y1) == int(dense[y0:y1].sum())
    for i in range(n):
        lo, hi = m.band(i)
        row = np.flatnonzero(dense[i])
        assert (lo, hi) == (row[0], row[-1] + 1) if len(row) else lo >= hi
