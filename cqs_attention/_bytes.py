"""Memory sizes as users write them: ``4096``, ``"256MiB"``, ``"1.5 GiB"``.

Used by every entry point that takes a ``memory_budget`` (:func:`cqs_attention.attention`,
:class:`cqs_attention.CQSAttention`, the transformers plugin and the CLI), so they accept the
same forms.
"""

from __future__ import annotations

import re

from cqs_attention.errors import MemoryBudgetError

__all__ = ["check_budget", "format_bytes", "parse_bytes"]

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_bytes(value: int | float | str | None) -> int | None:
    """Parse a memory size: an integer number of bytes or a string such as ``"256MiB"``.

    Parameters
    ----------
    value
        ``None`` (no budget), a non-negative integer, or a string made of a number and an
        optional unit among ``B, kB, MB, GB, TB`` (powers of 1000) and ``KiB, MiB, GiB, TiB``
        (powers of 1024), case-insensitive.

    Returns
    -------
    int or None
        The number of bytes.

    Raises
    ------
    ValueError
        If ``value`` is negative, infinite, not a number, or has an unknown unit (the message
        says "> 0": every memory budget must be positive; ``0`` itself parses to ``0`` and the
        callers refuse it).

    Examples
    --------
    >>> parse_bytes("1.5 GiB")
    1610612736
    >>> parse_bytes(4096)
    4096
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"memory_budget must be a number of bytes or a string like '256MiB', "
                         f"got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*",
                             value)
        if match is None:
            raise ValueError(f"memory_budget {value!r} is not a size; write bytes or e.g. '256MiB'")
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ValueError(f"memory_budget must be an int or a string like '256MiB', got "
                         f"{type(value).__name__}")
    if unit not in _UNITS:
        raise ValueError(f"memory_budget {value!r} has unknown unit {unit!r}; use one of "
                         "B, kB, MB, GB, KiB, MiB, GiB")
    if not number >= 0 or number == float("inf"):
        # 0 parses (to 0), but every caller refuses it: say what is valid for them
        raise ValueError(f"memory_budget must be a finite size > 0 bytes, got {value!r}")
    return round(number * _UNITS[unit])


def check_budget(memory_budget: int | float | str | None) -> int | None:
    """``memory_budget`` as a positive int of bytes (ints and strings like ``"2GiB"``), or
    None; :class:`~cqs_attention.errors.MemoryBudgetError` (a ``ValueError``) naming the value
    otherwise. The one check of every entry point that takes a budget.

    >>> check_budget("1 KiB"), check_budget(None)
    (1024, None)
    >>> check_budget(0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cqs_attention.errors.MemoryBudgetError: memory_budget must be > 0 bytes (a positive int ...
    """
    if memory_budget is None:
        return None
    try:
        value = parse_bytes(memory_budget)
    except ValueError as exc:
        raise MemoryBudgetError(str(exc)) from None
    if value is None or value <= 0:
        raise MemoryBudgetError(f"memory_budget must be > 0 bytes (a positive int or a string "
                                f"like '2GiB') or None, got {memory_budget!r}")
    return int(value)


def format_bytes(n: int | float) -> str:
    """A size for people, in binary units with four significant digits (so that two
    different sizes are told apart: ``2122112`` is ``2.024 MiB``, ``2 MiB`` is ``2 MiB``).

    >>> format_bytes(2122112), format_bytes(2 << 20), format_bytes(512)
    ('2.024 MiB', '2 MiB', '512 B')
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.4g} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    raise AssertionError("unreachable")
