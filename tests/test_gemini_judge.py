"""FACTS Grounding style Gemini judge against the fake Gemini server (real SDK, no network, no key)."""

from __future__ import annotations

import json
import re

import pytest
from gemini_server import FAKE_API_KEY, malformed, ok

from helpers.config import GEMINI_JUDGE_MODEL, REFUSAL, EvalConfig, config_for
from helpers.evaluate.judges import GeminiJudge, GroundingJudgement, Verdict, verdict_from_judgement
from helpers.gemini_client import GeminiCallError

pytest_plugins = ["gemini_server"]

DOC = "Water boils at 100 degrees Celsius at sea level."
REQUEST = "At what temperature does water boil?"

#: answer -> the judgement the fake Gemini returns for it
JUDGEMENTS = {
    "Water boils at 100 degrees Celsius.": {"refused": False, "sentences": [
        {"sentence": "Water boils at 100 degrees Celsius.", "label": "supported", "rationale": "stated"}]},
    "Water boils at 100 degrees. It was discovered in 1800.": {"refused": False, "sentences": [
        {"sentence": "Water boils at 100 degrees.", "label": "supported"},
        {"sentence": "It was discovered in 1800.", "label": "unsupported"}]},
    "Water boils at 50 degrees.": {"refused": False, "sentences": [
        {"sentence": "Water boils at 50 degrees.", "label": "contradictory"}]},
    REFUSAL: {"refused": True, "sentences": [{"sentence": REFUSAL, "label": "no_rad"}]},
    f"Great question! {REFUSAL} Probably 90 degrees.": {"refused": False, "sentences": [
        {"sentence": "Great question!", "label": "no_rad"}, {"sentence": REFUSAL, "label": "no_rad"},
        {"sentence": "Probably 90 degrees.", "label": "unsupported"}]},
    "Sure!": {"refused": False, "sentences": [{"sentence": "Sure!", "label": "no_rad"}]},
}


def _response_of(prompt: str) -> str:
    return re.search(r"<response>\n(.*)\n</response>", prompt, re.S).group(1)


@pytest.fixture
def judge(gemini_server, tmp_path):
    gemini_server.responder = lambda request: JUDGEMENTS[_response_of(request.prompt)]
    return GeminiJudge("gemini-3.5-flash", api_key=FAKE_API_KEY, base_url=gemini_server.base_url,
                       cache_path=str(tmp_path / "judge_cache.jsonl"), requests_per_minute=10_000, timeout_s=5.0)


def _items(answers, answerable=True):
    return [{"answer": a, "document": DOC, "request": REQUEST, "answerable": answerable} for a in answers]


def test_sentence_labels_become_facts_verdicts(judge):
    answers = list(JUDGEMENTS)
    verdicts = judge.judge_many(_items(answers))
    by_answer = dict(zip(answers, verdicts, strict=True))
    assert all(isinstance(v, Verdict) for v in verdicts)
    supported = by_answer["Water boils at 100 degrees Celsius."]
    assert supported.supported and supported.grounded_correct and supported.judge == "gemini:gemini-3.5-flash"
    partly = by_answer["Water boils at 100 degrees. It was discovered in 1800."]
    # 1 supported + 1 unsupported -> not accurate (FACTS: every sentence must be supported or no_rad)
    assert not partly.supported and not partly.grounded_correct and partly.support_score == 0.5
    assert partly.unsupported_terms == ["It was discovered in 1800."]
    contradiction = by_answer["Water boils at 50 degrees."]
    assert not contradiction.supported and contradiction.unsupported_terms == ["Water boils at 50 degrees."]
    refusal = by_answer[REFUSAL]
    assert refusal.refused and not refusal.answered and not refusal.grounded_correct  # answerable: over-refusal
    no_claim = by_answer["Sure!"]
    # only no_rad sentences: accurate, but an answer needs at least one supported sentence to be correct
    assert no_claim.supported and not no_claim.grounded_correct


def test_refusal_is_correct_on_unanswerable_and_refusal_plus_invention_is_not(judge):
    refusal, invented = judge.judge_many(_items([REFUSAL, f"Great question! {REFUSAL} Probably 90 degrees."],
                                                answerable=False))
    assert refusal.refused and refusal.grounded_correct
    assert invented.answered and not invented.refused and not invented.grounded_correct


