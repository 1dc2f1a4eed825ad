"""Averaging a run's later checkpoints into the saved adapter (TrainConfig.average_checkpoints_from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers.config import TrainConfig, config_for, output_root
from helpers.train.checkpoint_average import average_state_dicts, checkpoints_from, load_adapter_weights


def test_mean_of_state_dicts_and_clear_errors():
    a = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([[0.0]])}
    b = {"x": torch.tensor([3.0, 6.0]), "y": torch.tensor([[2.0]])}
    mean = average_state_dicts([a, b])
    assert torch.equal(mean["x"], torch.tensor([2.0, 4.0])) and torch.equal(mean["y"], torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="different adapter weights"):
        average_state_dicts([a, {"x": b["x"]}])
    with pytest.raises(ValueError, match="shapes differ"):
        average_state_dicts([a, {"x": torch.zeros(3), "y": b["y"]}])
    with pytest.raises(ValueError, match="nothing to average"):
        average_state_dicts([])


def test_which_checkpoints_count(tmp_path):
    found = []
    for step in (25, 50, 75, 100):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if step != 75:  # a checkpoint without adapter weights is not averaged
            (folder / "adapter_model.safetensors").write_bytes(b"")
        found.append((step, folder))
    assert [s for s, _ in checkpoints_from(found, 100, 0.5)] == [50, 100]
    assert [s for s, _ in checkpoints_from(found, 100, 0.0)] == [25, 50, 100]
    assert [s for s, _ in checkpoints_from(found, 60, 0.5)] == [50]  # never a checkpoint after the run's end


def test_range_is_checked():
    with pytest.raises(ValueError, match="average_checkpoints_from"):
        config_for(TrainConfig, "smoke", average_checkpoints_from=1.5)


def test_saved_adapter_is_the_mean_of_the_later_checkpoints():
    from datasets import Dataset, DatasetDict

    from helpers.config import ModelConfig
    from helpers.train.dpo import run_dpo
    from tests.test_train import CITIES, city_rows

    pairs = DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:4])),
                         "test": Dataset.from_list(city_rows(CITIES[4:]))})
    train_cfg = config_for(TrainConfig, "smoke", max_steps=4, save_steps=1, save_total_limit=10, eval_steps=4,
                           measure_16bit_footprint=False, learning_rate=5e-3, average_checkpoints_from=0.5)
    run = run_dpo(config_for(ModelConfig, "smoke"), train_cfg, pairs)
    report = json.loads((output_root() / "train_report.json").read_text())
    assert report["averaged_checkpoints"] == {"from_fraction": 0.5, "steps": [2, 3, 4]}
    ckpt = Path(train_cfg.checkpoint_dir)
    members = [load_adapter_weights(ckpt / f"checkpoint-{s}") for s in (2, 3, 4)]
    saved = load_adapter_weights(Path(train_cfg.output_dir))
    assert saved.keys() == members[0].keys()
    key = next(k for k in saved if "lora_B" in k)
    assert not torch.allclose(members[0][key], members[2][key])  # the checkpoints do differ
    for name, value in saved.items():
        torch.testing.assert_close(value, sum(m[name] for m in members) / 3)
    assert run.averaged["steps"] == [2, 3, 4]
    # the step-4 eval scored the last weights, so the averaged adapter is evaluated again
    step4 = [e["eval_loss"] for e in report["log_history"] if e.get("step") == 4 and "eval_loss" in e]
    assert len(step4) == 2 and report["final_eval"]["loss"] == step4[1]
