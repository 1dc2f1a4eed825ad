"""helpers.evaluate.answerability_head: the linear head's dev choice, its features, and its place in the pipeline
(``gemma-facts select --head-only`` / ``TrainConfig.answerability_head``, then ``metrics.json``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from helpers.config import REFUSAL, EvalConfig, ModelConfig, TrainConfig, config_for
from helpers.evaluate.answerability_head import (
    AnswerabilityHead,
    choose_head,
    gate_answers,
    head_path,
    prompt_states,
)
from tests.test_train import CITIES, city_rows


def _items(n: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=gen) < 0.5).tolist()
    return [{"request": "what is it", "document": "it is here", "answerable": bool(a)} for a in labels]


def _states(items: list[dict], seed: int, layers: int = 4, dims: int = 8, signal_layer: int = 2) -> torch.Tensor:
    """Noise everywhere; at ``signal_layer`` the first dimension carries the label (+1 answerable, -1 not)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(items), layers, dims, generator=gen)
    x[:, signal_layer, 0] += torch.tensor([2.0 if it["answerable"] else -2.0 for it in items])
    return x


def test_the_dev_choice_finds_the_layer_that_carries_the_label_and_round_trips(tmp_path):
    fit, dev = _items(120, 0), _items(60, 1)
    head = choose_head(fit, _states(fit, 2), dev, _states(dev, 3), model_id="m")
    assert head.layer == 2  # the other layers are noise: their dev AUC sits near 0.5
    assert head.dev["dev_auc"] > 0.9
    assert max(v for k, v in head.dev["dev_auc_by_candidate"].items() if not k.startswith("2/")) < 0.8
    # the threshold is the largest dev refusal gap: on these dev items no other cut does better
    dev_x = _states(dev, 3)
    scores = head.scores(dev_x, dev)
    refused = head.refuses(dev_x, dev)
    assert refused == [s < head.threshold for s in scores]
    gap = head.dev["dev_unanswerable_refused"] - head.dev["dev_answerable_refused"]
    for cut in sorted(scores):
        over = sum(s < cut for s, it in zip(scores, dev, strict=True) if it["answerable"]) / sum(
            it["answerable"] for it in dev)
        caught = sum(s < cut for s, it in zip(scores, dev, strict=True) if not it["answerable"]) / sum(
            not it["answerable"] for it in dev)
        assert caught - over <= gap + 1e-9
    loaded = AnswerabilityHead.load(head.save(tmp_path / "head.json"))
    assert loaded.refuses(dev_x, dev) == refused
    assert loaded.scores(dev_x, dev) == pytest.approx(scores, abs=1e-5)  # float32 lists through JSON
    assert gate_answers(["a"] * len(dev), refused) == [REFUSAL if r else "a" for r in refused]


def test_the_dev_choice_needs_both_kinds():
    fit = _items(20, 0)
    only_answerable = [dict(it, answerable=True) for it in fit]
    with pytest.raises(ValueError, match="answerable and unanswerable"):
        choose_head(only_answerable, _states(only_answerable, 1), fit, _states(fit, 2), model_id="m")


