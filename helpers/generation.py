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

Rows are sorted by prompt length before batching (less padding) and returned in input order.
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
    "cut_answer",
    "encode_prompts",
    "generate_answers",
    "generate_token_ids",
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


def _generate_batch(model: Any, tokenizer: Any, texts: Sequence[str], prompt_format: str,
                    max_new_tokens: int, use_stop_strings: bool) -> list[list[int]]:
    """Greedy continuation token ids for one batch (pads and tokens after the stop removed)."""
    import torch

    enc = encode_prompts(texts, prompt_format, tokenizer).to(model.device)
    stops = stop_token_ids(tokenizer)
    extra: dict[str, Any] = {}
    if use_stop_strings and prompt_format == "plain":
        from transformers import StoppingCriteriaList

        extra = {"stopping_criteria": StoppingCriteriaList([stop_string_criteria(tokenizer)])}
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                             temperature=None, top_p=None, top_k=None, **extra)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    ends = set(stops) | {tokenizer.pad_token_id}  # finished rows are filled with pad
    rows = []
    for ids in new:
        kept: list[int] = []
        for tok in ids:
            if tok in ends:
                break
            kept.append(tok)
        rows.append(kept)
    return rows


def generate_token_ids(model: Any, tokenizer: Any, messages_list: Sequence[list[dict[str, str]]], *,
                       prompt_format: str, max_new_tokens: int, batch_size: int = 8,
                       use_stop_strings: bool = True, desc: str = "generating",
                       progress: bool = True) -> list[list[int]]:
    """Greedy continuation token ids per prompt, batched by similar length, returned in input order.

    Args:
        messages_list: prompts as message lists from ``helpers.prompts.build_messages``.
        prompt_format: "chat" or "plain" (``ModelConfig.prompt_format``).
        max_new_tokens: from ``EvalConfig.max_new_tokens``.
        batch_size: rows per ``generate`` call; 1 means one prompt at a time.
    Returns:
        Token ids after the prompt, stopped at EOS / ``<end_of_turn>``.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = [render_prompt(m, prompt_format, tokenizer) for m in messages_list]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    results: list[list[int]] = [[] for _ in texts]
    with tqdm(total=len(texts), desc=desc, disable=not progress or not texts) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = _generate_batch(model, tokenizer, [texts[i] for i in idx], prompt_format,
                                    max_new_tokens, use_stop_strings)
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
