"""``cqs-design search | table | quorum``: exhaustive search, existence table, quorum sets.

Examples
--------
``cqs-design search 13 4``            all translation classes of cyclic (13, 4, 1) sets
``cqs-design search 43 7 --multiplier`` none: exit code 1, with the search statistics
``cqs-design table --max-order 30``         markdown; ``--csv`` or ``--json`` for the others
``cqs-design quorum 50 --json``             from the stored proven table (v <= 111)
``cqs-design quorum 120 --time-limit 60``   search, with the known bounds on time-out
"""

from __future__ import annotations

import argparse
from typing import Any

from cqs_design.cli import EXIT_NEGATIVE, EXIT_OK, CLIError, emit

__all__ = ["register"]


def _up_to(text: str) -> str | None:
    if text in ("translation", "equivalence"):
        return text
    if text in ("none", "all"):
        return None
    raise argparse.ArgumentTypeError(
        f"--up-to must be 'translation', 'equivalence' or 'none', got {text!r}")


def _cmd_search(args: argparse.Namespace) -> int:
    from cqs_design.search import search_difference_sets

    try:
        res = search_difference_sets(
            args.v, args.k, args.lam, up_to=args.up_to, limit=args.limit,
            progress=args.progress, use_multiplier_theorem=args.multiplier,
            time_limit=args.time_limit)
    except KeyboardInterrupt as exc:  # SearchInterrupted says how far it got
        raise CLIError(str(exc) or "interrupted") from None
    st = res.stats
    status = "complete" if st.complete else f"INCOMPLETE (stopped: {st.stopped})"
    lines = [f"cyclic ({args.v}, {args.k}, {args.lam}) difference sets up to "
             f"{args.up_to or 'nothing (every set)'}: {len(res.sets)} found"]
    lines += ["  " + " ".join(map(str, s.elements)) for s in res.sets]
    lines.append(f"search: {st.method}, {st.nodes} nodes, {st.seconds:.3f} s, {status}"
                 + (f", multipliers {list(st.multipliers)}" if st.multipliers else ""))
    emit(res.to_dict(), as_json=args.json, text="\n".join(lines))
    if not st.complete and not res.sets:
        raise CLIError(f"search stopped early ({st.stopped}) without finding a set; "
                       "no conclusion")
    return EXIT_OK if res.sets else EXIT_NEGATIVE


def _cmd_table(args: argparse.Namespace) -> int:
    import sys

    from cqs_design.plane_existence import iter_existence_table, iter_format_table

    fmt = "json" if args.json else ("csv" if args.csv else args.format)
    records = iter_existence_table(args.max_order, search_max_order=args.search_max_order,
                                   verify_singer=args.verify_singer, progress=args.progress)
    for piece in iter_format_table(records, fmt):
        sys.stdout.write(piece)
    return EXIT_OK


def _cmd_quorum(args: argparse.Namespace) -> int:
    from cqs_design.quorum import (
        QuorumTimeout,
        minimum_quorum_size,
        minimum_size_lower_bound,
        search_cyclic_quorum_sets,
    )

    v = args.v
    k = args.k
    if k is None:
        try:
            best = minimum_quorum_size(v, time_limit=args.time_limit, progress=args.progress,
                                       use_table=not args.compute)
        except QuorumTimeout as exc:
            raise CLIError(str(exc)) from None
        if args.limit is None and best.row is not None:
            text = (f"v = {v}: minimum cyclic quorum set size {best.minimum_size} "
                    f"({best.status}; {best.source})\n"
                    f"  base set: {' '.join(map(str, best.base_set))}")
            emit(dict(best.row), as_json=args.json, text=text)
            return EXIT_OK
        k = best.minimum_size
    res = search_cyclic_quorum_sets(v, k, limit=args.limit, time_limit=args.time_limit)
    payload = {**res.to_dict(), "lower_bound": minimum_size_lower_bound(v),
               "base_sets": [list(s) for s in res.sets]}
    status = "" if res.stats.complete else " (search stopped early: incomplete)"
    text = "\n".join([f"v = {v}: {len(res.sets)} cyclic quorum set(s) of size {k}{status}"]
                     + ["  " + " ".join(map(str, s)) for s in res.sets])
    emit(payload, as_json=args.json, text=text)
    if not res.sets and not res.stats.complete:
        raise CLIError(f"search for size {k} stopped after {args.time_limit} s without a "
                       "set; no conclusion")
    return EXIT_OK if res.sets else EXIT_NEGATIVE


