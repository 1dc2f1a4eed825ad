"""Batched greedy generation with left padding, and the cut that keeps only the answer.

Evaluation, probes, the playground and the benchmark all generate through ``generate_answers`` so
base and aligned answers come from the same rendering (``helpers.prompts.render_prompt``), the same
tokenisation rule (exactly one BOS) and the same stopping rule.

Where an answer ends:

* token level — generation stops at EOS or ``<end_of_turn>`` (both passed as ``eos_token_id``);
* string level — in the ``plain`` format a base model rarely emits EOS and instead writes the next
  turn (``\\n\\nUSER REQUEST: …``), so transformers' ``StopStringCriteria`` ends the row as soon as
  such a marker appears, which saves the wasted tokens. Building that criterion scans the whole
  vocabulary (262k tokens for Gemma 3: ~5 s the first time, ~0.9 s per ``generate`` call after that
  for the cache lookup), so it is built once per tokenizer and reused (``stop_string_criteria``);
* post-cut — ``cut_answer`` then removes the marker and anything after it. The post-cut alone is
  what defines the answer; the stop strings only make generation shorter, never different.

Rows are sorted by prompt length before batching (less padding) and returned in input order. A
batch of long prompts is read a few rows at a time (``PREFILL_TOKENS``) and then decoded together.
Greedy decoding with left padding gives the same tokens as one prompt at a time (tested).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from typing import Any

from helpers.prompts import render_prompt

__all__ = [
    "CHAT_STOP_MARKERS",
    "PLAIN_STOP_MARKERS",
    "PREFILL_TOKENS",
    "cut_answer",
    "encode_prompts",
    "generate_answers",
    "generate_token_ids",
    "join_kv_caches",
    "stop_markers",
    "stop_string_criteria",
    "stop_token_ids",
]

#: Text that never belongs to an answer in the chat format (turn markers that leak through decoding).
CHAT_STOP_MARKERS: tuple[str, ...] = ("<end_of_turn>", "<start_of_turn>", "<eos>")

#: In the plain format a base model continues with a new prompt section; the answer ends before it.
PLAIN_STOP_MARKERS: tuple[str, ...] = CHAT_STOP_MARKERS + (
    "USER REQUEST:", "DOCUMENT:", "ANSWER:", "\n\n\n",
)


_STRAY_SPECIAL = re.compile(r"<(?:pad|bos|eos|unk|mask)>")


def stop_markers(prompt_format: str) -> tuple[str, ...]:
    """The string markers that end an answer in this prompt format."""
    if prompt_format == "plain":
        return PLAIN_STOP_MARKERS
    if prompt_format == "chat":
        return CHAT_STOP_MARKERS
    raise ValueError(f"prompt_format must be 'chat' or 'plain', got {prompt_format!r}")


def cut_answer(text: str, prompt_format: str) -> str:
    """Keep the answer only: cut at the first stop marker, then trim whitespace and dangling quotes."""
    cut = len(text)
    for marker in stop_markers(prompt_format):
        pos = text.find(marker)
        if pos != -1:
            cut = min(cut, pos)
    answer = text[:cut]
    answer = _STRAY_SPECIAL.sub("", answer)
    return answer.strip()


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus ``<end_of_turn>`` when the vocabulary has it (Gemma's end of a model turn)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    turn_end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(turn_end, int) and turn_end != tokenizer.unk_token_id and turn_end not in ids:
        ids.append(turn_end)
    return ids


_STOP_CRITERIA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stop_string_criteria(tokenizer: Any) -> Any:
    """The plain format's ``StopStringCriteria`` for this tokenizer, built once and reused.

    The criterion holds no per-call state (it reads only the ids it is given), so one instance
    serves every batch; rebuilding it per ``generate`` call cost more than a whole answer's decoding
    on a CPU when prompts went one at a time.
    """
    from transformers import StopStringCriteria

    crit = _STOP_CRITERIA.get(tokenizer)
    if crit is None:
        crit = StopStringCriteria(tokenizer, list(PLAIN_STOP_MARKERS))
        _STOP_CRITERIA[tokenizer] = crit
    return crit


def encode_prompts(texts: Sequence[str], prompt_format: str, tokenizer: Any) -> Any:
    """Tokenise rendered prompts, left padded; chat text already holds BOS, plain text gets it here."""
    return tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="left",
                     add_special_tokens=(prompt_format == "plain"))


#: Prompt tokens (rows x padded length) read in one forward pass before decoding. On the 2-core CPU
#: a prefill of 1,187-token prompts cost 1.35 s per row in passes of 1-4 rows and 1.93-1.98 s per row
#: in passes of 8-16 (``bench/bench_generation.py --long``), while decoding gains from many rows: so
#: long prompts are read a few rows at a time and then decoded together. None: one pass.
PREFILL_TOKENS = 4800


def _row_ends(new_ids: list[int], ends: set[int]) -> list[int]:
    """A row's new tokens up to (not including) its first stop token or pad."""
    kept: list[int] = []
    for tok in new_ids:
        if tok in ends:
            break
        kept.append(tok)
    return kept


