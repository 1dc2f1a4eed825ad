"""The adapter's model card: right facts, runnable usage code, never a secret."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import pytest
from gemini_server import FAKE_API_KEY

from helpers.config import REFUSAL, ModelConfig, TrainConfig, config_for

FAKE_HF_TOKEN = "hf_" + "A1b2C3d4E5" * 3  # shaped like a real token: hf_ + 30 alphanumerics
FAKE_GOOGLE_KEY = FAKE_API_KEY  # key-shaped (helpers.secrets redacts it), derived in the fake server module


def fake_report(model_id: str = "google/gemma-2-2b-it", prompt_format: str = "chat", **extra) -> dict:
    """A train report as ``helpers.train.report.build_train_report`` writes it, with round numbers."""
    model_cfg = config_for(ModelConfig, "smoke", model_id=model_id, prompt_format=prompt_format)
    report = {
        "profile": "colab", "model_id": model_id, "date": "2026-01-02T03:04:05+00:00", "steps": 120,
        "seconds_per_step": 4.25, "machine": {"gpu": "Tesla T4"},
        "final_train": {"loss": 0.41, "rewards/margins": 1.5, "rewards/accuracies": 0.875},
        "final_eval": {"loss": 0.52, "rewards/margins": 1.25, "rewards/accuracies": 0.8125},
        "peak_memory": {"kind": "cuda_max_memory_allocated", "bytes": 6 * 1024**3},
        "weight_footprint": {"4bit_bytes": 2 * 1024**3, "16bit_bytes": 5 * 1024**3, "16bit_dtype": "float16"},
        "precision": {"fp16": True, "bf16": False},
        "data": {"train": {"pairs": 40, "documents": 10, "pair_types": {"hallucination": 25, "unanswerable": 15}},
                 "test": {"pairs": 8, "documents": 2, "pair_types": {"unanswerable": 8}}},
        "config": {"model": dataclasses.asdict(model_cfg),
                   "train": dataclasses.asdict(config_for(TrainConfig, "colab"))},
    }
    report.update(extra)
    return report


def test_card_states_base_data_config_and_metrics():
    from helpers.train.model_card import render_model_card

    card = render_model_card(fake_report())
    assert card.startswith("---\n") and "base_model: google/gemma-2-2b-it" in card
    assert "library_name: peft" in card and REFUSAL in card
    assert "**train**: 40 pairs from 10 documents (hallucination 25, unanswerable 15)" in card
    assert "| rewards/accuracies | 0.875 | 0.8125 |" in card
    assert "1.0×sigmoid + 0.2×sft" in card and "fp16" in card
    assert "2.00 GiB in 4-bit nf4 vs 5.00 GiB in float16" in card  # from the measured footprint
    assert "## Limits" in card and "over-refusal" in card
    assert "weights kept" not in card and "**dev**" not in card


def test_card_names_the_checkpoint_chosen_on_dev():
    from helpers.train.model_card import render_model_card

    report = fake_report(checkpoint_selection={"chosen_step": 90, "final_step": 108, "dev_documents": 8,
                                               "rule": "lowest dev hallucination"})
    report["data"]["dev"] = {"pairs": 12, "documents": 8, "pair_types": {"unanswerable": 12}}
    card = render_model_card(report)
    assert "| weights kept | step 90 of 108, chosen on 8 held-out training documents (lowest dev hallucination) |" in card
    assert "**dev**: 12 pairs from 8 documents" in card


def test_offline_bases_get_no_hub_front_matter():
    from helpers.train.model_card import render_model_card

    card = render_model_card(fake_report(model_id="embedded:gemma3-270m", prompt_format="plain"))
    assert "base_model:" not in card and "Gemma 3 270M" in card


def test_card_never_contains_a_secret(monkeypatch):
    from helpers.train.model_card import render_model_card

    monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_GOOGLE_KEY)
    report = fake_report()
    report["config"]["train"]["hub_repo_id"] = FAKE_HF_TOKEN  # a user pasting the token in the wrong field
    report["data"]["pairs_dir"] = f"/tmp/{FAKE_GOOGLE_KEY}/pairs"
    report["model_id"] = f"google/gemma-2-2b-it?key={FAKE_GOOGLE_KEY}"
    card = render_model_card(report)
    assert FAKE_HF_TOKEN not in card and FAKE_GOOGLE_KEY not in card
    assert "***" in card  # scrubbed, not silently dropped


def test_write_model_card_replaces_the_peft_template(tmp_path):
    from helpers.train.model_card import write_model_card

    (tmp_path / "README.md").write_text("# Model Card for Model ID\n<!-- Provide a quick summary -->")
    path = write_model_card(tmp_path, fake_report())
    assert "Model Card for Model ID" not in path.read_text() and "gemma-facts DPO adapter" in path.read_text()


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
def test_usage_snippet_runs_on_the_smoke_adapter(tmp_path, prompt_format):
    from peft import get_peft_model

    from helpers.models import load_model_and_tokenizer, lora_config
    from helpers.train.model_card import usage_snippet

    model_cfg = config_for(ModelConfig, "smoke", load_in_4bit=False, prompt_format=prompt_format)
    base, tok = load_model_and_tokenizer(model_cfg)
    get_peft_model(base, lora_config(model_cfg)).save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    code = usage_snippet(model_cfg.model_id, prompt_format, str(tmp_path / "adapter")).replace(
        "max_new_tokens=48", "max_new_tokens=4")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "model_card_usage", "exec"), {})  # noqa: S102 - our own card's code
    assert printed.getvalue().endswith("\n")  # the snippet ran to its print (a random model's words are noise)
    assert ("add_special_tokens=False" in code) == (prompt_format == "chat")  # one BOS either way
