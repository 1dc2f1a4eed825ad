"""experiments/refusal_dial.py: the dial's cut keeps the over-refusal budget on the prompts it is set on, and the
reported rates are out of sample (each dev document scored with a cut set on the others).

The functions are pure (scores in, rates out), so these run without a model."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dial():
    """The script's functions, loaded from its file (experiments/ is not a package)."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / "experiments" / "refusal_dial.py")))


def items(labels: list[tuple[str, bool]]) -> list[dict]:
    return [{"doc_id": doc, "answerable": answerable} for doc, answerable in labels]


def test_budget_cut_refuses_at_most_the_budget_of_answerable_prompts(dial):
    answerable_scores = [i / 10 for i in range(20)]  # 20 answerable prompts
    scores = answerable_scores + [5.0, 6.0]
    labels = [True] * 20 + [False, False]
    for budget, allowed in ((0.0, 0), (0.05, 1), (0.1, 2), (0.149, 2)):
        cut = dial.budget_cut(scores, labels, budget)
        assert sum(s > cut for s in answerable_scores) == allowed
        assert all(s > cut for s in (5.0, 6.0))  # the lowest such cut: every unanswerable above it is refused


def test_a_separating_score_gives_no_errors_and_a_blind_one_gives_the_base(dial):
    its = items([(str(d), a) for d in range(6) for a in (True, True, False)])
    separating = [0.0 if it["answerable"] else 1.0 for it in its]
    assert dial.dial_rates(separating, its, 0.05) == {"over_refusal": 0.0, "hallucination": 0.0,
                                                       "answerable_refused": 0, "unanswerable_answered": 0}
    blind = [0.5] * len(its)  # a constant: the cut may refuse nothing (ties are answered)
    assert dial.dial_rates(blind, its, 0.05)["hallucination"] == 1.0


def test_the_cut_is_set_without_the_document_it_is_applied_to(dial):
    # Document "x" alone has an answerable prompt scored above every unanswerable one. A cut fitted on all
    # prompts with no over-refusal allowed sits at x's score and refuses nothing. Scored out of sample, x meets
    # the cut of the other documents (0.0) and is refused, while they meet a cut raised by x and refuse nothing.
    its = items([("x", True)] + [(str(d), a) for d in range(5) for a in (True, False)])
    scores = [9.0] + [0.0 if it["answerable"] else 1.0 for it in its[1:]]
    assert dial.budget_cut(scores, [it["answerable"] for it in its], 0.0) == 9.0
    rates = dial.dial_rates(scores, its, 0.0)
    assert rates["answerable_refused"] == 1 and rates["unanswerable_answered"] == 5


def test_the_auc_interval_holds_the_auc_and_resamples_whole_documents(dial):
    its = items([(str(d), a) for d in range(12) for a in (True, False)])
    scores = [(0.3 if it["answerable"] else 0.7) + (0.5 if it["doc_id"] in {"0", "1"} else 0.0) for it in its]
    result = dial.doc_auc(scores, its)
    assert 0.5 < result["auc"] < 1.0
    low, high = result["ci95"]
    assert low <= result["auc"] <= high and high - low > 0


def test_the_refusal_score_is_the_probe_experiments_on_the_same_prompt(dial, smoke_model, smoke_model_cfg):
    """The dial reads the refusal's mean log-probability as experiments/answerability_probe.py does (whose
    positions tests/test_answerability_probe.py checks against a plain forward pass); 1e-5: the same
    computation on the same input, only the hidden states are not asked for here."""
    from helpers.prompts import build_messages

    probe = runpy.run_path(str(ROOT / "experiments" / "answerability_probe.py"))
    model, tokenizer = smoke_model
    item = {"prompt": build_messages("Water boils at 100 degrees Celsius at sea level.", "Who discovered water?")}
    expected = probe["features"](model, tokenizer, item, smoke_model_cfg.prompt_format)["refusal_logp"]
    assert abs(dial.refusal_logp(model, tokenizer, item, smoke_model_cfg.prompt_format) - expected) < 1e-5
