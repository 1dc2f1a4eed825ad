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
    """Stands in for a model whose greedy continuation of each prompt is a script of token ids.

    Like a real causal LM it reads a prompt into the KV cache it is given and then one token per call;
    the cache is how it knows which row is which after rows were joined and dropped: the prompt's
    script number is written into the cache's keys (one layer, one head, one dimension). So a join or a
    drop that mixed rows up would make a row continue with another row's script.
    """

    device = torch.device("cpu")
    config = None

    def __init__(self, scripts):
        self.scripts = {tuple(prompt): script for prompt, script in scripts.items()}
        self.vocab = 1 + max(max(script) for script in scripts.values())
        self.rows_per_call = []

    def __call__(self, input_ids, cache, attention_mask=None, position_ids=None, **kwargs):
        from types import SimpleNamespace

        self.rows_per_call.append(input_ids.shape[0])
        if attention_mask is None:  # a prompt, read alone
            number = list(self.scripts).index(tuple(input_ids[0].tolist()))
            ids = torch.full((1, 1, input_ids.shape[1], 1), float(number))
            cache.update(ids, ids.clone(), 0)
            done = torch.zeros(1, dtype=torch.long)
        else:
            layer = cache.layers[0]
            tag = torch.zeros(input_ids.shape[0], 1, 1, 1) + layer.keys[:, :, -1:, :]
            cache.update(tag, tag.clone(), 0)
            done = attention_mask.shape[1] - (attention_mask == 0).sum(1) - torch.tensor(
                [len(p) for p in self.scripts])[layer.keys[:, 0, -1, 0].long()]
        numbers = cache.layers[0].keys[:, 0, -1, 0].long().tolist()
        scripts = list(self.scripts.values())
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        for row, (number, written) in enumerate(zip(numbers, done.tolist(), strict=True)):
            script = scripts[number]
            logits[row, 0, script[written] if written < len(script) else 0] = 1.0
        return SimpleNamespace(logits=logits)


def _scripted(tok, requests, continuations):
    """Plain-format prompts (same document) and a scripted model that continues each one as given."""
    prompts = [build_messages("Apples are red.", q) for q in requests]
    ids = [encode_prompts([render_prompt(m, "plain", tok)], "plain", tok)["input_ids"][0].tolist() for m in prompts]
    return prompts, _ScriptedModel(dict(zip(map(tuple, ids), continuations, strict=True)))


def test_continuations_are_trimmed_at_eos_end_of_turn_and_pad(smoke_model):
    _, tok = smoke_model
    eos, eot, pad = tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>"), tok.pad_token_id
    prompts, model = _scripted(tok, ("Are bananas blue?", "Are pears blue?", "Are limes blue?"),
                               [[10, 11, eos, 12], [13, eot, 14, 15], [16, 17, 18, pad]])
    ids = generate_token_ids(model, tok, prompts, prompt_format="plain", max_new_tokens=4, batch_size=3,
                             progress=False)
    assert ids == [[10, 11], [13], [16, 17, 18]]
    # three prompts read alone, then 3 rows, 2 (the second ended), 2, 1 (the first ended)
    assert model.rows_per_call == [1, 1, 1, 3, 2, 1]


def test_a_row_that_reaches_a_stop_string_ends_there_keeping_the_marker(smoke_model):
    """Plain format: the row whose text completes "USER REQUEST:" ends on that token and leaves the batch."""
    _, tok = smoke_model
    ends_at_marker = tok.encode(" Yes.\n\nUSER REQUEST:", add_special_tokens=False)
    more = tok.encode(" and then some more words", add_special_tokens=False)
    longer = tok.encode(" No, pears are green, and they are sweet and ripe in autumn", add_special_tokens=False)
    prompts, model = _scripted(tok, ("Are bananas blue?", "Are pears blue?"), [ends_at_marker + more, longer])
    ids = generate_token_ids(model, tok, prompts, prompt_format="plain", max_new_tokens=len(longer),
                             batch_size=2, progress=False)
    assert ids == [ends_at_marker, longer]  # the first row stopped where its marker ends
    assert stop_string_criteria(tok) is stop_string_criteria(tok)  # built once per tokenizer (~5 s for Gemma 3)
    assert model.rows_per_call[2:2 + len(ends_at_marker) - 1] == [2] * (len(ends_at_marker) - 1)
    assert set(model.rows_per_call[1 + len(ends_at_marker):]) == {1}
    no_stop = generate_token_ids(model, tok, prompts, prompt_format="plain", max_new_tokens=len(longer),
                                 batch_size=2, progress=False, use_stop_strings=False)
    assert no_stop[0][:len(ends_at_marker)] == ends_at_marker and len(no_stop[0]) > len(ends_at_marker)


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
def test_rows_that_end_leave_the_batch_and_change_no_row(smoke_model, prompt_format):
    """Rows that end at different steps leave the batch; every row equals one prompt at a time.

    The random tiny model rarely emits EOS, so a copy of its tokenizer names as EOS a token the model
    writes often: rows then end at different steps, some on the first token.
    """
    import copy
    from collections import Counter

    model, tokenizer = smoke_model
    prompts = PROMPTS + [build_messages("A much longer document. " * 6, "Why is it longer?")]
    kwargs = dict(prompt_format=prompt_format, max_new_tokens=12, progress=False)
    free = generate_token_ids(model, tokenizer, prompts, batch_size=len(prompts), **kwargs)
    counts = Counter(t for row in free for t in row[1:])
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = tokenizer.convert_ids_to_tokens(counts.most_common(1)[0][0])
    together = generate_token_ids(model, tok, prompts, batch_size=len(prompts), **kwargs)
    lengths = sorted(len(row) for row in together)
    assert lengths[0] < lengths[-1] and lengths[0] < 12, f"rows should end at different steps: {lengths}"
    assert generate_token_ids(model, tok, prompts, batch_size=1, **kwargs) == together
    assert generate_token_ids(model, tok, prompts, batch_size=4, **kwargs) == together
    for rows in (2, len(prompts)):  # prompts read as padded batches (a GPU's way), joined
        assert generate_token_ids(model, tok, prompts, batch_size=len(prompts), prefill_rows=rows,
                                  **kwargs) == together, rows


