"""``cqs-design search | table | quorum``: exhaustive search, existence table, quorum sets.

Examples
--------
``cqs-design search 13 4``            all translation classes of cyclic (13, 4, 1) sets
``cqs-design search 43 7``            none: exit code 1, with the search statistics (the
                                      multiplier theorem applies, so it is used by default)
``cqs-design table --max-order 30``         markdown; ``--csv`` or ``--json`` for the others
``cqs-design quorum 50 --json``             from the stored proven table (v <= 111)
``cqs-design quorum 120 --time-limit 600``  search, with the known bounds on time-out

Long commands show progress on stderr from the start (``--quiet`` turns it off); ``quorum``
past the stored table stops after ``DEFAULT_QUORUM_TIME_LIMIT`` seconds unless told otherwise
(``--time-limit none``: no limit), with the bounds known by then.
"""

from __future__ import annotations

import argparse

from cqs_design.cli import EXIT_NEGATIVE, EXIT_OK, CLIError, emit
from cqs_design.cli.options import int_at_least

__all__ = ["DEFAULT_QUORUM_TIME_LIMIT", "multiplier_theorem_applies", "register"]

#: seconds ``cqs-design quorum`` searches past the stored table before it reports the bounds
DEFAULT_QUORUM_TIME_LIMIT = 60.0


def _up_to(text: str) -> str | None:
    if text in ("translation", "equivalence"):
        return text
    if text in ("none", "all"):
        return None
    raise argparse.ArgumentTypeError(
        f"--up-to must be 'translation', 'equivalence' or 'none', got {text!r}")


def multiplier_theorem_applies(v: int, k: int, lam: int) -> str | None:
    """None when Hall's multiplier theorem gives a search by multiplier orbits for
    ``(v, k, lam)``, else the reason it does not (valid parameters assumed).

    >>> multiplier_theorem_applies(133, 12, 1) is None
    True
    >>> multiplier_theorem_applies(15, 7, 3)
    'no multiplier prime: n = k - lam = 4 has no prime factor p > lam with gcd(p, v) = 1'
    """
    import math

    from cqs_design.search import multiplier_primes

    if not multiplier_primes(v, k, lam):
        return (f"no multiplier prime: n = k - lam = {k - lam} has no prime factor p > lam "
                "with gcd(p, v) = 1")
    if math.gcd(k, v) != 1:
        return f"gcd(k, v) = {math.gcd(k, v)} is not 1"
    return None


