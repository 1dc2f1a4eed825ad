"""Evaluation figures: base vs aligned bars with 95% CI error bars. They plot numbers, compute nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["EVAL_BARS", "evaluation_figures", "plot_base_vs_aligned", "plot_breakdown", "save_figures"]

#: (metrics key, axis label) of the headline bars.
EVAL_BARS: tuple[tuple[str, str], ...] = (
    ("hallucination_rate", "Hallucination\n(unanswerable)"),
    ("over_refusal_rate", "Over-refusal\n(answerable)"),
    ("grounded_accuracy", "Grounded accuracy\n(answerable)"),
)
COLORS = {"base": "#9e9e9e", "aligned": "#1a73e8"}


def _bar_values(entry: dict[str, Any] | None) -> tuple[float, float, float]:
    """Height and the lower/upper error lengths of one rate (zeros when undefined)."""
    if not entry or entry.get("value") is None:
        return 0.0, 0.0, 0.0
    value = float(entry["value"])
    lo, hi = entry.get("ci95") or (value, value)
    return value, max(0.0, value - lo), max(0.0, hi - value)


def plot_base_vs_aligned(metrics: dict[str, Any], title: str = "") -> Any:
    """Grouped bars base vs aligned for hallucination, over-refusal and grounded accuracy (± Wilson 95% CI)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.38
    for offset, side in ((-width / 2, "base"), (width / 2, "aligned")):
        values = [_bar_values(metrics[side].get(key)) for key, _ in EVAL_BARS]
        xs = [i + offset for i in range(len(EVAL_BARS))]
        ax.bar(xs, [v[0] for v in values], width, color=COLORS[side],
               yerr=[[v[1] for v in values], [v[2] for v in values]], capsize=4,
               label="Base" if side == "base" else "Aligned (Gemma-Facts)")
        for x, v in zip(xs, values, strict=True):
            ax.text(x, v[0] + v[2] + 0.02, f"{100 * v[0]:.0f}%", ha="center", fontsize=8)
    ax.set_xticks(range(len(EVAL_BARS)), [label for _, label in EVAL_BARS])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("rate (95% Wilson CI)")
    n = f"n = {metrics.get('n_answerable', '?')} answerable / {metrics.get('n_unanswerable', '?')} unanswerable"
    ax.set_title(title or f"Base vs aligned — {metrics.get('model', '')} ({n})", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_breakdown(metrics: dict[str, Any], key: str = "pair_type", rate: str = "hallucination_rate") -> Any:
    """One rate per group (``pair_type`` / ``source`` / ``domain``), base vs aligned, groups with data only."""
    import matplotlib.pyplot as plt

    groups = metrics.get("breakdowns", {})
    base, aligned = groups.get("base", {}).get(key, {}), groups.get("aligned", {}).get(key, {})
    names = [g for g in sorted(base) if base[g][rate]["n"]]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(names) + 2), 3.5))
    width = 0.38
    for offset, side, data in ((-width / 2, "base", base), (width / 2, "aligned", aligned)):
        values = [_bar_values(data.get(g, {}).get(rate)) for g in names]
        ax.bar([i + offset for i in range(len(names))], [v[0] for v in values], width, color=COLORS[side],
               yerr=[[v[1] for v in values], [v[2] for v in values]], capsize=3, label=side)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(rate.replace("_", " "))
    ax.set_title(f"{rate.replace('_', ' ')} by {key}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figures(figures: dict[str, Any], folder: str | Path | None = None) -> list[Path]:
    """Save figures as ``<output root>/figures/<name>.png``; return the paths."""
    from helpers.data.plots import save_figure

    return [save_figure(fig, name, folder) for name, fig in figures.items()]


def evaluation_figures(metrics: dict[str, Any], save: bool = True, folder: str | Path | None = None) -> dict[str, Any]:
    """The stage's figures by file name (headline bars, hallucination by pair type), saved when ``save``."""
    figures = {"eval_base_vs_aligned": plot_base_vs_aligned(metrics),
               "eval_hallucination_by_pair_type": plot_breakdown(metrics, "pair_type", "hallucination_rate")}
    if save:
        save_figures(figures, folder)
    return figures