def test_prompt_states_are_the_last_prompt_tokens_and_cached(smoke_model, smoke_model_cfg, tmp_path, monkeypatch,
                                                             contract_pairs):
    import helpers.config
    from helpers.prompts import render_prompt

    monkeypatch.setattr(helpers.config, "cache_root", lambda: tmp_path)
    model, tokenizer = smoke_model
    items = [{"prompt": contract_pairs[i]["prompt"]} for i in (0, 2, 3)]  # three different prompts
    states = prompt_states(model, tokenizer, items, smoke_model_cfg, progress=False)
    layers = model.config.num_hidden_layers + 1
    assert states.shape == (3, layers, model.config.hidden_size)
    text = render_prompt(items[1]["prompt"], smoke_model_cfg.prompt_format, tokenizer)
    ids = tokenizer(text, add_special_tokens=smoke_model_cfg.prompt_format == "plain")["input_ids"]
    with torch.inference_mode():  # the prompt with more tokens after it: a causal model's last prompt state is unchanged
        out = model(input_ids=torch.tensor([ids + ids[1:4]]), output_hidden_states=True)
    expected = torch.stack([h[0, len(ids) - 1].float() for h in out.hidden_states])
    # another sequence length changes the matmul blocking, not the maths: float32 noise only
    torch.testing.assert_close(states[1], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(states[0], states[1])  # different prompts, different states: the check can fail
    assert len(list(tmp_path.rglob("*.pt"))) == 3

    def broken(*args, **kwargs):
        raise AssertionError("a cached state was computed again")

    monkeypatch.setattr(model, "forward", broken)
    again = prompt_states(model, tokenizer, items, smoke_model_cfg, progress=False)
    torch.testing.assert_close(again, states, rtol=0, atol=0)


def test_select_head_only_then_evaluate_reports_the_base_gated_by_it(adapter_factory):
    """The stage fits and saves the head (no adapter needed); evaluation gates the base's own answers with it."""
    from helpers.evaluate.run import evaluate
    from helpers.select.dev_choice import main as select_main

    pairs = DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:4])),
                         "test": Dataset.from_list(city_rows(CITIES[4:]))})
    train_cfg = config_for(TrainConfig, "smoke")
    pairs.save_to_disk(train_cfg.pairs_dir)
    with pytest.raises(ValueError, match="needs dev documents"):
        config_for(TrainConfig, "smoke", answerability_head=True, select_dev_documents=0, eval_dev_documents=0)
    assert train_cfg.eval_dev_documents and not train_cfg.select_dev_documents  # the smoke preset: dev for curves only
    assert select_main(["--head-only"]) == 0  # chosen on those dev documents; no adapter exists yet
    head = AnswerabilityHead.load(head_path())
    model_cfg = config_for(ModelConfig, "smoke")
    assert head.model_id == model_cfg.model_id and head.dev["dev"]["answerable"] > 0
    assert 0 <= head.layer <= 2  # the smoke model's 2 layers + the embeddings

    eval_cfg = config_for(EvalConfig, "smoke", latency_prompts=0)
    alone = evaluate(model_cfg, eval_cfg, base_only=True)  # no adapter yet: the base and its head alone
    assert alone["aligned_is_base"] and alone["aligned"] == alone["base"]
    assert alone["answerability_head"]["head"]["layer"] == head.layer
    rows = [json.loads(line) for line in Path(eval_cfg.generations_path).read_text().splitlines()]
    assert all(r["aligned"]["answer"] == r["base"]["answer"] for r in rows)

    adapter_factory(model_cfg, Path(eval_cfg.adapter_dir))
    facts = Path(eval_cfg.pairs_dir).parent / "facts.jsonl"  # a second held-out set in the FACTS schema
    facts.write_text("\n".join(json.dumps({"id": i, "system_instruction": "Answer briefly.",
                                           "user_request": f"What is the capital of {country}?",
                                           "context_document": f"{capital} is the capital of {country}. {city} is "
                                                               f"another city there."})
                               for i, (capital, country, city) in enumerate(CITIES[4:])), encoding="utf-8")
    metrics = evaluate(model_cfg, dataclasses.replace(eval_cfg, heldout_path=str(facts)))
    result = metrics["answerability_head"]
    assert result["head"]["layer"] == head.layer and result["judge"] == "offline"
    rows = [json.loads(line) for line in Path(eval_cfg.generations_path).read_text().splitlines()]
    held = [r for r in rows if r["set"] == "heldout_2"]  # the second held-out set is gated the same way
    assert held and all(r["base_with_head"]["answer"] in (REFUSAL, r["base"]["answer"]) for r in held)
    assert result["heldout_2"]["refused_by_head"] <= len(held)
    held_una = [r for r in held if not r["answerable"]]
    assert result["heldout_2"]["base_with_head"]["hallucination_rate"]["value"] == pytest.approx(
        1 - sum(r["base_with_head"]["offline"]["refused"] for r in held_una) / len(held_una))
    rows = [r for r in rows if r["set"] == "test"]
    gated = [r["base_with_head"]["answer"] for r in rows]
    base = [r["base"]["answer"] for r in rows]
    newly = sum(g == REFUSAL and b != REFUSAL for g, b in zip(gated, base, strict=True))
    assert newly <= result["refused_by_head"] <= sum(g == REFUSAL for g in gated)
    assert all(g == b for g, b in zip(gated, base, strict=True) if g != REFUSAL)  # the gate only adds refusals
    n_una = metrics["n_unanswerable"]
    refused_una = sum(r["base_with_head"]["offline"]["refused"] for r in rows if not r["answerable"])
    assert result["base_with_head"]["hallucination_rate"]["value"] == pytest.approx(1 - refused_una / n_una)
    assert result["probes"] == len(metrics["probes"]["base"])
    # a head that refuses everything: every gated answer is the refusal, so no unanswerable prompt is answered
    dataclasses.replace(head, threshold=1e9).save(head_path())
    metrics = evaluate(model_cfg, eval_cfg)
    rows = [json.loads(line) for line in Path(eval_cfg.generations_path).read_text().splitlines()]
    assert all(r["base_with_head"]["answer"] == REFUSAL for r in rows)
    assert metrics["answerability_head"]["refused_by_head"] == len(rows)
    assert metrics["answerability_head"]["base_with_head"]["hallucination_rate"]["value"] == 0.0
    assert metrics["answerability_head"]["banana"]["passed"]
    # a head fitted on another model (an old file in the output root) is refused, not applied
    dataclasses.replace(head, model_id="google/gemma-2-2b-it").save(head_path())
    with pytest.raises(ValueError, match="was fitted on google/gemma-2-2b-it"):
        evaluate(model_cfg, eval_cfg)


def _rate(value: float, n: int) -> dict:
    return {"value": value, "n": n, "ci95": [max(0.0, value - 0.1), min(1.0, value + 0.1)]}


