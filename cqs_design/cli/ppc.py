"""``cqs-design ppc``: verify the prime power conjecture for cyclic planes up to an order.

Examples (shell)::

    cqs-design ppc --max-order 2000000                   # summary table, progress on stderr
    cqs-design ppc --max-order 2000000 --resume run/ --out result.json --json
    cqs-design ppc --check result.json                   # re-verify with the checker
    cqs-design ppc --order 1000000                       # one order, with its certificate
    cqs-design ppc --min-order 1999000000 --max-order 2000000000   # a segment
    cqs-design ppc --max-order 2000000000 --resume run/ --shard 0/2  # two processes, one
    cqs-design ppc --max-order 2000000000 --resume run/ --shard 1/2  # journal; then the
    cqs-design ppc --max-order 2000000000 --resume run/ --out r.json # plain run assembles

Exit codes: 0 every non-prime-power order excluded (or the check passed, or the order is
excluded or a prime power); 1 a negative answer: some order left open, a certificate that
fails the check, an open order; 2 bad usage (a one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cqs_design.cli import EXIT_NEGATIVE, EXIT_OK, CLIError, emit
from cqs_design.cli.options import int_at_least

__all__ = ["register"]


def _cmd_ppc(args: argparse.Namespace) -> int:
    given = [x is not None for x in (args.max_order, args.check, args.order)]
    if sum(given) != 1:
        raise CLIError("give exactly one of --max-order N, --check FILE, --order N")
    if args.check is not None:
        return _check(args)
    if args.order is not None:
        return _one(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from cqs_design.ppc.journal import JournalError
    from cqs_design.ppc.verification import verify

    try:
        result = verify(args.max_order, min_order=args.min_order,
                        block_size=args.block_size, journal=args.resume,
                        progress=not args.no_progress and not args.json,
                        w_limit=args.w_limit, shard=args.shard)
    except JournalError as exc:
        raise CLIError(str(exc)) from None
    if args.out is not None:
        result.save(args.out)
    payload = result.to_dict()
    payload.pop("blocks")
    payload["open_orders"] = result.open
    text = result.format_summary()
    text += (f"\n\n{len(result.open)} open order(s); {len(result.certificates)} stored "
             f"certificate(s); {result.wall_seconds:.1f} s wall")
    if args.shard[1] > 1:
        text += (f"\nshard {args.shard[0]}/{args.shard[1]}: {len(result.blocks)} of "
                 f"{result.info['blocks']} blocks done so far (a partial result); once every "
                 "shard is done, the same command without --shard assembles the whole run")
    if result.open:
        text += "\nopen: " + ", ".join(str(o["n"]) for o in result.open[:20])
    emit(payload, as_json=args.json, text=text)
    return EXIT_NEGATIVE if result.open else EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from cqs_design.ppc.verification import PPCResult, check_result

    path = Path(args.check)
    try:
        result = PPCResult.load(path)
    except FileNotFoundError:
        raise CLIError(f"no such file: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CLIError(f"{path} is not a ppc result: {exc}") from None
    report = check_result(result, sample=None if args.all else args.sample, seed=args.seed)
    payload: dict[str, Any] = {"file": str(path), "min_order": result.min_order,
                               "max_order": result.max_order,
                               "open": len(result.open), **report.to_dict()}
    text = (f"{path}: orders {result.min_order}..{result.max_order}; "
            f"{report.certificates_checked} stored "
            f"certificate(s) checked, {report.regenerated} regenerated and checked; "
            f"{len(result.open)} open; "
            + ("OK" if report.ok else f"{len(report.problems)} problem(s):\n  "
               + "\n  ".join(report.problems[:50])))
    emit(payload, as_json=args.json, text=text)
    return EXIT_OK if report.ok and not result.open else EXIT_NEGATIVE


def _one(args: argparse.Namespace) -> int:
    from cqs_design.ppc.checker import check_certificate
    from cqs_design.ppc.criteria import decide
    from cqs_design.ppc.order import MAX_ORDER

    if not 2 <= args.order <= MAX_ORDER:
        raise CLIError(f"--order must be in [2, {MAX_ORDER}], got {args.order}")
    verdict = decide(args.order)
    payload = verdict.to_dict()
    if verdict.certificate is not None:
        check_certificate(verdict.certificate)
        payload["checked"] = True
        text = f"order {args.order}: excluded; {verdict.certificate.describe()}\n" + \
            verdict.certificate.to_json()
    elif verdict.status == "prime-power":
        text = f"order {args.order}: a prime power (Singer's cyclic plane exists)"
    else:
        text = f"order {args.order}: open; tried {', '.join(verdict.tried)}"
    emit(payload, as_json=args.json, text=text)
    return EXIT_NEGATIVE if verdict.status == "open" else EXIT_OK


_positive = int_at_least(1)


def _order(text: str) -> int:
    value = _positive(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an order >= 2, got {value}")
    return value


def _shard(text: str) -> tuple[int, int]:
    k, sep, m = text.partition("/")
    try:
        shard = (int(k), int(m))
    except ValueError:
        shard = (-1, 0)
    if not sep or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"must be K/M with 0 <= K < M, got {text!r}")
    return shard


def register(subparsers: Any) -> None:
    """Add the ``ppc`` sub-command."""
    from cqs_design.ppc.verification import DEFAULT_BLOCK_SIZE, MAX_VERIFY_ORDER

    p = subparsers.add_parser(
        "ppc", help="verify the prime power conjecture for cyclic planes up to an order",
        description="Exclude every non-prime-power order n <= N by necessary conditions "
                    "(Gordon 1994, Baumert-Gordon 2004), with certificates; or check a "
                    "result file; or decide one order. Exit 1 if an order stays open or a "
                    "check fails.")
    p.add_argument("--max-order", type=_order, default=None, metavar="N",
                   help=f"verify every order 2..N (N <= {MAX_VERIFY_ORDER})")
    p.add_argument("--min-order", type=_order, default=2, metavar="M",
                   help="with --max-order: verify only the segment M..N (default M = 2)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="journal directory: one file per finished block; resumes a killed run")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/M",
                   help="with --resume: work only on segments K, K+M, K+2M, ... (M processes "
                        "share one journal; a plain run with it assembles the result)")
    p.add_argument("--out", default=None, metavar="FILE", help="write the JSON result here")
    p.add_argument("--block-size", type=_positive, default=DEFAULT_BLOCK_SIZE,
                   help=f"orders per block (default {DEFAULT_BLOCK_SIZE})")
    p.add_argument("--w-limit", type=_positive, default=None,
                   help="largest prime each block sieves n^2+n+1 with (default min(N, 2^24)); "
                        "the primes above it, up to sqrt(n^2+n+1), are sieved per segment")
    p.add_argument("--check", default=None, metavar="FILE",
                   help="re-verify a result file with the checker")
    p.add_argument("--sample", type=_positive, default=1000,
                   help="with --check: regenerate and check this many other orders "
                        "(default 1000)")
    p.add_argument("--all", action="store_true",
                   help="with --check: regenerate and check every order, and recount")
    p.add_argument("--seed", type=int, default=0, help="with --check: sample seed")
    p.add_argument("--order", type=_order, default=None, metavar="N",
                   help="decide one order and print its certificate")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_ppc)