def _tiny_gemma3(tok, attn_implementation="sdpa", sliding_window=8):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=sliding_window,
                           max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    return Gemma3ForCausalLM._from_config(cfg, attn_implementation=attn_implementation).eval()


def _generate_alone(model, tok, prompts, max_new_tokens):
    """The outside reference: transformers' ``generate`` on each chat prompt by itself, cut at its stop token."""
    stops = stop_token_ids(tok)
    rows = []
    for messages in prompts:
        enc = encode_prompts([render_prompt(messages, "chat", tok)], "chat", tok)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        rows.append(new[:next((i for i, t in enumerate(new) if t in stops), len(new))])
    return rows


@pytest.mark.parametrize("which", ["gemma2 (smoke)", "gemma3, window 8"])
def test_each_row_equals_transformers_generate_on_its_prompt_alone(smoke_model, which):
    """The decoding loop against an outside reference: ``model.generate`` on each prompt by itself.

    Gemma 3's sliding-window layers keep only the last 8 positions here, far fewer than the prompts,
    so the joined caches' sliding layers (left padded, one count of positions for every row) are what
    is checked; rows end at different steps (an often written token named EOS), so rows leave too.
    """
    import copy
    from collections import Counter

    model, tokenizer = smoke_model
    if which.startswith("gemma3"):
        model = _tiny_gemma3(tokenizer)
    prompts = PROMPTS + [build_messages("A much longer document. " * 6, "Why is it longer?")]
    kwargs = dict(prompt_format="chat", max_new_tokens=10, progress=False)
    free = generate_token_ids(model, tokenizer, prompts, batch_size=len(prompts), **kwargs)
    counts = Counter(t for row in free for t in row[1:])
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = tokenizer.convert_ids_to_tokens(counts.most_common(1)[0][0])
    ours = generate_token_ids(model, tok, prompts, batch_size=len(prompts), **kwargs)
    reference = _generate_alone(model, tok, prompts, max_new_tokens=10)
    assert ours == reference
    assert len({len(row) for row in ours}) > 1, "rows should end at different steps"
    # read as padded batches of 4 and 2 (a GPU's way), then joined: still each prompt alone
    assert generate_token_ids(model, tok, prompts, batch_size=len(prompts), prefill_rows=4, **kwargs) == reference


def test_the_packed_output_layer_is_removed_after_generation_even_on_an_error(smoke_model):
    """The output layer's packed product is installed for a batch only: training after it needs gradients."""
    model, tok = smoke_model
    head = model.get_output_embeddings()
    assert "forward" not in head.__dict__
    generate_token_ids(model, tok, PROMPTS[:2], prompt_format="chat", max_new_tokens=3, progress=False)
    assert "forward" not in head.__dict__
    failing = _FailsOnCall(model, call=3)  # two prompts read, then the first decoding step
    with pytest.raises(RuntimeError, match="disconnected"):
        generate_token_ids(failing, tok, PROMPTS[:2], prompt_format="chat", max_new_tokens=3, progress=False,
                           batch_size=2)
    assert failing.calls == 3 and failing.head_was_packed
    assert "forward" not in head.__dict__


def test_the_packed_output_layer_follows_its_weight_and_goes_with_its_model(smoke_model):
    """The packed copy is rebuilt when the weight changes in place, and is freed with its model.

    Reference: transformers' ``generate`` on each prompt alone, which uses the layer itself.
    """
    import gc
    import weakref

    _, tok = smoke_model
    model = _tiny_gemma3(tok)
    kwargs = dict(prompt_format="chat", max_new_tokens=4, progress=False, batch_size=2)
    first = generate_token_ids(model, tok, PROMPTS[:2], **kwargs)
    head = model.get_output_embeddings()
    with torch.no_grad():  # in place: same storage, a new version; the first answer's first token made unlikely
        head.weight[first[0][0]] *= -20
    again = generate_token_ids(model, tok, PROMPTS[:2], **kwargs)
    assert again[0] != first[0] and again == _generate_alone(model, tok, PROMPTS[:2], max_new_tokens=4)
    gone = weakref.ref(head)
    del model, head
    gc.collect()
    assert gone() is None, "the packed copy kept the output layer (and its model's weight) alive"


