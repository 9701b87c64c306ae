"""``cqs-design search | table | quorum``: exhaustive search, existence table, quorum sets.

Examples
--------
``cqs-design search 13 4``            all translation classes of cyclic (13, 4, 1) sets
``cqs-design search 43 7 --multiplier`` none: exit code 1, with the search statistics
``cqs-design table --max-order 30 --format md``
``cqs-design quorum 50 --json``
"""

from __future__ import annotations

import argparse

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
    from cqs_design.existence import existence_table, format_table

    records = existence_table(args.max_order, search_max_order=args.search_max_order,
                              verify_singer=args.verify_singer, progress=args.progress)
    print(format_table(records, args.format), end="")
    return EXIT_OK


def _cmd_quorum(args: argparse.Namespace) -> int:
    from cqs_design.quorum import (
        minimum_size_lower_bound,
        search_cyclic_quorum_sets,
        stored_quorum_table,
    )

    v = args.v
    stored = stored_quorum_table().get(v)
    k = args.k
    if k is None and stored is not None and not args.compute:
        payload = dict(stored)
        text = (f"v = {v}: minimum cyclic quorum set size {stored['minimum_size']} "
                f"({stored['source']})\n  base set: {' '.join(map(str, stored['base_set']))}")
        emit(payload, as_json=args.json, text=text)
        return EXIT_OK
    from cqs_design.quorum import minimum_size

    if k is None:
        k = minimum_size(v)
    sets, stats = search_cyclic_quorum_sets(v, k, limit=args.limit)
    payload = {"v": v, "k": k, "lower_bound": minimum_size_lower_bound(v),
               "base_sets": [list(s) for s in sets],
               "stats": {"nodes": stats.nodes, "seconds": stats.seconds,
                         "complete": stats.complete}}
    text = "\n".join([f"v = {v}: {len(sets)} cyclic quorum set(s) of size {k}"]
                     + ["  " + " ".join(map(str, s)) for s in sets])
    emit(payload, as_json=args.json, text=text)
    return EXIT_OK if sets else EXIT_NEGATIVE


def _verify_singer(text: str) -> bool | int:
    if text in ("all", "true", "yes"):
        return True
    if text in ("none", "false", "no"):
        return False
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--verify-singer must be 'all', 'none' or an order bound, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search``, ``table`` and ``quorum`` sub-commands."""
    p = subparsers.add_parser("search", help="enumerate cyclic (v,k,lam) difference sets",
                              description="Exhaustive search; exit 1 when none exist.")
    p.add_argument("v", type=int)
    p.add_argument("k", type=int)
    p.add_argument("--lam", type=int, default=1)
    p.add_argument("--up-to", type=_up_to, default="translation",
                   help="translation (default), equivalence or none")
    p.add_argument("--limit", type=int, default=None, help="stop after N sets")
    p.add_argument("--multiplier", action="store_true",
                   help="search unions of multiplier orbits (Hall's theorem)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_search)

    t = subparsers.add_parser("table", help="existence table of cyclic projective planes")
    t.add_argument("--max-order", type=int, required=True)
    t.add_argument("--format", choices=("md", "csv", "json"), default="md")
    t.add_argument("--search-max-order", type=int, default=20,
                   help="run exhaustive multiplier searches up to this order (default 20)")
    t.add_argument("--verify-singer", type=_verify_singer, default=True,
                   help="build+verify Singer sets: all (default), none, or up to this order")
    t.add_argument("--progress", action="store_true")
    t.set_defaults(func=_cmd_table)

    q = subparsers.add_parser("quorum", help="minimum cyclic quorum sets (difference covers)")
    q.add_argument("v", type=int)
    q.add_argument("--k", type=int, default=None, help="size (default: minimum)")
    q.add_argument("--limit", type=int, default=None)
    q.add_argument("--compute", action="store_true",
                   help="search even when a stored value exists")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_quorum)
