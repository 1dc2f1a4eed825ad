"""Notebook hygiene: valid JSON, every code cell parses, outputs stripped, the fixed header.

nbval proves the notebooks run; these checks keep them reviewable and Colab-ready.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_build_preference_pairs.ipynb", "02_dpo_training.ipynb", "03_evaluation.ipynb"]


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text(encoding="utf-8"))["cells"]


def test_the_three_stage_notebooks_exist_in_order():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_nbformat(nb):
    import nbformat

    nbformat.validate(nbformat.read(nb, as_version=4))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_parses(nb):
    for i, cell in enumerate(_cells(nb)):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            assert not source.lstrip().startswith(("!", "%")), f"cell {i}: use subprocess, not shell magics"
            ast.parse(source, filename=f"{nb.name}[cell {i}]")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_and_widget_state_are_stripped(nb):
    data = json.loads(nb.read_text(encoding="utf-8"))
    for i, cell in enumerate(data["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {i} has outputs"
            assert cell.get("execution_count") is None, f"cell {i} has an execution count"
    assert "widgets" not in data.get("metadata", {}), "widget state must not be committed"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_header_has_colab_badge_and_setup_cell(nb):
    cells = _cells(nb)
    header = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown"
    assert f"colab.research.google.com/github/gemma-facts/gemma-facts/blob/main/notebooks/{nb.name}" in header
    setup = next(c for c in cells if c["cell_type"] == "code")
    text = "".join(setup["source"])
    assert '"google.colab" in sys.modules' in text and "prepare_notebook(" in text


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_secrets_or_literal_sizes_in_cells(nb):
    import re

    for i, cell in enumerate(_cells(nb)):
        source = "".join(cell["source"])
        assert not re.search(r"AIza[0-9A-Za-z_\-]{20,}|hf_[A-Za-z0-9]{20,}", source), f"cell {i}: secret"
        if cell["cell_type"] == "code":
            # sizes come from the profile config, never from literals in cells
            assert not re.search(r"\b(max_length|max_steps|learning_rate|lora_r)\s*=\s*\d", source), f"cell {i}"
