"""The one prompt builder shared by data building, training, evaluation and the playground.

Gemma's chat template rejects the ``system`` role, so the grounding instruction, the document and
the user request are merged into a single user turn. Two renderings of that same user turn exist:

* ``chat``: Gemma turns (``<start_of_turn>user … <end_of_turn>\\n<start_of_turn>model\\n``), for
  instruction-tuned checkpoints such as ``gemma-2-2b-it``;
* ``plain``: the report's ``DOCUMENT: … USER REQUEST: …`` layout followed by ``ANSWER:``, for base
  checkpoints (the embedded Gemma 3 270M), which only echo the instruction when given chat turns.

Both sides of an evaluation (base and aligned) always use the same rendering. Exactly one BOS is
ever present: templates emit it, and plain text relies on the tokenizer adding it once.

This module is a leaf: it imports nothing from ``helpers`` except the refusal constant.
"""

from __future__ import annotations

from typing import Any

from helpers.config import REFUSAL

__all__ = [
    "GEMMA_CHAT_TEMPLATE",
    "GROUNDING_INSTRUCTION",
    "REFUSAL",
    "build_messages",
    "build_user_turn",
    "completion_text",
    "render_prompt",
    "to_trl_example",
]

GROUNDING_INSTRUCTION = (
    "Answer the user request using only the information in the document. "
    f'If the document does not contain the answer, reply exactly: "{REFUSAL}"'
)

#: Gemma's turn format without the "system role not supported" exception (system text is merged
#: into the user turn by ``build_messages``, so a system message never reaches the template).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

PLAIN_ANSWER_CUE = "ANSWER:"


def build_user_turn(document: str, request: str, system_instruction: str | None = None) -> str:
    """The single user turn: grounding instruction (+ the row's own instruction), document, request."""
    if not isinstance(document, str) or not isinstance(request, str):
        raise TypeError("document and request must be strings")
    instruction = GROUNDING_INSTRUCTION
    extra = (system_instruction or "").strip()
    if extra:
        instruction = f"{instruction}\n{extra}"
    return f"{instruction}\n\nDOCUMENT: {document.strip()}\n\nUSER REQUEST: {request.strip()}"


def build_messages(document: str, request: str, system_instruction: str | None = None) -> list[dict[str, str]]:
    """TRL conversational prompt: one user message (Gemma has no system role)."""
    return [{"role": "user", "content": build_user_turn(document, request, system_instruction)}]


def render_prompt(messages: list[dict[str, str]], prompt_format: str, tokenizer: Any | None = None) -> str:
    """Render prompt messages as the text the model sees, before tokenisation.

    For ``chat`` the tokenizer's chat template is used (it emits BOS, so tokenise the result with
    ``add_special_tokens=False``). For ``plain`` no BOS is written: the tokenizer adds it once.
    """
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("a prompt must end with a user message")
    if prompt_format == "chat":
        if tokenizer is None:
            raise ValueError("prompt_format='chat' needs the tokenizer (its chat template renders the turns)")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if prompt_format == "plain":
        body = "\n\n".join(m["content"].strip() for m in messages)
        return f"{body}\n\n{PLAIN_ANSWER_CUE}"
    raise ValueError(f"prompt_format must be 'chat' or 'plain', got {prompt_format!r}")


def completion_text(messages: list[dict[str, str]]) -> str:
    """The assistant text of a chosen/rejected message list."""
    return "".join(m["content"] for m in messages if m["role"] == "assistant").strip()


def to_trl_example(example: dict[str, Any], prompt_format: str) -> dict[str, Any]:
    """One stored pair → the example TRL's DPOTrainer expects for this prompt format.

    ``chat`` keeps TRL's conversational format (TRL applies the chat template). ``plain`` becomes
    TRL's standard text format: the completion starts with a space after ``ANSWER:`` and TRL adds EOS.
    """
    if prompt_format == "chat":
        return {"prompt": example["prompt"], "chosen": example["chosen"], "rejected": example["rejected"]}
    return {
        "prompt": render_prompt(example["prompt"], "plain"),
        "chosen": " " + completion_text(example["chosen"]),
        "rejected": " " + completion_text(example["rejected"]),
    }
