"""The one loader: 4-bit path, offline models, LoRA targets, pad token and padding side."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.config import ModelConfig, config_for
from helpers.models import adapter_base_model, load_model_and_tokenizer, lora_config, resolve_compute_dtype


def test_smoke_model_loads_through_the_4bit_nf4_path(smoke_model):
    import bitsandbytes as bnb

    model, _ = smoke_model
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_type == "nf4"
    assert model.config.quantization_config.bnb_4bit_use_double_quant is True
    assert model.config._attn_implementation == "eager"  # Gemma 2 softcapping


def test_4bit_weights_are_smaller_than_full_precision(smoke_model_cfg, smoke_model):
    model4, _ = smoke_model
    cfg32 = config_for(ModelConfig, "smoke", load_in_4bit=False)
    model32, _ = load_model_and_tokenizer(cfg32)
    linear4 = model4.model.layers[0].self_attn.q_proj.weight
    linear32 = model32.model.layers[0].self_attn.q_proj.weight
    # 64x64 fp32 = 16384 bytes; nf4 packs two weights per byte = 2048 bytes
    assert linear32.numel() * linear32.element_size() == 64 * 64 * 4
    assert linear4.numel() * linear4.element_size() == 64 * 64 // 2


def test_tokenizer_pads_left_with_a_real_pad_token(smoke_model):
    _, tok = smoke_model
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    batch = tok(["a", "a longer text here"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1


def test_tiny_model_generates_deterministically(smoke_model):
    model, tok = smoke_model
    inputs = tok(["DOCUMENT: x"], return_tensors="pt")
    a = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    b = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(a, b) and a.shape[1] == inputs["input_ids"].shape[1] + 4


def test_lora_targets_attention_projections_only(smoke_model_cfg, smoke_model):
    from peft import get_peft_model

    model, _ = smoke_model
    peft_model = get_peft_model(model, lora_config(smoke_model_cfg))
    try:
        names = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in peft_model.named_parameters() if "lora_A" in n}
        assert names == {"q_proj", "k_proj", "v_proj", "o_proj"}
    finally:
        peft_model.unload()


def test_compute_dtype_on_cpu_is_fp32_unless_forced(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_compute_dtype(config_for(ModelConfig, "smoke")) == torch.float32
    assert resolve_compute_dtype(config_for(ModelConfig, "smoke", compute_dtype="bfloat16")) == torch.bfloat16


# The GPU dtype choices (a T4 gets fp16 though it emulates bf16, Ampere+ bf16) are in tests/test_precision.py.


def _dequantised(model) -> dict:
    import bitsandbytes.functional as bnbf
    from bitsandbytes.nn import Params4bit

    return {name: bnbf.dequantize_4bit(m.weight.data, m.weight.quant_state).clone()
            for name, m in model.named_modules() if isinstance(getattr(m, "weight", None), Params4bit)}


def test_inference_leaves_the_4bit_weights_as_loaded(smoke_model_cfg):
    """No in-place bf16 repacking by bitsandbytes (AVX512-BF16 CPUs): a forward and a save change nothing.

    Where bitsandbytes repacks, an eval forward rewrites each weight for its bf16 kernel and the
    next ``state_dict()`` undoes it lossily (the base drifts), and training forwards on a repacked
    weight lose the gradient through it. On CPUs without AVX512-BF16 this holds either way.
    """
    model, tok = load_model_and_tokenizer(smoke_model_cfg)
    before = _dequantised(model)
    ids = tok("Paris is the capital of France.", return_tensors="pt")
    model.eval()
    with torch.no_grad():
        first = model(**ids).logits
    model.state_dict()  # what every checkpoint save does
    after = _dequantised(model)
    assert before.keys() == after.keys() and len(before) == 14
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
                   for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu"))
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, first)


def test_adapter_base_model_reads_peft_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "google/gemma-2-2b-it"}))
    assert adapter_base_model(tmp_path) == "google/gemma-2-2b-it"
    assert adapter_base_model(tmp_path / "missing") is None


@pytest.mark.slow
def test_embedded_gemma3_loads_offline_in_4bit():
    import bitsandbytes as bnb

    model, tok = load_model_and_tokenizer(config_for(ModelConfig, "local"))
    assert model.config.model_type == "gemma3_text"
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert tok("x").input_ids[0] == tok.bos_token_id == 2
