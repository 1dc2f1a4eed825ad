"""The checkpoint kept: after training, the later checkpoints answer the dev requests (training
documents held out of training) and a rule fixed in advance keeps one (``gemma-facts select``). With
``TrainConfig.answerability_head`` the same stage fits a linear answerability head on the base model,
chosen on the same dev documents (``answerability_fit``).

It runs between training and evaluation and uses both, so it is a stage of its own.

What notebook 02 calls is importable from here (``from helpers.select import select_on_dev``); each name
is loaded from its module on first use, so ``import helpers.select`` stays cheap.
"""

from __future__ import annotations

from helpers.lazy import lazy_exports

#: public name -> the module of this stage that defines it
_EXPORTS = {
    "choose_checkpoint": "dev_choice",
    "fit_answerability_head": "answerability_fit",
    "rule_text": "dev_choice",
    "select_on_dev": "dev_choice",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