def test_malformed_json_is_a_judge_failure_not_a_verdict(judge, gemini_server):
    gemini_server.push(malformed())
    [result] = judge.judge_many(_items(["Water boils at 100 degrees Celsius."]))
    assert isinstance(result, GeminiCallError) and result.reason == "malformed_json"
    assert judge.stats.failures["malformed_json"] == 1


def test_unknown_label_is_a_schema_failure(judge, gemini_server):
    gemini_server.push(ok({"refused": False, "sentences": [{"sentence": "x", "label": "probably"}]}))
    [result] = judge.judge_many(_items(["Water boils at 100 degrees Celsius."]))
    assert isinstance(result, GeminiCallError) and result.reason == "schema_mismatch"


def test_judgement_without_sentences_is_a_failure(judge, gemini_server):
    gemini_server.push(ok({"refused": False, "sentences": []}))
    [result] = judge.judge_many(_items(["Water boils at 100 degrees Celsius."]))
    assert isinstance(result, GeminiCallError) and result.reason == "schema_mismatch"


def test_replies_are_cached_and_a_rerun_makes_no_requests(judge, gemini_server, tmp_path):
    answers = ["Water boils at 100 degrees Celsius.", REFUSAL]
    first = judge.judge_many(_items(answers))
    assert len(gemini_server.requests) == 2
    again = GeminiJudge("gemini-3.5-flash", api_key=FAKE_API_KEY, base_url=gemini_server.base_url,
                        cache_path=str(tmp_path / "judge_cache.jsonl"))
    second = again.judge_many(_items(answers))
    assert len(gemini_server.requests) == 2  # 0 new requests
    assert again.stats.cache_hits == 2 and again.stats.api_calls == 0
    assert [v.to_dict() for v in first] == [v.to_dict() for v in second]
    cache_text = (tmp_path / "judge_cache.jsonl").read_text()
    assert not gemini_server.leaks_key(cache_text) and gemini_server.keys_seen == 1


def test_empty_answers_are_not_sent(judge, gemini_server):
    [verdict] = judge.judge_many(_items(["   "]))
    assert gemini_server.requests == []
    assert not verdict.answered and not verdict.refused and not verdict.grounded_correct


def test_prompt_delimits_document_and_response_as_data(judge, gemini_server):
    judge.judge_many(_items(["Water boils at 100 degrees Celsius."]))
    prompt = gemini_server.requests[0].prompt
    assert f"<document>\n{DOC}\n</document>" in prompt and "never instructions" in prompt
    for label in ("supported", "unsupported", "contradictory", "no_rad"):
        assert f'"{label}"' in prompt
    body = gemini_server.requests[0].body["generationConfig"]
    assert body["responseMimeType"] == "application/json"


def test_verdict_from_judgement_without_network():
    judgement = GroundingJudgement.model_validate(JUDGEMENTS["Water boils at 100 degrees Celsius."])
    verdict = verdict_from_judgement(judgement, "Water boils at 100 degrees Celsius.", answerable=False)
    assert verdict.answered and not verdict.grounded_correct  # answering an unanswerable request


def test_evaluation_counts_judge_failures_and_agreement(judge, gemini_server):
    from helpers.evaluate.run import judge_side, summarise_sets
    from helpers.prompts import build_messages

    items = [{"id": f"t{i}", "set": "test", "doc_id": "d", "request": REQUEST, "document": DOC,
              "prompt": build_messages(DOC, REQUEST), "answerable": True, "reference": "100 degrees Celsius.",
              "domain": "", "pair_type": ["hallucination"], "source": ["x"]} for i in range(2)]
    cfg = config_for(EvalConfig, "smoke", judge="gemini")
    gemini_server.push(malformed())  # the first (and only) uncached request of the base side fails
    judged = {"base": judge_side(items, ["Water boils at 100 degrees Celsius."] * 2, cfg, judge),
              "aligned": judge_side(items, ["Water boils at 100 degrees Celsius.", REFUSAL], cfg, judge)}
    assert judged["base"][0]["gemini"]["failure"] == "malformed_json"
    summary = summarise_sets(items, judged, "gemini")
    # base: 2 items, both prompts identical -> one request, which failed -> both items are judge failures
    assert summary["base"]["judge_failures"] == 2 and summary["base"]["grounded_accuracy"]["n"] == 0
    assert summary["aligned"]["judge_failures"] == 0
    assert summary["aligned"]["grounded_accuracy"]["value"] == 0.5  # correct answer + over-refusal
    agreement = summary["judge_agreement"]["grounded_correct"]
    assert agreement["n"] == 2 and agreement["percent_agree"]["value"] == 1.0  # offline agrees on both


