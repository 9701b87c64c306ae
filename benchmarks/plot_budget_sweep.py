"""Plot the memory-budget sweep of the GPU tests: measured peak and the footprint model's bound,
each over the budget, per length, mask and budget fraction, forward and backward.

The records are the ``budget_sweep`` lines that ``tests/attention/test_engine_gpu.py`` appends
to ``$CQS_GPU_RECORD``::

    python benchmarks/plot_budget_sweep.py RECORDS.jsonl OUT.png

>>> _label({"L": 65536, "causal": True, "fraction": 0.125})
'64K causal 1/8'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _label(r: dict) -> str:
    size = f"{r['L'] >> 20}M" if r["L"] >= 1 << 20 else f"{r['L'] >> 10}K"
    return f"{size} {'causal' if r['causal'] else 'full'} 1/{round(1 / r['fraction'])}"


def load(path: str) -> list[dict]:
    """The ``budget_sweep`` records of a JSON-lines file, in file order."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("test") == "budget_sweep":
                rows.append(rec)
    if not rows:
        raise ValueError(f"{path}: no budget_sweep records")
    return rows


def plot(path: str, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load(path)
    series = [("fwd_peak", "forward: measured peak"), ("fwd_footprint", "forward: model bound"),
              ("bwd_peak", "backward: measured peak"), ("bwd_footprint", "backward: model bound")]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4.2))
    width = 0.8 / len(series)
    for i, (key, name) in enumerate(series):
        xs = [j + i * width for j in range(len(rows))]
        ax.bar(xs, [r[key] / r["budget"] for r in rows], width, label=name)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))],
                  [_label(r) for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("bytes / memory_budget")
    ax.set_title("cqs_attention streamed from pinned host memory: device peak vs budget "
                 "(bf16, H=16, D=128)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: plot_budget_sweep.py RECORDS.jsonl OUT.png", file=sys.stderr)
        return 2
    try:
        plot(*args)
    except (OSError, ValueError) as exc:
        print(f"plot_budget_sweep: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
