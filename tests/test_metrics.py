"""Metric maths against hand-computed values."""

from __future__ import annotations

import math

import pytest

from helpers.evaluate.metrics import (
    breakdown,
    cohen_kappa,
    judge_agreement,
    rate,
    refusal_prf,
    relative_reduction,
    side_metrics,
    wilson_ci,
)


def test_wilson_ci_3_of_10_matches_hand_computation():
    # p = 0.3, z = 1.96, z^2 = 3.8415; denom = 1 + 3.8415/10 = 1.38415
    # centre = (0.3 + 3.8415/20) / 1.38415 = 0.49207 / 1.38415 = 0.35551
    # half = 1.96 * sqrt(0.3*0.7/10 + 3.8415/400) / 1.38415 = 1.96 * sqrt(0.0306037) / 1.38415 = 0.24772
    lo, hi = wilson_ci(3, 10)
    assert lo == pytest.approx(0.10779, abs=1e-4)
    assert hi == pytest.approx(0.60322, abs=1e-4)


def test_wilson_ci_edges_stay_inside_0_1():
    # 0/10: centre = 0.19207/1.38415 = 0.13876, half = 1.96*sqrt(0.0096037)/1.38415 = 0.13876 -> [0, 0.27753]
    lo, hi = wilson_ci(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.27753, abs=1e-4)
    lo, hi = wilson_ci(10, 10)  # mirror image
    assert lo == pytest.approx(1 - 0.27753, abs=1e-4) and hi == pytest.approx(1.0)
    assert wilson_ci(0, 0) is None


def test_wilson_ci_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_ci(11, 10)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_ci(-1, 10)


def test_rate_entry_shape():
    entry = rate(3, 10)
    assert entry["value"] == 0.3 and entry["n"] == 10
    assert entry["ci95"] == pytest.approx([0.10779, 0.60322], abs=1e-4)
    assert rate(0, 0) == {"value": None, "n": 0, "ci95": None}


def test_relative_reduction():
    assert relative_reduction(0.6, 0.15) == pytest.approx(0.75)  # (0.6 - 0.15) / 0.6
    assert relative_reduction(0.2, 0.3) == pytest.approx(-0.5)  # worse: negative
    assert relative_reduction(0.0, 0.1) is None  # undefined when the base never hallucinates
    assert relative_reduction(None, 0.1) is None


def test_refusal_precision_recall_f1_by_hand():
    refused = [True, True, True, False, False, True]
    unanswerable = [True, True, False, True, False, False]
    # tp = 2 (items 0, 1), fp = 2 (items 2, 5), fn = 1 (item 3)
    # precision = 2/4 = 0.5, recall = 2/3, F1 = 2*2 / (2*2 + 2 + 1) = 4/7
    out = refusal_prf(refused, unanswerable)
    assert out["refusal_precision"]["value"] == pytest.approx(0.5) and out["refusal_precision"]["n"] == 4
    assert out["refusal_recall"]["value"] == pytest.approx(2 / 3) and out["refusal_recall"]["n"] == 3
    f1 = out["refusal_f1"]
    assert f1["value"] == pytest.approx(4 / 7) and f1["n"] == 6
    assert f1["ci95"][0] <= 4 / 7 <= f1["ci95"][1]
    assert out == refusal_prf(refused, unanswerable)  # the bootstrap is seeded


def test_refusal_prf_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        refusal_prf([True], [True, False])


def _rec(answerable, refused, answered, correct, supported=True, pair_type="x"):
    return {"answerable": answerable, "refused": refused, "answered": answered, "grounded_correct": correct,
            "supported": supported, "pair_type": pair_type}


RECORDS = [
    # unanswerable: 1 refused, 2 answered (hallucinated) -> hallucination 2/3
    _rec(False, True, False, True, pair_type="unanswerable"),
    _rec(False, False, True, False, supported=False, pair_type="unanswerable"),
    _rec(False, False, True, False, supported=False, pair_type=["unanswerable", "paraphrase"]),
    # answerable: 1 refused (over-refusal 1/4), 2 correct (accuracy 2/4), 1 answered unsupported
    _rec(True, True, False, False, pair_type="over_refusal"),
    _rec(True, False, True, True, pair_type="hallucination"),
    _rec(True, False, True, True, pair_type="hallucination"),
    _rec(True, False, True, False, supported=False, pair_type=["hallucination", "paraphrase"]),
]


def test_side_metrics_by_hand():
    m = side_metrics(RECORDS)
    assert m["hallucination_rate"]["value"] == pytest.approx(2 / 3) and m["hallucination_rate"]["n"] == 3
    assert m["over_refusal_rate"]["value"] == pytest.approx(1 / 4) and m["over_refusal_rate"]["n"] == 4
    assert m["grounded_accuracy"]["value"] == pytest.approx(2 / 4)
    assert m["unsupported_answer_rate"]["value"] == pytest.approx(1 / 4)
    assert m["refusal_rate"]["value"] == pytest.approx(2 / 7)
    # refusal classifier: tp = 1, fp = 1 (the over-refusal), fn = 2 -> P = 1/2, R = 1/3, F1 = 2/(2+1+2) = 0.4
    assert m["refusal_precision"]["value"] == pytest.approx(0.5)
    assert m["refusal_recall"]["value"] == pytest.approx(1 / 3)
    assert m["refusal_f1"]["value"] == pytest.approx(0.4)
    for entry in (m["hallucination_rate"], m["over_refusal_rate"], m["grounded_accuracy"]):
        assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1]


def test_breakdown_counts_list_valued_keys_under_each_value():
    groups = breakdown(RECORDS, "pair_type")
    assert set(groups) == {"unanswerable", "paraphrase", "over_refusal", "hallucination"}
    assert groups["unanswerable"]["hallucination_rate"]["n"] == 3
    # paraphrase: one unanswerable (answered) and one answerable (unsupported, wrong)
    assert groups["paraphrase"]["hallucination_rate"]["value"] == 1.0
    assert groups["paraphrase"]["grounded_accuracy"]["value"] == 0.0
    assert groups["hallucination"]["grounded_accuracy"]["value"] == pytest.approx(2 / 3)
    assert breakdown([{**RECORDS[0], "domain": ""}], "domain").keys() == {"unknown"}


def test_cohen_kappa_by_hand():
    a = [True, True, False, False, True, False, True, True, False, False]
    b = [True, False, False, False, True, False, True, True, True, False]
    # agree on 8/10 -> po = 0.8; pa = 0.5, pb = 0.5 -> pe = 0.25 + 0.25 = 0.5; kappa = 0.3 / 0.5 = 0.6
    assert cohen_kappa(a, b) == pytest.approx(0.6)
    assert cohen_kappa([True, True], [True, True]) is None  # pe = 1: undefined
    assert cohen_kappa([], []) is None
    assert math.isclose(cohen_kappa([True, False], [False, True]), -1.0)


def test_judge_agreement_skips_judge_failures():
    offline = [True, False, True, None]
    gemini = [True, True, None, False]
    out = judge_agreement(offline, gemini)
    # only items 0 and 1 have both verdicts; they agree on 1 of 2
    assert out["n"] == 2
    assert out["percent_agree"]["value"] == 0.5
    assert out["cohen_kappa"] == pytest.approx(0.0)  # po = 0.5, pa = 0.5, pb = 1.0 -> pe = 0.5 -> 0
