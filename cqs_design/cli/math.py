"""``cqs-design singer | verify | paired | normalize``: the difference-set commands.

Examples (shell)::

    cqs-design singer 4              # 21 0 1 4 14 16   (v followed by the elements)
    cqs-design verify 7 0 1 3        # (7, 3, 1) difference set: yes
    cqs-design paired 7 0 1 3 --json
    cqs-design normalize 7 2 3 5

``verify`` exits 1 when the input is not a difference set; malformed input exits 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from cqs_design.cli import EXIT_NEGATIVE, EXIT_OK, CLIError, emit
from cqs_design.difference_sets import DifferenceSet, NotADifferenceSetError
from cqs_design.singer import singer_difference_set

__all__ = ["register"]


def _difference_set(args: argparse.Namespace) -> DifferenceSet:
    if not args.elements:
        raise CLIError("give the elements after V, e.g. `7 0 1 3`")
    return DifferenceSet(args.v, args.elements)


def _line(ds: DifferenceSet) -> str:
    return " ".join(map(str, (ds.v, *ds.elements)))


def _payload(ds: DifferenceSet, **extra: Any) -> dict[str, Any]:
    payload = ds.to_dict()
    payload.update(extra)
    return payload


def _cmd_singer(args: argparse.Namespace) -> int:
    ds = singer_difference_set(args.q)
    emit(_payload(ds, q=args.q, lam=ds.lam), as_json=args.json, text=_line(ds))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    ds = _difference_set(args)
    try:
        ds.verify()
    except NotADifferenceSetError as exc:
        emit(_payload(ds, valid=False, reason=str(exc)), as_json=args.json,
             text=f"not a difference set: {exc}")
        return EXIT_NEGATIVE
    emit(_payload(ds, valid=True, lam=ds.lam, order=ds.order), as_json=args.json,
         text=f"({ds.v}, {ds.k}, {ds.lam}) difference set: yes (order {ds.order})")
    return EXIT_OK


def _cmd_paired(args: argparse.Namespace) -> int:
    ds = _difference_set(args)
    paired = ds.paired()
    emit(_payload(paired, input=list(ds.elements), valid=paired.is_valid()),
         as_json=args.json, text=_line(paired))
    return EXIT_OK


def _cmd_normalize(args: argparse.Namespace) -> int:
    ds = _difference_set(args)
    normal = ds.normalized()
    emit(_payload(normal, input=list(ds.elements), valid=normal.is_valid()),
         as_json=args.json, text=_line(normal))
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``singer``, ``verify``, ``paired`` and ``normalize`` to the ``cqs-design`` parser."""
    p = subparsers.add_parser(
        "singer", help="print the Singer (q²+q+1, q+1, 1) difference set (v, then elements)",
        description="Print the normalized Singer difference set for a prime power q.",
    )
    p.add_argument("q", type=int, help="a prime power, 2 <= q <= 65536")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_singer)

    for name, func, text in (
        ("verify", _cmd_verify, "check that the elements form a cyclic difference set mod V "
                                "(exit 1 if not)"),
        ("paired", _cmd_paired, "print the paired set {max(D) - d} (v, then elements)"),
        ("normalize", _cmd_normalize, "print the canonical translate (contains 0, "
                                      "lexicographically smallest)"),
    ):
        p = subparsers.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("v", type=int, metavar="V", help="the modulus")
        p.add_argument("elements", type=int, nargs="*", metavar="E",
                       help="distinct residues in [0, V)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
