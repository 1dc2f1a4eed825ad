"""experiments/label_holding_kinds.py: the rates pooled over the kinds whose labels hold are counts, not means.

Each kind's recorded rate is turned back into a count (rate x n) before pooling, so kinds of different
sizes weigh by their prompts; and the committed record is what the script computes from the committed
metrics (no test prompt is read: only metrics.json breakdowns)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    """The script's functions, loaded from its file (experiments/ is not a package)."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / "experiments" / "label_holding_kinds.py")))


def test_pooling_weighs_each_kind_by_its_prompts_and_leaves_answer_removed_out(script):
    by_source = {"near_miss": {"hallucination_rate": {"value": 0.5, "n": 10}},
                 "unrelated_doc": {"hallucination_rate": {"value": 0.0, "n": 30}},
                 "answer_removed": {"hallucination_rate": {"value": 1.0, "n": 40}}}
    result = script.pooled(by_source)
    assert (result["answered"], result["n"]) == (5, 40)  # not the mean of 0.5 and 0.0
    assert result["hallucination_rate"] == 0.125 and result["ci95"][0] < 0.125 < result["ci95"][1]


def test_the_committed_record_is_what_the_script_computes_from_the_committed_metrics(script, tmp_path, capsys):
    out = tmp_path / "kinds.json"
    assert script.main(["--out", str(out)]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text()) == json.loads((ROOT / "results" / "label_holding_kinds.json").read_text())


def test_the_spread_is_over_the_given_runs_and_counts_banana_passes(script):
    sides = {"a": {"hallucination_rate": 0.1, "banana_passed": True}, "b": {"hallucination_rate": 0.3, "banana_passed": False},
             "c": {"hallucination_rate": 0.2, "banana_passed": True}}
    result = script.spread(sides, fields=("hallucination_rate",))
    assert result["hallucination_rate"] == {"mean": 0.2, "min": 0.1, "max": 0.3}
    assert result["banana_passed"] == 2 and result["runs"] == ["a", "b", "c"]
