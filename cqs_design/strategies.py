"""Hypothesis strategies for cyclic difference sets and CQS plans (for downstream tests).

hypothesis must be installed (it is part of the ``test`` extra); this module imports it only
when a strategy is called.  Every strategy builds its value constructively (no filtering), and
bad arguments raise ``hypothesis.errors.InvalidArgument`` when the strategy is drawn from.

>>> from hypothesis import given
>>> @given(plans(max_seq_len=60))
... def test_exact_cover(plan):
...     plan.validate()
>>> test_exact_cover()
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from cqs_design.difference_sets import DifferenceSet

if TYPE_CHECKING:  # pragma: no cover
    from hypothesis.strategies import SearchStrategy

    from cqs_design.plans import Plan

__all__ = ["difference_sets", "plans", "prime_powers"]


def _hyp() -> Any:
    try:
        import hypothesis.strategies as st
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("cqs_design.strategies needs hypothesis: pip install 'cqs[test]' "
                          "(or pip install hypothesis)") from exc
    return st


def _invalid(msg: str) -> Exception:
    from hypothesis.errors import InvalidArgument

    return InvalidArgument(msg)


def _prime_powers_between(lo: int, hi: int) -> list[int]:
    from cqs_design.singer import is_prime_power

    return [q for q in range(max(lo, 2), hi + 1) if is_prime_power(q)]


def _check_int_arg(value: Any, name: str, minimum: int) -> int:
    from hypothesis.errors import InvalidArgument

    from cqs_design._checks import check_int

    try:
        return check_int(value, name, minimum=minimum, error=InvalidArgument)
    except TypeError as exc:  # a strategy argument error is always InvalidArgument
        raise InvalidArgument(str(exc)) from None


def prime_powers(min_value: int = 2, max_value: int = 32) -> SearchStrategy[int]:
    """Prime powers ``q`` with ``min_value <= q <= max_value`` (hypothesis must be installed).

    Shrinks towards ``min_value``; raises ``InvalidArgument`` at draw time when the range holds
    no prime power.

    >>> from hypothesis import given
    >>> @given(prime_powers(max_value=9))
    ... def test(q):
    ...     assert q in (2, 3, 4, 5, 7, 8, 9)
    >>> test()
    """
    st = _hyp()

    @st.composite
    def draw_q(draw: Any) -> int:
        lo = _check_int_arg(min_value, "min_value", 0)
        hi = _check_int_arg(max_value, "max_value", 0)
        choices = _prime_powers_between(lo, hi)
        if not choices:
            raise _invalid(f"no prime power lies in [{min_value}, {max_value}]")
        return draw(st.sampled_from(choices))

    return draw_q()


def difference_sets(max_q: int = 5, *, min_q: int = 2, normalized: bool = False
                    ) -> SearchStrategy[DifferenceSet]:
    """Cyclic ``(q^2+q+1, q+1, 1)`` difference sets (hypothesis must be installed).

    Built as a Singer set for a drawn prime power ``q`` in ``[min_q, max_q]``, then (unless
    ``normalized``) multiplied by a drawn unit and translated by a drawn shift, which maps a
    difference set to an equivalent one; so the non-normalized forms are covered too.

    >>> from hypothesis import given
    >>> @given(difference_sets(max_q=4))
    ... def test(ds):
    ...     assert ds.is_valid() and ds.v == ds.k ** 2 - ds.k + 1
    >>> test()
    """
    st = _hyp()

    @st.composite
    def draw_ds(draw: Any) -> DifferenceSet:
        from cqs_design.singer import singer_difference_set

        lo = _check_int_arg(min_q, "min_q", 2)
        hi = _check_int_arg(max_q, "max_q", 2)
        if not isinstance(normalized, bool):
            raise _invalid(f"normalized must be a bool, got {normalized!r}")
        q = draw(prime_powers(lo, hi))
        ds = singer_difference_set(q)
        if normalized:
            return ds
        v = ds.v
        units = [t for t in range(1, v) if math.gcd(t, v) == 1]
        t = draw(st.sampled_from(units))
        shift = draw(st.integers(0, v - 1))
        return ds.multiply(t).translate(shift)

    return draw_ds()


def plans(
    *,
    max_seq_len: int = 200,
    max_q: int = 4,
    cross: bool | None = None,
    causal: bool | None = None,
    window: bool | None = None,
    refine: bool | None = None,
) -> SearchStrategy[Plan]:
    """Valid :class:`~cqs_design.plans.Plan` objects (hypothesis must be installed).

    Draws a design (:func:`difference_sets` with ``q <= max_q``), a length in
    ``[v, max_seq_len]``, and (each ``None`` argument means "draw it"): a different ``kv_len``
    (``cross``), ``causal``, a sliding ``window`` (either side possibly unbounded), and
    ``refine``: either a second level of CQS Divide on every task or a hybrid refinement of a
    drawn subset of tasks, with a drawn design small enough for the tasks (skipped when the
    tasks are smaller than the smallest design).

    >>> from hypothesis import given
    >>> @given(plans(max_seq_len=80, causal=True))
    ... def test(plan):
    ...     assert plan.causal and plan.stats().pairs_needed > 0
    >>> test()
    """
    st = _hyp()

    @st.composite
    def draw_plan(draw: Any) -> Plan:
        import numpy as np

        from cqs_design.plans import _singer, make_plan

        n_max = _check_int_arg(max_seq_len, "max_seq_len", 7)
        q_max = _check_int_arg(max_q, "max_q", 2)
        for name, flag in (("cross", cross), ("causal", causal), ("window", window),
                           ("refine", refine)):
            if flag is not None and not isinstance(flag, bool):
                raise _invalid(f"{name} must be None or a bool, got {flag!r}")
        # largest q whose v fits max_seq_len
        # (n_max >= 7, so q = 2 always fits)
        q_fit = max(q for q in [2, *_prime_powers_between(2, q_max)] if q * q + q + 1 <= n_max)
        ds = draw(difference_sets(max_q=q_fit))
        seq_len = draw(st.integers(ds.v, n_max))
        is_cross = draw(st.booleans()) if cross is None else cross
        kv_len = draw(st.integers(ds.v, n_max)) if is_cross else seq_len
        is_causal = draw(st.booleans()) if causal is None else causal
        use_window = draw(st.booleans()) if window is None else window
        win = None
        if use_window:
            side = st.one_of(st.none(), st.integers(0, max(seq_len, kv_len)))
            win = (draw(side), draw(side))
        plan = make_plan(seq_len, kv_len=kv_len, design=ds, causal=is_causal, window=win)
        do_refine = draw(st.booleans()) if refine is None else refine
        if not do_refine:
            return plan
        qt, kt = plan.side_tokens()
        smallest = np.minimum(qt, kt)
        fits = [q for q in _prime_powers_between(2, q_max) if q * q + q + 1 <= smallest.max()]
        if not fits:
            return plan  # every task is smaller than the smallest design
        q2 = draw(st.sampled_from(fits))
        v2 = q2 * q2 + q2 + 1
        usable = np.flatnonzero(smallest >= v2)
        if len(usable) == len(plan) and draw(st.booleans()):
            return make_plan(seq_len, kv_len=kv_len, design=ds, causal=is_causal, window=win,
                             levels=2, sub_design=q2)
        chosen = draw(st.lists(st.sampled_from(usable.tolist()), min_size=1, unique=True))
        ids = [plan.task_ids[i] for i in chosen]
        return plan.refine(ids, _singer(q2))

    return draw_plan()
