"""Shared test setup: every test runs in the smoke profile with its own output folder.

The built tiny model and the converted embedded model are cached under ``GEMMA_FACTS_CACHE`` (kept
between runs, as on a user's machine); outputs never leak between tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.config import REFUSAL, ModelConfig
from helpers.prompts import build_messages

os.environ.setdefault("GEMMA_FACTS_PROFILE", "smoke")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the output root at a fresh folder and drop any real keys from the environment."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("GEMMA_FACTS_OUTPUT", str(out))
    monkeypatch.setenv("GEMMA_FACTS_PROFILE", "smoke")
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return out


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors run as fast on one thread, and one thread never oversubscribes a shared runner."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_model_cfg():
    from helpers.config import ModelConfig, config_for

    return config_for(ModelConfig, "smoke")


@pytest.fixture(scope="session")
def smoke_model(smoke_model_cfg):
    """The tiny random Gemma 2, loaded once per session through the real 4-bit path."""
    from helpers.models import load_model_and_tokenizer

    return load_model_and_tokenizer(smoke_model_cfg)


# -- pairs and an adapter for stage-03 tests (shared here, never imported from another test module) --------
CONTRACT_DOCS = [  # doc_id, domain, document, answerable request, reference, unanswerable request
    ("d1", "science", "Water boils at 100 degrees Celsius at sea level.", "At what temperature does water boil?",
     "Water boils at 100 degrees Celsius.", "Who discovered water?"),
    ("d2", "retail", "Our store sells shoes and hats in Paris.", "What does the store sell?", "Shoes and hats.",
     "How much do the hats cost?"),
    ("d3", "history", "Marie Curie won the Nobel Prize in Physics in 1903.",
     "When did Marie Curie win the Nobel Prize in Physics?", "In 1903.", "What was her favourite food?"),
]


def contract_rows(docs=CONTRACT_DOCS) -> list[dict]:
    """Pairs following the shared data contract: 2 answerable pairs + 1 unanswerable pair per document."""
    rows = []
    for doc_id, domain, doc, question, answer, unanswerable in docs:
        base = dict(doc_id=doc_id, domain=domain, document=doc, system_instruction="")
        for pair_type, source, rejected in (("hallucination", "number_swap", "It was 42."),
                                            ("over_refusal", "teacher", REFUSAL)):
            rows.append(dict(base, prompt=build_messages(doc, question), request=question, reference=answer,
                             chosen=[{"role": "assistant", "content": answer}],
                             rejected=[{"role": "assistant", "content": rejected}], pair_type=pair_type,
                             source=source, answerable=True))
        rows.append(dict(base, prompt=build_messages(doc, unanswerable), request=unanswerable, reference=REFUSAL,
                         chosen=[{"role": "assistant", "content": REFUSAL}],
                         rejected=[{"role": "assistant", "content": "Exactly 42."}], pair_type="unanswerable",
                         source="near_miss", answerable=False))
    return rows


def make_adapter(model_cfg: ModelConfig, adapter_dir: Path, scale: float = 0.5) -> None:
    """A LoRA adapter of the smoke model with nonzero B weights, so that it changes the outputs."""
    import torch
    from peft import get_peft_model

    from helpers.models import load_model_and_tokenizer, lora_config

    model, _ = load_model_and_tokenizer(model_cfg)
    peft_model = get_peft_model(model, lora_config(model_cfg))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)
    peft_model.save_pretrained(str(adapter_dir))



@pytest.fixture(scope="session")
def contract_docs() -> list[tuple[str, ...]]:
    """(doc_id, domain, document, answerable request, reference, unanswerable request) of the contract pairs."""
    return CONTRACT_DOCS


@pytest.fixture(scope="session")
def contract_pairs() -> list[dict]:
    """Pairs following the shared data contract over ``CONTRACT_DOCS`` (2 answerable + 1 unanswerable each)."""
    return contract_rows()


@pytest.fixture(scope="session")
def adapter_factory():
    """``make(model_cfg, adapter_dir, scale=0.5)``: a smoke-model LoRA adapter whose B weights are nonzero."""
    return make_adapter