def test_head_table_and_figures_show_the_gated_base_beside_the_two_sides(tmp_path):
    """Notebook 03's table and the headline figure read the gated base from metrics.json, not the aligned side;
    a run without a head says how to fit one. Notebook 02's figure marks the chosen layer on the best-over-L2
    dev AUC curve."""
    from helpers.evaluate.plots import evaluation_figures, plot_base_vs_aligned, plot_head_choice
    from helpers.evaluate.tables import head_table

    sides = {side: {"hallucination_rate": _rate(h, 10), "over_refusal_rate": _rate(o, 8),
                    "grounded_accuracy": _rate(0.25, 8), "refusal_f1": _rate(0.5, 18)}
             for side, h, o in (("base", 0.9, 0.0), ("aligned", 0.6, 0.5))}
    metrics = {**sides, "n_answerable": 8, "n_unanswerable": 10, "model": "m", "breakdowns": {}}
    assert "answerability_head=True" in head_table(metrics)
    assert len(plot_base_vs_aligned(metrics).axes[0].containers) == 2 * 2  # bars + error bars per side

    candidates = {f"{layer}/{kind}/l2={l2}": auc for layer, kind, l2, auc in (
        (0, "state", 0.1, 0.5), (1, "state", 0.1, 0.7), (1, "state", 0.01, 0.8), (2, "state", 0.1, 0.6),
        (0, "state+overlap", 0.1, 0.85), (1, "state+overlap", 0.1, 0.9), (2, "state+overlap", 0.1, 0.88))}
    head = {"layer": 1, "with_overlap": True, "l2": 0.1, "threshold": 0.0, "dev": {
        "dev_auc": 0.9, "dev": {"answerable": 5, "unanswerable": 6}, "dev_answerable_refused": 0.2,
        "dev_unanswerable_refused": 0.5, "dev_auc_by_candidate": candidates}}
    metrics["answerability_head"] = {
        "head": head, "base_with_head": {**sides["base"], "hallucination_rate": _rate(0.3, 10),
                                         "over_refusal_rate": _rate(0.125, 8)},
        "relative_hallucination_reduction": 2 / 3, "refused_by_head": 7,
        "banana": {"answer": "refused", "passed": True}, "probes_passed": 5, "probes": 7}
    table = head_table(metrics)
    assert table.splitlines()[0] == "| Metric | Base | Base + head | Aligned (Gemma-Facts) |"
    halluc = next(line for line in table.splitlines() if line.startswith("| Hallucination"))
    assert halluc.rstrip(" |").split(" | ")[1:4] == ["90.0% [80.0–100.0] (n=10)", "30.0% [20.0–40.0] (n=10)",
                                        "60.0% [50.0–70.0] (n=10)"]
    assert "7 of 18 refused" in table and "cut 67%" in table and "layer 1 + word-overlap share" in table
    assert "held-out" not in table  # no second set in this run
    metrics["heldout_2"] = {"path": "facts.jsonl", "base": {"hallucination_rate": _rate(0.8, 5),
                                                            "over_refusal_rate": _rate(0.0, 5)}}
    metrics["answerability_head"]["heldout_2"] = {"base_with_head": {"hallucination_rate": _rate(0.2, 5),
                                                                     "over_refusal_rate": _rate(0.2, 5)}}
    held_line = head_table(metrics).splitlines()[-1]
    assert "`facts.jsonl`" in held_line and "80.0% [70.0–90.0] (n=5) → 20.0% [10.0–30.0] (n=5)" in held_line

    ax = plot_base_vs_aligned(metrics).axes[0]
    bars = [c for c in ax.containers if hasattr(c, "patches")]
    assert [round(p.get_height(), 3) for p in bars[2].patches] == [0.3, 0.125, 0.25]  # the gated base's rates
    assert set(evaluation_figures(metrics, folder=tmp_path)) == {"eval_base_vs_aligned", "eval_failures"}

    lines = plot_head_choice(head).axes[0].get_lines()
    state, with_overlap = (dict(zip(line.get_xdata(), line.get_ydata(), strict=True)) for line in lines[:2])
    assert state == {0: 0.5, 1: 0.8, 2: 0.6}  # the best over L2 per layer
    assert with_overlap == {0: 0.85, 1: 0.9, 2: 0.88}
    marker = plot_head_choice(head).axes[0].collections[0].get_offsets()[0]
    assert tuple(marker) == (1, 0.9)  # the chosen layer, on the curve of its kind


def _with_docs(items: list[dict], docs: int) -> list[dict]:
    return [dict(it, doc_id=f"d{i % docs}") for i, it in enumerate(items)]


