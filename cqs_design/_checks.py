"""The one integer-argument check of :mod:`cqs_design`.

Every public function validates its integer arguments with :func:`check_int`: a bool or a
non-integer is a ``TypeError``; an integer outside ``[minimum, maximum]`` raises ``error``
(``ValueError`` unless the caller names a more specific subclass such as ``PlanError``).
The message names the argument, the value and what would be valid.

>>> check_int(7, "v", minimum=2)
7
>>> check_int(True, "v")
Traceback (most recent call last):
...
TypeError: v must be an integer, got True of type bool
>>> check_int(1, "v", minimum=2)
Traceback (most recent call last):
...
ValueError: v must be an integer >= 2, got 1
>>> check_int(10, "k", minimum=2, maximum=9)
Traceback (most recent call last):
...
ValueError: k must be an integer in [2, 9], got 10
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["check_int"]


def check_int(value: Any, name: str, *, minimum: int | None = None,
              maximum: int | None = None, error: type[Exception] = ValueError) -> int:
    """``value`` as a Python ``int``, checked against ``[minimum, maximum]``.

    Parameters
    ----------
    value
        Any integer type (``int``, numpy integers); bools are refused.
    name
        The argument's name, used in the message.
    minimum, maximum
        Inclusive bounds; None means unbounded on that side.
    error
        Exception class raised for a value out of range (``TypeError`` is always used for a
        value that is not an integer).

    Returns
    -------
    int
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type "
                        f"{type(value).__name__}")
    value = int(value)
    low_bad = minimum is not None and value < minimum
    high_bad = maximum is not None and value > maximum
    if low_bad or high_bad:
        if minimum is not None and maximum is not None:
            valid = f"in [{minimum}, {maximum}]"
        elif minimum is not None:
            valid = f">= {minimum}"
        else:
            valid = f"<= {maximum}"
        raise error(f"{name} must be an integer {valid}, got {value}")
    return value
