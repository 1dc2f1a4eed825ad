"""The one prompt builder: layout, refusal sentence, exactly one BOS in both formats."""

from __future__ import annotations

import pytest

from helpers.prompts import (
    GROUNDING_INSTRUCTION,
    REFUSAL,
    build_messages,
    render_prompt,
    to_trl_example,
)


def test_refusal_sentence_is_canonical():
    assert REFUSAL == "The provided document does not contain this information."
    assert REFUSAL in GROUNDING_INSTRUCTION


def test_system_text_is_merged_into_the_single_user_turn():
    msgs = build_messages("Apples are red.", "Are bananas blue?", "Answer in one sentence.")
    assert [m["role"] for m in msgs] == ["user"]  # Gemma rejects the system role
    content = msgs[0]["content"]
    assert content.startswith(GROUNDING_INSTRUCTION)
    assert "Answer in one sentence." in content
    assert content.endswith("DOCUMENT: Apples are red.\n\nUSER REQUEST: Are bananas blue?")


def test_plain_rendering_is_the_reports_layout():
    text = render_prompt(build_messages("Apples are red.", "Are bananas blue?"), "plain")
    assert "DOCUMENT: Apples are red.\n\nUSER REQUEST: Are bananas blue?\n\nANSWER:" in text
    assert "<bos>" not in text and "<start_of_turn>" not in text


def test_chat_rendering_uses_gemma_turns(smoke_model):
    _, tok = smoke_model
    text = render_prompt(build_messages("D.", "Q?"), "chat", tok)
    assert text.startswith("<bos><start_of_turn>user\n")
    assert text.endswith("<end_of_turn>\n<start_of_turn>model\n")


@pytest.mark.parametrize("fmt", ["chat", "plain"])
def test_exactly_one_bos_when_tokenised_as_the_model_sees_it(smoke_model, fmt):
    _, tok = smoke_model
    text = render_prompt(build_messages("Apples are red.", "Are bananas blue?"), fmt, tok)
    ids = tok(text, add_special_tokens=(fmt == "plain")).input_ids
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1


def test_chat_format_needs_a_tokenizer():
    with pytest.raises(ValueError, match="needs the tokenizer"):
        render_prompt(build_messages("d", "q"), "chat")


def test_trl_example_in_both_formats():
    ex = {
        "prompt": build_messages("Apples are red.", "Are bananas blue?"),
        "chosen": [{"role": "assistant", "content": REFUSAL}],
        "rejected": [{"role": "assistant", "content": "Yes, bananas are blue."}],
    }
    chat = to_trl_example(ex, "chat")
    assert chat["prompt"] == ex["prompt"] and chat["chosen"][0]["role"] == "assistant"
    plain = to_trl_example(ex, "plain")
    assert plain["prompt"].endswith("ANSWER:")
    assert plain["chosen"] == " " + REFUSAL and plain["rejected"] == " Yes, bananas are blue."
