"""Argument checks and the choice of a Singer design for a plan (for :mod:`cqs_design.plans`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

from cqs_design._checks import check_int
from cqs_design.difference_sets import DifferenceSet
from cqs_design.singer import is_prime_power, singer_difference_set

__all__ = ["PlanError", "largest_usable_q", "plan_int"]


class PlanError(ValueError):
    """A plan cannot be built, or a plan (or its JSON) is not a valid exact cover."""


PlanError.__module__ = "cqs_design.plans"


def plan_int(value: Any, name: str, minimum: int | None = None,
             maximum: int | None = None) -> int:
    """:func:`cqs_design._checks.check_int` raising :class:`PlanError` for a value out of range."""
    return check_int(value, name, minimum=minimum, maximum=maximum, error=PlanError)


@functools.lru_cache(maxsize=64)
def _singer(q: int) -> DifferenceSet:
    return singer_difference_set(q)


def _prime_powers() -> Iterable[int]:
    q = 2
    while True:
        if is_prime_power(q):
            yield q
        q += 1


def largest_usable_q(n: int) -> int | None:
    """Largest prime power ``q`` with ``q^2 + q + 1 <= n`` (None if ``n < 7``).

    >>> largest_usable_q(100), largest_usable_q(6)
    (9, None)
    """
    q = math.isqrt(max(n, 0))
    while q >= 2:
        if q * q + q + 1 <= n and is_prime_power(q):
            return q
        q -= 1
    return None


def _resolve_design(design: DifferenceSet | int, name: str) -> DifferenceSet:
    if isinstance(design, DifferenceSet):
        if not design.is_valid() or design.lam != 1:
            raise PlanError(f"{name} {design!r} is not a cyclic (v, k, 1) difference set")
        return design
    q = plan_int(design, name)
    if not is_prime_power(q):
        raise PlanError(f"{name}={q} is not a prime power; give a prime power q (Singer "
                        "design, v = q^2 + q + 1) or a DifferenceSet")
    return _singer(q)


def _too_short(what: str, n: int, v: int) -> PlanError:
    q = largest_usable_q(n)
    hint = (f"the largest usable Singer design is q={q} (v={q * q + q + 1})" if q is not None
            else "no Singer design fits (the smallest, q=2, needs 7 tokens)")
    return PlanError(f"{what}={n} is shorter than the design's v={v} chunks; {hint}")


def _check_window(window: Any) -> tuple[int | None, int | None] | None:
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise PlanError(f"window must be None or a pair (left, right), got {window!r}")
    out = []
    for side, val in zip(("left", "right"), window, strict=True):
        if val is not None:
            val = plan_int(val, f"window {side}", 0)
        out.append(val)
    if out == [None, None]:
        return None
    return (out[0], out[1])


def _level_tokens(n: int, v: int, k: int, levels: int) -> int:
    """Upper bound on a task's tokens of one side after ``levels`` levels with one design."""
    t = n
    for _ in range(levels):
        t = k * -(-t // v)
    return t


def _min_level_tokens(n: int, v: int, k: int, levels: int) -> int:
    """Lower bound on a task's tokens of one side after ``levels`` levels (no mask)."""
    t = n
    for _ in range(levels):
        t = k * (t // v)
    return t


def _choose_design(seq_len: int, kv_len: int, budget: int, levels: int,
                   explicit_budget: bool) -> tuple[DifferenceSet, str]:
    n = min(seq_len, kv_len)
    sides = (seq_len,) if seq_len == kv_len else (seq_len, kv_len)
    for q in _prime_powers():
        v, k = q * q + q + 1, q + 1
        if v > n:
            break
        # every level must leave tasks of at least v tokens to divide again
        deep_enough = all(_min_level_tokens(s, v, k, levels - 1) >= v for s in sides)
        if deep_enough and sum(_level_tokens(s, v, k, levels) for s in sides) <= budget:
            what = "max_task_tokens" if explicit_budget else "the default task size"
            return _singer(q), (f"smallest Singer design (q={q}, v={v}, k={k}) whose tasks fit "
                                f"in {what}={budget} tokens with {levels} level(s)")
    q = largest_usable_q(n)
    if q is None:
        raise PlanError(f"no Singer design fits a sequence of {n} tokens (the smallest, q=2, "
                        "needs 7 tokens)")
    if not explicit_budget:
        v = q * q + q + 1
        return _singer(q), (f"largest Singer design that fits the sequence (q={q}, v={v}); "
                            f"none gives tasks of at most {budget} tokens")
    v, k = q * q + q + 1, q + 1
    best = sum(_level_tokens(s, v, k, levels) for s in sides)
    raise PlanError(f"max_task_tokens={budget} is too small: even the largest usable Singer "
                    f"design q={q} (v={v}) gives tasks of up to {best} tokens; pass a larger "
                    "max_task_tokens or more levels")