def test_the_dev_choice_offers_the_request_surprisal_and_the_head_then_needs_it(tmp_path):
    """States that are noise everywhere and a surprisal column that carries the label: only a candidate reading
    the surprisal can separate dev, and the saved head refuses to score prompts without it."""
    fit, dev = _items(120, 4), _items(60, 5)

    def surprisal(items, seed):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(len(items), 6, generator=gen)
        x[:, 0] += torch.tensor([-2.0 if it["answerable"] else 2.0 for it in items])  # unexplained request: high
        return x

    gen = torch.Generator().manual_seed(6)
    fit_x, dev_x = torch.randn(120, 4, 8, generator=gen), torch.randn(60, 4, 8, generator=gen)
    head = choose_head(fit, fit_x, dev, dev_x, model_id="m", fit_surprisal=surprisal(fit, 7),
                       dev_surprisal=surprisal(dev, 8))
    assert head.with_surprisal and head.with_overlap  # the surprisal comes with the overlap share
    assert head.dev["dev_auc"] > 0.9
    assert max(v for k, v in head.dev["dev_auc_by_candidate"].items() if "surprisal" not in k) < 0.8
    refused = head.refuses(dev_x, dev, surprisal(dev, 8))
    from helpers.evaluate.plots import plot_head_choice

    ax = plot_head_choice(head).axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "… + request surprisal" in labels  # its own curve, and the chosen candidate marked on it
    assert tuple(ax.collections[0].get_offsets()[0]) == (head.layer, pytest.approx(head.dev["dev_auc"]))
    loaded = AnswerabilityHead.load(head.save(tmp_path / "head.json"))
    assert loaded.with_surprisal and loaded.refuses(dev_x, dev, surprisal(dev, 8)) == refused
    with pytest.raises(ValueError, match="reads the request surprisal"):
        loaded.refuses(dev_x, dev)
    # a head saved before the field existed loads as a state (+ overlap) head
    old = {k: v for k, v in json.loads((tmp_path / "head.json").read_text()).items() if k != "with_surprisal"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert AnswerabilityHead.load(tmp_path / "old.json").with_surprisal is False


def test_out_of_fold_scores_never_come_from_a_fit_that_saw_the_document():
    from helpers.evaluate.answerability_head import document_folds, fit_logistic, out_of_fold_scores

    items = _with_docs(_items(90, 9), docs=15)
    x = _states(items, 10)[:, 2]
    scores = out_of_fold_scores(x, items, l2=0.1)
    folds = document_folds(items)
    assert sorted(d for f in folds for d in f) == sorted({it["doc_id"] for it in items})  # a partition
    held = folds[0]
    inside = [i for i, it in enumerate(items) if it["doc_id"] not in held]
    out = [i for i, it in enumerate(items) if it["doc_id"] in held]
    refit = fit_logistic(x[inside], torch.tensor([items[i]["answerable"] for i in inside]), 0.1)
    # the same LBFGS fit on the same rows: equal up to float32 rounding
    assert [scores[i] for i in out] == pytest.approx(refit(x[out]).tolist(), abs=1e-4)
    full = fit_logistic(x, torch.tensor([it["answerable"] for it in items]), 0.1)
    assert [scores[i] for i in out] != pytest.approx(full(x[out]).tolist(), abs=1e-4)  # not the in-sample fit


def test_the_budget_cut_is_the_highest_one_within_the_budget():
    from helpers.evaluate.answerability_head import budget_threshold

    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, -1.0, -0.5, 0.22, 0.95]
    answerable = [True] * 10 + [False] * 4
    cut, rates = budget_threshold(scores, answerable, 0.2)  # 2 of the 10 answerable may be refused
    assert 0.2 < cut < 0.3
    assert rates["dev_answerable_refused"] == 0.2 and rates["dev_unanswerable_refused"] == 0.75
    cut, rates = budget_threshold(scores, answerable, 0.0)
    assert cut < 0.1 and rates["dev_answerable_refused"] == 0.0 and rates["dev_unanswerable_refused"] == 0.5


def test_the_out_of_fold_rule_refits_on_fit_and_dev_and_cuts_within_the_budget():
    fit, dev = _with_docs(_items(150, 11), 25), [dict(it, doc_id=f"v{i % 8}") for i, it in enumerate(_items(50, 12))]
    fit_x, dev_x = _states(fit, 13), _states(dev, 14)
    by_gap = choose_head(fit, fit_x, dev, dev_x, model_id="m")
    head = choose_head(fit, fit_x, dev, dev_x, model_id="m", threshold_rule="out_of_fold_budget", budget=0.05)
    assert (head.layer, head.l2) == (by_gap.layer, by_gap.l2)  # the family is the same dev choice
    assert head.dev["threshold_rule"] == "out_of_fold_budget"
    assert head.dev["out_of_fold_answerable_refused"] <= 0.05
    assert head.score.weight != by_gap.score.weight  # refitted on fit + dev
    with pytest.raises(ValueError, match="threshold_rule"):
        choose_head(fit, fit_x, dev, dev_x, model_id="m", threshold_rule="largest")
    with pytest.raises(ValueError, match="answerability_threshold"):
        config_for(TrainConfig, "smoke", answerability_threshold="largest")
    for bad in ([], [0.1, 0.0]):
        with pytest.raises(ValueError, match="answerability_l2s"):
            config_for(TrainConfig, "smoke", answerability_l2s=bad)
    wide = choose_head(fit, fit_x, dev, dev_x, model_id="m", l2s=(1.0, 10.0))
    assert {k.rsplit("=", 1)[1] for k in wide.dev["dev_auc_by_candidate"]} == {"1.0", "10.0"} and wide.l2 in (1.0, 10.0)


