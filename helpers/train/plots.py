"""Figures for stage 02: DPO training curves and the memory bar chart.

Plots take plain records (``trainer.state.log_history``, the report's footprint and peak dicts) and
return ``matplotlib.figure.Figure`` objects; they compute nothing and keep no pyplot state.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["CURVE_KEYS", "human_size", "plot_memory", "plot_training_curves", "series"]

#: The three panels of the training-curve figure.
CURVE_KEYS = ("loss", "rewards/margins", "rewards/accuracies")
GIB = 1024**3


def series(log_history: list[dict[str, Any]], key: str, prefix: str = "") -> tuple[list[int], list[float]]:
    """(steps, values) of one logged metric; ``prefix="eval_"`` selects the evaluation logs."""
    points = [(e["step"], float(e[prefix + key])) for e in log_history
              if prefix + key in e and "step" in e and (prefix or "eval_loss" not in e)]
    return [s for s, _ in points], [v for _, v in points]


def plot_training_curves(log_history: list[dict[str, Any]], title: str = "DPO training") -> Figure:
    """Loss, reward margin and reward accuracy per step, train (line) and eval (markers)."""
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, len(CURVE_KEYS))
    for ax, key in zip(axes, CURVE_KEYS, strict=True):
        for prefix, style, label in (("", "-", "train"), ("eval_", "o--", "eval (dev split)")):
            steps, values = series(log_history, key, prefix)
            if steps:
                ax.plot(steps, values, style, label=label)
        ax.set_title(key)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key == "rewards/accuracies":
            ax.set_ylim(-0.05, 1.05)
    axes[0].legend()
    fig.suptitle(title)
    return fig


def plot_memory(footprint: dict[str, Any], peak: dict[str, Any], title: str = "Memory") -> Figure:
    """Bars: base weights in 4-bit vs 16-bit (and fp32 on the CPU), and the peak while training (GiB)."""
    candidates = (("weights\n4-bit nf4", footprint.get("4bit_bytes"), "#4c72b0"),
                  (f"weights\n{footprint.get('16bit_dtype', '16-bit')}", footprint.get("16bit_bytes"), "#dd8452"),
                  ("weights\nfloat32", footprint.get("fp32_bytes"), "#8172b3"),
                  (f"peak training\n({peak.get('kind', 'n/a')})", peak.get("bytes"), "#55a868"))
    shown = [(label, value / GIB, color) for label, value, color in candidates if value]
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar([s[0] for s in shown], [s[1] for s in shown], color=[s[2] for s in shown])
    ax.bar_label(bars, labels=[human_size(v * GIB) for _, v, _ in shown])
    ax.set_ylabel("GiB")
    ax.set_title(title)
    return fig


def human_size(num_bytes: float) -> str:
    """``3 * 2**30`` → ``'3.00 GiB'``; ``5 * 2**20`` → ``'5.0 MiB'``; small sizes in KiB."""
    if num_bytes >= GIB:
        return f"{num_bytes / GIB:.2f} GiB"
    if num_bytes >= 1024**2:
        return f"{num_bytes / 1024**2:.1f} MiB"
    return f"{num_bytes / 1024:.0f} KiB"
