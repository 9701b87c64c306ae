"""Loading plans from untrusted JSON: plain ``json`` parsing, every field checked, then the cover.

Nothing is ever executed or imported on behalf of the input.  Each rejected field is named by
its path, e.g. ``tasks[3].rectangles[0].q_end``.

>>> loads('{"a": 1, "a": 2}')
Traceback (most recent call last):
...
cqs_design.plans.PlanError: duplicate key 'a' in JSON object
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cqs_design.difference_sets import DifferenceSet

__all__ = ["loads", "plan_from_dict"]

_I64 = np.int64
_SCHEDULES = ("cqs", "query_blocks", "kv_blocks")


def _error(msg: str) -> Exception:
    from cqs_design.plans import PlanError

    return PlanError(msg)


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, val in pairs:
        if k in out:
            raise _error(f"duplicate key {k!r} in JSON object")
        out[k] = val
    return out


def _no_constants(name: str) -> Any:
    raise _error(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """Parse JSON strictly: no NaN/Infinity, no duplicate keys."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(f"plan JSON is not UTF-8: {exc}") from None
    if not isinstance(text, str):
        raise _error(f"plan JSON must be str or bytes, got {type(text).__name__}")
    try:
        return json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _error(f"plan is not valid JSON: {exc}") from None
    except RecursionError:
        raise _error("plan JSON is nested too deeply") from None