def test_no_key_falls_back_to_the_offline_judge_loudly(capsys):
    from helpers.evaluate.run import gemini_judge

    assert gemini_judge(config_for(EvalConfig, "smoke", judge="gemini")) is None
    out = capsys.readouterr().out
    assert "OFFLINE judge" in out and "GOOGLE_API_KEY" in out


def _evaluate_with_gemini(gemini_server, monkeypatch, outputs, rows, make_adapter, **overrides):
    """Pairs + an adapter on disk, the fake Gemini judging every answer as one unsupported sentence, evaluate."""
    from datasets import Dataset, DatasetDict

    from helpers.config import ModelConfig
    from helpers.evaluate.run import evaluate
    from helpers.gemini_client import BASE_URL_ENV

    DatasetDict({"train": Dataset.from_list(rows[:3]), "test": Dataset.from_list(rows[3:])}).save_to_disk(
        str(outputs / "pairs"))
    model_cfg = config_for(ModelConfig, "smoke")
    make_adapter(model_cfg, outputs / "adapter")
    gemini_server.responder = lambda request: {"refused": False, "sentences": [
        {"sentence": _response_of(request.prompt)[:40], "label": "unsupported"}]}
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv(BASE_URL_ENV, gemini_server.base_url)
    cfg = config_for(EvalConfig, "smoke", judge="gemini", latency_prompts=0, gemini_requests_per_minute=10_000,
                     **overrides)
    return evaluate(model_cfg, cfg)


def test_evaluate_with_the_gemini_judge_end_to_end(gemini_server, monkeypatch, _isolated_outputs, contract_pairs,
                                                  adapter_factory):
    metrics = _evaluate_with_gemini(gemini_server, monkeypatch, _isolated_outputs, contract_pairs, adapter_factory)
    assert metrics["judge"] == f"gemini:{GEMINI_JUDGE_MODEL}"
    assert metrics["aligned"]["hallucination_rate"]["value"] == 1.0  # unsupported answers on unanswerable items
    assert metrics["aligned"]["grounded_accuracy"]["value"] == 0.0
    assert metrics["judge_agreement"]["refused"]["n"] > 0 and "cohen_kappa" in metrics["judge_agreement"]["refused"]
    assert metrics["judge_stats"]["api_calls"] == len(gemini_server.requests) > 0
    written = (_isolated_outputs / "metrics.json").read_text() + (_isolated_outputs / "generations.jsonl").read_text()
    assert not gemini_server.leaks_key(written) and FAKE_API_KEY not in written
    generations = [json.loads(line) for line in (_isolated_outputs / "generations.jsonl").read_text().splitlines()]
    assert all("gemini" in g["base"] and "offline" in g["base"] for g in generations)


def test_gemini_judge_prints_the_plan_and_checks_the_model_once_before_any_call(judge, gemini_server, capsys):
    judge.judge_many(_items(["Water boils at 100 degrees Celsius.", REFUSAL]))
    out = capsys.readouterr().out
    assert out.index("Gemini quota plan: Gemini judge (notebook 03)") < out.index("Gemini model OK")
    assert "calls needed: 2 of 2" in out and "EvalConfig.gemini_judge_sample" in out
    judge.judge_many(_items(["Water boils at 50 degrees."]))
    assert len(gemini_server.model_gets) == 1 and len(gemini_server.requests) == 3


def test_retired_judge_model_stops_the_evaluation_before_it_starts(gemini_server, monkeypatch):
    from helpers.evaluate.run import gemini_judge
    from helpers.gemini_client import BASE_URL_ENV, GeminiPreflightError

    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv(BASE_URL_ENV, gemini_server.base_url)
    gemini_server.retired_models.add("gemini-2.5-flash")
    cfg = config_for(EvalConfig, "smoke", judge="gemini", gemini_model="gemini-2.5-flash")
    with pytest.raises(GeminiPreflightError, match=r"'gemini-2.5-flash' was retired.*EvalConfig.gemini_model"):
        gemini_judge(cfg)
    assert gemini_server.requests == []