class _FailsOnCall:
    """The smoke model, failing on its n-th forward call (and noting whether the packed layer was in place)."""

    def __init__(self, model, call):
        self.model, self.fail_at, self.calls, self.head_was_packed = model, call, 0, False
        self.device, self.config = model.device, model.config

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def __call__(self, **kwargs):
        self.calls += 1
        self.head_was_packed = "forward" in self.model.get_output_embeddings().__dict__
        if self.calls == self.fail_at:
            raise RuntimeError("runtime disconnected")
        return self.model(**kwargs)


def test_joined_caches_in_any_row_order_decode_each_row_as_alone(smoke_model):
    """``join_kv_caches`` with the shorter row first: each row's next logits equal its own cache's.

    Gemma 3's sliding layers (window 8) hold the last 7 positions of each row, so a joined sliding
    layer must count the longest row's positions for every row, whichever row came first. Tolerance
    1e-5 on logits of size ~1: the joined rows attend over masked pad positions too, which changes
    the order of float additions, not the result beyond float32 rounding.
    """
    from transformers import DynamicCache

    from helpers.generation import join_kv_caches

    _, tok = smoke_model
    model = _tiny_gemma3(tok)
    rows = (PROMPTS[0], build_messages("A much longer document. " * 40, "Why is it longer?"))
    ids = [encode_prompts([render_prompt(m, "chat", tok)], "chat", tok)["input_ids"] for m in rows]
    lengths = [row.shape[1] for row in ids]
    assert 8 < lengths[0] and 2 * lengths[0] < lengths[1], lengths  # the short row's window lies in the pads
    caches, alone = [], []
    with torch.inference_mode():
        for row, length in zip(ids, lengths, strict=True):
            for keep in (caches, None):
                cache = DynamicCache(config=model.config)
                model(input_ids=row, cache=cache, use_cache=True)
                if keep is not None:
                    keep.append(cache)
                else:
                    alone.append(model(input_ids=torch.tensor([[7]]), position_ids=torch.tensor([[length]]),
                                       cache=cache, use_cache=True).logits[0, -1])
        joined = join_kv_caches(caches, lengths)
        longest = max(lengths)
        mask = torch.tensor([[0] * (longest - n) + [1] * (n + 1) for n in lengths])
        both = model(input_ids=torch.tensor([[7], [7]]), attention_mask=mask, position_ids=torch.tensor(
            [[n] for n in lengths]), cache=joined, use_cache=True).logits[:, -1]
    for row in (0, 1):
        assert torch.allclose(both[row], alone[row], atol=1e-5), (row, (both[row] - alone[row]).abs().max())


def test_only_filled_dynamic_caches_are_joined():
    from types import SimpleNamespace

    from transformers.cache_utils import StaticLayer

    from helpers.generation import join_kv_caches

    odd = SimpleNamespace(layers=[SimpleNamespace(keys=torch.zeros(1, 1, 2, 2), values=torch.zeros(1, 1, 2, 2))])
    static = SimpleNamespace(layers=[StaticLayer(max_cache_len=4)])  # sized for its own call: cannot go on
    for cache in (odd, static):
        with pytest.raises(TypeError, match="not a filled dynamic layer"):
            join_kv_caches([cache, cache], [2, 2])


def test_batch_size_and_prefill_rows_must_be_positive(smoke_model):
    model, tokenizer = smoke_model
    with pytest.raises(ValueError, match="batch_size"):
        generate_token_ids(model, tokenizer, PROMPTS, prompt_format="chat", max_new_tokens=2, batch_size=0)
    with pytest.raises(ValueError, match="prefill_rows"):
        generate_token_ids(model, tokenizer, PROMPTS, prompt_format="chat", max_new_tokens=2, prefill_rows=-1)


def test_sdpa_gives_gemma3_the_same_greedy_tokens_as_eager(smoke_model):
    """Why the local profile may use SDPA: Gemma 3 has no attention softcapping, so both paths agree.

    A small random Gemma 3 (sliding-window and global layers, GQA), same weights under both
    attention implementations, batched left-padded greedy decoding through the project's path.
    """
    _, tok = smoke_model
    eager = _tiny_gemma3(tok, "eager")
    assert eager.config.attn_logit_softcapping is None
    sdpa = _tiny_gemma3(tok, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    assert sdpa.config._attn_implementation == "sdpa"
    prompts = PROMPTS + [build_messages("A much longer document. " * 6, "Why is it longer?")]
    kwargs = dict(prompt_format="plain", max_new_tokens=12, batch_size=len(prompts), progress=False)
    assert generate_token_ids(sdpa, tok, prompts, **kwargs) == generate_token_ids(eager, tok, prompts, **kwargs)
