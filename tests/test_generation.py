"""Batched greedy generation equals one-at-a-time generation; the answer is cut where it ends."""

from __future__ import annotations

import pytest
import torch

from helpers.generation import (
    cut_answer,
    encode_prompts,
    generate_answers,
    generate_token_ids,
    stop_string_criteria,
    stop_token_ids,
)
from helpers.prompts import build_messages, render_prompt

# Different document lengths so that left padding really happens inside a batch.
PROMPTS = [
    build_messages("Apples are red.", "Are bananas blue?"),
    build_messages("The library opens at 9 am and closes at 5 pm. It is closed on Sundays and on public "
                   "holidays, and the reading room is on the second floor.", "When does the library open?"),
    build_messages("Water boils at 100 degrees Celsius at sea level.", "At what temperature does water boil?"),
    build_messages("Our store sells shoes and hats.", "What is the price of the hats?"),
    build_messages("Marie Curie won the Nobel Prize in Physics in 1903 together with Pierre Curie and Henri "
                   "Becquerel, for their work on radiation.", "Who shared the prize?"),
]


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
def test_batched_left_padded_greedy_equals_per_example_greedy(smoke_model, prompt_format):
    model, tokenizer = smoke_model
    kwargs = dict(prompt_format=prompt_format, max_new_tokens=6, progress=False)
    batched = generate_token_ids(model, tokenizer, PROMPTS, batch_size=3, **kwargs)  # batches of 3 and 2
    single = generate_token_ids(model, tokenizer, PROMPTS, batch_size=1, **kwargs)
    assert batched == single  # exact token equality, in input order
    assert all(len(row) <= 6 for row in batched)
    assert any(batched), "the tiny model produced no tokens at all"


def test_batches_really_are_left_padded(smoke_model):
    _, tokenizer = smoke_model
    enc = encode_prompts(["short", "a much longer prompt than the other one"], "plain", tokenizer)
    assert enc["attention_mask"][0, 0] == 0 and enc["attention_mask"][0, -1] == 1  # pads on the left
    assert enc["input_ids"][1, 0] == tokenizer.bos_token_id


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
def test_exactly_one_bos_per_prompt(smoke_model, prompt_format):
    from helpers.prompts import render_prompt

    _, tokenizer = smoke_model
    text = render_prompt(PROMPTS[0], prompt_format, tokenizer)
    ids = encode_prompts([text], prompt_format, tokenizer)["input_ids"][0].tolist()
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_generate_answers_are_decoded_and_cut(smoke_model):
    model, tokenizer = smoke_model
    answers = generate_answers(model, tokenizer, PROMPTS[:2], prompt_format="chat", max_new_tokens=4,
                               batch_size=2, progress=False)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert all("<end_of_turn>" not in a and "<pad>" not in a and a == a.strip() for a in answers)


@pytest.mark.parametrize(("raw", "expected"), [
    (" Yes.\n\nUSER REQUEST: Are apples red?\n\nANSWER: Yes", "Yes."),  # base model starts a new turn
    (" 9 am - 5 pm\n\nDOCUMENT: The museum opens at 10 am.", "9 am - 5 pm"),
    (" It opens at 9 am.<eos><pad><pad>", "It opens at 9 am."),
    (" It opens at 9 am.<end_of_turn>\n<start_of_turn>user\nthanks", "It opens at 9 am."),
    (" First line.\nSecond line.", "First line.\nSecond line."),  # a single newline is part of the answer
    (" An answer.\n\n\n\n\nrambling", "An answer."),
    ("", ""),
])
def test_plain_format_post_cut(raw, expected):
    assert cut_answer(raw, "plain") == expected


def test_chat_format_cut_keeps_plain_text_markers():
    # in chat format "USER REQUEST:" inside an answer is just text, the turn marker is the end
    raw = "The form says USER REQUEST: none.<end_of_turn>\n<start_of_turn>user"
    assert cut_answer(raw, "chat") == "The form says USER REQUEST: none."
    with pytest.raises(ValueError, match="prompt_format"):
        cut_answer(raw, "markdown")


