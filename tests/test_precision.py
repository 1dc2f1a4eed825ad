"""One answer to "bf16 or fp16?" everywhere: native bf16 only from compute capability 8.0 (Ampere).

A T4 (sm_75) reports ``torch.cuda.is_bf16_supported() == True`` because bf16 can be emulated there;
emulated bf16 loses the T4's fp16 tensor cores and TRL's Triton log-prob kernel does not compile it
for sm_75. So every 16-bit choice (compute dtype, the 4-bit config, AMP flags, the footprint's
16-bit copy, the merge) and TRL's Triton switch must follow ``helpers.models.native_bf16``, not
``is_bf16_supported``. CUDA is mocked: these tests run on the CPU.
"""

from __future__ import annotations

import pytest
import torch

from helpers.config import ModelConfig, TrainConfig, config_for


@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA GPU of the given compute capability that claims bf16 support whatever it is."""

    def make(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.version, "hip", None)

    return make


@pytest.fixture
def triton_switches(monkeypatch):
    """TRL's kernel switches with Triton 'available' (CPU wheels ship none); restored afterwards."""
    import trl.kernels.chunked_divergence as trl_divergence
    import trl.kernels.chunked_logprob as trl_logprob

    monkeypatch.setattr(trl_logprob, "_TRITON_AVAILABLE", True)  # read by TRL's _use_triton at each call
    for module in (trl_logprob, trl_divergence):
        monkeypatch.setattr(module, "_use_triton", module._use_triton)  # undo our wrapper after the test
    return trl_logprob, trl_divergence


def sixteen_bit_choices() -> dict:
    from helpers.models import native_bf16, quantization_config, resolve_compute_dtype
    from helpers.train.dpo import mixed_precision_flags
    from helpers.train.report import sixteen_bit_dtype

    cfg = config_for(ModelConfig, "colab")
    quant = quantization_config(cfg)
    return {"native_bf16": native_bf16(), "compute": resolve_compute_dtype(cfg),
            "bnb_compute": quant.bnb_4bit_compute_dtype, "bnb_storage": quant.bnb_4bit_quant_storage,
            "amp": mixed_precision_flags(config_for(TrainConfig, "colab")), "footprint_16bit": sixteen_bit_dtype()}


def test_a_t4_gets_fp16_everywhere_though_it_emulates_bf16(gpu):
    gpu((7, 5))
    assert torch.cuda.is_bf16_supported()  # the misleading answer the code must not follow
    assert sixteen_bit_choices() == {"native_bf16": False, "compute": torch.float16, "bnb_compute": torch.float16,
                                     "bnb_storage": torch.float16, "amp": {"fp16": True, "bf16": False},
                                     "footprint_16bit": "float16"}


def test_ampere_and_later_get_bf16_everywhere(gpu):
    gpu((8, 0))
    assert sixteen_bit_choices() == {"native_bf16": True, "compute": torch.bfloat16, "bnb_compute": torch.bfloat16,
                                     "bnb_storage": torch.bfloat16, "amp": {"fp16": False, "bf16": True},
                                     "footprint_16bit": "bfloat16"}


def test_the_cpu_gets_fp32_and_no_mixed_precision(monkeypatch):
    from helpers.models import native_bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choices = sixteen_bit_choices()
    assert not native_bf16()
    assert choices["compute"] == choices["bnb_compute"] == torch.float32
    assert choices["amp"] == {"fp16": False, "bf16": False}


def test_forcing_bf16_amp_on_a_t4_is_refused(gpu):
    from helpers.train.dpo import mixed_precision_flags

    gpu((7, 5))
    with pytest.raises(ValueError, match="T4 has no bf16"):
        mixed_precision_flags(config_for(TrainConfig, mixed_precision="bf16"))


def test_the_merge_defaults_to_fp16_on_a_t4(gpu, monkeypatch, tmp_path):
    import helpers.adapters as adapters
    import helpers.models as models

    seen = {}

    def fake_load(cfg, **_):
        seen["dtype"] = cfg.compute_dtype
        raise RuntimeError("stop after the dtype choice")

    monkeypatch.setattr(models, "load_model_and_tokenizer", fake_load)
    for capability, expected in (((7, 5), "float16"), ((8, 6), "bfloat16")):
        gpu(capability)
        with pytest.raises(RuntimeError, match="stop after"):
            adapters.merge_adapter_to_16bit(config_for(ModelConfig, "colab"), tmp_path, tmp_path / "merged")
        assert seen["dtype"] == expected


@pytest.mark.parametrize(("capability", "triton"), [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_trl_uses_triton_only_from_sm80(gpu, triton_switches, capability, triton):
    from helpers.train.dpo import no_triton_below_sm80

    gpu(capability)
    assert no_triton_below_sm80()
    for module in triton_switches:
        assert module._use_triton(torch.device("cuda")) is triton, module.__name__
        assert module._use_triton(torch.device("cpu")) is False  # the CPU keeps TRL's torch folds


def test_build_trainer_installs_the_triton_switch(triton_switches):
    """The trainer of every run (not only a caller who remembers) gets the switch."""
    from datasets import Dataset

    from helpers.models import load_model_and_tokenizer
    from helpers.prompts import build_messages
    from helpers.train.dpo import build_trainer

    model_cfg = config_for(ModelConfig, "smoke")
    train_cfg = config_for(TrainConfig, "smoke", max_steps=1)
    row = {"prompt": build_messages("Paris is in France.", "Where is Paris?", "Be brief."),
           "chosen": [{"role": "assistant", "content": "In France."}],
           "rejected": [{"role": "assistant", "content": "In Spain."}]}
    model, tok = load_model_and_tokenizer(model_cfg)
    build_trainer(model, tok, Dataset.from_list([row, row]), None, model_cfg, train_cfg, callbacks=[])
    assert all(getattr(m._use_triton, "_gemma_facts_sm80", False) for m in triton_switches)