def test_the_stage_fits_a_surprisal_head_and_evaluation_reads_the_surprisal(smoke_model, tmp_path, monkeypatch):
    """``train.answerability_surprisal`` through the select stage, then an evaluation with a head that reads only
    the mean request surprisal: the gate refuses exactly the test prompts whose surprisal is above the cut."""
    import helpers.config
    from helpers.evaluate.answerability_head import LinearScore, prompt_features
    from helpers.evaluate.run import eval_items, evaluate, load_test_rows
    from helpers.select.answerability_fit import fit_answerability_head

    monkeypatch.setattr(helpers.config, "cache_root", lambda: tmp_path / "cache")
    model, tokenizer = smoke_model
    pairs = DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:4])),
                         "test": Dataset.from_list(city_rows(CITIES[4:]))})
    train_cfg = config_for(TrainConfig, "smoke", answerability_surprisal=True,
                           answerability_threshold="out_of_fold_largest_gap")
    pairs.save_to_disk(train_cfg.pairs_dir)
    head = fit_answerability_head(config_for(ModelConfig, "smoke"), train_cfg, model, tokenizer)
    assert any(k.endswith(f"state+overlap+surprisal/l2={head.l2}") for k in head.dev["dev_auc_by_candidate"])
    assert head.dev["threshold_rule"] == "out_of_fold_largest_gap" and "out_of_fold_refusal_gap" in head.dev
    assert list((tmp_path / "cache" / "request_surprisal").rglob("*.pt"))  # cached beside the states

    model_cfg = config_for(ModelConfig, "smoke")
    items = eval_items(load_test_rows(train_cfg.pairs_dir))
    states, surprisal = prompt_features(model, tokenizer, items, model_cfg, surprisal=True, progress=False)
    hidden = states.shape[2]

    def broken(*args, **kwargs):
        raise AssertionError("a cached feature was computed again")

    with monkeypatch.context() as patch:  # a stopped fit resumes from disk: nothing is computed twice
        patch.setattr(model, "forward", broken)
        again = prompt_features(model, tokenizer, items, model_cfg, surprisal=True, progress=False)
    torch.testing.assert_close(again[0], states, rtol=0, atol=0)
    torch.testing.assert_close(again[1], surprisal, rtol=0, atol=0)
    weight = [0.0] * (hidden + 1) + [-1.0, 0, 0, 0, 0, 0]  # score = -(mean surprisal): refuse the surprising
    mean_surprisal = surprisal[:, 0].tolist()
    cut = sorted(mean_surprisal)[len(items) // 2]
    forced = AnswerabilityHead(layer=1, with_overlap=True, l2=0.1, threshold=-cut, model_id=model_cfg.model_id,
                               score=LinearScore([0.0] * (hidden + 7), [1.0] * (hidden + 7), weight, 0.0),
                               with_surprisal=True)
    forced.save(head_path())
    metrics = evaluate(model_cfg, config_for(EvalConfig, "smoke", latency_prompts=0), base_only=True)
    expected = sum(v > cut for v in mean_surprisal)
    assert 0 < expected < len(items)  # the check can fail both ways
    assert metrics["answerability_head"]["refused_by_head"] == expected


def test_a_stacked_head_reads_the_state_as_one_out_of_fold_column_and_round_trips(tmp_path):
    """``stacked``: the second fit reads one state column (+ the overlap share) whatever the state's width; the
    fit prompts' column comes out of fold, so a fit prompt's own label cannot move its own column; the head keeps
    the state fit, saves and loads it, and scores dev through it. Both threshold rules."""
    from helpers.evaluate.answerability_head import describe_head, out_of_fold_scores, overlap_shares

    fit, dev = _with_docs(_items(150, 21), 25), [dict(it, doc_id=f"v{i % 8}") for i, it in enumerate(_items(60, 22))]
    fit_x, dev_x = _states(fit, 23, dims=16), _states(dev, 24, dims=16)
    plain = choose_head(fit, fit_x, dev, dev_x, model_id="m")
    for rule in ("dev_largest_gap", "out_of_fold_budget"):
        head = choose_head(fit, fit_x, dev, dev_x, model_id="m", stacked=True, threshold_rule=rule)
        assert head.layer == plain.layer == 2 and head.dev["dev_auc"] > 0.9  # the same signal found
        assert head.state_score is not None and len(head.state_score.weight) == 16
        assert len(head.score.weight) == (2 if head.with_overlap else 1)  # one column for the state
        assert "the state read as the score of its own fit" in head.dev["rule"]
        assert head.summary()["stacked"] is True and "(as its own score)" in describe_head(head.summary())
        column = head.state_score(dev_x[:, head.layer]).reshape(-1, 1)
        direct = head.score(torch.cat([column, overlap_shares(dev) if head.with_overlap else column[:, :0]], 1))
        assert head.scores(dev_x, dev) == pytest.approx(direct.tolist(), abs=1e-5)
        loaded = AnswerabilityHead.load(head.save(tmp_path / f"{rule}.json"))
        assert loaded.state_score == head.state_score and loaded.refuses(dev_x, dev) == head.refuses(dev_x, dev)
    assert plain.state_score is None and plain.summary()["stacked"] is False
    flipped = [dict(it) for it in fit]
    flipped[0]["answerable"] = not flipped[0]["answerable"]
    before, after = (out_of_fold_scores(fit_x[:, 2], items, 0.1) for items in (fit, flipped))
    assert after[0] == pytest.approx(before[0], abs=1e-6)  # its own label did not reach its own column
    assert after != pytest.approx(before, abs=1e-6)  # ... but it did reach the other folds' columns


def _two_weak_layers(n: int, docs: int, seed: int) -> tuple[list[dict], torch.Tensor]:
    """``n`` prompts over ``docs`` documents whose label two layers carry weakly (layers 2 and 3), so candidates
    differ and which documents a fold or a dev split draws can move the choice."""
    prompts = _with_docs(_items(n, seed), docs)
    x = _states(prompts, seed + 1)
    x[:, 2, 0] *= 0.4
    x[:, 3, 0] += torch.tensor([0.8 if it["answerable"] else -0.8 for it in prompts])
    return prompts, x


def test_the_out_of_fold_choice_reads_fit_and_dev_alike_so_the_dev_split_cannot_move_it(tmp_path):
    """``choice="out_of_fold_auc"`` / ``"out_of_fold_catch"``: every candidate is scored out of fold over fit + dev,
    so moving documents between fit and dev (another dev seed's split of the same prompts) leaves the head as it
    was, while the dev-AUC choice reads a different dev split. The recorded AUC is the chosen candidate's
    out-of-fold AUC, the catch choice takes the candidate that refuses the most unanswerable prompts at the budget,
    the cut keeps the budget, and the rule says what it did."""
    from helpers.evaluate.answerability_head import (
        budget_threshold,
        head_features,
        label_auc,
        out_of_fold_scores,
        overlap_shares,
        refused_shares,
    )

    prompts, x = _two_weak_layers(200, 40, 31)
    splits = []
    for dev_docs in ({"d0", "d1", "d2", "d3", "d4", "d5"}, {"d30", "d31", "d32", "d33", "d34", "d35"}):
        dev_idx = [i for i, it in enumerate(prompts) if it["doc_id"] in dev_docs]
        fit_idx = [i for i, it in enumerate(prompts) if it["doc_id"] not in dev_docs]
        splits.append(([prompts[i] for i in fit_idx], x[fit_idx], [prompts[i] for i in dev_idx], x[dev_idx]))
    for choice in ("out_of_fold_auc", "out_of_fold_catch"):
        a, b = (choose_head(*split, model_id="m", threshold_rule="out_of_fold_budget", budget=0.06, choice=choice,
                            fold_seed=7) for split in splits)
        assert (a.layer, a.l2, a.with_overlap) == (b.layer, b.l2, b.with_overlap)
        # the same prompts in another row order: only float32 sums in the fits differ, which can move an AUC
        # (kept to 3 decimals) across a rounding boundary: one unit of its third decimal
        assert a.threshold == pytest.approx(b.threshold, abs=1e-3)
        assert a.dev["dev_auc_by_candidate"] == pytest.approx(b.dev["dev_auc_by_candidate"], abs=1.5e-3)
        assert a.dev["choice"] == choice and a.dev["fold_seed"] == 7 and a.dev["out_of_fold_answerable_refused"] <= 0.06
        assert a.dev["rule"].startswith(f"highest out-of-fold {'AUC' if choice == 'out_of_fold_auc' else 'share'}")
        items = [*splits[0][0], *splits[0][2]]
        union = torch.cat([splits[0][1], splits[0][3]])
        y = [it["answerable"] for it in items]

        def oof(layer, l2, with_overlap, items=items, union=union):
            return out_of_fold_scores(head_features(union, items, layer, with_overlap, overlap_shares(items)),
                                      items, l2, seed=7)

        chosen = oof(a.layer, a.l2, a.with_overlap)
        assert a.dev["dev_auc"] == pytest.approx(label_auc(chosen, y), abs=1e-9)
        if choice == "out_of_fold_auc":
            assert a.dev["dev_auc"] == max(a.dev["dev_auc_by_candidate"].values())
        else:
            def catch(scores, y=y):
                return refused_shares(scores, y, budget_threshold(scores, y, 0.06)[0])[1]

            best = catch(chosen)
            assert all(catch(oof(layer, l2, ov)) <= best + 1e-9
                       for layer in range(4) for l2 in (1e-3, 1e-2, 1e-1) for ov in (False, True))
    dev_choices = {choose_head(*split, model_id="m", threshold_rule="out_of_fold_budget").dev["dev_auc"]
                   for split in splits}
    assert len(dev_choices) == 2  # the dev-AUC choice does read which documents are dev
    for bad in ({"threshold_rule": "dev_largest_gap"}, {"threshold_rule": "out_of_fold_budget", "stacked": True}):
        with pytest.raises(ValueError, match="out-of-fold"):
            choose_head(*splits[0], model_id="m", choice="out_of_fold_auc", **bad)
    with pytest.raises(ValueError, match="choice"):
        choose_head(*splits[0], model_id="m", choice="largest")
    with pytest.raises(ValueError, match="answerability_choice"):
        config_for(TrainConfig, "smoke", answerability_choice="out_of_fold_auc")  # the default cut is dev's
    with pytest.raises(ValueError, match="answerability_choice"):
        config_for(TrainConfig, "smoke", answerability_choice="dev", answerability_threshold="out_of_fold_budget")
    assert config_for(TrainConfig, "smoke", answerability_choice="out_of_fold_catch",
                      answerability_threshold="out_of_fold_budget").answerability_choice == "out_of_fold_catch"


def test_the_stage_draws_the_out_of_fold_choices_folds_with_the_dev_seed(smoke_model, tmp_path, monkeypatch):
    """``train.answerability_choice`` through the select stage: the head records the choice and folds drawn with
    ``train.dev_seed``, so each recorded run's folds are its own draw."""
    import helpers.config
    from helpers.select.answerability_fit import fit_answerability_head

    monkeypatch.setattr(helpers.config, "cache_root", lambda: tmp_path / "cache")
    model, tokenizer = smoke_model
    train_cfg = config_for(TrainConfig, "smoke", answerability_choice="out_of_fold_auc", dev_seed=5,
                           answerability_threshold="out_of_fold_budget")
    DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:4])),
                 "test": Dataset.from_list(city_rows(CITIES[4:]))}).save_to_disk(train_cfg.pairs_dir)
    head = fit_answerability_head(config_for(ModelConfig, "smoke"), train_cfg, model, tokenizer)
    assert head.dev["choice"] == "out_of_fold_auc" and head.dev["fold_seed"] == 5
    assert "(seed 5)" in head.dev["rule"] and head.dev["dev_auc"] == max(head.dev["dev_auc_by_candidate"].values())


