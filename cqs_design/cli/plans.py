"""``cqs-design plan | plot``: build, print and draw decomposition plans.

Examples
--------
``cqs-design plan --seq-len 4096 --max-task-tokens 1024``       summary of the chosen plan
``cqs-design plan --seq-len 1000000000 --validate``              the default plan at 10^9 tokens
``cqs-design plan --seq-len 100 --design 2 --causal --json``      the plan as JSON (schema 2)
``cqs-design plan --seq-len 100 --design 2 --window 10 none``     sliding window, unbounded right
``cqs-design plan --seq-len 100 --schedule query_blocks --block-q 32``   query-block plan
``cqs-design plot --seq-len 63 --design 2 --levels 2 -o cover.png``

``plot -o PATH`` writes exactly ``PATH``: the format comes from its suffix (``.png``, ``.svg``,
``.pdf``, ... whatever matplotlib supports); a path without a suffix gets PNG data under that
exact name.  A directory, an empty path, a missing parent directory or an unknown suffix is bad
usage (exit 2).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cqs_design.cli import EXIT_OK, CLIError, emit
from cqs_design.cli.options import window_side

__all__ = ["register"]


def _add_plan_args(p: argparse.ArgumentParser, *, design_required: bool) -> None:
    p.add_argument("--seq-len", type=int, required=True, metavar="L", help="number of queries")
    p.add_argument("--kv-len", type=int, default=None, metavar="N",
                   help="number of keys (cross-attention; default L)")
    p.add_argument("--schedule", choices=("cqs", "query_blocks", "kv_blocks"), default="cqs",
                   help="cqs (default): tasks of a Singer design; query_blocks: task i = query "
                   "block i against all key blocks; kv_blocks: task j = key block j against all "
                   "query blocks")
    p.add_argument("--block-q", type=int, default=None, metavar="B",
                   help="query block size of the block schedules (default min(L, 16384))")
    p.add_argument("--block-kv", type=int, default=None, metavar="B",
                   help="key/value block size of the block schedules (default min(N, 16384))")
    p.add_argument("--design", type=int, required=design_required, default=None, metavar="Q",
                   help="prime power q of the Singer design (v = q^2 + q + 1)"
                   + ("" if design_required else "; default: chosen from the task size"))
    p.add_argument("--sub-design", type=int, default=None, metavar="Q",
                   help="prime power of levels 2 and deeper (default: --design)")
    p.add_argument("--levels", type=int, default=1, metavar="N", help="levels of CQS Divide")
    p.add_argument("--causal", action="store_true", help="causal mask")
    p.add_argument("--window", type=window_side, nargs=2, default=None, metavar=("LEFT", "RIGHT"),
                   help="sliding window: key j allowed iff i-LEFT <= j <= i+RIGHT ('none' = "
                   "unbounded side)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _build(args: argparse.Namespace) -> Any:
    from cqs_design.plans import make_plan

    max_tokens = getattr(args, "max_task_tokens", None)
    if max_tokens is not None and args.design is not None:
        raise CLIError("--max-task-tokens and --design cannot be combined: --max-task-tokens "
                       "chooses the design; pass one of them")
    block = {"block_q": args.block_q, "block_kv": args.block_kv}
    if args.schedule != "cqs":
        for flag, val in (("--design", args.design), ("--sub-design", args.sub_design),
                          ("--max-task-tokens", max_tokens)):
            if val is not None:
                raise CLIError(f"{flag} applies to --schedule cqs only, not to --schedule "
                               f"{args.schedule}")
        if args.levels != 1:
            raise CLIError(f"--levels applies to --schedule cqs only, not to --schedule "
                           f"{args.schedule}")
    else:
        for flag, val in (("--block-q", args.block_q), ("--block-kv", args.block_kv)):
            if val is not None:
                raise CLIError(f"{flag} applies to --schedule query_blocks or kv_blocks only")
        block = {"design": args.design, "levels": args.levels, "max_task_tokens": max_tokens,
                 "sub_design": args.sub_design}
    return make_plan(args.seq_len, kv_len=args.kv_len, schedule=args.schedule,
                     causal=args.causal,
                     window=None if args.window is None else tuple(args.window), **block)


def _summary(plan: Any, validated: bool) -> dict[str, Any]:
    s = plan.stats()
    ds = plan.design
    return {
        "seq_len": plan.seq_len, "kv_len": plan.kv_len, "causal": plan.causal,
        "window": None if plan.window is None else list(plan.window),
        "schedule": plan.schedule, "block_q": plan.block_q, "block_kv": plan.block_kv,
        "design": None if ds is None else {"v": ds.v, "k": ds.k, "elements": list(ds.elements)},
        "levels": plan.levels, "chosen_because": plan.chosen_because,
        "tasks": s.tasks, "rectangles": s.rectangles,
        "max_task_tokens": s.max_task_tokens, "min_task_tokens": s.min_task_tokens,
        "tokens_moved": s.tokens_moved, "pairs_needed": s.pairs_needed,
        "pairs_computed": s.pairs_computed, "validated": validated,
    }


def _cmd_plan(args: argparse.Namespace) -> int:
    if args.summary and not args.json:
        raise CLIError("--summary only changes what --json prints; add --json")
    plan = _build(args)
    if args.validate:
        plan.validate()
    if args.json:
        emit(_summary(plan, args.validate) if args.summary else plan.to_dict(), as_json=True,
             text="")
        return EXIT_OK
    s = plan.stats()
    ds = plan.design
    how = (f"design: v={ds.v} k={ds.k} elements={list(ds.elements)}" if ds is not None else
           f"schedule: {plan.schedule} block_q={plan.block_q} block_kv={plan.block_kv}")
    lines = [
        f"{'CQS' if ds is not None else 'block'} plan: seq_len={plan.seq_len} "
        f"kv_len={plan.kv_len} causal={plan.causal} window={plan.window} levels={plan.levels}",
        how + (f"\n  chosen: {plan.chosen_because}" if plan.chosen_because else ""),
        f"tasks: {s.tasks}  rectangles: {s.rectangles}",
        f"task tokens: max {s.max_task_tokens}  min {s.min_task_tokens}  "
        f"moved in total {s.tokens_moved} ({s.tokens_moved / max(plan.seq_len, 1):.2f} x L)",
        f"pairs: needed {s.pairs_needed}  computed {s.pairs_computed}",
        "exact cover: " + ("validated" if args.validate else "not checked (--validate)"),
    ]
    print("\n".join(lines))
    return EXIT_OK


def _output_path(text: str) -> tuple[Path, str | None]:
    """Check ``-o`` before any work: (the exact path, the suffix-derived format or None)."""
    if not text.strip():
        raise CLIError("-o/--output is empty: give an image file such as cover.png")
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise CLIError(f"-o/--output {text!r} is a directory: give an image file inside it, "
                       f"such as {str(path / 'cover.png')!r}")
    parent = path.parent
    if not parent.is_dir():
        raise CLIError(f"cannot write {text!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"cannot write {text!r}: directory {str(parent)!r} is not writable")
    suffix = path.suffix.lower().lstrip(".")
    return path, suffix or None


def _cmd_plot(args: argparse.Namespace) -> int:
    from cqs_design.coverage import MAX_DENSE_CELLS, plot_coverage

    path, fmt = _output_path(args.output)
    if args.seq_len * (args.kv_len or args.seq_len) > MAX_DENSE_CELLS:
        raise CLIError(f"--seq-len {args.seq_len} is too large to draw token by token "
                       f"(at most {MAX_DENSE_CELLS} cells)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise CLIError("plotting needs matplotlib: pip install 'cqs[plot]'") from None
    supported = Figure().canvas.get_supported_filetypes()
    if fmt is not None and fmt not in supported:
        raise CLIError(f"-o/--output {args.output!r}: unknown image suffix '.{fmt}'; use one of "
                       + ", ".join(f".{x}" for x in sorted(supported)))
    plan = _build(args).validate()
    try:
        fig = plot_coverage(plan)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    try:
        fig.savefig(path, format=fmt or "png", bbox_inches="tight")
    except OSError as exc:
        raise CLIError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    info = {"wrote": str(path), "format": fmt or "png", "tasks": len(plan),
            "rectangles": plan.num_rectangles}
    emit(info, as_json=args.json,
         text=f"wrote {path} ({(fmt or 'png').upper()}, {len(plan)} tasks, "
              f"{plan.num_rectangles} rectangles)")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plan`` and ``plot`` sub-commands."""
    p = subparsers.add_parser(
        "plan", help="build a decomposition plan",
        description="Build a plan (CQS design or query/key-value blocks) and print a summary, "
        "or with --json the whole plan as JSON (schema 2; --summary for the summary as JSON).")
    _add_plan_args(p, design_required=False)
    p.add_argument("--max-task-tokens", type=int, default=None, metavar="M",
                   help="choose the smallest Singer design whose tasks have at most M tokens "
                   "(not with --design)")
    p.add_argument("--validate", action="store_true", help="prove the exact cover first")
    p.add_argument("--summary", action="store_true",
                   help="with --json: print the summary as JSON instead of the whole plan")
    p.set_defaults(func=_cmd_plan)

    p = subparsers.add_parser(
        "plot", help="draw the attention matrix coloured by task",
        description="Draw a plan's coverage (needs matplotlib). -o writes exactly the path "
        "given, in the format of its suffix (PNG when it has none).")
    _add_plan_args(p, design_required=False)
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="image file to write (.png, .svg, .pdf, ...; exactly this path)")
    p.set_defaults(func=_cmd_plot)
