"""Plan JSON: round trips, the public keys, and rejection of every kind of bad field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given

from cqs_design import DifferenceSet
from cqs_design.plans import Plan, PlanError, make_plan
from cqs_design.strategies import plans

REQUIRED_TOP = {"schema", "seq_len", "causal", "design", "tasks"}
REQUIRED_TASK = {"id", "segments", "rectangles"}
REQUIRED_RECT = {"q_start", "q_end", "k_start", "k_end", "kind"}


@given(plans(max_seq_len=80))
def test_round_trip(plan: Plan) -> None:
    text = plan.to_json()
    back = Plan.from_json(text)
    assert back.to_dict() == plan.to_dict()
    assert Plan.from_json(text.encode()).to_json() == text
    assert back.stats() == plan.stats()


@given(plans(max_seq_len=60))
def test_public_keys(plan: Plan) -> None:
    d = json.loads(plan.to_json(indent=1))
    assert REQUIRED_TOP | {"kv_len", "window", "levels"} <= set(d)
    assert d["schema"] == 2
    assert (d["schedule"], d["block_q"], d["block_kv"]) == ("cqs", None, None)
    assert set(d["design"]) >= {"v", "elements"}
    for t in d["tasks"]:
        assert REQUIRED_TASK <= set(t)
        assert all(isinstance(s, list) and len(s) == 2 for s in t["segments"])
        for r in t["rectangles"]:
            assert REQUIRED_RECT <= set(r)
            assert r["kind"] in ("full", "causal")


def test_minimal_document_is_accepted() -> None:
    """Only the contract keys: kv_len, window and levels default sensibly."""
    d = make_plan(14, design=DifferenceSet(7, [0, 1, 3])).to_dict()
    for key in ("kv_len", "window", "levels", "chosen_because", "schedule", "block_q",
                "block_kv"):
        del d[key]
    for t in d["tasks"]:
        del t["level"]
    plan = Plan.from_dict(d)
    assert (plan.kv_len, plan.window, plan.levels) == (14, None, 1)


def _base() -> dict[str, Any]:
    return make_plan(28, design=2, causal=True, window=(9, None)).to_dict()


def _set(path: str, value: Any) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        obj: Any = d
        for part in head:
            obj = obj[int(part)] if isinstance(obj, list) else obj[part]
        if isinstance(obj, list):
            obj[int(last)] = value
        elif value is _DELETE:
            del obj[last]
        else:
            obj[last] = value
    return mutate


_DELETE = object()

BAD_FIELDS = [
    ("schema", _set("schema", 3), "schema: unsupported version 3"),
    ("schema 0", _set("schema", 0), "schema: unsupported version 0"),
    ("schema missing", _set("schema", _DELETE), "schema: missing"),
    ("schema bool", _set("schema", True), "schema"),
    ("seq_len str", _set("seq_len", "28"), "seq_len: must be an integer"),
    ("seq_len float", _set("seq_len", 28.0), "seq_len: must be an integer"),
    ("seq_len zero", _set("seq_len", 0), "seq_len: must be >= 1"),
    ("seq_len shorter", _set("seq_len", 20), r"tasks\[\d+\]\.rectangles\[\d+\]\.q_\w+"),
    ("kv_len", _set("kv_len", -1), "kv_len: must be >= 1"),
    ("causal", _set("causal", 1), "causal: must be true or false"),
    ("window shape", _set("window", [1]), "window: must be null or"),
    ("window side", _set("window", [-2, None]), r"window\[0\]: must be >= 0"),
    ("levels", _set("levels", 0), "levels: must be >= 1"),
    ("levels mismatch", _set("levels", 3), "levels: 3 but the deepest task level is 1"),
    ("chosen_because", _set("chosen_because", 5), "chosen_because: must be a string"),
    ("design type", _set("design", [7]), "design: must be an object"),
    ("design v", _set("design.v", "7"), "design.v: must be an integer"),
    ("design elements", _set("design.elements", [0, 1, 2]), "design: .* not a cyclic"),
    ("design element range", _set("design.elements", [0, 1, 9]), r"design.elements\[2\]"),
    ("tasks type", _set("tasks", {}), "tasks: must be a list"),
    ("task type", _set("tasks.0", 3), r"tasks\[0\]: must be an object"),
    ("task id", _set("tasks.1.id", 0), r"tasks\[1\]\.id: duplicate task id 0"),
    ("task id negative", _set("tasks.0.id", -1), r"tasks\[0\]\.id: must be >= 0"),
    ("task level", _set("tasks.0.level", 2), r"tasks\[0\]\.level: must be <= 1"),
    ("segments type", _set("tasks.0.segments", "x"), r"tasks\[0\]\.segments: must be a list"),
    ("segment shape", _set("tasks.0.segments.0", [1, 2, 3]), r"segments\[0\]: must be"),
    ("segment order", _set("tasks.0.segments.0", [5, 2]), r"segments\[0\]\[1\]: must be >="),
    ("segment range", _set("tasks.0.segments.0", [0, 99]), r"segments\[0\]\[1\]: must be <="),
    ("rectangles empty", _set("tasks.0.rectangles", []), "at least one rectangle"),
    ("rect type", _set("tasks.0.rectangles.0", [0, 1]), r"rectangles\[0\]: must be an object"),
    ("rect q_end", _set("tasks.0.rectangles.0.q_end", 99), r"rectangles\[0\]\.q_end: must be <="),
    ("rect k_start", _set("tasks.0.rectangles.0.k_start", -1), r"rectangles\[0\]\.k_start"),
    ("rect empty", _set("tasks.0.rectangles.0.k_end", 0), r"rectangles\[0\]\.k_end: must be >="),
    ("rect kind", _set("tasks.0.rectangles.0.kind", "half"), r"rectangles\[0\]\.kind"),
    ("rect missing", _set("tasks.0.rectangles.0.kind", _DELETE), r"rectangles\[0\]\.kind: missing"),
    ("rect bool", _set("tasks.0.rectangles.0.q_start", False), r"q_start: must be an integer"),
]


@pytest.mark.parametrize(("name", "mutate", "match"), BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
def test_bad_field_is_named(name: str, mutate, match: str) -> None:
    d = copy.deepcopy(_base())
    Plan.from_dict(copy.deepcopy(d))  # the base document is valid
    mutate(d)
    with pytest.raises(PlanError, match=match):
        Plan.from_dict(d)
    with pytest.raises(PlanError, match=match):
        Plan.from_json(json.dumps(d))


@pytest.mark.parametrize(("text", "match"), [
    ("[1, 2", "not valid JSON"),
    ('{"schema": NaN}', "NaN is not valid JSON"),
    ('{"schema": 1, "schema": 1}', "duplicate key 'schema'"),
    ("[]", "plan: must be a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    ("[" * 100000 + "]" * 100000, "nested too deeply|not valid JSON"),
])
def test_bad_json_text(text: str | bytes, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        Plan.from_json(text)


def test_cover_is_checked_on_load() -> None:
    d = _base()
    d["tasks"][0]["rectangles"].pop()
    with pytest.raises(PlanError, match=r"position \(\d+, \d+\) is attended but covered by no"):
        Plan.from_dict(d)


def test_load_never_executes_anything() -> None:
    """Strings that would run code under eval/pickle are plain (invalid) values here."""
    d = _base()
    d["tasks"][0]["rectangles"][0]["kind"] = "__import__('os').system('false')"
    with pytest.raises(PlanError, match="kind: must be 'full' or 'causal'"):
        Plan.from_dict(d)
