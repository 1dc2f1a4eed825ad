"""experiments/answerability_probe.py: the features its head is fitted on are read at the right positions.

An off-by-one here would fit the head on the wrong token and score the refusal sentence against the
wrong logits, silently: the AUCs would still come out as numbers. Checked on the tiny smoke model
through the real 4-bit path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("answerability_probe", ROOT / "experiments" / "answerability_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_features_read_the_last_prompt_token_and_score_the_refusal_after_it(probe, smoke_model, smoke_model_cfg):
    import torch

    from helpers.config import REFUSAL
    from helpers.prompts import build_messages, render_prompt

    model, tokenizer = smoke_model
    doc, request = "Water boils at 100 degrees Celsius at sea level.", "Who discovered water?"
    item = {"prompt": build_messages(doc, request)}
    feats = probe.features(model, tokenizer, item, smoke_model_cfg.prompt_format)
    assert feats["hidden"].shape == (model.config.num_hidden_layers + 1, model.config.hidden_size)
    # the prompt alone, in a second forward pass: causal attention means the appended refusal cannot change
    # the last prompt token's state, and its logits there predict the refusal's first token. Tolerance 1e-4:
    # two passes over sequences of different length may block the matmuls differently (float rounding).
    text = render_prompt(item["prompt"], smoke_model_cfg.prompt_format, tokenizer)
    ids = tokenizer(text, add_special_tokens=(smoke_model_cfg.prompt_format == "plain"), return_tensors="pt")
    assert ids["input_ids"].shape[1] == feats["tokens"]
    with torch.inference_mode():
        out = model(input_ids=ids["input_ids"], output_hidden_states=True)
    alone = torch.stack([h[0, -1].float() for h in out.hidden_states])
    assert torch.allclose(alone, feats["hidden"], atol=1e-4, rtol=1e-4)
    first = tokenizer(REFUSAL, add_special_tokens=False)["input_ids"][0]
    expected = out.logits[0, -1].float().log_softmax(-1)[first].item()
    assert abs(expected - feats["refusal_first_logp"]) < 1e-4
    assert feats["refusal_logp"] < 0  # a mean log-probability of real tokens
    other = probe.features(model, tokenizer, {"prompt": build_messages(doc, "At what temperature does water boil?")},
                           smoke_model_cfg.prompt_format)
    assert not torch.allclose(other["hidden"][-1], feats["hidden"][-1])  # the request reaches the state read


def test_prompt_key_tells_labels_and_documents_apart(probe):
    item = {"doc_id": "1", "request": "Who?", "document": "Text.", "answerable": True}
    assert probe.prompt_key(item) == probe.prompt_key(dict(item))
    assert probe.prompt_key(item) != probe.prompt_key({**item, "answerable": False})
    assert probe.prompt_key(item) != probe.prompt_key({**item, "document": "Other text."})


def test_plot_by_layer_draws_the_best_l2_of_each_layer(probe, tmp_path, monkeypatch):
    """The figure takes each layer's best L2 (not the first key) and draws one line per record."""
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, x, y, *a, **k: drawn.append((list(x), list(y))) or original(self, x, y, *a, **k))
    record = {"dev_auc": {"word_overlap": 0.9},
              "probe_dev_auc_by_layer": {"0/l2=0.1": 0.5, "1/l2=0.01": 0.7, "1/l2=0.1": 0.8, "10/l2=0.1": 0.6}}
    out = probe.plot_by_layer({"base": record, "other": record}, tmp_path / "fig.png")
    assert out.stat().st_size > 0
    assert drawn == [([0, 1, 10], [0.5, 0.8, 0.6])] * 2  # numeric layer order, 10 after 1
