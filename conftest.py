"""Root pytest hooks: keep what every executed notebook cell printed, for the secrets scan.

nbval runs each notebook cell as a test item and holds its outputs in ``item.test_outputs``. We
append them to ``<GEMMA_FACTS_OUTPUT>/nbval_cell_outputs.jsonl`` so ``tests/test_secrets_scan.py``
(run after the notebooks by ``make test``) can prove that no API key or token reached an output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outs = getattr(item, "test_outputs", None)
    if call.when != "call" or outs is None or "GEMMA_FACTS_OUTPUT" not in os.environ:
        return outcome
    root = Path(os.environ["GEMMA_FACTS_OUTPUT"])
    root.mkdir(parents=True, exist_ok=True)
    record = {"item": item.nodeid, "outputs": json.loads(json.dumps(outs, default=str))}
    with open(root / "nbval_cell_outputs.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    return outcome
