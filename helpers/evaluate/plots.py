"""Evaluation figures: base vs aligned bars with 95% CI error bars. They plot numbers, compute nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["EVAL_BARS", "FAILURE_PANELS", "evaluation_figures", "plot_base_vs_aligned", "plot_breakdown",
           "plot_failures", "plot_head_choice", "save_figures"]

#: (metrics key, axis label) of the headline bars.
EVAL_BARS: tuple[tuple[str, str], ...] = (
    ("hallucination_rate", "Hallucination\n(unanswerable)"),
    ("over_refusal_rate", "Over-refusal\n(answerable)"),
    ("grounded_accuracy", "Grounded accuracy\n(answerable)"),
)
COLORS = {"base": "#9e9e9e", "aligned": "#1a73e8", "base_with_head": "#e37400"}
SIDE_LABELS = {"base": "Base", "aligned": "Aligned (Gemma-Facts)", "base_with_head": "Base + answerability head"}


def _bar_values(entry: dict[str, Any] | None) -> tuple[float, float, float]:
    """Height and the lower/upper error lengths of one rate (zeros when undefined)."""
    if not entry or entry.get("value") is None:
        return 0.0, 0.0, 0.0
    value = float(entry["value"])
    lo, hi = entry.get("ci95") or (value, value)
    return value, max(0.0, value - lo), max(0.0, hi - value)


def _bar_sides(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The sides to draw: base and aligned, and the base gated by the answerability head when the run has one."""
    sides = [("base", metrics["base"]), ("aligned", metrics["aligned"])]
    head = metrics.get("answerability_head")
    if head:
        sides.append(("base_with_head", head["base_with_head"]))
    return sides


def plot_base_vs_aligned(metrics: dict[str, Any], title: str = "") -> Any:
    """Grouped bars base vs aligned for hallucination, over-refusal and grounded accuracy (± Wilson 95% CI);
    a third bar per group for the base gated by the answerability head when ``metrics`` has one."""
    import matplotlib.pyplot as plt

    sides = _bar_sides(metrics)
    fig, ax = plt.subplots(figsize=(7.5 if len(sides) == 2 else 8.5, 4))
    width = 0.76 / len(sides)
    for k, (side, rates) in enumerate(sides):
        offset = (k - (len(sides) - 1) / 2) * width
        values = [_bar_values(rates.get(key)) for key, _ in EVAL_BARS]
        xs = [i + offset for i in range(len(EVAL_BARS))]
        ax.bar(xs, [v[0] for v in values], width, color=COLORS[side],
               yerr=[[v[1] for v in values], [v[2] for v in values]], capsize=4, label=SIDE_LABELS[side])
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