def test_a_windowed_head_reads_each_layer_averaged_with_its_neighbours_and_keeps_the_window(tmp_path):
    """``layer_window``: a label carried weakly by three neighbouring layers, each under its own noise, is read
    better from their mean than from any one of them; the head keeps the window, averages the states it scores the
    same way (also after a save and load), and says so."""
    from helpers.evaluate.answerability_head import describe_head, layer_window_mean

    fit, dev = _with_docs(_items(160, 41), 32), [dict(it, doc_id=f"v{i % 10}") for i, it in enumerate(_items(80, 42))]

    def states(items, seed):
        x = _states(items, seed, layers=6, signal_layer=0)
        x[:, 0, 0] -= torch.tensor([2.0 if it["answerable"] else -2.0 for it in items])  # no signal at layer 0
        x[:, 2:5, 0] += torch.tensor([0.7 if it["answerable"] else -0.7 for it in items]).reshape(-1, 1)
        return x

    fit_x, dev_x = states(fit, 43), states(dev, 44)
    single = choose_head(fit, fit_x, dev, dev_x, model_id="m")
    windowed = choose_head(fit, fit_x, dev, dev_x, model_id="m", layer_window=1)
    assert windowed.layer == 3 and windowed.layer_window == 1  # the middle of the three, reading all three
    assert windowed.dev["dev_auc"] > single.dev["dev_auc"]
    assert windowed.dev["rule"].startswith("the state of each layer averaged with the 1 layers on each side")
    assert "(mean of layers ±1)" in describe_head(windowed.summary())
    plain = dataclasses.replace(windowed, layer_window=0)
    assert windowed.scores(dev_x, dev) == pytest.approx(plain.scores(layer_window_mean(dev_x, 1), dev), abs=1e-6)
    loaded = AnswerabilityHead.load(windowed.save(tmp_path / "head.json"))
    assert loaded.layer_window == 1 and loaded.refuses(dev_x, dev) == windowed.refuses(dev_x, dev)
    with pytest.raises(ValueError, match="layer_window"):
        choose_head(fit, fit_x, dev, dev_x, model_id="m", layer_window=-1)
    with pytest.raises(ValueError, match="answerability_layer_window"):
        config_for(TrainConfig, "smoke", answerability_layer_window=-1)


