"""Early stopping on dev (helpers.select.dev_choice, TrainConfig.select_dev_documents)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from helpers.config import ModelConfig, TrainConfig, config_for, output_root
from helpers.select.dev_choice import (
    choose_checkpoint,
    dev_errors,
    refusal_gap,
    refusal_independence_p,
    sensitivity,
)
from helpers.train.checkpoint_average import later_weights as candidates
from helpers.train.checkpoint_average import load_adapter_weights
from helpers.train.dpo import dev_split
from tests.test_train import CITIES, city_rows


def point(step: int, hallucinations: int, over_refusals: int, answerable: int = 20, unanswerable: int = 20) -> dict:
    """A curve entry as ``dev_errors`` counts it, from its two error counts (20 + 20 dev requests by default)."""
    refused = [i < over_refusals for i in range(answerable)] + [i >= hallucinations for i in range(unanswerable)]
    return {"step": step, "errors": dev_errors(refused, [True] * answerable + [False] * unanswerable)}


BASE = point(0, 20, 0)["errors"]


def test_rule_counts_both_errors_and_prefers_the_later_step_on_a_tie():
    curve = [point(60, 19, 0), point(80, 4, 3), point(100, 5, 2)]
    assert choose_checkpoint(curve, BASE, 2)["step"] == 100  # 7 errors each: the later one
    assert choose_checkpoint(curve[:2], BASE, 2)["step"] == 80
    with pytest.raises(ValueError, match="nothing to choose"):
        choose_checkpoint([], BASE, 2)


def test_rule_never_keeps_a_checkpoint_no_better_than_the_base():
    # the newcomer's machine (issue 16): step 60 had not learned (base-like), later steps refused more
    untrained = point(60, 20, 0)
    assert choose_checkpoint([untrained], BASE, 2) is None
    assert choose_checkpoint([point(60, 19, 0)], BASE, 2) is None  # one request better: within the noise
    assert choose_checkpoint([point(80, 2, 17)], BASE, 2) is None  # fewer hallucinations, as many errors
    assert choose_checkpoint([untrained, point(80, 10, 2)], BASE, 2)["step"] == 80


def test_sensitivity_flips_every_verdict_once():
    answerable = [True] * 4 + [False] * 6
    base = [False] * 10  # answers everything: 6 hallucinations
    strong = [False] * 4 + [True] * 6  # refuses exactly the unanswerable ones: 0 errors
    weak = [False] * 4 + [True] * 3 + [False] * 3  # 3 hallucinations
    out = sensitivity({"base": base, 80: weak, 100: strong}, answerable, min_gain=2)
    assert out["single_flips"] == 30
    # balanced over 4 + 6 requests: an unanswerable error weighs 5/6, an answerable one 5/4
    assert out["errors_gap_to_runner_up"] == 2.5 and out["errors_below_base"] == 5
    assert out["single_flips_changing_choice"] == 0  # a gap of 3 hallucinations cannot close with one verdict
    close = [False] * 4 + [True] * 5 + [False]  # 1 error, and the later step: ties go to it
    tight = sensitivity({"base": base, 80: strong, 100: close}, answerable, min_gain=2)
    # close's one wrong verdict, or any of strong's ten, turns the choice: 11 of 30
    assert tight["single_flips_changing_choice"] == 11 and tight["errors_gap_to_runner_up"] == 0.833
    assert dev_errors(weak, answerable) == {"hallucinations": 3, "over_refusals": 0, "errors": 3, "answerable": 4,
                                            "unanswerable": 6, "balanced_errors": 2.5}  # 3/6 x (4 + 6) / 2


def test_rule_weighs_both_sides_alike_so_refusing_more_is_no_gain():
    # whole dev documents (results/dev_whole_documents.json): 40 answerable, 48 unanswerable requests; the base
    # answered 46 unanswerable and refused 3 answerable, seed 42's step 80 refused half of both kinds
    base = point(0, 46, 3, answerable=40, unanswerable=48)["errors"]
    dial = point(80, 22, 22, answerable=40, unanswerable=48)
    assert dial["errors"]["errors"] <= base["errors"] - 2  # the raw count would keep this refusal dial
    gap = refusal_gap(dial["errors"])
    assert gap == pytest.approx(26 / 48 - 22 / 40, abs=1e-4)  # unanswerable refused − answerable refused
    assert dial["errors"]["balanced_errors"] == pytest.approx((1 - gap) * 44, abs=2e-3)  # 1 − gap, in requests
    assert choose_checkpoint([dial], base, 2) is None  # weighted, it is no better than the base
    refuses_all = point(100, 0, 40, answerable=40, unanswerable=48)
    assert refuses_all["errors"]["balanced_errors"] == 44.0  # the mean side size, like any blind refusal rate
    assert choose_checkpoint([refuses_all], base, 2) is None
    tells_apart = point(60, 20, 10, answerable=40, unanswerable=48)  # refuses 58% of unanswerable, 25% of answerable
    assert choose_checkpoint([dial, tells_apart, refuses_all], base, 2)["step"] == 60
    with pytest.raises(ValueError, match="answerable and unanswerable"):
        dev_errors([True, False], [True, True])


def test_refusal_independence_p_is_the_share_of_label_blind_refusals_at_least_as_lopsided():
    # checked against every way of spreading the same number of refusals over 4 answerable + 5 unanswerable requests
    from itertools import combinations

    answerable = [True] * 4 + [False] * 5
    for refused_idx in [(5, 6, 7, 8), (0, 5, 6, 7, 8), (0, 1, 5), (0, 1, 2, 3), (4, 5)]:
        refused = [i in refused_idx for i in range(9)]
        observed = sum(refused[4:])
        spreads = list(combinations(range(9), len(refused_idx)))
        share = sum(sum(1 for i in c if i >= 4) >= observed for c in spreads) / len(spreads)
        assert refusal_independence_p(dev_errors(refused, answerable)) == pytest.approx(share, abs=1e-6)


def test_rechoose_reads_a_recorded_selection_as_the_rule_reads_fresh_verdicts():
    from helpers.select.dev_choice import rechoose

    base = point(0, 46, 3, answerable=40, unanswerable=48)
    curve = [point(60, 21, 21, answerable=40, unanswerable=48), point(80, 16, 8, answerable=40, unanswerable=48)]
    record = {"dev_answerable": 40, "dev_unanswerable": 48, "base": {"errors": {"hallucinations": 46, "over_refusals": 3}},
              "curve": [{"step": p["step"], "errors": {k: p["errors"][k] for k in ("hallucinations", "over_refusals")}}
                        for p in curve]}
    assert rechoose(record, 2, 1.0) == choose_checkpoint(curve, base["errors"], 2)["step"] == 80
    record["curve"] = record["curve"][:1]
    assert rechoose(record, 2, 1.0) == 60 and rechoose(record, 2, 0.05) is None


def test_rule_wants_refusals_that_follow_the_document_not_only_a_margin():
    # seed 42 trained on whole documents (docs/local_results.md): its step 60 refused 27 of 48
    # unanswerable and 21 of 40 answerable dev requests, 3.1 balanced errors below the base's 45.5
    base = point(0, 46, 3, answerable=40, unanswerable=48)["errors"]
    blind = point(60, 21, 21, answerable=40, unanswerable=48)
    assert refusal_independence_p(blind["errors"]) > 0.4  # as lopsided as label-blind refusals often are
    assert choose_checkpoint([blind], base, 2)["step"] == 60  # the margin alone keeps it
    assert choose_checkpoint([blind], base, 2, max_p=0.05) is None
    follows = point(80, 16, 8, answerable=40, unanswerable=48)  # refuses 67% of unanswerable, 20% of answerable
    assert refusal_independence_p(follows["errors"]) < 0.001
    assert choose_checkpoint([blind, follows], base, 2, max_p=0.05)["step"] == 80


def test_dev_split_moves_whole_documents_the_same_way_each_time():
    train = Dataset.from_list(city_rows(CITIES))
    kept, dev = dev_split(train, 2, seed=42)
    assert len(set(dev["doc_id"])) == 2 and len(kept) + len(dev) == len(train)
    assert not set(kept["doc_id"]) & set(dev["doc_id"])
    again_kept, again_dev = dev_split(train, 2, seed=42)
    assert again_dev["doc_id"] == dev["doc_id"] and again_kept["doc_id"] == kept["doc_id"]
    with pytest.raises(ValueError, match="would leave no training document"):
        dev_split(train, len(CITIES), seed=42)


def test_candidates_are_the_later_checkpoints_and_the_final_weights(tmp_path):
    found = [(s, tmp_path / f"checkpoint-{s}") for s in (20, 40, 60, 80)]
    for _, folder in found:  # checkpoints that hold adapter weights
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"")
    assert [s for s, _ in candidates(found, 80, 0.6)] == [60, 80]  # 80 is saved: no extra entry
    assert [(s, p) for s, p in candidates(found, 90, 0.5)][-1] == (90, None)  # unsaved end: the live weights
    assert [s for s, _ in candidates(found, 90, 0.5)] == [60, 80, 90]


def test_config_checks():
    with pytest.raises(ValueError, match="select_dev_documents"):
        config_for(TrainConfig, "smoke", select_dev_documents=-1)
    with pytest.raises(ValueError, match="not both"):
        config_for(TrainConfig, "smoke", select_dev_documents=2, average_checkpoints_from=0.5)
    with pytest.raises(ValueError, match="select_max_p"):
        config_for(TrainConfig, "smoke", select_max_p=0)
    with pytest.raises(ValueError, match="select_from_fraction"):
        config_for(TrainConfig, "smoke", select_dev_documents=2, select_from_fraction=1.5)


def test_training_then_selection_keeps_the_checkpoint_chosen_on_dev(capsys):
    from helpers.select.dev_choice import select_on_dev
    from helpers.train.dpo import run_dpo
    from helpers.train.model_card import render_model_card

    pairs = DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:5])),
                         "test": Dataset.from_list(city_rows(CITIES[5:]))})
    model_cfg = config_for(ModelConfig, "smoke")
    train_cfg = config_for(TrainConfig, "smoke", max_steps=4, save_steps=1, save_total_limit=10, eval_steps=10,
                           measure_16bit_footprint=False, learning_rate=5e-3, select_dev_documents=2,
                           select_from_fraction=0.5, select_max_new_tokens=4,
                           select_max_p=1.0)  # 2 + 2 dev requests can never reach p <= 0.05
    pairs.save_to_disk(train_cfg.pairs_dir)
    run = run_dpo(model_cfg, train_cfg)
    report_path = output_root() / "train_report.json"
    report = json.loads(report_path.read_text())
    assert report["data"]["train"]["documents"] == 3 and report["data"]["dev"]["documents"] == 2
    assert report["checkpoint_selection"] is None  # training alone keeps the last weights
    ckpt = Path(train_cfg.checkpoint_dir)
    final = load_adapter_weights(Path(train_cfg.output_dir))
    torch.testing.assert_close(final, load_adapter_weights(ckpt / "checkpoint-4"))  # the end is checkpointed

    selection = select_on_dev(model_cfg, train_cfg, into=run.trainer.model)
    assert [p["step"] for p in selection["curve"]] == [2, 3, 4]
    assert selection["final_step"] == 4
    assert selection["dev_answerable"] == 2 and selection["dev_unanswerable"] == 2
    picked = choose_checkpoint(selection["curve"], selection["base"]["errors"], train_cfg.select_min_gain,
                               train_cfg.select_max_p)
    assert selection["chosen_step"] == (picked["step"] if picked else None)
    assert selection["beats_base"] is (picked is not None)
    saved = load_adapter_weights(Path(train_cfg.output_dir))
    key = next(k for k in saved if "lora_B" in k)
    if selection["beats_base"]:
        chosen = load_adapter_weights(ckpt / f"checkpoint-{selection['chosen_step']}")
        other = load_adapter_weights(ckpt / ("checkpoint-2" if selection["chosen_step"] != 2 else "checkpoint-4"))
        assert not torch.allclose(chosen[key], other[key])  # the candidates differ, so the check below can fail
        for name, value in saved.items():
            torch.testing.assert_close(value, chosen[name])
    else:  # the base itself: every LoRA B is zero, so the adapted model computes what the base does
        assert not torch.count_nonzero(final[key]) == 0  # the trained weights were not zero to begin with
        assert all(torch.count_nonzero(v) == 0 for k, v in saved.items() if "lora_B" in k)
        model = run.trainer.model
        ids = torch.tensor([[2, 5, 9, 14, 3]])
        with torch.no_grad():
            adapted = model(input_ids=ids).logits
            with model.disable_adapter():
                base_logits = model(input_ids=ids).logits
        torch.testing.assert_close(adapted, base_logits, rtol=0, atol=0)  # B = 0 adds exactly 0
    from peft import get_peft_model_state_dict

    live = get_peft_model_state_dict(run.trainer.model)  # the model in memory follows the choice
    for name, value in saved.items():
        torch.testing.assert_close(live[name].float().cpu(), value.float().cpu())
    report = json.loads(report_path.read_text())
    assert report["checkpoint_selection"]["chosen_step"] == selection["chosen_step"]
    card = (Path(train_cfg.output_dir) / "README.md").read_text()
    assert card == render_model_card(report)
    assert (f"step {selection['chosen_step']} of 4" if selection["beats_base"] else "the base") in card
    # a second call reads the checkpoints again, so it makes the same choice from the same rates
    again = select_on_dev(model_cfg, train_cfg)
    assert again["curve"] == selection["curve"] and again["chosen_step"] == selection["chosen_step"]
    # without the final checkpoint the adapter folder may hold a chosen step, not the end: refuse to guess
    import shutil

    shutil.rmtree(ckpt / "checkpoint-4")
    with pytest.raises(ValueError, match="cannot be remade"):
        select_on_dev(model_cfg, train_cfg)


def test_selection_is_a_no_op_when_off(capsys):
    from helpers.select.dev_choice import select_on_dev

    assert select_on_dev(config_for(ModelConfig, "smoke"), config_for(TrainConfig, "smoke")) is None
    assert "select_dev_documents is 0" in capsys.readouterr().out


def test_selection_cannot_be_combined_with_push_or_merge():
    with pytest.raises(ValueError, match="after that step"):
        config_for(TrainConfig, "smoke", select_dev_documents=2, merge_and_save_16bit=True)
