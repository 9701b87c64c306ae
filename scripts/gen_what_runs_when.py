"""The table of docs/what_runs_when.md: what the planner picks for typical calls.

Regenerate the page's table (between its ``decision-table`` markers) after a change to the
planner::

    python scripts/gen_what_runs_when.py --write

Without ``--write`` the table is printed. ``tests/attention/test_docs_engine.py`` fails when the
page and :func:`decision_table` disagree. The cost model is a fixed H200-like one, so the table
does not depend on the machine that generates it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cqs_attention.engine.placement import CostModel, Dims, _describe, choose
from cqs_attention.kernels.fa4 import Fa4Kernel  # its memory model: the GPU path

DOC = Path(__file__).resolve().parents[1] / "docs" / "what_runs_when.md"
START, END = "<!-- decision-table:start -->\n", "<!-- decision-table:end -->"

#: a fixed H200-like cost model, so the documented table does not depend on the machine
H200_MODEL = CostModel(flops_per_s=6.5e14, copy_bytes_per_s=5.0e10, mem_bytes_per_s=3.5e12,
                       call_overhead_s=3e-5, source="fixed H200-like model", copy_call_s=6e-6)

#: (length, causal, inputs on the device?, budget as a fraction of Q+K+V or None, backward)
TABLE_CASES = [
    (16384, True, True, None, False), (262144, False, True, None, False),
    (262144, True, True, None, True), (262144, True, False, 0.5, False),
    (262144, True, False, 0.25, False), (262144, True, False, 0.125, False),
    (262144, True, False, 0.25, True), (1048576, False, False, 0.25, False),
    (1048576, True, False, 0.25, False), (1048576, True, False, 0.25, True),
]


def decision_table(cases: list[tuple[int, bool, bool, float | None, bool]] | None = None,
                   model: CostModel = H200_MODEL) -> str:
    """A markdown table of what :func:`~cqs_attention.engine.placement.choose` picks (bf16,
    B=1, H=16, D=128) for ``cases``.

    >>> print(decision_table([(4096, True, True, None, False)]).splitlines()[2])
    | 4K | causal | device | - | forward | whole (one kernel call) | none | no |
    """
    cases = TABLE_CASES if cases is None else cases
    lines = ["| L | mask | inputs | budget (of Q+K+V) | pass | schedule | accumulators | "
             "prefetch |", "|---|---|---|---|---|---|---|---|"]
    for L, causal, resident, frac, backward in cases:
        d = Dims(1, 16, 16, L, L, 128, torch.bfloat16)
        qkv = 3 * L * 16 * 128 * 2
        budget = None if frac is None else int(qkv * frac)
        c = choose(d, budget=budget, streamed=not resident, backward=backward, causal=causal,
                   window=None, model=model, kernels=[Fa4Kernel()], slack=True)
        what = ("whole (one kernel call)" if c.kind == "whole" and len(c.rects) == 1
                else f"{c.kind} {_describe(c.plan)}")
        size = f"{L >> 20}M" if L >= 1 << 20 else f"{L >> 10}K"
        lines.append(f"| {size} | {'causal' if causal else 'full'} | "
                     f"{'device' if resident else 'host (pinned)'} | "
                     f"{'-' if frac is None else f'1/{round(1 / frac)}'} | "
                     f"{'backward' if backward else 'forward'} | {what} | {c.accumulators} | "
                     f"{'yes' if c.prefetch else 'no'} |")
    return "\n".join(lines)


def documented_table(text: str) -> str:
    """The table between the markers of the page's ``text``."""
    return text[text.index(START) + len(START):text.index(END)].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help=f"rewrite the table in {DOC.relative_to(DOC.parents[1])}")
    args = parser.parse_args(argv)
    table = decision_table()
    if not args.write:
        print(table)
        return 0
    text = DOC.read_text()
    DOC.write_text(text[:text.index(START) + len(START)] + table + "\n" + text[text.index(END):])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
