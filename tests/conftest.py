"""Shared test setup: every test runs in the smoke profile with its own output folder.

The built tiny model and the converted embedded model are cached under ``GEMMA_FACTS_CACHE`` (kept
between runs, as on a user's machine); outputs never leak between tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
