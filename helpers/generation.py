"""Batched greedy generation with left padding, and the cut that keeps only the answer.

Evaluation, probes, the playground and the benchmark all generate through ``generate_answers`` so
base and aligned answers come from the same rendering (``helpers.prompts.render_prompt``), the same
tokenisation rule (exactly one BOS) and the same stopping rule.

Where an answer ends:

* token level — a row ends at EOS or ``<end_of_turn>`` (``stop_token_ids``);
* string level — in the ``plain`` format a base model rarely emits EOS and instead writes the next
  turn (``\\n\\nUSER REQUEST: …``), so transformers' ``StopStringCriteria`` ends the row as soon as
  such a marker appears, which saves the wasted tokens. Building that criterion scans the whole
  vocabulary (262k tokens for Gemma 3: ~5 s the first time, ~0.9 s per batch after that for the
  cache lookup), so it is built once per tokenizer and reused (``stop_string_criteria``);
* post-cut — ``cut_answer`` then removes the marker and anything after it. The post-cut alone is
  what defines the answer; the stop strings only make generation shorter, never different.

Rows are sorted by prompt length before batching (less padding) and returned in input order. Each
prompt is read alone, then a batch's rows are decoded together, left padded, and a row leaves the
batch as soon as it ends (``_generate_batch``). Greedy decoding this way gives the same tokens as one
prompt at a time (tested).
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


def join_kv_caches(caches: list[Any], lengths: Sequence[int]) -> Any:
    """One KV cache holding the rows of several caches, each left padded to the longest.

    ``lengths``: the positions each cache holds (its longest row). Each cache was read on its own
    (a prompt alone wastes no arithmetic on pads); joined, the cache looks exactly like one read as a
    left-padded batch: a full-attention layer holds ``max(lengths)`` positions, a sliding-window
    layer the last ``window - 1`` of them, with zeros where a shorter row has pads (the attention
    mask hides them), and every sliding layer counts ``max(lengths)`` positions seen, so its mask is
    cut at the same offset for every row. The caches are consumed layer by layer (each layer's parts
    are let go once copied), so the rows are held twice for one layer at most, not for the whole
    cache. Only dynamic layers can be joined; a static layer is sized for the call that made it and
    is refused.
    """
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    merged = caches[0]
    longest = max(lengths)
    for i, layer in enumerate(merged.layers):
        parts = [c.layers[i] for c in caches]
        if not all(isinstance(part, DynamicLayer) and part.keys is not None for part in parts):
            raise TypeError(f"cannot join the rows' KV caches: layer {i} is a {type(layer).__name__}, "
                            "not a filled dynamic layer")
        held = max(part.keys.shape[-2] for part in parts)
        rows = sum(part.keys.shape[0] for part in parts)
        keys = parts[0].keys.new_zeros(rows, *parts[0].keys.shape[1:-2], held, parts[0].keys.shape[-1])
        values = parts[0].values.new_zeros(rows, *parts[0].values.shape[1:-2], held, parts[0].values.shape[-1])
        start = 0
        for part in parts:
            count, length = part.keys.shape[0], part.keys.shape[-2]
            keys[start:start + count, ..., held - length:, :] = part.keys
            values[start:start + count, ..., held - length:, :] = part.values
            part.keys = part.values = None
            start += count
        layer.keys, layer.values = keys, values
        if isinstance(layer, DynamicSlidingWindowLayer):
            layer.cumulative_length = longest
    return merged


#: Output layer -> (its weight's address and version, the weight packed for MKL). Weakly keyed and the
#: packed copy holds no reference to the layer, so the copy goes when its model goes.
_PACKED_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _packed_output_layer(model: Any) -> tuple[Any, Any] | None:
    """The model's output layer and a forward for it as an MKL GEMM on a weight packed once (CPU fp32 only).

    The decoding step's largest product is that layer (262,144 x 640 for Gemma 3). torch's plain
    ``linear`` picks a slow kernel for 4-15 rows (85 ms at 8 rows against 58 ms at 16 and 25 ms at
    one, on the 2-core CPU), so rows that ended and left the batch made each step slower, not faster;
    the packed product costs 38 ms at 8 rows and 45 ms at 16 (its logits differ from ``linear``'s by
    ~1e-6; the answers were checked token for token). The caller installs the forward for one batch
    (inference only: the packed op has no gradient) and removes it after. The packed copy is rebuilt
    when the weight is replaced or changed in place. None where it does not apply (a GPU, 16-bit
    weights, a bias, no MKL).
    """
    import torch

    layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(layer, "weight", None)
    if not (type(layer) is torch.nn.Linear and layer.bias is None and weight is not None
            and weight.device.type == "cpu" and weight.dtype == torch.float32
            and torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")):
        return None
    stamp = (weight.data_ptr(), weight._version)
    cached = _PACKED_WEIGHTS.get(layer)
    if cached is None or cached[0] != stamp:
        cached = _PACKED_WEIGHTS[layer] = (stamp, torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), 16))
    packed, origin = cached[1], weight.detach()

    def forward(hidden: Any) -> Any:
        flat = hidden.reshape(-1, hidden.shape[-1])
        out = torch.ops.mkl._mkl_linear(flat, packed, origin, None, flat.shape[0])
        return out.reshape(*hidden.shape[:-1], out.shape[-1])

    return layer, forward


def _read_prompts(model: Any, input_ids: Any, attention_mask: Any, rows_per_pass: int) -> tuple[Any, Any]:
    """The first new token's logits for every prompt and one KV cache of all rows, left padded.

    ``input_ids`` / ``attention_mask``: the batch as ``encode_prompts`` left pads it. Prompts are read
    ``rows_per_pass`` at a time, each pass cut to its own longest prompt (a row alone: no pads) with
    positions counted per row (as ``generate`` counts them), and the passes' caches are joined.
    """
    import torch
    from transformers import DynamicCache

    firsts, caches, held = [], [], []
    for start in range(0, input_ids.shape[0], rows_per_pass):
        mask = attention_mask[start:start + rows_per_pass]
        longest = int(mask.sum(-1).max())
        ids, mask = input_ids[start:start + rows_per_pass, -longest:], mask[:, -longest:]
        cache = DynamicCache(config=model.config)
        if ids.shape[0] == 1:
            out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        else:
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                        logits_to_keep=1)
        firsts.append(out.logits[:, -1])
        caches.append(cache)
        held.append(longest)
    cache = join_kv_caches(caches, held) if len(caches) > 1 else caches[0]
    return torch.cat(firsts), cache


def _generate_batch(model: Any, tokenizer: Any, texts: Sequence[str], prompt_format: str,
                    max_new_tokens: int, use_stop_strings: bool, prefill_rows: int | None) -> list[list[int]]:
    """Greedy continuation token ids for one batch (tokens after the stop removed).

    The prompts are read (``_read_prompts``), their KV caches joined left padded, and the rows are
    decoded together, one forward pass per new token. A row ends at a stop token, or when the
    stop-string criterion fires on its text (plain format; the token that completes the marker is
    kept, as ``generate`` keeps it), and leaves the batch at once.

    On a CPU each prompt is read alone (``prefill_rows`` None): why not one ``generate`` call on a
    padded batch (what this replaced): the padded prefill read pads too (5.9 s against 5.0 s for the
    bench's 16 prompts one at a time), a long prompt read in a large batch cost more per row than
    read alone (1.93 against 1.35 s per row at 1,187 tokens), and rows that had ended stayed in the
    batch to the last step. On a GPU, where a padded batch is read in parallel, the whole batch is
    read in one pass. Positions are counted per row, so a row's positions and visible tokens are
    those it has alone; its tokens equal one prompt at a time (tested, on sliding-window layers too).
    """
    import torch

    stops = stop_token_ids(tokenizer)
    ends = set(stops) | {tokenizer.pad_token_id}
    criterion = stop_string_criteria(tokenizer) if use_stop_strings and prompt_format == "plain" else None
    enc = encode_prompts(texts, prompt_format, tokenizer).to(model.device)
    sequences, attention_mask = enc["input_ids"], enc["attention_mask"]
    n = len(texts)
    if prefill_rows is None:
        prefill_rows = 1 if model.device.type == "cpu" else n
    head = _packed_output_layer(model)
    replaced = head[0].__dict__.get("forward") if head is not None else None
    if head is not None:
        head[0].forward = head[1]
    try:
        with torch.inference_mode():
            first_logits, cache = _read_prompts(model, sequences, attention_mask, prefill_rows)
            next_ids = first_logits.argmax(-1)
            positions = attention_mask.sum(-1) - 1
            active = list(range(n))  # batch row -> input row
            rows: list[list[int]] = [[] for _ in texts]
            for step in range(max_new_tokens):
                sequences = torch.cat([sequences, next_ids[:, None]], dim=1)
                fired = criterion(sequences, None).tolist() if criterion is not None else [False] * len(active)
                going_on = []
                for j, (row, token) in enumerate(zip(active, next_ids.tolist(), strict=True)):
                    if token in ends:
                        continue
                    rows[row].append(token)
                    if not fired[j]:
                        going_on.append(j)
                if not going_on or step == max_new_tokens - 1:
                    break
                if len(going_on) < len(active):
                    keep = torch.tensor(going_on, device=model.device)
                    cache.batch_select_indices(keep)
                    attention_mask, next_ids, positions, sequences = (
                        t[keep] for t in (attention_mask, next_ids, positions, sequences))
                    active = [active[j] for j in going_on]
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(active), 1)], dim=1)
                positions = positions + 1
                out = model(input_ids=next_ids[:, None], attention_mask=attention_mask,
                            position_ids=positions[:, None], cache=cache, use_cache=True)
                next_ids = out.logits[:, -1].argmax(-1)
    finally:
        if head is not None and replaced is not None:
            head[0].forward = replaced
        elif head is not None:
            del head[0].forward
    return rows


def generate_token_ids(model: Any, tokenizer: Any, messages_list: Sequence[list[dict[str, str]]], *,
                       prompt_format: str, max_new_tokens: int, batch_size: int = 8,
                       use_stop_strings: bool = True, desc: str = "generating",
                       progress: bool = True, prefill_rows: int | None = None) -> list[list[int]]:
    """Greedy continuation token ids per prompt, batched by similar length, returned in input order.

    Args:
        messages_list: prompts as message lists from ``helpers.prompts.build_messages``.
        prompt_format: "chat" or "plain" (``ModelConfig.prompt_format``).
        max_new_tokens: from ``EvalConfig.max_new_tokens``.
        batch_size: rows decoded together; 1 means one prompt at a time.
        prefill_rows: prompts read per forward pass before decoding (None: one on a CPU, the whole
            batch on a GPU).
    Returns:
        Token ids after the prompt, stopped at EOS / ``<end_of_turn>``.
    """
    from tqdm.auto import tqdm

    for name, value in (("batch_size", batch_size), ("prefill_rows", prefill_rows or 1)):
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
                                    max_new_tokens, use_stop_strings, prefill_rows)
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
