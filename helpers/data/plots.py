"""Stage 01 figures: how many pairs of each type, and whether prompt + answer fit the token budget.

Plots take plain numbers and return figures; they compute nothing (percentiles come from the report).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from helpers.config import output_root

__all__ = ["plot_pair_types", "plot_token_lengths", "save_figure"]


def _pyplot() -> Any:
    """pyplot, imported late (headless machines pick the Agg backend on their own)."""
    import matplotlib.pyplot as plt

    return plt


def plot_pair_types(by_type: Mapping[str, int], by_source: Mapping[str, int] | None = None) -> Any:
    """Bar chart of pairs per type (left) and per finer source (right, when given)."""
    plt = _pyplot()
    panels = [(by_type, "pair type")] + ([(by_source, "source")] if by_source else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (counts, title) in zip(axes[0], panels, strict=True):
        names = list(counts)
        bars = ax.bar(names, [counts[n] for n in names], color="#4c72b0")
        ax.bar_label(bars, padding=2, fontsize=8)
        ax.set_title(f"Preference pairs by {title}")
        ax.set_ylabel("pairs")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    return fig


def plot_token_lengths(lengths: Sequence[int], max_length: int, p95: float, bins: int = 30) -> Any:
    """Histogram of prompt + chosen tokens with the p95 and the ``max_length`` budget as vertical lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.hist(list(lengths), bins=bins, color="#55a868", alpha=0.85)
    ax.axvline(p95, color="#c44e52", linestyle="--", label=f"p95 = {p95:.0f}")
    ax.axvline(max_length, color="black", linewidth=2, label=f"max_length = {max_length}")
    ax.set_xlabel("tokens (prompt + chosen)")
    ax.set_ylabel("pairs")
    ax.set_title("Do the pairs fit the training budget?")
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: Any, name: str, folder: str | Path | None = None) -> Path:
    """Save under ``<output root>/figures/<name>.png`` (or ``folder``) and return the path.

    The one figure saver of every stage (the figures of stages 02 and 03 go to the same folder).
    """
    target = Path(folder) if folder else output_root() / "figures"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
