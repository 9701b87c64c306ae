"""What the command lines share: the parser whose usage errors are one line with exit code 2,
and argument types whose errors read well after argparse's ``argument --name:`` prefix.

>>> int_at_least(2)("5"), int_at_least(0)("0")
(5, 0)
>>> int_at_least(1)("0")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: must be an integer >= 1, got 0
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["EXIT_USAGE", "UsageParser", "int_at_least", "window_side"]

#: Exit code of bad usage, in every command line of the repository.
EXIT_USAGE = 2


class UsageParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that reports bad usage as ONE line on stderr
    (``prog: error: message``, no usage block) and exits with :data:`EXIT_USAGE`.

    >>> import contextlib, io
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     try:
    ...         UsageParser(prog="tool").parse_args(["--nope"])
    ...     except SystemExit as exc:
    ...         print(exc.code)
    2
    >>> err.getvalue()
    'tool: error: unrecognized arguments: --nope\\n'
    """

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


#: Spellings of an unbounded window side.
_NO_SIDE = ("", "none", "inf", "-")


def window_side(text: str) -> int | None:
    """An argparse ``type`` for one side of a sliding window: an integer ``>= 0``, or None
    (unbounded) for ``none``, ``inf``, ``-`` or nothing.

    >>> window_side("512"), window_side("none")
    (512, None)
    >>> window_side("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: window side must be >= 0, got -1
    """
    if text.strip().lower() in _NO_SIDE:
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"window side must be a non-negative integer or 'none', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"window side must be >= 0, got {value}")
    return value
