"""Stage 02: DPO with QLoRA on the preference pairs (TRL's ``DPOTrainer``).

Modules: ``dpo`` (the run: load, train, resume, save; ``gemma-facts train``), ``shared_prompt`` (one row
per pair), ``callbacks`` (progress, NaN stop), ``report`` (``train_report.json``), ``model_card``,
``checkpoint_average``, ``plots`` (training curves, memory).

What notebook 02 calls is importable from here (``from helpers.train import start_run``); each name
is loaded from its module on first use, so ``import helpers.train`` stays cheap.
"""

from __future__ import annotations

from helpers.lazy import lazy_exports

#: public name -> the module of this stage that defines it
_EXPORTS = {
    "TrainingRun": "dpo",
    "describe_example": "dpo",
    "dev_split": "dpo",
    "estimate_eta": "dpo",
    "finish_run": "dpo",
    "list_checkpoints": "dpo",
    "load_pairs": "dpo",
    "reload_check": "dpo",
    "run_dpo": "dpo",
    "run_training": "dpo",
    "start_run": "dpo",
    "report_headline": "report",
    "plot_memory": "plots",
    "plot_training_curves": "plots",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