def test_a_bagged_head_averages_heads_chosen_on_several_dev_splits_and_round_trips(tmp_path):
    """``choose_bagged`` (``train.answerability_dev_splits``): each head is chosen on its own dev split of the same
    prompts, the bagged score is the mean of theirs, the cut is the budget's on the mean of their out-of-fold scores
    over all the prompts, and the members survive a save and load; a cut that is not the out-of-fold budget, one
    head, or a config that asks for either is refused."""
    from helpers.evaluate.answerability_head import (
        budget_threshold,
        choose_bagged,
        describe_head,
        out_of_fold_scores,
    )

    prompts, x = _two_weak_layers(240, 48, 51)
    head = choose_bagged(prompts, x, "m", 5, 8, seed=3, threshold_rule="out_of_fold_budget", budget=0.06)
    heads = [dataclasses.replace(head, members=[]), *head.members]
    assert len(heads) == 5 and head.summary()["bagged_layers"] == [h.layer for h in heads]
    assert len(set(head.dev["bagged"]["dev_auc"])) > 1  # five dev splits, five different reads of them
    alone = [h.scores(x, prompts) for h in heads]
    assert head.scores(x, prompts) == pytest.approx([sum(c) / 5 for c in zip(*alone, strict=True)], abs=1e-9)
    oof = [out_of_fold_scores(h.design(x, prompts), prompts, h.l2) for h in heads]
    cut, rates = budget_threshold([sum(c) / 5 for c in zip(*oof, strict=True)], [it["answerable"] for it in prompts],
                                  0.06)
    assert head.threshold == cut and head.dev["out_of_fold_answerable_refused"] == rates["dev_answerable_refused"] <= 0.06
    assert head.dev["rule"].startswith("5 heads, each chosen on its own dev split of 8 documents")
    assert "averaged with the heads of 4 more dev splits" in describe_head(head.summary())
    loaded = AnswerabilityHead.load(head.save(tmp_path / "head.json"))
    assert len(loaded.members) == 4 and loaded.scores(x, prompts) == head.scores(x, prompts)
    assert loaded.refuses(x, prompts) == head.refuses(x, prompts)
    with pytest.raises(ValueError, match="out_of_fold_budget"):
        choose_bagged(prompts, x, "m", 5, 8, seed=3, threshold_rule="dev_largest_gap")
    with pytest.raises(ValueError, match="at least 2"):
        choose_bagged(prompts, x, "m", 1, 8, seed=3, threshold_rule="out_of_fold_budget")
    with pytest.raises(ValueError, match="stacked"):
        choose_bagged(prompts, x, "m", 5, 8, seed=3, threshold_rule="out_of_fold_budget", stacked=True)
    with pytest.raises(ValueError, match="answerability_dev_splits"):
        config_for(TrainConfig, "smoke", answerability_dev_splits=3, answerability_threshold="out_of_fold_budget",
                   answerability_stacked=True)
    with pytest.raises(ValueError, match="answerability_dev_splits"):
        config_for(TrainConfig, "smoke", answerability_dev_splits=3)  # the default cut is dev's
    with pytest.raises(ValueError, match="answerability_dev_splits"):
        config_for(TrainConfig, "smoke", answerability_dev_splits=0)


