"""Stage 01: FACTS rows → validated rows → excerpts → teacher outputs → DPO preference pairs.

Modules: ``rows`` (read and validate), ``corpus`` (bare documents: requests written first), ``excerpts``
(fit a document to the token budget), ``teachers`` (Gemini or offline), ``pairs`` (the pair contract and
builders), ``build`` (the driver, ``gemma-facts data``), ``plots`` and ``browser`` (the notebook's figures and
pair browser).

What notebook 01 calls is importable from here (``from helpers.data import build_preference_data``); each name
is loaded from its module on first use, so ``import helpers.data`` stays cheap.
"""

from __future__ import annotations

from helpers.lazy import lazy_exports

#: public name -> the module of this stage that defines it
_EXPORTS = {
    "load_rows": "rows",
    "read_raw_rows": "rows",
    "validate_rows": "rows",
    "token_counter": "excerpts",
    "PAIRS_MADE_BY": "pairs",
    "PAIR_COLUMNS": "pairs",
    "EmptyBuildError": "build",
    "build_preference_data": "build",
    "format_report_summary": "build",
    "push_to_hub": "build",
    "report_path_for": "build",
    "row_excerpt": "build",
    "work_dir_for": "build",
    "plot_pair_types": "plots",
    "plot_token_lengths": "plots",
    "save_figure": "plots",
    "filter_pairs": "browser",
    "pair_browser": "browser",
    "render_pair_text": "browser",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
