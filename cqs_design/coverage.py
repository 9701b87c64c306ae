"""Token-level pictures of a plan: who computes each (query, key) pair.

The dense matrices here are the obviously-right reference the vectorised
:meth:`cqs_design.plans.Plan.validate` is tested against, and the source of the coverage figure
(the attention matrix coloured by owning task).  They cost ``seq_len * kv_len`` memory, so they
are for small plans only.

Executor semantics used throughout: inside a "full" rectangle the executor attends every pair
the plan's *window* allows; inside a "causal" rectangle additionally only ``k <= q + off``.

>>> from cqs_design import DifferenceSet
>>> from cqs_design.plans import make_plan
>>> plan = make_plan(7, design=DifferenceSet(7, [0, 1, 5]), causal=True)
>>> cover_counts(plan).tolist() == allowed_matrix(plan).astype(int).tolist()
True
>>> owner_matrix(plan)[6].tolist()
[6, 1, 1, 5, 6, 5, 6]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cqs_design.plans.mask import Mask

if TYPE_CHECKING:  # pragma: no cover
    from cqs_design.plans import Plan

__all__ = ["allowed_matrix", "cover_counts", "owner_matrix", "plot_coverage"]

#: Largest ``seq_len * kv_len`` the dense helpers accept.
MAX_DENSE_CELLS = 50_000_000


def _mask_of(plan: Plan) -> Mask:
    return Mask.of(plan.seq_len, plan.kv_len, causal=plan.causal, window=plan.window)


def _check_size(plan: Plan) -> None:
    cells = plan.seq_len * plan.kv_len
    if cells > MAX_DENSE_CELLS:
        raise ValueError(f"a dense picture of a {plan.seq_len} x {plan.kv_len} plan needs "
                         f"{cells} cells; at most {MAX_DENSE_CELLS} are allowed")


def allowed_matrix(plan: Plan) -> np.ndarray:
    """Boolean ``(seq_len, kv_len)`` matrix of the pairs the plan's mask allows."""
    _check_size(plan)
    return _mask_of(plan).dense()


def _attended(plan: Plan) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int, int]]]:
    mask = _mask_of(plan)
    window = Mask(plan.seq_len, plan.kv_len, False, mask.left, mask.right).dense()
    causal = Mask(plan.seq_len, plan.kv_len, True).dense()
    c = plan.arrays()
    rects = list(zip(*(c[n].tolist() for n in ("q_start", "q_end", "k_start", "k_end",
                                                "kind")), strict=True))
    return window, causal, rects


def cover_counts(plan: Plan) -> np.ndarray:
    """How many rectangles attend each ``(i, j)``: a dense int32 counter (reference).

    For an exact cover this equals :func:`allowed_matrix` as 0/1.
    """
    _check_size(plan)
    window, causal, rects = _attended(plan)
    counts = np.zeros((plan.seq_len, plan.kv_len), dtype=np.int32)
    for qs, qe, ks, ke, kind in rects:
        sub = window[qs:qe, ks:ke]
        if kind == 1:
            sub = sub & causal[qs:qe, ks:ke]
        counts[qs:qe, ks:ke] += sub
    return counts


def owner_matrix(plan: Plan) -> np.ndarray:
    """Index (into ``plan.tasks``) of the task attending each pair; -1 where none does."""
    _check_size(plan)
    window, causal, rects = _attended(plan)
    task = plan.arrays()["task"].tolist()
    owner = np.full((plan.seq_len, plan.kv_len), -1, dtype=np.int64)
    for (qs, qe, ks, ke, kind), t in zip(rects, task, strict=True):
        sub = window[qs:qe, ks:ke]
        if kind == 1:
            sub = sub & causal[qs:qe, ks:ke]
        owner[qs:qe, ks:ke][sub] = t
    return owner


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'cqs[plot]' "
                          "(or pip install matplotlib)") from exc
    return plt


def plot_coverage(plan: Plan, path: str | Path | None = None, *, ax: Any = None,
                  title: str | None = None, grid: bool = True) -> Any:
    """Draw the attention matrix coloured by owning task (white: not attended).

    Parameters
    ----------
    plan : Plan
        A small plan (dense picture).
    path : str or Path, optional
        Save the figure there (PNG, SVG, PDF by extension).
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.
    title : str, optional
        Figure title; default describes the plan.
    grid : bool
        Draw the level-one chunk boundaries.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        matplotlib is not installed (it is the optional ``plot`` extra).
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    owner = owner_matrix(plan)
    n = max(len(plan), 1)
    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"
    base = plt.get_cmap(name)
    colours = base(np.linspace(0, 1, n)) if n > 20 else base(np.arange(n))
    perm = np.random.default_rng(0).permutation(n) if n > 20 else np.arange(n)
    cmap = ListedColormap(np.vstack([[1, 1, 1, 1], colours[perm]]))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6 * plan.seq_len / plan.kv_len), dpi=120)
    else:
        fig = ax.figure
    ax.imshow(owner + 1, cmap=cmap, vmin=0, vmax=n, interpolation="nearest",
              extent=(0, plan.kv_len, plan.seq_len, 0))
    if grid:  # level-one chunk (or block) boundaries
        if plan.design is not None:
            v = plan.design.v
            rows = [c * plan.seq_len // v for c in range(1, v)]
            cols = [c * plan.kv_len // v for c in range(1, v)]
        else:
            rows = list(range(plan.block_q, plan.seq_len, plan.block_q))
            cols = list(range(plan.block_kv, plan.kv_len, plan.block_kv))
        for y in rows:
            ax.axhline(y, color="k", lw=0.3, alpha=0.4)
        for x in cols:
            ax.axvline(x, color="k", lw=0.3, alpha=0.4)
    if title is None:
        extra = " causal" if plan.causal else ""
        extra += f" window={plan.window}" if plan.window is not None else ""
        how = (f"CQS plan: L={plan.seq_len}, v={plan.design.v}, k={plan.design.k}"
               if plan.design is not None else
               f"{plan.schedule} plan: L={plan.seq_len}, blocks {plan.block_q} x "
               f"{plan.block_kv}")
        title = f"{how}, levels={plan.levels}{extra}, {len(plan)} tasks"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key token")
    ax.set_ylabel("query token")
    if path is not None:
        fig.savefig(path, bbox_inches="tight")
    return fig