def test_the_stage_bags_heads_over_dev_splits_drawn_with_the_dev_seed(smoke_model, tmp_path, monkeypatch):
    """``train.answerability_dev_splits`` through the select stage: the saved head holds the other dev splits'
    heads, each split drawn from the training documents with ``train.dev_seed``, and evaluation's loader reads it."""
    import helpers.config
    from helpers.evaluate.answerability_head import head_path
    from helpers.select.answerability_fit import fit_answerability_head

    monkeypatch.setattr(helpers.config, "cache_root", lambda: tmp_path / "cache")
    model, tokenizer = smoke_model
    heads = []
    for seed in (5, 5, 6):
        train_cfg = config_for(TrainConfig, "smoke", answerability_dev_splits=2, dev_seed=seed,
                               answerability_threshold="out_of_fold_budget")
        DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:4])),
                     "test": Dataset.from_list(city_rows(CITIES[4:]))}).save_to_disk(train_cfg.pairs_dir)
        heads.append(fit_answerability_head(config_for(ModelConfig, "smoke"), train_cfg, model, tokenizer))
    assert len(heads[0].members) == 1 and heads[0].dev["bagged"]["heads"] == 2
    assert AnswerabilityHead.load(head_path()).summary()["bagged_layers"] == heads[2].summary()["bagged_layers"]
    assert heads[0].dev["bagged"] == heads[1].dev["bagged"]  # the same seed draws the same splits


def test_the_stage_adds_a_second_pairs_folders_training_prompts_to_the_fit_and_refuses_a_shared_document(
        smoke_model, tmp_path, monkeypatch):
    """``train.answerability_extra_fit_pairs``: the other folder's training prompts (never its test split) join the
    pool the bagged heads are drawn from, their states are read like the fit's, the head records them; a folder that
    shares a document with the main pairs (here a test document) stops before anything is fitted."""
    import helpers.config
    import helpers.select.answerability_fit as stage

    monkeypatch.setattr(helpers.config, "cache_root", lambda: tmp_path / "cache")
    model, tokenizer = smoke_model
    more = [("Lisbon", "Portugal", "Porto"), ("Athens", "Greece", "Patras"), ("Warsaw", "Poland", "Krakow")]
    extra_dir = tmp_path / "extra_pairs"
    DatasetDict({"train": Dataset.from_list(city_rows(more[:2])),
                 "test": Dataset.from_list(city_rows(more[2:]))}).save_to_disk(extra_dir)
    train_cfg = config_for(TrainConfig, "smoke", answerability_dev_splits=2, dev_seed=5,
                           answerability_threshold="out_of_fold_budget", answerability_surprisal=False,
                           answerability_extra_fit_pairs=str(extra_dir))
    DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:4])),
                 "test": Dataset.from_list(city_rows(CITIES[4:]))}).save_to_disk(train_cfg.pairs_dir)
    pools = []
    real = stage.choose_bagged
    monkeypatch.setattr(stage, "choose_bagged", lambda items, states, *a, **k: (
        pools.append((sorted({it["doc_id"] for it in items}), len(items), states.shape[0])),
        real(items, states, *a, **k))[1])
    head = stage.fit_answerability_head(config_for(ModelConfig, "smoke"), train_cfg, model, tokenizer)
    assert pools == [(sorted([c for c, _, _ in CITIES[:4]] + ["Lisbon", "Athens"]), 12, 12)]  # Warsaw is a test doc
    assert head.dev["extra_fit"]["prompts"] == 4 and head.dev["extra_fit"]["pairs"] == [str(extra_dir)]
    assert train_cfg.answerability_extra_fit_pairs == (str(extra_dir),)  # one folder may be given as a string

    # two folders: both join, in order; a document in both would be fitted twice, so that stops too
    DatasetDict({"train": Dataset.from_list(city_rows([("Dublin", "Ireland", "Cork")])),
                 "test": Dataset.from_list(city_rows([("Oslo", "Norway", "Bergen")]))}).save_to_disk(tmp_path / "second")
    items = stage.extra_fit_items([extra_dir, tmp_path / "second"], {"train": {"doc_id": ["Vienna"]}}, "main")
    assert list(dict.fromkeys(it["doc_id"] for it in items)) == ["Lisbon", "Athens", "Dublin"] and len(items) == 6
    DatasetDict({"train": Dataset.from_list(city_rows(more[:1])),
                 "test": Dataset.from_list(city_rows([("Oslo", "Norway", "Bergen")]))}).save_to_disk(
        tmp_path / "second_again")
    with pytest.raises(ValueError, match=r"second_again.*shares 1 document\(s\) with .*extra_pairs.*Lisbon"):
        stage.extra_fit_items([extra_dir, tmp_path / "second_again"], {"train": {"doc_id": []}}, "main")

    DatasetDict({"train": Dataset.from_list(city_rows([*more[:1], CITIES[4]])),
                 "test": Dataset.from_list(city_rows(more[2:]))}).save_to_disk(tmp_path / "shared")
    shared_cfg = dataclasses.replace(train_cfg, answerability_extra_fit_pairs=str(tmp_path / "shared"))
    with pytest.raises(ValueError, match=r"shares 1 document\(s\).*Vienna"):
        stage.fit_answerability_head(config_for(ModelConfig, "smoke"), shared_cfg, model, tokenizer)
    with pytest.raises(ValueError, match="without the request surprisal"):
        config_for(TrainConfig, "smoke", answerability_extra_fit_pairs=str(extra_dir), answerability_surprisal=True)
