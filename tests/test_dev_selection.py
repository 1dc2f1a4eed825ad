"""Early stopping on dev (helpers.select.dev_choice, TrainConfig.select_dev_documents)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from helpers.config import ModelConfig, TrainConfig, config_for, output_root
from helpers.select.dev_choice import choose_checkpoint
from helpers.train.checkpoint_average import later_weights as candidates
from helpers.train.checkpoint_average import load_adapter_weights
from helpers.train.dpo import dev_split
from tests.test_train import CITIES, city_rows


def point(step: int, hallucination: float, over_refusal: float) -> dict:
    return {"step": step, "aligned": {"hallucination_rate": hallucination, "over_refusal_rate": over_refusal}}


def test_rule():
    curve = [point(25, 0.9, 0.0), point(50, 0.05, 0.4), point(75, 0.2, 0.04), point(100, 0.2, 0.0)]
    assert choose_checkpoint(curve, 0.05)["step"] == 100  # lowest hallucination under the cap, later on a tie
    assert choose_checkpoint(curve, 0.5)["step"] == 50
    assert choose_checkpoint([point(25, 0.9, 0.3), point(50, 0.5, 0.2)], 0.05)["step"] == 50  # none qualifies
    with pytest.raises(ValueError, match="nothing to choose"):
        choose_checkpoint([], 0.05)


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
    assert selection["chosen_step"] == choose_checkpoint(selection["curve"], train_cfg.select_max_over_refusal)["step"]
    saved = load_adapter_weights(Path(train_cfg.output_dir))
    chosen = load_adapter_weights(ckpt / f"checkpoint-{selection['chosen_step']}")
    other = load_adapter_weights(ckpt / ("checkpoint-2" if selection["chosen_step"] != 2 else "checkpoint-4"))
    key = next(k for k in saved if "lora_B" in k)
    assert not torch.allclose(chosen[key], other[key])  # the candidates differ, so the check below can fail
    for name, value in saved.items():
        torch.testing.assert_close(value, chosen[name])
    from peft import get_peft_model_state_dict

    live = get_peft_model_state_dict(run.trainer.model)  # the model in memory follows the choice
    for name, value in saved.items():
        torch.testing.assert_close(live[name].float().cpu(), value.float().cpu())
    report = json.loads(report_path.read_text())
    assert report["checkpoint_selection"]["chosen_step"] == selection["chosen_step"]
    card = (Path(train_cfg.output_dir) / "README.md").read_text()
    assert card == render_model_card(report) and f"step {selection['chosen_step']} of 4" in card
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
