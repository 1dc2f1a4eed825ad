"""Excerpts: long documents are cut to the token budget around the passages that answer the request."""

from __future__ import annotations

import pytest

from helpers.data.excerpts import (
    GAP,
    document_budget,
    rank_texts,
    select_excerpt,
    sentence_spans,
    split_passages,
    split_sentences,
    token_counter,
)
from helpers.prompts import build_user_turn


def words(text: str) -> int:
    """A tokenizer stand-in: one token per whitespace word."""
    return len(text.split())


FILLER = [f"Paragraph {i} talks about weather patterns and general municipal matters of the town." for i in range(12)]
KEY = "The library opens at nine o'clock every weekday morning."
DOC = "\n\n".join(FILLER[:6] + [KEY] + FILLER[6:])  # 12 x 13 words + 10 words = 166 words


def test_short_document_is_kept_whole():
    excerpt = select_excerpt("Short text. Two sentences.", "anything?", count_tokens=words, budget_tokens=50,
                             passage_words=10)
    assert excerpt.whole and excerpt.text == "Short text. Two sentences."


def test_long_document_keeps_the_relevant_passage_within_budget():
    excerpt = select_excerpt(DOC, "When does the library open?", count_tokens=words, budget_tokens=40,
                             passage_words=15)
    assert not excerpt.whole and KEY in excerpt.text
    assert words(excerpt.text) <= 40  # budget respected (GAP markers count too)
    assert excerpt.total_passages == 13  # every 13- or 10-word paragraph is one passage at 15 words


def test_kept_passages_are_in_document_order_with_gap_markers():
    excerpt = select_excerpt(DOC, "library weekday Paragraph 1 weather", count_tokens=words, budget_tokens=60,
                             passage_words=15)
    assert excerpt.passages == sorted(excerpt.passages)
    assert GAP.strip() in excerpt.text  # non-adjacent passages are separated by "[...]"


def test_must_include_wins_over_bm25_and_shrinks_passages_if_needed():
    excerpt = select_excerpt(DOC, "weather patterns municipal", count_tokens=words, budget_tokens=14,
                             passage_words=40, must_include=[KEY])
    # at 40 words a passage holding KEY is ~36 words > 14: passages shrink until KEY (10 words) fits
    assert KEY in excerpt.text and words(excerpt.text) <= 14


def test_too_small_budget_truncates_the_best_passage():
    excerpt = select_excerpt(DOC, "library", count_tokens=words, budget_tokens=4, passage_words=15)
    assert excerpt.truncated and words(excerpt.text) == 4


def test_passages_respect_the_word_limit_and_keep_all_text():
    passages = split_passages(DOC, 30)
    assert all(words(p) <= 30 for p in passages)
    assert sum(words(p) for p in passages) == words(DOC)  # 166 words, none lost


def test_hard_wrapped_prose_is_one_sentence_but_bullets_are_not():
    text = ("The committee approved the budget after a long debate about\nroads and schools in the county.\n"
            "- First bullet item\n- Second bullet item")
    assert split_sentences(text) == [
        "The committee approved the budget after a long debate about\nroads and schools in the county.",
        "- First bullet item", "- Second bullet item"]
    assert len(sentence_spans("1. Reviewer: Ann. Rating: 5 stars.")) == 2  # "1." does not end a sentence


def test_bm25_ranks_the_matching_text_first():
    assert rank_texts(["cats sleep a lot", "the library opens at nine", "dogs bark"], "library opening hours")[0] == 1


def test_document_budget_subtracts_scaffold_answer_and_overhead():
    scaffold = words(build_user_turn("", "Why?", "Be brief."))
    # 100 - 20 (answer) - scaffold - 12 (template overhead)
    assert document_budget(words, "Why?", "Be brief.", 100, 20) == 100 - 20 - scaffold - 12


def test_token_counter_accepts_a_tokenizer_or_a_callable(smoke_model_cfg):
    from helpers.models import load_tokenizer

    tokenizer = load_tokenizer(smoke_model_cfg)
    count = token_counter(tokenizer)
    assert count("The door is green.") == len(tokenizer.encode("The door is green.", add_special_tokens=False))
    assert token_counter(words)("a b c") == 3
    with pytest.raises(TypeError, match="tokenizer must be"):
        token_counter(42)