def test_judge_daily_budget_leaves_the_rest_not_attempted(gemini_server, tmp_path):
    gemini_server.responder = lambda request: JUDGEMENTS[_response_of(request.prompt)]
    judge = GeminiJudge("gemini-3.5-flash", api_key=FAKE_API_KEY, base_url=gemini_server.base_url,
                        cache_path=str(tmp_path / "judge_cache.jsonl"), requests_per_minute=10_000,
                        requests_per_day=2, concurrency=1)
    results = judge.judge_many(_items(list(JUDGEMENTS)[:4]))
    assert [type(r).__name__ for r in results[:2]] == ["Verdict", "Verdict"]
    assert [r.reason for r in results[2:]] == ["not_attempted", "not_attempted"]
    assert len(gemini_server.requests) == 2 and judge.stats.stop_reason == "daily_budget"
    assert "midnight Pacific" in judge.stats.stopped and "EvalConfig.gemini_requests_per_day" in judge.stats.stopped


def test_gemini_judges_a_sample_and_agreement_is_measured_on_it(judge, gemini_server):
    from helpers.evaluate.run import gemini_sample_ids, judge_side, summarise_sets
    from helpers.prompts import build_messages

    items = [{"id": f"t{i}", "set": "test", "doc_id": "d", "request": REQUEST, "document": DOC,
              "prompt": build_messages(DOC, REQUEST), "answerable": i < 3, "reference": "100 degrees Celsius.",
              "domain": "", "pair_type": ["x"], "source": ["x"]} for i in range(6)]
    ids = gemini_sample_ids(items, 2, seed=1)
    # 2 of 6: one answerable and one unanswerable, the same pick for the same seed
    assert len(ids) == 2 and {i < "t3" for i in ids} == {True, False} and ids == gemini_sample_ids(items, 2, 1)
    assert gemini_sample_ids(items, 6) is None and gemini_sample_ids(items, None) is None  # covers the set
    cfg = config_for(EvalConfig, "smoke", judge="gemini")
    answers = {"base": ["Water boils at 100 degrees Celsius."] * 6, "aligned": [REFUSAL] * 6}
    judged = {side: judge_side(items, answers[side], cfg, judge, ids) for side in ("base", "aligned")}
    assert sum("gemini" in j for side in judged.values() for j in side) == 4  # 2 items x 2 sides
    assert len(gemini_server.requests) == 2  # each side's 2 answers are the same text: 1 prompt per side
    summary = summarise_sets(items, judged, "offline", ids, with_gemini=True)
    # headline: the offline judge on every item (6 refusal-rate records, 3 of them answerable)
    assert summary["base"]["refusal_rate"]["n"] == 6 and summary["base"]["judge_failures"] == 0
    sample = summary["gemini_sample"]
    assert sample["n_items"] == 2 and sample["n_answerable"] == 1
    assert sample["judge_agreement"]["refused"]["n"] == 4  # agreement measured on the sample only
    assert sample["aligned"]["refusal_rate"]["n"] == 2 and sample["aligned"]["judge_failures"] == 0


def test_evaluate_with_a_gemini_sample_keeps_offline_headlines(gemini_server, monkeypatch, _isolated_outputs, capsys,
                                                              contract_pairs, adapter_factory):
    metrics = _evaluate_with_gemini(gemini_server, monkeypatch, _isolated_outputs, contract_pairs, adapter_factory,
                                    gemini_judge_sample=1)
    n_items = metrics["n_answerable"] + metrics["n_unanswerable"]
    assert n_items > 1 and metrics["judge"] == "offline" and metrics["judge_requested"] == "gemini"
    assert metrics["gemini_sample"]["n_items"] == 1 and metrics["judge_agreement"]["refused"]["n"] == 2
    assert 1 <= len(gemini_server.requests) <= 2  # 1 item x 2 sides (fewer when both answers match)
    assert metrics["gemini_judge"]["quota_plans"] and "up to 2 calls" in capsys.readouterr().out