def test_stop_token_ids_include_end_of_turn(smoke_model):
    _, tokenizer = smoke_model
    ids = stop_token_ids(tokenizer)
    assert tokenizer.eos_token_id in ids and tokenizer.convert_tokens_to_ids("<end_of_turn>") in ids


class _ScriptedModel:
    """Stands in for a model whose greedy continuation is known: returns prompt + scripted tokens."""

    device = torch.device("cpu")

    def __init__(self, continuations):
        self.continuations = continuations
        self.calls = []

    def generate(self, input_ids, attention_mask, **kwargs):
        from types import SimpleNamespace

        self.calls.append(kwargs)
        new = torch.tensor(self.continuations[: input_ids.shape[0]])
        self.continuations = self.continuations[input_ids.shape[0]:]
        return SimpleNamespace(sequences=torch.cat([input_ids, new], dim=1), cache=None)


def test_continuations_are_trimmed_at_eos_end_of_turn_and_pad(smoke_model):
    _, tok = smoke_model
    eos, eot, pad = tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>"), tok.pad_token_id
    # equal-length prompts, so the batch order is the input order
    model = _ScriptedModel([[10, 11, eos, 12], [13, eot, 14, 15], [16, 17, 18, pad]])
    prompts = [build_messages("Apples are red.", q) for q in ("Are bananas blue?", "Are pears blue?",
                                                               "Are limes blue?")]
    ids = generate_token_ids(model, tok, prompts, prompt_format="plain", max_new_tokens=4, batch_size=3,
                             progress=False)
    assert ids == [[10, 11], [13], [16, 17, 18]]
    call = model.calls[0]
    assert call["do_sample"] is False and call["max_new_tokens"] == 4
    (crit,) = call["stopping_criteria"]  # plain format stops early at a new prompt section
    assert "USER REQUEST:" in crit.stop_strings
    assert crit is stop_string_criteria(tok)  # built once per tokenizer, reused by every batch


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
def test_prefill_in_slices_and_ended_rows_leaving_change_no_row(smoke_model, prompt_format):
    """Reading the prompts a few rows at a time, and dropping rows that ended, give the same tokens.

    The random tiny model rarely emits EOS, so a copy of its tokenizer names as EOS a token the model
    writes often: rows then end at different steps, some on the first token, some inside a call and
    some on its last step. Every row must equal the one-pass, one-call and one-prompt-at-a-time result.
    """
    import copy
    from collections import Counter

    model, tokenizer = smoke_model
    prompts = PROMPTS + [build_messages("A much longer document. " * 6, "Why is it longer?")]
    kwargs = dict(prompt_format=prompt_format, max_new_tokens=12, progress=False)
    whole = dict(batch_size=len(prompts), continue_every=None, prefill_tokens=None)
    free = generate_token_ids(model, tokenizer, prompts, **whole, **kwargs)
    counts = Counter(t for row in free for t in row[1:])
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = tokenizer.convert_ids_to_tokens(counts.most_common(1)[0][0])
    one_call = generate_token_ids(model, tok, prompts, **whole, **kwargs)
    lengths = sorted(len(row) for row in one_call)
    assert lengths[0] < lengths[-1] and lengths[0] < 12, f"rows should end at different steps: {lengths}"
    prompt_len = encode_prompts([render_prompt(m, prompt_format, tok) for m in prompts], prompt_format,
                                tok)["input_ids"].shape[1]
    for every, prefill in ((1, None), (3, None), (5, None), (None, prompt_len), (None, 2 * prompt_len),
                           (4, 3 * prompt_len)):
        got = generate_token_ids(model, tok, prompts, batch_size=len(prompts), continue_every=every,
                                 prefill_tokens=prefill, **kwargs)
        assert got == one_call, (every, prefill)
    assert generate_token_ids(model, tok, prompts, batch_size=1, **kwargs) == one_call


def test_only_filled_dynamic_caches_are_joined():
    from types import SimpleNamespace

    from transformers.cache_utils import StaticLayer

    from helpers.generation import join_kv_caches

    odd = SimpleNamespace(layers=[SimpleNamespace(keys=torch.zeros(1, 1, 2, 2), values=torch.zeros(1, 1, 2, 2))])
    static = SimpleNamespace(layers=[StaticLayer(max_cache_len=4)])  # sized for its own call: cannot go on
    for cache in (odd, static):
        with pytest.raises(TypeError, match="prefill_tokens=None"):
            join_kv_caches([cache, cache])