def _int_at_least(minimum: int) -> Any:
    """An argparse ``type`` accepting integers ``>= minimum`` (one-line errors)."""

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


_nonnegative = _int_at_least(0)
_positive = _int_at_least(1)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def _verify_singer(text: str) -> bool | int:
    if text in ("all", "true", "yes"):
        return True
    if text in ("none", "false", "no"):
        return False
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--verify-singer must be 'all', 'none' or an order bound >= 0, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"--verify-singer must be 'all', 'none' or an order bound >= 0, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search``, ``table`` and ``quorum`` sub-commands."""
    from cqs_design.plane_existence import DEFAULT_SEARCH_MAX_ORDER, DEFAULT_TABLE_VERIFY_SINGER

    p = subparsers.add_parser(
        "search", help="enumerate cyclic (v,k,lam) difference sets",
        description="Exhaustive search for cyclic (v, k, lam) difference sets; exit 1 when "
                    "none exist, 2 when stopped early (--time-limit) without a conclusion.")
    p.add_argument("v", type=int)
    p.add_argument("k", type=int)
    p.add_argument("--lam", type=int, default=1)
    p.add_argument("--up-to", type=_up_to, default="translation",
                   help="translation (default), equivalence or none")
    p.add_argument("--limit", type=_positive, default=None, help="stop after N sets")
    p.add_argument("--multiplier", action="store_true",
                   help="search unions of multiplier orbits (Hall's theorem)")
    p.add_argument("--time-limit", type=_seconds, default=None,
                   help="stop after this many seconds (default: no limit)")
    p.add_argument("--progress", action="store_true",
                   help="show progress: branches done, nodes and nodes per second")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_search)

    t = subparsers.add_parser(
        "table", help="existence table of cyclic projective planes",
        description="Existence of cyclic projective planes of every order 2..MAX_ORDER "
                    "(markdown by default), streamed row by row.")
    t.add_argument("--max-order", type=int, required=True, help="largest order, <= 1000000")
    fmt = t.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    fmt.add_argument("--format", choices=("md", "csv", "json"), default="md",
                     help=argparse.SUPPRESS)  # old spelling, kept working
    t.add_argument("--search-max-order", type=_nonnegative, default=DEFAULT_SEARCH_MAX_ORDER,
                   help="run exhaustive multiplier searches up to this order "
                        f"(default {DEFAULT_SEARCH_MAX_ORDER})")
    t.add_argument("--verify-singer", type=_verify_singer, default=DEFAULT_TABLE_VERIFY_SINGER,
                   help="build and verify Singer sets: all (up to the construction limit "
                        "65536), none, or up to this order "
                        f"(default {DEFAULT_TABLE_VERIFY_SINGER})")
    t.add_argument("--progress", action="store_true")
    t.set_defaults(func=_cmd_table)

    q = subparsers.add_parser(
        "quorum", help="minimum cyclic quorum sets (difference covers)",
        description="Minimum cyclic quorum set of Z_v: from the stored proven table for "
                    "v <= 111, else by search (bounded by --time-limit).")
    q.add_argument("v", type=int)
    q.add_argument("--k", type=_positive, default=None, help="size (default: minimum)")
    q.add_argument("--limit", type=_positive, default=None, help="list at most N sets")
    q.add_argument("--time-limit", type=_seconds, default=None,
                   help="seconds for the search; on time-out print the known bounds, exit 2")
    q.add_argument("--compute", action="store_true",
                   help="search even when a stored value exists")
    q.add_argument("--progress", action="store_true", help="one line per size tried")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_quorum)
