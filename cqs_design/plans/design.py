"""Argument checks and the choice of a Singer design for a plan (for :mod:`cqs_design.plans`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

from cqs_design._checks import check_int
from cqs_design.difference_sets import DifferenceSet
from cqs_design.plans.build import MAX_RECTANGLES, count_level_one
from cqs_design.plans.mask import Mask
from cqs_design.singer import is_prime_power, singer_difference_set

__all__ = [
    "DEFAULT_MAX_CHUNKS",
    "DEFAULT_MAX_RECTANGLES",
    "DEFAULT_MAX_REFINED_RECTANGLES",
    "MAX_CHUNKS",
    "MAX_REFINED_RECTANGLES",
    "MAX_TOKENS",
    "MAX_WINDOW",
    "PlanError",
    "check_size",
    "estimate_rectangles",
    "largest_usable_q",
    "plan_int",
    "workable_design",
]

#: Longest sequence a plan may have (coordinates, products and sums stay in 64-bit integers).
MAX_TOKENS = 1 << 40

#: Largest window side (any side of at least the sequence length means "unbounded" anyway).
MAX_WINDOW = 1 << 62

#: Most chunks (the design's ``v``) one level may have.
MAX_CHUNKS = 1 << 24

#: Default design choice: at most this many chunks (and tasks).  Only sliding windows reach it
#: (their plans have few rectangles per chunk); it keeps the Singer construction and the
#: per-task work of the default plan small.
DEFAULT_MAX_CHUNKS = 1 << 16

#: Default design choice: one-level plans stay under this many rectangles (about 2 s to build
#: and validate on a 2-core machine, whatever the length).
DEFAULT_MAX_RECTANGLES = 1 << 25

#: Multi-level plans (and ``refine``) are refused beyond this many rectangles: building one
#: takes about 330 bytes and 3 microseconds per rectangle (one level: about 20 bytes).
MAX_REFINED_RECTANGLES = 1 << 24

#: Default design choice for ``levels > 1`` without a design: at most this many rectangles.
DEFAULT_MAX_REFINED_RECTANGLES = 1 << 22


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
            val = plan_int(val, f"window {side}", 0, MAX_WINDOW)
        out.append(val)
    if out == [None, None]:
        return None
    return (out[0], out[1])


def _level_tokens(n: int, v: int, k: int, levels: int, v2: int | None = None,
                  k2: int | None = None) -> int:
    """Upper bound on a task's tokens of one side after ``levels`` levels (``v2, k2``: the
    design of levels 2 and deeper, default the same)."""
    t = n
    for level in range(levels):
        vv, kk = (v, k) if level == 0 or v2 is None or k2 is None else (v2, k2)
        t = kk * -(-t // vv)
    return t


def _min_level_tokens(n: int, v: int, k: int, levels: int, v2: int | None = None,
                      k2: int | None = None) -> int:
    """Lower bound on a task's tokens of one side after ``levels`` levels (no mask)."""
    t = n
    for level in range(levels):
        vv, kk = (v, k) if level == 0 or v2 is None or k2 is None else (v2, k2)
        t = kk * (t // vv)
    return t


def estimate_rectangles(mask: Mask, v: int, k: int, levels: int = 1,
                        sub: tuple[int, int] | None = None) -> int:
    """Rectangles of a CQS plan, computed before building it.

    Exact for one level (:func:`~cqs_design.plans.build.count_level_one`, time about ``v``).
    For ``levels > 1`` (``sub = (v2, k2)``: the design of the deeper levels, default the same)
    each level multiplies the count by the number of sub-chunk pieces a parent rectangle can be
    cut into along each side, from the smallest and largest task and chunk sizes: an upper
    bound without masks (the tests check it), a close estimate with them.  The exact count is
    checked again before each level is built.

    >>> from cqs_design.plans.mask import Mask
    >>> estimate_rectangles(Mask(10**6, 10**6), 7, 3)
    49
    >>> estimate_rectangles(Mask(10**6, 10**6), 7, 3, levels=2)
    784
    """
    r = count_level_one(mask, v)
    if levels == 1 or r == 0:
        return r
    v2, k2 = sub if sub is not None else (v, k)
    for n in {mask.seq_len, mask.kv_len} if mask.seq_len != mask.kv_len else (mask.seq_len,):
        longest, t_min, t_max = -(-n // v), k * (n // v), k * -(-n // v)
        for _ in range(levels - 1):
            step = max(1, t_min // v2)  # smallest sub-chunk
            pieces = -(-(longest - 1) // step) + 1
            r *= pieces if mask.seq_len != mask.kv_len else pieces * pieces
            longest = -(-t_max // v2)
            t_min, t_max = k2 * (t_min // v2), k2 * longest
    return r


def _fits_levels(sides: tuple[int, ...], v: int, k: int, levels: int,
                 sub: tuple[int, int] | None) -> bool:
    """Every level leaves tasks of at least the next design's ``v`` tokens to divide again."""
    v2, k2 = sub if sub is not None else (v, k)
    return all(_min_level_tokens(s, v, k, lv, v2, k2) >= (v if lv == 0 else v2)
               for s in sides for lv in range(levels))


def _limit(levels: int) -> int:
    return MAX_RECTANGLES if levels == 1 else MAX_REFINED_RECTANGLES


@functools.lru_cache(maxsize=1)
def _usable_prime_powers() -> tuple[int, ...]:
    """Every prime power ``q`` whose Singer design has at most :data:`MAX_CHUNKS` chunks."""
    top = math.isqrt(MAX_CHUNKS)
    return tuple(q for q in range(2, top + 1) if q * q + q + 1 <= MAX_CHUNKS and
                 is_prime_power(q))


def _candidates(mask: Mask, levels: int, sub: tuple[int, int] | None,
                max_chunks: int = MAX_CHUNKS) -> list[int]:
    """Singer orders usable for ``mask`` with ``levels`` levels, ascending."""
    n = min(mask.seq_len, mask.kv_len)
    sides = (mask.seq_len,) if mask.seq_len == mask.kv_len else (mask.seq_len, mask.kv_len)
    out = []
    for q in _usable_prime_powers():
        v, k = q * q + q + 1, q + 1
        if v > n or v > max_chunks or not _fits_levels(sides, v, k, levels, sub):
            break
        out.append(q)
    return out


def _largest_within(mask: Mask, cands: list[int], levels: int, sub: tuple[int, int] | None,
                    limit: int) -> tuple[int, int] | None:
    """``(index, estimate)`` of the largest candidate whose estimate is at most ``limit``
    (estimates grow with ``q``: exponential then binary search, so only a few are computed,
    and the large ones only when the small ones fit), or None."""
    def est(i: int) -> int:
        q = cands[i]
        return estimate_rectangles(mask, q * q + q + 1, q + 1, levels, sub)

    if not cands:
        return None
    first = est(0)
    if first > limit:
        return None
    good, good_est, step = 0, first, 1
    bad = len(cands)
    while good + step < len(cands):  # exponential search for the first estimate over limit
        e = est(good + step)
        if e > limit:
            bad = good + step
            break
        good, good_est, step = good + step, e, step * 2
    while bad - good > 1:  # binary search in (good, bad)
        mid = (good + bad) // 2
        e = est(mid)
        if e <= limit:
            good, good_est = mid, e
        else:
            bad = mid
    return good, good_est


def workable_design(mask: Mask, levels: int, sub: tuple[int, int] | None = None,
                    limit: int | None = None) -> tuple[int, int] | None:
    """The largest Singer ``q`` whose ``levels``-level plan of ``mask`` stays within ``limit``
    rectangles (default the hard limit for that many levels), with its estimated count; None
    if even ``q = 2`` does not.

    >>> from cqs_design.plans.mask import Mask
    >>> workable_design(Mask(10**7, 10**7), levels=2)
    (13, 7535025)
    """
    limit = _limit(levels) if limit is None else limit
    cands = _candidates(mask, levels, sub)
    found = _largest_within(mask, cands, levels, sub, limit)
    return None if found is None else (cands[found[0]], found[1])


def check_size(mask: Mask, ds: DifferenceSet, levels: int, sub: DifferenceSet) -> None:
    """Refuse, before building anything, a plan whose rectangle count is over the limit."""
    if ds.v > MAX_CHUNKS:
        raise PlanError(f"design v={ds.v} has more chunks than MAX_CHUNKS={MAX_CHUNKS}; use a "
                        "smaller design")
    sub_vk = (sub.v, sub.k)
    est = estimate_rectangles(mask, ds.v, ds.k, levels, sub_vk if levels > 1 else None)
    limit = _limit(levels)
    if est <= limit:
        return
    what = "" if levels == 1 else f"{levels}-level "
    hint = workable_design(mask, levels, None if sub is ds else sub_vk)
    how = (f"use design={hint[0]} (v={hint[0] ** 2 + hint[0] + 1}, about {hint[1]:,} "
           "rectangles)" if hint is not None else "use fewer levels")
    name = ("MAX_RECTANGLES" if levels == 1 else
            "MAX_REFINED_RECTANGLES (multi-level plans take about 330 bytes per rectangle "
            "to build)")
    raise PlanError(f"a {what}plan with the v={ds.v} design would have about {est:,} "
                    f"rectangles, more than {name}={limit:,}; {how}")


def _choose_design(seq_len: int, kv_len: int, budget: int, levels: int,
                   explicit_budget: bool, mask: Mask | None = None,
                   sub: tuple[int, int] | None = None) -> tuple[DifferenceSet, str]:
    """The smallest Singer design whose tasks fit ``budget`` tokens, among those whose plan
    stays under the default rectangle count; without an explicit budget, the largest of those
    when none fits (the plan is then coarser than asked, and ``chosen_because`` says so).

    Only a few rectangle counts are computed (see :func:`_largest_within`), so the choice takes
    milliseconds to a second at any length and mask.
    """
    mask = Mask(seq_len, kv_len) if mask is None else mask
    n = min(seq_len, kv_len)
    sides = (seq_len,) if seq_len == kv_len else (seq_len, kv_len)
    cap = DEFAULT_MAX_RECTANGLES if levels == 1 else DEFAULT_MAX_REFINED_RECTANGLES
    cands = _candidates(mask, levels, sub, DEFAULT_MAX_CHUNKS)
    if not cands:
        if n < 7:
            raise PlanError(f"no Singer design fits a sequence of {n} tokens (the smallest, q=2, "
                            "needs 7 tokens)")
        raise PlanError(f"no Singer design fits {levels} levels in a sequence of {n} tokens "
                        "(every level needs at least v tokens per task); use fewer levels")
    found = _largest_within(mask, cands, levels, sub, cap)
    if found is None:
        raise PlanError(f"even the smallest Singer design gives a {levels}-level plan of more "
                        f"than {cap:,} rectangles at {n} tokens; use fewer levels")

    def tokens(q: int) -> int:
        v, k = q * q + q + 1, q + 1
        v2, k2 = sub if sub is not None else (v, k)
        return sum(_level_tokens(s, v, k, levels, v2, k2) for s in sides)

    top, rects = found
    for q in cands[:top + 1]:  # tokens shrink as q grows: the first that fits is the smallest
        if tokens(q) <= budget:
            v, k = q * q + q + 1, q + 1
            what = "max_task_tokens" if explicit_budget else "the default task size"
            return _singer(q), (f"smallest Singer design (q={q}, v={v}, k={k}) whose tasks fit "
                                f"in {what}={budget} tokens with {levels} level(s)")
    q = cands[top]
    v = q * q + q + 1
    if not explicit_budget:
        return _singer(q), (
            f"largest Singer design (q={q}, v={v}) whose {levels}-level plan stays under "
            f"{cap:,} rectangles (about {rects:,}); its tasks have up to {tokens(q):,} tokens, "
            f"more than the default task size {budget}: no design gives tasks that small "
            "within the limit (pass design= to go past it, or refine() some tasks)")
    raise PlanError(f"max_task_tokens={budget} is too small: the finest Singer design within "
                    f"{cap:,} rectangles with {levels} level(s), q={q} (v={v}), gives tasks of up "
                    f"to {tokens(q)} tokens; pass a larger max_task_tokens, or an explicit design")
