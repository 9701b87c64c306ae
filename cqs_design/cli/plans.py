"""``cqs-design plan | plot``: build, print and draw CQS decomposition plans.

Examples
--------
``cqs-design plan --seq-len 4096 --max-task-tokens 1024``       summary of the chosen plan
``cqs-design plan --seq-len 100 --design 2 --causal --json``      the plan as JSON (schema 1)
``cqs-design plan --seq-len 100 --design 2 --window 10 none``     sliding window, unbounded right
``cqs-design plot --seq-len 63 --design 2 --levels 2 -o cover.png``
"""

from __future__ import annotations

import argparse
import sys

from cqs_design.cli import EXIT_OK, CLIError, emit

__all__ = ["register"]


def _side(text: str) -> int | None:
    if text.lower() in ("none", "inf", "-"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"window side must be a non-negative integer or 'none', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"window side must be >= 0, got {value}")
    return value


def _add_plan_args(p: argparse.ArgumentParser, *, design_required: bool) -> None:
    p.add_argument("--seq-len", type=int, required=True, metavar="L", help="number of queries")
    p.add_argument("--kv-len", type=int, default=None, metavar="N",
                   help="number of keys (cross-attention; default L)")
    p.add_argument("--design", type=int, required=design_required, default=None, metavar="Q",
                   help="prime power q of the Singer design (v = q^2 + q + 1)"
                   + ("" if design_required else "; default: smallest that fits"))
    p.add_argument("--sub-design", type=int, default=None, metavar="Q",
                   help="prime power of levels 2 and deeper (default: --design)")
    p.add_argument("--levels", type=int, default=1, metavar="N", help="levels of CQS Divide")
    p.add_argument("--causal", action="store_true", help="causal mask")
    p.add_argument("--window", type=_side, nargs=2, default=None, metavar=("LEFT", "RIGHT"),
                   help="sliding window: key j allowed iff i-LEFT <= j <= i+RIGHT ('none' = "
                   "unbounded side)")


def _build(args: argparse.Namespace):
    from cqs_design.plans import make_plan

    return make_plan(args.seq_len, kv_len=args.kv_len, design=args.design, levels=args.levels,
                     max_task_tokens=getattr(args, "max_task_tokens", None),
                     causal=args.causal,
                     window=None if args.window is None else tuple(args.window),
                     sub_design=args.sub_design)


def _cmd_plan(args: argparse.Namespace) -> int:
    plan = _build(args)
    if args.validate:
        plan.validate()
    if args.json:
        emit(plan.to_dict(), as_json=True, text="")
        return EXIT_OK
    s = plan.stats()
    ds = plan.design
    lines = [
        f"CQS plan: seq_len={plan.seq_len} kv_len={plan.kv_len} causal={plan.causal} "
        f"window={plan.window} levels={plan.levels}",
        f"design: v={ds.v} k={ds.k} elements={list(ds.elements)}"
        + (f"\n  chosen: {plan.chosen_because}" if plan.chosen_because else ""),
        f"tasks: {s.tasks}  rectangles: {s.rectangles}",
        f"task tokens: max {s.max_task_tokens}  min {s.min_task_tokens}  "
        f"moved in total {s.tokens_moved} ({s.tokens_moved / max(plan.seq_len, 1):.2f} x L)",
        f"pairs: needed {s.pairs_needed}  computed {s.pairs_computed}",
        "exact cover: " + ("validated" if args.validate else "not checked (--validate)"),
    ]
    print("\n".join(lines))
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace) -> int:
    from cqs_design.coverage import MAX_DENSE_CELLS, plot_coverage

    if args.seq_len * (args.kv_len or args.seq_len) > MAX_DENSE_CELLS:
        raise CLIError(f"--seq-len {args.seq_len} is too large to draw token by token "
                       f"(at most {MAX_DENSE_CELLS} cells)")
    plan = _build(args).validate()
    try:
        plot_coverage(plan, args.output)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote {args.output} ({len(plan)} tasks, {plan.num_rectangles} rectangles)",
          file=sys.stderr)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plan`` and ``plot`` sub-commands."""
    p = subparsers.add_parser("plan", help="build a CQS decomposition plan",
                              description="Build a CQS plan; print a summary or --json.")
    _add_plan_args(p, design_required=False)
    p.add_argument("--max-task-tokens", type=int, default=None, metavar="M",
                   help="choose the smallest Singer design whose tasks have at most M tokens")
    p.add_argument("--validate", action="store_true", help="prove the exact cover first")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (schema 1)")
    p.set_defaults(func=_cmd_plan)

    p = subparsers.add_parser("plot", help="draw the attention matrix coloured by task",
                              description="Draw a plan's coverage (needs matplotlib).")
    _add_plan_args(p, design_required=True)
    p.add_argument("-o", "--output", required=True, help="image file (.png, .svg, .pdf)")
    p.set_defaults(func=_cmd_plot)
