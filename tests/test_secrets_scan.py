"""Secrets never reach an artefact: scan everything the notebook run produced for the fake keys.

``make test`` runs every notebook under nbval with a fake ``GOOGLE_API_KEY`` and ``HF_TOKEN`` set,
then runs this module with ``GF_SCAN_DIR`` (that run's output root) and ``GF_SCAN_VALUES`` (the
fake values). Every produced file, and every cell output nbval captured (see the root
``conftest.py``), is searched for them. Outside that sequence the module is skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SCAN_DIR = os.environ.get("GF_SCAN_DIR")
VALUES = [v for v in os.environ.get("GF_SCAN_VALUES", "").split() if v]

pytestmark = pytest.mark.skipif(not SCAN_DIR or not VALUES, reason="run by `make test` after the notebooks")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_the_notebook_run_produced_artefacts_to_scan():
    root = Path(SCAN_DIR)
    records = (root / "nbval_cell_outputs.jsonl").read_text().splitlines()
    notebooks = {json.loads(r)["item"].split("::")[0] for r in records}
    assert len(notebooks) == 3, notebooks  # all three notebooks ran and were captured
    for expected in ("pairs", "adapter", "metrics.json", "train_report.json", "data_report.json"):
        assert (root / expected).exists(), expected
    assert len(_files(root)) > 10


def test_no_secret_in_any_file_or_cell_output():
    leaks = []
    for path in _files(Path(SCAN_DIR)):
        data = path.read_bytes()
        for value in VALUES:
            if value.encode() in data:
                leaks.append(str(path))
    assert not leaks, f"secret value found in: {leaks}"
