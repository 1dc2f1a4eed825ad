"""Every figure of a run, redrawn from the stage reports (the terminal path of the notebooks' plots).

``python -m helpers.figures`` reads ``data_report.json``, ``train_report.json`` and ``metrics.json``
from the output root and writes the same PNGs the notebooks show into ``<output root>/figures/``.
It computes nothing: the plots take the recorded numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.config import output_root

__all__ = ["draw_all", "main"]


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def draw_all(root: Path | None = None) -> list[Path]:
    """Draw whichever figures the reports present in ``root`` allow; return the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    root = root or output_root()
    folder = root / "figures"
    written: list[Path] = []
    data = _load(root / "data_report.json")
    if data:
        from helpers.data.plots import plot_pair_types, plot_token_lengths, save_figure

        tokens = data.get("tokens", {})
        if tokens.get("lengths"):
            written.append(save_figure(plot_token_lengths(tokens["lengths"], tokens["max_length"], tokens["p95"]),
                                       "01_token_lengths", folder))
        written.append(save_figure(plot_pair_types(data["pairs"]["by_type"], data["pairs"].get("by_source")),
                                   "01_pair_types", folder))
    train = _load(root / "train_report.json")
    if train and train.get("log_history"):
        from helpers.data.plots import save_figure
        from helpers.train.plots import plot_memory, plot_training_curves

        written.append(save_figure(plot_training_curves(train["log_history"]), "training_curves", folder))
        if train.get("weight_footprint") and train.get("peak_memory"):
            written.append(save_figure(plot_memory(train["weight_footprint"], train["peak_memory"]),
                                       "training_memory", folder))
    metrics = _load(root / "metrics.json")
    if metrics:
        from helpers.evaluate.plots import evaluation_figures

        evaluation_figures(metrics, save=True, folder=folder)
        written += sorted(folder.glob("eval_*.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    paths = draw_all()
    print("\n".join(str(p) for p in paths) or "no reports found")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
