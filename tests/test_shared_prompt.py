"""The shared-prompt DPO forward gives TRL the same log-probs and gradients as its two-row forward."""

from __future__ import annotations

import random

import pytest
import torch

from helpers.train.shared_prompt import install_shared_prompt_forward, pack_pairs, shared_prompt_stats

VOCAB = 128


def preference_batch(seed: int = 0, pairs: int = 3) -> dict[str, torch.Tensor]:
    """TRL's own collator over pairs of different prompt and answer lengths (right padding, as in training)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    rng = random.Random(seed)
    examples = []
    for _ in range(pairs):
        examples.append({"prompt_ids": [2] + [rng.randrange(3, VOCAB) for _ in range(rng.randint(5, 14))],
                         "chosen_ids": [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 6))] + [1],
                         "rejected_ids": [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 9))] + [1]})
    batch = DataCollatorForPreference(pad_token_id=0)(examples)
    batch["labels"] = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    return batch


def test_packing_puts_each_pair_in_one_row_with_fewer_tokens():
    batch = preference_batch()
    packed = pack_pairs(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert packed is not None
    assert packed.input_ids.size(0) == 3  # one row per pair
    assert packed.tokens < int(batch["attention_mask"].sum())  # each prompt once, not twice
    prompts = ((batch["completion_mask"][:3] == 0) & (batch["attention_mask"][:3] == 1)).sum()
    assert packed.tokens == int(batch["attention_mask"].sum() - prompts) + 3  # + the repeated last prompt token
    # every scored token of the two-row layout has exactly one source
    assert len(packed.source) == len(set(packed.target.tolist())) == int((batch["labels"][:, 1:] != -100).sum())


@pytest.mark.parametrize("broken", ["different_prompt", "odd_rows", "left_padding", "no_answer"])
def test_batches_it_cannot_pack_fall_back(broken):
    batch = preference_batch()
    ids, mask, labels = batch["input_ids"].clone(), batch["attention_mask"].clone(), batch["labels"].clone()
    if broken == "different_prompt":
        ids[3, 1] = (ids[0, 1] + 1) % VOCAB
    elif broken == "odd_rows":
        ids, mask, labels = ids[:5], mask[:5], labels[:5]
    elif broken == "left_padding":
        ids, mask, labels = ids.flip(1), mask.flip(1), labels.flip(1)
    else:
        labels[0] = -100
    assert pack_pairs(ids, mask, labels) is None


def tiny_model(kind: str, attention: str) -> torch.nn.Module:
    from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, sliding_window=6, max_position_embeddings=128, pad_token_id=0,
                  bos_token_id=2, eos_token_id=1)
    torch.manual_seed(0)
    if kind == "gemma2":
        return Gemma2ForCausalLM._from_config(Gemma2Config(**common), attn_implementation=attention)
    return Gemma3ForCausalLM._from_config(Gemma3TextConfig(**common), attn_implementation=attention)


def fused_peft(kind: str, attention: str) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_model(kind, attention)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                            lora_dropout=0.0))
    torch.manual_seed(1)
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.3)  # a trained-looking adapter, so gradients reach lora_A too
    return peft


def scored(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """TRL's call, its per-sequence sums, and the LoRA gradients of a DPO-like objective."""
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                fused_lm_head=True, use_cache=False)
    per_seq = out.log_probs.sum(dim=1)
    chosen, rejected = per_seq.chunk(2)
    (-torch.nn.functional.logsigmoid(chosen - rejected).mean() + out.loss).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads


@pytest.mark.parametrize("kind,attention", [("gemma2", "eager"), ("gemma3", "sdpa"), ("gemma3", "eager")])
def test_packed_forward_matches_two_rows(kind, attention):
    batch = preference_batch(seed=1, pairs=4)
    model = fused_peft(kind, attention)
    plain, plain_grads = scored(model, batch)
    assert install_shared_prompt_forward(model)
    packed, packed_grads = scored(model, batch)
    stats = shared_prompt_stats(model)
    assert stats["packed_calls"] == 1 and stats["packed_tokens"] < stats["two_row_tokens"]
    assert packed.log_probs.shape == plain.log_probs.shape
    torch.testing.assert_close(packed.log_probs, plain.log_probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed.entropy, plain.entropy, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed.mean_logits, plain.mean_logits, atol=1e-5, rtol=1e-4)
    assert torch.equal(packed.is_top1, plain.is_top1)
    torch.testing.assert_close(packed.loss, plain.loss, atol=1e-5, rtol=1e-4)
    assert plain_grads and plain_grads.keys() == packed_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-3, msg=name)


def test_the_mask_matters():
    """Without hiding the chosen answer from the rejected one, the rejected log-probs would change."""
    import helpers.train.shared_prompt as sp

    batch = preference_batch(seed=2, pairs=2)
    model = fused_peft("gemma3", "sdpa").eval()
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                      fused_lm_head=True).log_probs
    install_shared_prompt_forward(model)
    leaky = sp._ALLOWED.clone()
    leaky[sp.REJECTED, sp.CHOSEN] = True
    saved, sp._ALLOWED = sp._ALLOWED, leaky
    try:
        with torch.no_grad():
            wrong = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                          fused_lm_head=True).log_probs
    finally:
        sp._ALLOWED = saved
    chosen_rows = slice(0, 2)
    torch.testing.assert_close(wrong[chosen_rows], plain[chosen_rows], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(wrong[2:], plain[2:], atol=1e-4)


def test_a_plain_forward_is_left_alone():
    model = fused_peft("gemma3", "sdpa").eval()
    install_shared_prompt_forward(model)
    ids = torch.tensor([[2, 5, 6, 7]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # generation path: no fused head, no packing
    assert logits.shape == (1, 4, VOCAB)
    assert shared_prompt_stats(model)["packed_calls"] == 0
    assert install_shared_prompt_forward(model)  # idempotent
