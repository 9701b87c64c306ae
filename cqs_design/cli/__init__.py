"""Command line interface of :mod:`cqs_design` (``cqs-design`` / ``python -m cqs_design``).

Each command group lives in its own module and registers its sub-commands:

* :mod:`cqs_design.cli.math`   -- ``singer``, ``verify``, ``paired``, ``normalize``
* :mod:`cqs_design.cli.search` -- ``search``, ``table``, ``quorum``
* :mod:`cqs_design.cli.plans`  -- ``plan``, ``plot``
* :mod:`cqs_design.cli.ppc`    -- ``ppc`` (the prime power conjecture, verified to an order)

Exit codes: 0 ok, 1 a negative answer (for example "not a difference set"), 2 bad usage
(a one-line reason on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from cqs_design.cli.options import EXIT_USAGE, UsageParser

__all__ = ["EXIT_NEGATIVE", "EXIT_OK", "EXIT_USAGE", "CLIError", "emit", "main"]

#: ``--help`` text: plain, not the reStructuredText of the module docstring.
DESCRIPTION = ("Command line interface of cqs_design: difference sets, existence, quorum sets "
               "and attention plans. Exit codes: 0 ok, 1 negative answer, 2 bad usage.")

EXIT_OK = 0
EXIT_NEGATIVE = 1

_GROUPS = ("cqs_design.cli.math", "cqs_design.cli.search", "cqs_design.cli.plans",
           "cqs_design.cli.ppc")


class CLIError(Exception):
    """Bad usage detected by a command; printed as one line, exit code 2."""


def emit(payload: Any, *, as_json: bool, text: str) -> None:
    """Print ``payload`` as JSON when ``as_json`` else the human-readable ``text``."""
    if as_json:
        print(json.dumps(payload, indent=2, sort_keys=True))
    else:
        print(text)


def _version() -> str:
    from cqs_design import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="cqs-design", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version="%(prog)s " + _version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=UsageParser)
    sub.required = True
    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command group not written yet
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 negative answer, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or EXIT_OK)
    except (CLIError, ValueError, TypeError, OverflowError) as exc:
        print(f"cqs-design {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"cqs-design {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cqs-design table ... | head`: the reader left
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
