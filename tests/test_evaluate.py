"""Stage 03 end to end on the tiny smoke model with a tiny LoRA adapter made here (no training code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers.config import REFUSAL, EvalConfig, ModelConfig, config_for

CONTRACT_KEYS = {"base", "aligned", "relative_hallucination_reduction", "banana", "n_answerable",
                 "n_unanswerable", "judge", "model", "profile"}
RATE_KEYS = ("hallucination_rate", "over_refusal_rate", "grounded_accuracy", "refusal_precision",
             "refusal_recall", "refusal_f1")

@pytest.fixture(scope="module")
def inputs(tmp_path_factory, contract_docs, contract_pairs, adapter_factory) -> Path:
    """<root>/pairs (train/test split by document), <root>/adapter and a 3-row FACTS-schema held-out file."""
    from datasets import Dataset, DatasetDict

    root = tmp_path_factory.mktemp("stage03")
    rows = contract_pairs
    DatasetDict({"train": Dataset.from_list(rows[:3]), "test": Dataset.from_list(rows[3:])}).save_to_disk(
        str(root / "pairs"))
    adapter_factory(config_for(ModelConfig, "smoke"), root / "adapter")
    facts = [{"id": i, "system_instruction": "Answer briefly.", "user_request": q, "context_document": d}
             for i, (_, _, d, q, _, _) in enumerate(contract_docs)]
    (root / "facts.jsonl").write_text("\n".join(json.dumps(r) for r in facts), encoding="utf-8")
    return root


def eval_cfg_for(root: Path, **overrides) -> EvalConfig:
    paths = dict(pairs_dir=str(root / "pairs"), adapter_dir=str(root / "adapter"),
                 metrics_path=str(root / "out" / "metrics.json"),
                 generations_path=str(root / "out" / "generations.jsonl"))
    return config_for(EvalConfig, "smoke", **{**paths, **overrides})


@pytest.fixture(scope="module")
def run(inputs):
    """One full evaluation (held-out set + latency on), counting how often the model is loaded."""
    import helpers.models
    from helpers.evaluate.run import evaluate

    loads = []
    real_loader = helpers.models.load_model_and_tokenizer

    def counting_loader(cfg):
        loads.append(cfg.load_in_4bit)
        return real_loader(cfg)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(helpers.models, "load_model_and_tokenizer", counting_loader)
        cfg = eval_cfg_for(inputs, heldout_path=str(inputs / "facts.jsonl"), heldout_max_rows=3, latency_prompts=1)
        metrics = evaluate(config_for(ModelConfig, "smoke"), cfg)
    return metrics, cfg, loads


def test_metrics_json_has_the_contract_keys_and_rate_shapes(run):
    metrics, cfg, _ = run
    on_disk = json.loads(Path(cfg.metrics_path).read_text())
    assert CONTRACT_KEYS <= set(on_disk)
    assert on_disk["judge"] == "offline" and on_disk["profile"] == "smoke" and on_disk["model"] == "tiny-random:gemma2"
    # test split = documents d2, d3: 2 unique answerable prompts (hallucination + over_refusal merged) + 2 unanswerable
    assert (on_disk["n_answerable"], on_disk["n_unanswerable"]) == (2, 2)
    for side in ("base", "aligned"):
        for key in RATE_KEYS:
            entry = on_disk[side][key]
            assert set(entry) == {"value", "n", "ci95"}, key
        assert on_disk[side]["hallucination_rate"]["n"] == 2 and on_disk[side]["over_refusal_rate"]["n"] == 2
    assert set(on_disk["banana"]) >= {"document", "request", "base", "aligned"}
    assert on_disk["banana"]["request"] == "Are bananas blue?"
    base_h, aligned_h = (on_disk[s]["hallucination_rate"]["value"] for s in ("base", "aligned"))
    expected = None if base_h == 0 else (base_h - aligned_h) / base_h
    assert on_disk["relative_hallucination_reduction"] == expected


def test_the_model_is_loaded_once_for_both_sides(run):
    _, _, loads = run
    # one 4-bit load serves base and aligned; the only other load is the fp32 copy timed for latency
    assert loads == [True, False]


def test_latency_compares_4bit_with_fp32_on_cpu(run):
    metrics, _, _ = run
    latency = metrics["latency"]
    assert set(latency) >= {"4bit_nf4", "float32"}
    assert latency["4bit_nf4"]["weights_bytes"] < latency["float32"]["weights_bytes"]
    assert latency["4bit_nf4"]["ms_per_token"] > 0


def test_generations_jsonl_has_both_sides_and_verdicts_per_item(run):
    metrics, cfg, _ = run
    rows = [json.loads(line) for line in Path(cfg.generations_path).read_text().splitlines()]
    test_rows = [r for r in rows if r["set"] == "test"]
    assert len(test_rows) == metrics["n_answerable"] + metrics["n_unanswerable"]
    merged = next(r for r in test_rows if r["answerable"] and r["doc_id"] == "d2")
    assert sorted(merged["pair_type"]) == ["hallucination", "over_refusal"]
    for row in rows:
        for side in ("base", "aligned"):
            assert isinstance(row[side]["answer"], str)
            assert set(row[side]["offline"]) >= {"refused", "answered", "supported", "grounded_correct"}
    assert len({r["id"] for r in rows}) == len(rows)


def test_rates_on_reviewed_labels_count_only_the_prompts_both_readers_confirmed(inputs, tmp_path):
    """A review that leaves one answerable prompt out (a reader said "partly"): evaluation reports the rates on
    the rest, equal to the rates recomputed from generations.jsonl without that prompt, and the table shows them."""
    from datasets import load_from_disk

    from helpers.evaluate.label_review import item_key
    from helpers.evaluate.run import eval_items, evaluate
    from helpers.evaluate.tables import impact_table

    items = eval_items(list(load_from_disk(str(inputs / "pairs"))["test"]), None, 42)
    left_out = next(it["id"] for it in items if it["answerable"])
    review = {"items": [{"id": it["id"], "key": item_key(it["request"], it["document"]), "kind": it["source"][0],
                         "answerable": it["answerable"],
                         "readings": [{"reader": r, "reason": "read", "verdict": "partly" if it["id"] == left_out
                                       else "answerable" if it["answerable"] else "not answerable"}
                                      for r in ("A1", "B1")]} for it in items]}
    (tmp_path / "review.json").write_text(json.dumps(review), encoding="utf-8")
    cfg = eval_cfg_for(inputs, label_review=str(tmp_path / "review.json"), latency_prompts=0,
                       metrics_path=str(tmp_path / "m.json"), generations_path=str(tmp_path / "g.jsonl"))
    metrics = evaluate(config_for(ModelConfig, "smoke"), cfg)
    reviewed = metrics["reviewed_labels"]
    assert reviewed["applied"] and reviewed["kept"] == len(items) - 1
    assert (reviewed["n_answerable"], reviewed["n_unanswerable"]) == (metrics["n_answerable"] - 1,
                                                                       metrics["n_unanswerable"])
    rows = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["set"] == "test" and r["answerable"] and r["id"] != left_out]
    for side in ("base", "aligned"):
        refused = sum(r[side]["offline"]["refused"] for r in kept)
        assert reviewed[side]["over_refusal_rate"]["value"] == pytest.approx(refused / len(kept))
        assert reviewed[side]["hallucination_rate"] == metrics[side]["hallucination_rate"]  # nothing left out there
    assert "keep their label" in impact_table(metrics)


def test_heldout_set_is_reported_separately(run):
    metrics, _, _ = run
    held = metrics["heldout_2"]
    # 3 FACTS rows -> 3 requests with their own document + the same 3 with the next row's document
    assert (held["n_answerable"], held["n_unanswerable"]) == (3, 3)
    assert held["base"]["hallucination_rate"]["n"] == 3


def test_breakdowns_probes_and_examples(run):
    metrics, _, _ = run
    by_type = metrics["breakdowns"]["aligned"]["pair_type"]
    assert set(by_type) == {"hallucination", "over_refusal", "unanswerable"}
    assert by_type["unanswerable"]["hallucination_rate"]["n"] == 2
    assert [p["name"] for p in metrics["probes"]["base"]][0] == "banana"
    assert 0 < len(metrics["examples"]) <= 2


def test_report_tables_and_figures_from_metrics(run, tmp_path):
    from helpers.evaluate.plots import evaluation_figures
    from helpers.evaluate.tables import banana_table, breakdown_table, impact_table, probes_table

    metrics, _, _ = run
    table = impact_table(metrics)
    assert table.splitlines()[0] == "| Metric | Base | Aligned (Gemma-Facts) | Change |"
    assert "Hallucination rate" in table and "(n=2)" in table
    assert "Apples are red." in banana_table(metrics) and "| Aligned (Gemma-Facts) |" in banana_table(metrics)
    assert probes_table(metrics).count("\n") == len(metrics["probes"]["base"]) + 1
    assert "unanswerable" in breakdown_table(metrics)
    figures = evaluation_figures(metrics, folder=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {f"{name}.png" for name in figures}


def test_adapter_toggle_changes_logits_and_disabled_equals_base(inputs, smoke_model):
    from helpers.evaluate.run import load_aligned_model, side_of

    base_model, tokenizer = smoke_model
    model, _ = load_aligned_model(config_for(ModelConfig, "smoke"), inputs / "adapter")
    enc = tokenizer(["Apples are red. Are bananas blue?"], return_tensors="pt")
    with torch.inference_mode():
        plain = base_model(**enc).logits
        with side_of(model, "base"):
            disabled = model(**enc).logits
        with side_of(model, "aligned"):
            enabled = model(**enc).logits
    assert torch.allclose(disabled, plain, atol=1e-5)  # adapter off = the same base weights
    assert not torch.allclose(enabled, disabled, atol=1e-3)  # the (perturbed) adapter really acts
    with torch.inference_mode(), side_of(base_model, "base"):  # no adapter: the model is its own base
        assert torch.allclose(base_model(**enc).logits, plain, atol=1e-6)  # the same pass repeated: float-equal
    with pytest.raises(ValueError, match="side must be one of"):
        with side_of(model, "reference"):
            pass


def test_eval_items_dedupe_and_cap_per_side(contract_pairs):
    from helpers.evaluate.run import eval_items

    rows = contract_pairs
    items = eval_items(rows)
    # 3 documents x (1 answerable prompt from 2 pairs + 1 unanswerable prompt)
    assert len(items) == 6 and sum(i["answerable"] for i in items) == 3
    capped = eval_items(rows, max_examples=1, seed=0)
    assert sum(i["answerable"] for i in capped) == 1 and sum(not i["answerable"] for i in capped) == 1
    assert capped == eval_items(rows, max_examples=1, seed=0)  # seeded
    # the request with its answer cut out of the document is an unanswerable kind of its own (issue 16)
    removed = [dict(r, source="answer_removed", answerable=False, reference=REFUSAL, document="cut",
                    chosen=[{"role": "assistant", "content": REFUSAL}]) for r in rows if r["source"] == "teacher"]
    with_removed = eval_items(rows + removed)
    assert len(with_removed) == len(items) + len(removed)
    assert sum(i["source"] == ["answer_removed"] for i in with_removed) == len(removed)
    # a cap takes the unanswerable kinds in turn: one of each kind before a second of any
    kinds = [i["source"][0] for i in eval_items(rows + removed, max_examples=2, seed=0) if not i["answerable"]]
    assert sorted(kinds) == sorted({i["source"][0] for i in with_removed if not i["answerable"]})


def test_long_heldout_documents_are_cut_to_fit_the_token_budget(smoke_model, tmp_path):
    from helpers.evaluate.run import heldout_items
    from helpers.prompts import render_prompt

    _, tokenizer = smoke_model
    filler = " ".join(["Apples are red and pears are green."] * 150)  # ~1,000 words, far over 256 tokens
    rows = [{"id": "a", "user_request": "How long is the bridge?",
             "context_document": f"{filler} The bridge is 42 metres long. {filler}"},
            {"id": "b", "user_request": "Who built the tower?", "context_document": "The tower was built in 1900."}]
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    model_cfg = config_for(ModelConfig, "smoke")
    eval_cfg = config_for(EvalConfig, "smoke")
    items = heldout_items(path, tokenizer, model_cfg, eval_cfg)
    assert [(i["request"], i["answerable"]) for i in items] == [
        ("How long is the bridge?", True), ("How long is the bridge?", False),
        ("Who built the tower?", True), ("Who built the tower?", False)]
    own = items[0]
    assert "42 metres" in own["document"]  # BM25 kept the relevant passage
    assert items[1]["document"] == "The tower was built in 1900."  # the next row's document: unanswerable
    for item in items:
        prompt_ids = tokenizer(render_prompt(item["prompt"], "chat", tokenizer), add_special_tokens=False)["input_ids"]
        assert len(prompt_ids) + eval_cfg.max_new_tokens <= model_cfg.max_length
    with pytest.raises(ValueError, match="heldout_path"):
        path.write_text(json.dumps(rows[0]), encoding="utf-8")
        heldout_items(path, tokenizer, model_cfg, eval_cfg)


def test_missing_inputs_name_the_notebook_that_makes_them(inputs, tmp_path):
    from helpers.evaluate.run import evaluate

    model_cfg = config_for(ModelConfig, "smoke")
    with pytest.raises(FileNotFoundError, match="notebook 01"):
        evaluate(model_cfg, eval_cfg_for(inputs, pairs_dir=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        evaluate(model_cfg, eval_cfg_for(inputs, adapter_dir=str(tmp_path / "nope")))


def test_eval_config_validation():
    with pytest.raises(ValueError, match="EvalConfig.judge"):
        config_for(EvalConfig, "smoke", judge="human")
    with pytest.raises(ValueError, match="EvalConfig.latency_prompts"):
        config_for(EvalConfig, "smoke", latency_prompts=-1)
    with pytest.raises(ValueError, match="EvalConfig.min_reference_recall"):
        config_for(EvalConfig, "smoke", min_reference_recall=1.5)


def test_cli_writes_metrics_into_the_output_root(inputs, _isolated_outputs, capsys):
    import shutil

    from helpers.evaluate.run import main

    for name in ("pairs", "adapter"):
        shutil.copytree(inputs / name, _isolated_outputs / name)
    metrics = main(["--profile", "smoke", "--max-examples", "1", "--no-latency"])
    assert (metrics["n_answerable"], metrics["n_unanswerable"]) == (1, 1) and "latency" not in metrics
    saved = json.loads((_isolated_outputs / "metrics.json").read_text())
    assert saved["command"].startswith("python -m helpers.evaluate --profile smoke")
    assert "| Metric | Base | Aligned (Gemma-Facts) | Change |" in capsys.readouterr().out