def join_kv_caches(caches: list[Any]) -> Any:
    """One KV cache holding the rows of several caches of the same length, in their order.

    Only dynamic layers (full or sliding-window) grow with each call; a static layer is sized for the call
    that made it (the slice's one new token) and could not go on, so it is refused. ``generate`` builds
    dynamic ones for Gemma 2 and 3 (transformers 5 maps their Hub configs' "hybrid" cache to dynamic).
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    merged = caches[0]
    for i, layer in enumerate(merged.layers):
        parts = [c.layers[i] for c in caches]
        if not all(isinstance(part, DynamicLayer) and part.keys is not None for part in parts):
            raise TypeError(f"cannot join the prefill's KV caches: layer {i} is a {type(layer).__name__}, "
                            "not a filled dynamic layer; pass prefill_tokens=None")
        layer.keys = torch.cat([part.keys for part in parts])
        layer.values = torch.cat([part.values for part in parts])
    return merged


def _generate_batch(model: Any, tokenizer: Any, texts: Sequence[str], prompt_format: str,
                    max_new_tokens: int, use_stop_strings: bool,
                    continue_every: int | None = None,
                    prefill_tokens: int | None = PREFILL_TOKENS) -> list[list[int]]:
    """Greedy continuation token ids for one batch (pads and tokens after the stop removed).

    When the batch holds more than ``prefill_tokens`` prompt tokens, its first new token is
    generated a slice of rows at a time and their KV caches are joined. Then generation runs in
    calls of ``continue_every`` new tokens (None: the rest in one call). After each call a row has
    ended when it produced a stop token or pad, or when the stop-string criterion fires on it (plain
    format: the criterion can end a row on the call's last step, with no pad after it), and leaves
    the batch; the others go on from the cache, given back their prompt and answer so far, so
    ``generate`` feeds only the last token, exactly as the next step of a single call would.

    Calls of a few tokens each (``continue_every``), so that ended rows leave early, did not pay on
    the CPU: a decoding step of 8 rows cost 0.18 s against 0.20 s for 16 (1,200-token prompts), and
    each further call cost more than that saved; the option stays for the tests of the joins.
    """
    import torch

    enc = encode_prompts(texts, prompt_format, tokenizer).to(model.device)
    stops = stop_token_ids(tokenizer)
    criterion = stop_string_criteria(tokenizer) if use_stop_strings and prompt_format == "plain" else None
    extra: dict[str, Any] = {}
    if criterion is not None:
        from transformers import StoppingCriteriaList

        extra = {"stopping_criteria": StoppingCriteriaList([criterion])}

    def call(input_ids: Any, attention_mask: Any, cache: Any, new_tokens: int) -> tuple[Any, Any]:
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                                 max_new_tokens=new_tokens, do_sample=False, num_beams=1, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None,
                                 top_k=None, return_dict_in_generate=True, **extra)
        return out.sequences, out.cache

    ends = set(stops) | {tokenizer.pad_token_id}  # finished rows are filled with pad
    input_ids, attention_mask, cache = enc["input_ids"], enc["attention_mask"], None
    n, prompt_len = input_ids.shape
    rows_per_prefill = max(1, prefill_tokens // prompt_len) if prefill_tokens else n
    first = None
    if rows_per_prefill < n:
        parts = [call(input_ids[s:s + rows_per_prefill], attention_mask[s:s + rows_per_prefill], None, 1)
                 for s in range(0, n, rows_per_prefill)]
        first = torch.cat([seq for seq, _ in parts]), join_kv_caches([c for _, c in parts])
    active = list(range(n))  # batch row -> input row
    rows: list[list[int]] = [[] for _ in texts]
    produced = 0
    step = continue_every or max_new_tokens
    while active and produced < max_new_tokens:
        if first is None:
            sequences, cache = call(input_ids, attention_mask, cache, min(step, max_new_tokens - produced))
        else:
            (sequences, cache), first = first, None
        added = sequences.shape[1] - input_ids.shape[1]
        produced += added
        stopped_by_string = (criterion(sequences, None).tolist() if criterion is not None and added
                             else [False] * len(active))
        going_on = []
        for j, row in enumerate(active):
            new = sequences[j, prompt_len:].tolist()
            rows[row] = _row_ends(new, ends)
            if len(rows[row]) == len(new) and not stopped_by_string[j]:
                going_on.append(j)
        if not going_on or produced >= max_new_tokens:
            break
        keep = torch.tensor(going_on, device=sequences.device)
        if len(going_on) < len(active):
            cache.batch_select_indices(keep)
        active = [active[j] for j in going_on]
        input_ids = sequences[keep]
        attention_mask = torch.cat([attention_mask[keep], attention_mask.new_ones(len(going_on), added)], dim=1)
    return rows


def generate_token_ids(model: Any, tokenizer: Any, messages_list: Sequence[list[dict[str, str]]], *,
                       prompt_format: str, max_new_tokens: int, batch_size: int = 8,
                       use_stop_strings: bool = True, desc: str = "generating",
                       progress: bool = True, continue_every: int | None = None,
                       prefill_tokens: int | None = PREFILL_TOKENS) -> list[list[int]]:
    """Greedy continuation token ids per prompt, batched by similar length, returned in input order.

    Args:
        messages_list: prompts as message lists from ``helpers.prompts.build_messages``.
        prompt_format: "chat" or "plain" (``ModelConfig.prompt_format``).
        max_new_tokens: from ``EvalConfig.max_new_tokens``.
        batch_size: rows per ``generate`` call; 1 means one prompt at a time.
        continue_every: new tokens per call before ended rows leave the batch (None: one call).
        prefill_tokens: prompt tokens per forward pass of the prefill (None: the whole batch at once).
    Returns:
        Token ids after the prompt, stopped at EOS / ``<end_of_turn>``.
    """
    from tqdm.auto import tqdm

    for name, value in (("batch_size", batch_size), ("continue_every", continue_every or 1),
                        ("prefill_tokens", prefill_tokens or 1)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1 (or None where allowed), got {value}")
    texts = [render_prompt(m, prompt_format, tokenizer) for m in messages_list]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    results: list[list[int]] = [[] for _ in texts]
    with tqdm(total=len(texts), desc=desc, disable=not progress or not texts) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = _generate_batch(model, tokenizer, [texts[i] for i in idx], prompt_format,
                                    max_new_tokens, use_stop_strings, continue_every, prefill_tokens)
            for i, ids in zip(idx, batch, strict=True):
                results[i] = ids
            bar.update(len(idx))
    return results


def generate_answers(model: Any, tokenizer: Any, messages_list: Sequence[list[dict[str, str]]], *,
                     prompt_format: str, max_new_tokens: int, batch_size: int = 8,
                     desc: str = "generating", progress: bool = True) -> list[str]:
    """Greedy answers (decoded and cut at the end of the answer), one per prompt, in input order."""
    ids = generate_token_ids(model, tokenizer, messages_list, prompt_format=prompt_format,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc,
                             progress=progress)
    return [cut_answer(tokenizer.decode(row, skip_special_tokens=False), prompt_format) for row in ids]
