"""Stage 03: base vs aligned on the held-out documents: generation, judges, metrics with CIs, figures.

Modules: ``run`` (the evaluation, ``gemma-facts evaluate``), ``judges`` (offline and Gemini), ``metrics``
(rates with Wilson intervals), ``probes`` (the Banana test), ``tables`` (the README/notebook tables),
``plots``, ``playground``.

What notebook 03 calls is importable from here (``from helpers.evaluate import evaluate``); each name
is loaded from its module on first use, so ``import helpers.evaluate`` stays cheap.
"""

from __future__ import annotations

from helpers.lazy import lazy_exports

#: public name -> the module of this stage that defines it
_EXPORTS = {
    "ADAPTER_MADE_BY": "run",
    "evaluate": "run",
    "load_aligned_model": "run",
    "measure_latency": "run",
    "banana_table": "tables",
    "breakdown_table": "tables",
    "examples_table": "tables",
    "head_table": "tables",
    "heldout_table": "tables",
    "impact_table": "tables",
    "latency_table": "tables",
    "probes_table": "tables",
    "evaluation_figures": "plots",
    "plot_head_choice": "plots",
    "playground": "playground_form",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
