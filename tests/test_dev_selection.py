"""Early stopping on dev (helpers.select.dev_choice, TrainConfig.select_dev_documents)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from helpers.config import ModelConfig, TrainConfig, config_for, output_root
from helpers.select.dev_choice import choose_checkpoint, dev_errors, sensitivity
from helpers.train.checkpoint_average import later_weights as candidates
from helpers.train.checkpoint_average import load_adapter_weights
from helpers.train.dpo import dev_split
from tests.test_train import CITIES, city_rows


def point(step: int, hallucinations: int, over_refusals: int) -> dict:
    return {"step": step, "errors": {"hallucinations": hallucinations, "over_refusals": over_refusals,
                                     "errors": hallucinations + over_refusals}}


BASE = {"hallucinations": 20, "over_refusals": 0, "errors": 20}


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
    assert out["errors_gap_to_runner_up"] == 3 and out["errors_below_base"] == 6
    assert out["single_flips_changing_choice"] == 0  # a gap of 3 errors cannot close with one verdict
    close = [False] * 4 + [True] * 5 + [False]  # 1 error, and the later step: ties go to it
    tight = sensitivity({"base": base, 80: strong, 100: close}, answerable, min_gain=2)
    # close's one wrong verdict, or any of strong's ten, turns the choice: 11 of 30
    assert tight["single_flips_changing_choice"] == 11 and tight["errors_gap_to_runner_up"] == 1
    assert dev_errors(weak, answerable) == {"hallucinations": 3, "over_refusals": 0, "errors": 3}


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
                           select_from_fraction=0.5, select_max_new_tokens=4)
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
    picked = choose_checkpoint(selection["curve"], selection["base"]["errors"], train_cfg.select_min_gain)
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
