"""Plot the streamed-forward ratios of ``benchmarks/results/streamed_h100_host_merge.json``.

Runs without a GPU::

    python benchmarks/plot_streamed_results.py [JSON] [PNG]
"""

from __future__ import annotations

import json
import sys

DEFAULT_JSON = "benchmarks/results/streamed_h100_host_merge.json"
DEFAULT_PNG = "benchmarks/results/streamed_h100_host_merge.png"


def _label(rec: dict, what: str) -> str:
    size = f"{rec['L'] // 1024}K" if rec["L"] < 1 << 20 else f"{rec['L'] >> 20}M"
    return f"{size} {'causal' if rec['causal'] else 'full'}\n({what})"


def bars(data: dict) -> list[tuple[str, float, str]]:
    """``(label, ratio, colour)`` per bar: the previous executor, then the two runs."""
    old = data["previous_executor_for_comparison"]
    rows = [("256K causal\n(old executor)", old["ratio_causal"], "tab:gray"),
            ("256K full\n(old executor)", old["ratio_full"], "tab:gray")]
    first, final = data["runs"][0]["records"], data["runs"][1]["records"]
    rows += [(_label(r, "device merge v1"), r["ratio"], "tab:blue") for r in first
             if r["L"] < 1 << 20]
    rows += [(_label(r, "device merge"), r["ratio"], "tab:green") for r in final]
    return rows


def plot(json_path: str = DEFAULT_JSON, png_path: str = DEFAULT_PNG) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(json_path) as fh:
        rows = bars(json.load(fh))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(range(len(rows)), [r[1] for r in rows], color=[r[2] for r in rows])
    for i, (_, ratio, _) in enumerate(rows):
        ax.text(i, ratio + 0.01, f"{ratio:.2f}", ha="center", fontsize=8)
    ax.axhline(0.85, ls="--", color="k", lw=1)
    ax.text(-0.4, 0.87, "target 0.85 (L >= 1M)", ha="left", fontsize=8)
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.set_ylabel("forward TFLOP/s, streamed / cuDNN")
    ax.set_ylim(0, 1.0)
    ax.set_title("attention streamed from pinned host memory, budget = 1/4 of Q+K+V "
                 "(H100, bf16, H=16, D=128)", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


if __name__ == "__main__":
    plot(*sys.argv[1:3])