class _ScriptedContinuation:
    """A model whose greedy continuation of each prompt is a script; each call writes the next tokens.

    Like ``generate`` with a stopping criterion applied by the caller only after the call: a row whose
    text reaches a stop string on the call's last step has no pad after it in this call.
    """

    device = torch.device("cpu")

    def __init__(self, scripts, prompt_len, pad):
        self.scripts, self.prompt_len, self.pad = scripts, prompt_len, pad
        self.rows_per_call = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        from types import SimpleNamespace

        self.rows_per_call.append(input_ids.shape[0])
        new = []
        for row in input_ids.tolist():
            script = self.scripts[tuple(row[:self.prompt_len])]
            done = len(row) - self.prompt_len
            chunk = script[done:done + max_new_tokens]
            new.append(chunk + [self.pad] * (max_new_tokens - len(chunk)))
        return SimpleNamespace(sequences=torch.cat([input_ids, torch.tensor(new)], dim=1), cache=_Cache())


class _Cache:
    def batch_select_indices(self, indices):
        self.kept = indices


def test_a_row_that_reaches_a_stop_string_on_a_calls_last_step_ends_there(smoke_model):
    from helpers.generation import encode_prompts as encode

    _, tok = smoke_model
    prompts = [build_messages("Apples are red.", q) for q in ("Are bananas blue?", "Are pears blue?")]
    texts = [render_prompt(m, "plain", tok) for m in prompts]
    enc = encode(texts, "plain", tok)
    ends_at_marker = tok.encode(" Yes.\n\nUSER REQUEST:", add_special_tokens=False)
    more = tok.encode(" and then some more words", add_special_tokens=False)
    longer = tok.encode(" No, pears are green, and they are sweet and ripe in autumn", add_special_tokens=False)
    scripts = {tuple(enc["input_ids"][0].tolist()): ends_at_marker + more,
               tuple(enc["input_ids"][1].tolist()): longer}
    model = _ScriptedContinuation(scripts, enc["input_ids"].shape[1], tok.pad_token_id)
    ids = generate_token_ids(model, tok, prompts, prompt_format="plain", max_new_tokens=len(longer),
                             batch_size=2, progress=False, continue_every=len(ends_at_marker))
    assert ids == [ends_at_marker, longer]  # the first row stopped where its marker ends
    assert model.rows_per_call[0] == 2 and set(model.rows_per_call[1:]) == {1}


def test_batch_size_must_be_positive(smoke_model):
    model, tokenizer = smoke_model
    with pytest.raises(ValueError, match="batch_size"):
        generate_token_ids(model, tokenizer, PROMPTS, prompt_format="chat", max_new_tokens=2, batch_size=0)
    for bad in (dict(continue_every=-1), dict(prefill_tokens=-5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            generate_token_ids(model, tokenizer, PROMPTS, prompt_format="chat", max_new_tokens=2, **bad)


def test_sdpa_gives_gemma3_the_same_greedy_tokens_as_eager(smoke_model):
    """Why the local profile may use SDPA: Gemma 3 has no attention softcapping, so both paths agree.

    A small random Gemma 3 (sliding-window and global layers, GQA), same weights under both
    attention implementations, batched left-padded greedy decoding through the project's path.
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tok = smoke_model
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                           max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    assert cfg.attn_logit_softcapping is None
    torch.manual_seed(0)
    eager = Gemma3ForCausalLM._from_config(cfg, attn_implementation="eager").eval()
    sdpa = Gemma3ForCausalLM._from_config(cfg, attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    assert sdpa.config._attn_implementation == "sdpa"
    prompts = PROMPTS + [build_messages("A much longer document. " * 6, "Why is it longer?")]
    kwargs = dict(prompt_format="plain", max_new_tokens=12, batch_size=len(prompts), progress=False)
    assert generate_token_ids(sdpa, tok, prompts, **kwargs) == generate_token_ids(eager, tok, prompts, **kwargs)