def plot_head_choice(head: Any) -> Any:
    """How the answerability head was chosen: dev AUC per layer (best over L2), from the state alone and with the
    word-overlap share beside it, the chosen candidate marked. ``head``: an ``AnswerabilityHead`` or its dict.

    Why a figure: the choice is a curve over layers, and whether a middle layer beats the word overlap alone
    (layer 0 + overlap is close to the overlap share by itself) is seen at a glance."""
    import matplotlib.pyplot as plt

    from helpers.evaluate.answerability_head import candidate_kind

    data = head if isinstance(head, dict) else head.summary()
    curves = (("state", "#1a73e8", "hidden state"), ("state+overlap", "#e37400", "hidden state + word-overlap share"),
              ("state+overlap+surprisal", "#188038", "… + request surprisal"),
              ("state+overlap+lexical", "#a142f4", "… + word-level summaries"),
              ("state+overlap+surprisal+lexical", "#d01884", "… + surprisal + word-level summaries"))
    best: dict[str, dict[int, float]] = {kind: {} for kind, _, _ in curves}
    for name, value in data["dev"].get("dev_auc_by_candidate", {}).items():
        layer, kind, _l2 = name.split("/")
        if value is not None and kind in best:
            best[kind][int(layer)] = max(value, best[kind].get(int(layer), 0.0))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for kind, color, label in curves:
        layers = sorted(best[kind])
        if layers:  # the surprisal curve only where the fit offered it
            ax.plot(layers, [best[kind][i] for i in layers], marker="o", ms=3, color=color, label=label)
    chosen = candidate_kind(data["with_overlap"], data.get("with_surprisal", False), data.get("with_lexical", False))
    ax.scatter([data["layer"]], [best[chosen].get(data["layer"], data["dev"].get("dev_auc", 0.0))], s=120,
               facecolors="none", edgecolors="black", zorder=5, label=f"chosen: layer {data['layer']}")
    ax.axhline(0.5, color="#9e9e9e", lw=0.8, ls="--")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("dev AUC (best over L2)")
    ax.set_ylim(0.4, 1.02)
    dev = data["dev"]
    counts = dev.get("dev", {})
    ax.set_title(f"Answerability head on dev ({counts.get('answerable', '?')} answerable / "
                 f"{counts.get('unanswerable', '?')} unanswerable prompts)\nat its threshold it refuses "
                 f"{100 * dev.get('dev_unanswerable_refused', 0):.0f}% of unanswerable, "
                 f"{100 * dev.get('dev_answerable_refused', 0):.0f}% of answerable"
                 + (f" (out of fold: {100 * dev['out_of_fold_unanswerable_refused']:.0f}% / "
                    f"{100 * dev['out_of_fold_answerable_refused']:.0f}%)" if "out_of_fold_answerable_refused" in dev
                    else ""), fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


#: (breakdown key, rate, panel title) of the "where it fails" figure: what kind of unanswerable request
#: still gets answered, and which request styles are answered wrongly or refused.
FAILURE_PANELS: tuple[tuple[str, str, str], ...] = (
    ("source", "hallucination_rate", "Hallucination by unanswerable kind"),
    ("style", "hallucination_rate", "Hallucination by request style"),
    ("style", "over_refusal_rate", "Over-refusal by request style"),
)
#: Readable names of the unanswerable kinds (pair ``source``) and answerable sources.
KIND_NAMES = {"near_miss": "near miss", "answer_removed": "answer removed", "unrelated_doc": "other document",
              "refusal": "answerable"}


def _breakdown_bars(ax: Any, metrics: dict[str, Any], key: str, rate: str) -> None:
    """Base vs aligned bars of one rate per group of ``key`` (groups with data only), n under each name."""
    groups = metrics.get("breakdowns", {})
    base, aligned = groups.get("base", {}).get(key, {}), groups.get("aligned", {}).get(key, {})
    names = [g for g in sorted(base) if base[g].get(rate, {}).get("n")]
    width = 0.38
    for offset, side, data in ((-width / 2, "base", base), (width / 2, "aligned", aligned)):
        values = [_bar_values(data.get(g, {}).get(rate)) for g in names]
        ax.bar([i + offset for i in range(len(names))], [v[0] for v in values], width, color=COLORS[side],
               yerr=[[v[1] for v in values], [v[2] for v in values]], capsize=3, label=side)
    ax.set_xticks(range(len(names)), [f"{KIND_NAMES.get(g, g)}\nn={base[g][rate]['n']}" for g in names],
                  fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(rate.replace("_", " "))
    ax.legend(fontsize=8)


def plot_breakdown(metrics: dict[str, Any], key: str = "pair_type", rate: str = "hallucination_rate") -> Any:
    """One rate per group (``pair_type`` / ``source`` / ``domain`` / ``style``), base vs aligned."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    _breakdown_bars(ax, metrics, key, rate)
    ax.set_title(f"{rate.replace('_', ' ')} by {key}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_failures(metrics: dict[str, Any]) -> Any:
    """Where it fails: hallucination by unanswerable kind and by request style, over-refusal by style."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FAILURE_PANELS), figsize=(15, 3.8))
    for ax, (key, rate, title) in zip(axes, FAILURE_PANELS, strict=True):
        _breakdown_bars(ax, metrics, key, rate)
        ax.set_title(title, fontsize=10)
    fig.suptitle("Where it fails (test split, 95% Wilson CIs)", fontsize=11)
    fig.tight_layout()
    return fig


def save_figures(figures: dict[str, Any], folder: str | Path | None = None) -> list[Path]:
    """Save figures as ``<output root>/figures/<name>.png``; return the paths."""
    from helpers.data.plots import save_figure

    return [save_figure(fig, name, folder) for name, fig in figures.items()]


def evaluation_figures(metrics: dict[str, Any], save: bool = True, folder: str | Path | None = None) -> dict[str, Any]:
    """The stage's figures by file name (headline bars, where it fails), saved when ``save``."""
    figures = {"eval_base_vs_aligned": plot_base_vs_aligned(metrics), "eval_failures": plot_failures(metrics)}
    if save:
        save_figures(figures, folder)
    return figures