def _cmd_search(args: argparse.Namespace) -> int:
    from cqs_design.search import check_parameters, search_difference_sets

    check_parameters(args.v, args.k, args.lam)
    why_not = multiplier_theorem_applies(args.v, args.k, args.lam)
    if args.multiplier is None:  # the default: the theorem whenever it applies
        use = why_not is None
        how = ("Hall's multiplier theorem applies: searched unions of multiplier orbits, "
               "complete up to translation (--no-multiplier: plain backtracking)" if use else
               f"plain backtracking (the multiplier theorem does not apply: {why_not})")
    else:
        use = args.multiplier
        how = ("unions of multiplier orbits (--multiplier)" if use else
               "plain backtracking (--no-multiplier)")
    try:
        res = search_difference_sets(
            args.v, args.k, args.lam, up_to=args.up_to, limit=args.limit,
            progress=args.progress, use_multiplier_theorem=use,
            time_limit=args.time_limit)
    except KeyboardInterrupt as exc:  # SearchInterrupted says how far it got
        import sys

        print(f"cqs-design search: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    st = res.stats
    status = "complete" if st.complete else f"INCOMPLETE (stopped: {st.stopped})"
    lines = [f"cyclic ({args.v}, {args.k}, {args.lam}) difference sets up to "
             f"{args.up_to or 'nothing (every set)'}: {len(res.sets)} found"]
    lines += ["  " + " ".join(map(str, s.elements)) for s in res.sets]
    lines.append(f"search: {st.method}, {st.nodes} nodes, {st.seconds:.3f} s, {status}"
                 + (f", multipliers {list(st.multipliers)}" if st.multipliers else ""))
    lines.append(f"method: {how}")
    payload = {**res.to_dict(), "method": how}
    emit(payload, as_json=args.json, text="\n".join(lines))
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
            if args.json:
                emit({"v": v, "complete": False, "lower_bound": exc.lower,
                      "upper_bound": exc.upper, "seconds": exc.seconds}, as_json=True, text="")
            raise CLIError(str(exc)) from None
        if args.limit is None and best.row is not None:
            text = (f"v = {v}: minimum cyclic quorum set size {best.minimum_size} "
                    f"({best.status}; {best.source})\n"
                    f"  base set: {' '.join(map(str, best.base_set))}")
            emit(dict(best.row), as_json=args.json, text=text)
            return EXIT_OK
        k = best.minimum_size
    res = search_cyclic_quorum_sets(v, k, limit=args.limit, time_limit=args.time_limit,
                                    progress=args.progress)
    payload = {**res.to_dict(), "lower_bound": minimum_size_lower_bound(v),
               "base_sets": [list(s) for s in res.sets]}
    status = "" if res.stats.complete else " (search stopped early: incomplete)"
    text = "\n".join([f"v = {v}: {len(res.sets)} cyclic quorum set(s) of size {k}{status}"]
                     + ["  " + " ".join(map(str, s)) for s in res.sets])
    emit(payload, as_json=args.json, text=text)
    if not res.sets and not res.stats.complete:
        raise CLIError(f"search for size {k} stopped after {args.time_limit:g} s without a "
                       "set; no conclusion (raise --time-limit, or 'none' for no limit)")
    return EXIT_OK if res.sets else EXIT_NEGATIVE


_nonnegative = int_at_least(0)
_positive = int_at_least(1)


def _seconds(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds > 0 or 'none', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0 or 'none', got {text}")
    return value


def _add_progress(p: argparse.ArgumentParser, what: str) -> None:
    """``--progress`` (the default) / ``--no-progress``, and ``--quiet`` (= --no-progress)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help=f"show progress on stderr: {what} (default on)")
    p.add_argument("--quiet", dest="progress", action="store_false",
                   help="no progress (same as --no-progress)")


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
    p.add_argument("--multiplier", action=argparse.BooleanOptionalAction, default=None,
                   help="search unions of multiplier orbits (Hall's theorem); default: "
                        "whenever the theorem applies (a multiplier prime and gcd(k, v) = 1), "
                        "else plain backtracking; --no-multiplier: always backtracking")
    p.add_argument("--time-limit", type=_seconds, default=None,
                   help="stop after this many seconds (default: no limit)")
    _add_progress(p, "estimated fraction of the tree done, nodes and nodes per second")
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
    _add_progress(t, "orders done")
    t.set_defaults(func=_cmd_table)

    q = subparsers.add_parser(
        "quorum", help="minimum cyclic quorum sets (difference covers)",
        description="Minimum cyclic quorum set of Z_v: from the stored proven table for "
                    "v <= 111, else by search (bounded by --time-limit).")
    q.add_argument("v", type=int)
    q.add_argument("--k", type=_positive, default=None, help="size (default: minimum)")
    q.add_argument("--limit", type=_positive, default=None, help="list at most N sets")
    q.add_argument("--time-limit", type=_seconds, default=DEFAULT_QUORUM_TIME_LIMIT,
                   help="seconds for the search (default "
                        f"{DEFAULT_QUORUM_TIME_LIMIT:g}; 'none': no limit); on time-out print "
                        "the known bounds, exit 2")
    q.add_argument("--compute", action="store_true",
                   help="search even when a stored value exists")
    _add_progress(q, "nodes searched for each size, then one line per size tried")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_quorum)
