"""Plot streamed attention's speed against the memory budget: the ratio to the fastest
monolithic kernel (FA4 on the GPU machine, 1.0) per budget fraction, forward and backward, one
row of panels per length, next to the host-link bound's ceiling.

The records are those of ``benchmarks/bench_attention.py --budget-fraction ...`` (one or more
results files, e.g. one per GPU call of ``scripts/gpu_runs.sh``)::

    python benchmarks/plot_budget_ratio.py OUT.png RESULTS.json [MORE.json ...] \\
        [--lengths 262144 1048576]

Per length and mask: the measured ratio (``ratio_streamed``, ``ratio_backward_streamed``),
solid; and where the record has the bound (``streamed_bound_ms``, ``streamed_bwd_bound_ms``),
the best ratio any schedule under that budget could reach, ``kernel / max(kernel, link)``,
dashed (1.0 where the kernel, not the link, is the limit). The measured ratio over that
ceiling is the record's ``ratio_to_bound``. Records without the bound (older files) are drawn
without the ceiling.

>>> _fraction_label(0.0625), _fraction_label(1.0), _fraction_label(0.3)
('1/16', '1', '0.3')
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["DIRECTIONS", "load", "main", "plot", "series"]

#: (direction, measured ratio key, kernel time key, bound key)
DIRECTIONS = (("forward", "ratio_streamed", "mono_fwd_ms", "streamed_bound_ms"),
              ("backward", "ratio_backward_streamed", "mono_bwd_ms", "streamed_bwd_bound_ms"))


def _fraction_label(f: float) -> str:
    inv = 1 / f
    if abs(inv - round(inv)) < 1e-9:
        return "1" if round(inv) == 1 else f"1/{round(inv)}"
    return f"{f:g}"


def _len_label(L: int) -> str:
    for unit, name in ((1 << 20, "M"), (1 << 10, "K")):
        if L >= unit and L % (unit // 4) == 0:
            return f"{L / unit:g}{name}"
    return str(L)


def load(paths: list[str]) -> list[dict]:
    """The measured records with a budget fraction of every file, later files overriding
    earlier ones for the same (L, mask, fraction)."""
    by_key: dict[tuple, dict] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
        recs = data.get("records") if isinstance(data, dict) else None
        if not isinstance(recs, list):
            raise ValueError(f"{path}: not a bench_attention results file (no 'records' list)")
        for r in recs:
            if isinstance(r, dict) and "mono_fwd_ms" in r and r.get("budget_fraction"):
                by_key[(r["L"], bool(r["causal"]), float(r["budget_fraction"]))] = r
    if not by_key:
        raise ValueError(f"{', '.join(paths)}: no measured record with a budget fraction")
    return list(by_key.values())


def series(recs: list[dict], L: int, causal: bool, direction: str) -> dict[str, list]:
    """``fractions``, measured ``ratio`` and ``ceiling`` (None where not recorded) of one
    panel's mask, by fraction."""
    _, ratio_key, kernel_key, bound_key = next(d for d in DIRECTIONS if d[0] == direction)
    rows = sorted((r for r in recs if r["L"] == L and bool(r["causal"]) == causal),
                  key=lambda r: r["budget_fraction"])
    out: dict[str, list] = {"fractions": [], "ratio": [], "ceiling": []}
    for r in rows:
        ratio, kernel, bound = r.get(ratio_key), r.get(kernel_key), r.get(bound_key)
        if ratio is None and bound is None:
            continue
        out["fractions"].append(r["budget_fraction"])
        out["ratio"].append(ratio)
        out["ceiling"].append(kernel / bound if kernel and bound else None)
    return out


def plot(paths: list[str], png: str, lengths: list[int] | None = None) -> None:
    recs = load(paths)
    lengths = sorted({r["L"] for r in recs}) if not lengths else lengths
    missing = [L for L in lengths if not any(r["L"] == L for r in recs)]
    if missing:
        raise ValueError(f"no record at L = {', '.join(map(str, missing))}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(lengths), 2, figsize=(10, 3.4 * len(lengths)), squeeze=False,
                             sharex=True)
    fractions = sorted({r["budget_fraction"] for r in recs})
    mono = recs[0].get("mono_kernel", "fastest kernel")
    for i, L in enumerate(lengths):
        for j, (direction, *_rest) in enumerate(DIRECTIONS):
            ax = axes[i][j]
            ax.axhline(1.0, color="black", linewidth=1, label=f"{mono} (monolithic) = 1.0")
            for causal, color in ((False, "tab:blue"), (True, "tab:orange")):
                s = series(recs, L, causal, direction)
                mask = "causal" if causal else "full"
                pts = [(f, v) for f, v in zip(s["fractions"], s["ratio"], strict=True)
                       if v is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), "o-", color=color,
                            label=f"streamed, {mask}")
                ceil = [(f, v) for f, v in zip(s["fractions"], s["ceiling"], strict=True)
                        if v is not None]
                if ceil:
                    ax.plot(*zip(*ceil, strict=True), "s--", color=color, alpha=0.6,
                            label=f"host-link bound, {mask}")
            ax.set_xscale("log", base=2)
            ax.set_xticks(fractions, [_fraction_label(f) for f in fractions])
            ax.set_ylim(0, 1.1)
            ax.set_title(f"L = {_len_label(L)}, {direction}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(f"ratio to {mono}")
            if i == len(lengths) - 1:
                ax.set_xlabel("memory_budget / (Q+K+V bytes)")
    axes[0][1].legend(fontsize=7, loc="lower right")
    gpu = recs[0].get("gpu", "")
    fig.suptitle(f"cqs_attention streamed from pinned host memory vs the budget on {gpu} "
                 f"(bf16, H={recs[0].get('H')}, D={recs[0].get('D')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="plot_budget_ratio", description=__doc__.splitlines()[0])
    p.add_argument("png", help="the PNG to write")
    p.add_argument("json", nargs="+", help="bench_attention results files")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="one row of panels per length (default: every length in the files)")
    args = p.parse_args(argv)
    try:
        plot(args.json, args.png, args.lengths)
    except ValueError as exc:
        print(f"plot_budget_ratio: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
