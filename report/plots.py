"""Figures and tables of per-iteration metrics, shared by the iteration report (report/page.py)
and `src compare` (cli/compare.py): the same panels in both.

Rows are `{"run_id", "run_name", "iteration", "metrics": {name: value}}`; a run's metric
`<name>_se`, when present, is its standard error. Matplotlib's Agg canvas only: no display,
no pyplot state.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

# (column label, metric, shown as percent); `<metric>_se`, when logged, is the error bar
TABLE_METRICS = [
    ("accuracy", "eval/accuracy", True),
    ("consistency", "eval/consistency", True),
    ("factuality", "eval/factuality", True),
    ("format rate", "eval/format_rate", True),
    ("flip rate", "judge/flip_rate", False),
    ("kept", "curate/kept_frac", False),
    ("dpo loss", "dpo/loss", False),
]
# the table's metrics plus answer length (DPO tends to drift it), one panel each
PLOT_METRICS = TABLE_METRICS[:4] + [("mean length", "eval/mean_length", False)] + TABLE_METRICS[4:]
# metrics shown with an error bar only in the table when their `_se` exists
_SE_IN_TABLE = {"eval/accuracy", "eval/consistency", "eval/factuality"}

def _label(row: dict) -> str:
    return f"{row['run_id'][:8]} {row['run_name']}".strip()


def _cell(m: dict, key: str, percent: bool, with_se: bool) -> str:
    v = m.get(key)
    if v is None or math.isnan(v):
        return ""
    scale, fmt = (100.0, "{:.1f}") if percent else (1.0, "{:.3f}")
    out = fmt.format(scale * v)
    se = m.get(f"{key}_se")
    if with_se and se is not None and not math.isnan(se):
        out += " ± " + fmt.format(scale * se)
    return out


def table_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison table (percent for eval rates, 3 decimals else)."""
    head = ["run", "iteration"] + [label for label, _, _ in TABLE_METRICS]
    body = [[_label(r), str(r["iteration"])]
            + [_cell(r["metrics"], key, pct, key in _SE_IN_TABLE) for _, key, pct in TABLE_METRICS]
            for r in rows]
    return head, body


def plot(rows: list[dict], path: str | Path) -> Path:
    """PNG: one panel per metric that any row logged, x = iteration, one line per run,
    error bars from `<metric>_se` where logged. Uses the Agg canvas, no display, no pyplot."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    panels = [(label, key, pct) for label, key, pct in PLOT_METRICS
              if any(key in r["metrics"] for r in rows)]
    if not panels:
        raise ValueError("nothing to plot: no row has any of the compared metrics")
    runs = list(dict.fromkeys(r["run_id"] for r in rows))
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (label, key, pct) in zip(axes, panels):
        scale = 100.0 if pct else 1.0
        for i, rid in enumerate(runs):  # fixed colour per run, even where a run lacks a metric
            pts = [r for r in rows if r["run_id"] == rid and key in r["metrics"]]
            if not pts:
                continue
            xs = [r["iteration"] for r in pts]
            ys = [scale * r["metrics"][key] for r in pts]
            ses = [r["metrics"].get(f"{key}_se") for r in pts]
            has_se = any(s is not None for s in ses)
            yerr = [scale * (s or 0.0) for s in ses] if has_se else None
            ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3,
                        color=f"C{i % 10}", label=_label(pts[0]))
        ax.set_title(f"{label} (%)" if pct else label)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    legend: dict = {}  # label -> handle, over all panels (a run may lack a metric)
    for ax in axes[: len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center",
               ncols=min(4, max(1, len(legend))))
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path




def heatmap(matrix: Sequence[Sequence[float]], path: str | Path, labels: Sequence[str] | None = None,
            title: str = "p(row beats column)") -> Path:
    """PNG of a square win-probability matrix, each cell annotated; NaN (the diagonal) blank."""
    import numpy as np
    from matplotlib.figure import Figure

    path = Path(path)
    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    labels = list(labels) if labels is not None else [str(i) for i in range(n)]
    side = 1.2 + 0.45 * n
    fig = Figure(figsize=(side + 0.8, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(m), vmin=0.0, vmax=1.0, cmap="RdBu_r")
    for i in range(n):
        for j in range(n):
            if not math.isnan(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(m[i, j] - 0.5) > 0.3 else "black")
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("column: candidate")
    ax.set_ylabel("row: candidate")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=80)
    os.replace(tmp, path)
    return path