def _int(x: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise _error(f"{path}: must be an integer, got {x!r}")
    if lo is not None and x < lo:
        raise _error(f"{path}: must be >= {lo}, got {x}")
    if hi is not None and x > hi:
        raise _error(f"{path}: must be <= {hi}, got {x}")
    return x


def _get(d: dict[str, Any], key: str, path: str) -> Any:
    if key not in d:
        raise _error(f"{path}{key}: missing")
    return d[key]


def _list(x: Any, path: str) -> list[Any]:
    if not isinstance(x, list):
        raise _error(f"{path}: must be a list, got {type(x).__name__}")
    return x


def plan_from_dict(cls: Any, data: Any) -> Any:
    """Check every field of plan data (see ``docs/plans.md``), build the plan, validate it."""
    if not isinstance(data, dict):
        raise _error(f"plan: must be a JSON object, got {type(data).__name__}")
    schema = _get(data, "schema", "")
    if isinstance(schema, bool) or schema not in (1, 2):
        raise _error(f"schema: unsupported version {schema!r}; this library reads schemas 1 "
                     "and 2")
    schedule = data.get("schedule", "cqs")
    if schedule not in _SCHEDULES or not isinstance(schedule, str):
        raise _error(f"schedule: must be one of {', '.join(map(repr, _SCHEDULES))}, got "
                     f"{schedule!r}")
    if schema == 1 and schedule != "cqs":
        raise _error(f"schedule: schema 1 knows only 'cqs', got {schedule!r}")
    seq_len = _int(_get(data, "seq_len", ""), "seq_len", 1)
    kv_len = _int(data.get("kv_len", seq_len), "kv_len", 1)
    causal = _get(data, "causal", "")
    if not isinstance(causal, bool):
        raise _error(f"causal: must be true or false, got {causal!r}")
    window = data.get("window")
    if window is not None:
        if not isinstance(window, list) or len(window) != 2:
            raise _error(f"window: must be null or [left, right], got {window!r}")
        window = tuple(None if w is None else _int(w, f"window[{i}]", 0)
                       for i, w in enumerate(window))
        if window == (None, None):
            window = None
    levels = _int(data.get("levels", 1), "levels", 1)
    reason = data.get("chosen_because", "")
    if not isinstance(reason, str):
        raise _error(f"chosen_because: must be a string, got {reason!r}")

    blocks: dict[str, int | None] = {}
    for key in ("block_q", "block_kv"):
        val = data.get(key)
        if schedule == "cqs":
            if val is not None:
                raise _error(f"{key}: must be null for schedule 'cqs', got {val!r}")
            blocks[key] = None
        else:
            blocks[key] = _int(_get(data, key, ""), key, 1)
    if schedule != "cqs":
        design = data.get("design")
        if design is not None:
            raise _error(f"design: must be null for schedule {schedule!r}, got {design!r}")
        return _finish(cls, data, seq_len, kv_len, causal, window, levels, reason, None,
                       schedule, blocks)
    design = _get(data, "design", "")
    if not isinstance(design, dict):
        raise _error(f"design: must be an object with v and elements, got {design!r}")
    v = _int(_get(design, "v", "design."), "design.v", 2)
    elements = _list(_get(design, "elements", "design."), "design.elements")
    for i, e in enumerate(elements):
        _int(e, f"design.elements[{i}]", 0, v - 1)
    try:
        ds = DifferenceSet(v, elements)
    except (TypeError, ValueError) as exc:
        raise _error(f"design: {exc}") from None
    if not ds.is_valid() or ds.lam != 1:
        raise _error(f"design: {ds!r} is not a cyclic (v, k, 1) difference set")
    return _finish(cls, data, seq_len, kv_len, causal, window, levels, reason, ds, schedule,
                   blocks)


def _finish(cls: Any, data: dict[str, Any], seq_len: int, kv_len: int, causal: bool,
            window: Any, levels: int, reason: str, ds: DifferenceSet | None, schedule: str,
            blocks: dict[str, int | None]) -> Any:
    """Check the tasks, build the plan and validate it."""
    tasks = _list(_get(data, "tasks", ""), "tasks")
    width = max(seq_len, kv_len)
    ids: list[int] = []
    lev: list[int] = []
    seen: set[int] = set()
    ptr = [0]
    ss: list[int] = []
    se: list[int] = []
    cols: list[list[int]] = [[], [], [], [], [], []]
    for ti, t in enumerate(tasks):
        p = f"tasks[{ti}]"
        if not isinstance(t, dict):
            raise _error(f"{p}: must be an object, got {type(t).__name__}")
        tid = _int(_get(t, "id", p + "."), p + ".id", 0)
        if tid in seen:
            raise _error(f"{p}.id: duplicate task id {tid}")
        seen.add(tid)
        ids.append(tid)
        lev.append(_int(t.get("level", 1), p + ".level", 1, levels))
        prev_end = -1
        for si, seg in enumerate(_list(_get(t, "segments", p + "."), p + ".segments")):
            sp = f"{p}.segments[{si}]"
            if not isinstance(seg, list) or len(seg) != 2:
                raise _error(f"{sp}: must be [start, end], got {seg!r}")
            s = _int(seg[0], sp + "[0]", 0, width - 1)
            e = _int(seg[1], sp + "[1]", s + 1, width)
            if s <= prev_end:
                raise _error(f"{sp}: segments must be sorted and merged (start {s} <= "
                             f"previous end {prev_end})")
            prev_end = e
            ss.append(s)
            se.append(e)
        ptr.append(len(ss))
        rects = _list(_get(t, "rectangles", p + "."), p + ".rectangles")
        if not rects:
            raise _error(f"{p}.rectangles: a task must own at least one rectangle")
        for ri, r in enumerate(rects):
            rp = f"{p}.rectangles[{ri}]"
            if not isinstance(r, dict):
                raise _error(f"{rp}: must be an object, got {type(r).__name__}")
            qs = _int(_get(r, "q_start", rp + "."), rp + ".q_start", 0, seq_len - 1)
            qe = _int(_get(r, "q_end", rp + "."), rp + ".q_end", qs + 1, seq_len)
            ks = _int(_get(r, "k_start", rp + "."), rp + ".k_start", 0, kv_len - 1)
            ke = _int(_get(r, "k_end", rp + "."), rp + ".k_end", ks + 1, kv_len)
            kind = _get(r, "kind", rp + ".")
            if kind not in ("full", "causal") or not isinstance(kind, str):
                raise _error(f"{rp}.kind: must be 'full' or 'causal', got {kind!r}")
            for col, val in zip(cols, (qs, qe, ks, ke, int(kind == "causal"), ti), strict=True):
                col.append(val)
    if lev and max(lev) != levels:
        raise _error(f"levels: {levels} but the deepest task level is {max(lev)}")
    meta = {"seq_len": seq_len, "kv_len": kv_len, "causal": causal, "window": window,
            "design": ds, "levels": levels, "chosen_because": reason, "schedule": schedule,
            **blocks}
    arr = [np.asarray(c, dtype=_I64) for c in cols]
    segments = (np.asarray(ptr, dtype=_I64), np.asarray(ss, dtype=_I64),
                np.asarray(se, dtype=_I64))
    plan = cls._from_coords(meta, *arr, np.asarray(ids, dtype=_I64),
                            np.asarray(lev, dtype=_I64), segments=segments)
    return plan.validate()
