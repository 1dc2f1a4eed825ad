"""Profile selection and config validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.config import (
    PROFILES,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    config_for,
    detect_profile,
    output_root,
)


def test_explicit_profile_wins_over_environment(monkeypatch):
    monkeypatch.setenv("GEMMA_FACTS_PROFILE", "smoke")
    assert detect_profile("local") == "local"
    assert detect_profile() == "smoke"


def test_default_profile_follows_cuda(monkeypatch):
    import helpers.config as config

    monkeypatch.delenv("GEMMA_FACTS_PROFILE", raising=False)
    monkeypatch.setattr(config, "cuda_available", lambda: True)
    assert config.detect_profile() == "colab"
    monkeypatch.setattr(config, "cuda_available", lambda: False)
    assert config.detect_profile() == "local"


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GEMMA_FACTS_PROFILE", "kaggle")
    with pytest.raises(ValueError, match="profile: unknown profile 'kaggle'"):
        detect_profile()


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_builds_every_stage(profile):
    for cls in (ModelConfig, DataConfig, TrainConfig, EvalConfig):
        cfg = config_for(cls, profile)
        assert cfg.profile == profile


def test_profiles_pick_sizes_and_models():
    colab, local, smoke = (config_for(ModelConfig, p) for p in PROFILES)
    assert colab.model_id == "google/gemma-2-2b-it" and colab.prompt_format == "chat"
    assert local.model_id == "embedded:gemma3-270m" and local.prompt_format == "plain"
    assert smoke.model_id == "tiny-random:gemma2"
    for cfg in (colab, local, smoke):
        assert cfg.load_in_4bit
    # Gemma 2 needs eager attention for its logit softcapping; Gemma 3 (local) has none and uses SDPA
    assert colab.attn_implementation == smoke.attn_implementation == "eager"
    assert local.attn_implementation == "sdpa"
    for cfg in (colab, local, smoke):
        assert set(cfg.lora_target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert colab.max_length == 512
    assert config_for(DataConfig, "colab").teacher == "gemini"
    assert config_for(DataConfig, "local").teacher == "offline"


def test_output_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_FACTS_OUTPUT", str(tmp_path / "x"))
    assert output_root() == tmp_path / "x"
    assert config_for(TrainConfig, "smoke").output_dir == str(tmp_path / "x" / "adapter")


@pytest.mark.parametrize(
    ("cls", "field", "value", "message"),
    [
        (ModelConfig, "max_length", -1, r"ModelConfig.max_length must be > 0"),
        (ModelConfig, "prompt_format", "xml", r"ModelConfig.prompt_format must be one of"),
        (ModelConfig, "lora_dropout", 1.5, r"ModelConfig.lora_dropout must be in"),
        (DataConfig, "max_length", 0, r"DataConfig.max_length must be > 0"),
        (DataConfig, "answer_budget", 600, r"DataConfig.answer_budget \(600\) must be smaller than max_length"),
        (DataConfig, "teacher", "gpt", r"DataConfig.teacher must be one of"),
        (DataConfig, "test_fraction", 1.0, r"DataConfig.test_fraction must be in"),
        (TrainConfig, "beta", -0.1, r"TrainConfig.beta must be > 0"),
        (TrainConfig, "loss_weights", (1.0,), r"TrainConfig.loss_weights needs one weight per loss_type"),
        (EvalConfig, "batch_size", 0, r"EvalConfig.batch_size must be > 0"),
        (EvalConfig, "judge", "human", r"EvalConfig.judge must be one of"),
    ],
)
def test_bad_values_name_the_field(cls, field, value, message):
    with pytest.raises(ValueError, match=message):
        config_for(cls, "smoke", **{field: value})


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['max_lenght'\]"):
        config_for(ModelConfig, "smoke", max_lenght=512)


@pytest.mark.parametrize("overlay", sorted((Path(__file__).resolve().parents[1] / "configs").glob("local_*.json")))
def test_every_local_overlay_builds_every_stage(overlay, monkeypatch):
    monkeypatch.setenv("GEMMA_FACTS_CONFIG", str(overlay))
    for cls in (ModelConfig, DataConfig, TrainConfig, EvalConfig):
        assert config_for(cls, "local") is not None


def test_the_whole_document_overlay_trains_on_what_the_test_split_shows(monkeypatch):
    # docs/local_results.md (issue 16, third pass): training and dev at the test budget, every split whole
    root = Path(__file__).resolve().parents[1]
    preset = config_for(DataConfig, "local")
    monkeypatch.setenv("GEMMA_FACTS_CONFIG", str(root / "configs" / "local_whole_documents.json"))
    whole = config_for(DataConfig, "local")
    assert preset.document_tokens < preset.test_document_tokens  # the default trains on 128-token excerpts
    assert (whole.document_tokens, whole.max_length) == (preset.test_document_tokens, preset.test_max_length)
    assert config_for(ModelConfig, "local").max_length == preset.test_max_length
