"""Offline judge: refusal detection, support checks and verdicts on tricky, hand-written answers."""

from __future__ import annotations

import pytest

from helpers.config import REFUSAL
from helpers.evaluate.judges import (
    analyse_refusal,
    is_refusal,
    judge_offline,
    normalize_text,
    reference_recall,
    support_check,
)
from helpers.evaluate.probes import BANANA, PROBES, probe_passes
from helpers.prompts import GROUNDING_INSTRUCTION, build_user_turn, render_prompt

APPLES = "Apples are red."
BANANAS = "Are bananas blue?"
PROMPT = build_user_turn(APPLES, BANANAS)
SALES_DOC = "In 2020 Acme sold 1,200 bicycles in Lyon. Sales grew by 12% compared with 2019."


@pytest.mark.parametrize("answer", [
    REFUSAL,
    REFUSAL.lower().rstrip("."),
    f"\u201c{REFUSAL}\u201d",  # curly quotes
    f"'{REFUSAL.upper()}'",
    "I don't know.",
    "I do not know",
    "I dont know",
    "I don\u2019t know.",  # curly apostrophe
    "Sorry, I can't answer that from the document.",
    "This cannot be determined from the document.",
    "The answer is not provided in the document.",
    "The document doesn't say.",
    "The text does not mention bananas.",
    "There is no information about bananas in the document.",
    "I'm sorry, but the passage does not mention bananas.",
])
def test_refusal_variants_are_refusals(answer):
    assert is_refusal(answer, PROMPT)
    assert is_refusal(answer)  # also without the prompt


@pytest.mark.parametrize("answer", [
    # the prompt's own instruction, echoed: contains the refusal sentence but refuses nothing
    f'If the document does not contain the answer, reply exactly: "{REFUSAL}"',
    GROUNDING_INSTRUCTION,
    f"{GROUNDING_INSTRUCTION}\n\nDOCUMENT: {APPLES}",
])
def test_instruction_echo_containing_the_refusal_sentence_is_not_a_refusal(answer):
    analysis = analyse_refusal(answer, PROMPT)
    assert not analysis.is_refusal
    assert analysis.echo_removed
    assert not is_refusal(answer)  # the generic echo shape is recognised without the prompt too


def test_instruction_echo_then_a_real_refusal_is_a_refusal():
    answer = f'Reply exactly: "{REFUSAL}" {REFUSAL}'
    # the echo part is removed, the second sentence is a genuine refusal
    assert analyse_refusal(answer, PROMPT).echo_removed
    assert is_refusal(f'If the document does not contain the answer, reply exactly: "{REFUSAL}". {REFUSAL}', PROMPT)


@pytest.mark.parametrize("answer", [
    f"{REFUSAL} However, bananas are yellow.",
    f"{REFUSAL} Bananas are blue.",
    f"{REFUSAL} Yes.",
    "The document does not mention bananas, but they are usually yellow.",
])
def test_refusal_followed_by_an_invented_answer_is_a_hallucination(answer):
    assert not is_refusal(answer, PROMPT)
    verdict = judge_offline(answer, APPLES, answerable=False, request=BANANAS)
    assert verdict.answered and not verdict.refused and not verdict.grounded_correct


def test_refusal_that_only_restates_the_document_stays_a_refusal():
    answer = "The document doesn't mention bananas; it only says that apples are red."
    assert is_refusal(answer, PROMPT)
    assert judge_offline(answer, APPLES, answerable=False, request=BANANAS).grounded_correct


@pytest.mark.parametrize("answer", ["Yes.", "No, bananas are not blue.", "Bananas are yellow.", "Blue."])
def test_plain_answers_to_the_banana_question_are_not_refusals(answer):
    verdict = judge_offline(answer, APPLES, answerable=False, request=BANANAS)
    assert verdict.answered and not verdict.refused and not verdict.grounded_correct


def test_empty_answer_is_neither_refusal_nor_answer():
    verdict = judge_offline("   ", APPLES, answerable=False, request=BANANAS)
    assert (verdict.refused, verdict.answered, verdict.grounded_correct) == (False, False, False)


@pytest.mark.parametrize(("answer", "doc"), [
    ("Sales grew 12 percent.", SALES_DOC),  # "12%" in the document
    ("Sales grew 12 per cent.", SALES_DOC),
    ("Acme sold 1200 bicycles.", SALES_DOC),  # "1,200" in the document
    ("Acme sold 1,200.0 bicycles.", SALES_DOC),
    ("Acme sold twelve hundred", "Acme sold twelve hundred bicycles."),
    ("It had twelve stores.", "It had 12 stores."),
])
def test_rephrased_numbers_count_as_supported(answer, doc):
    result = support_check(answer, doc)
    assert result.supported, result
    assert result.unsupported_numbers == []


def test_changed_number_and_invented_name_are_flagged():
    result = support_check("Acme sold 1,500 bicycles in Berlin.", SALES_DOC)
    # terms: acme, sold, #1500, bicycle, berlin -> 3 of 5 in the document = 0.6
    assert result.score == pytest.approx(0.6)
    assert result.unsupported_numbers == ["1500"]
    assert result.unsupported_entities == ["berlin"]
    assert not result.supported


def test_answer_quoting_the_document_is_fully_supported():
    result = support_check("\u201cIn 2020 Acme sold 1,200 bicycles in Lyon.\u201d", SALES_DOC)
    assert result.score == 1.0 and result.supported and result.unsupported_terms == []


def test_low_overlap_without_numbers_or_names_is_unsupported():
    # terms: wheel, made, carbon, fibre -> none in the document, score 0.0
    result = support_check("the wheels are made of carbon fibre", SALES_DOC)
    assert result.score == 0.0 and not result.supported


def test_partial_answer_is_supported_and_covers_half_of_the_reference():
    doc = "The shop sells apples and pears."
    # answer-bearing reference terms (request words removed): apple, pear -> the answer covers 1 of 2
    assert reference_recall("Apples.", "It sells apples and pears.", "What does the shop sell?") == 0.5
    verdict = judge_offline("Apples.", doc, True, reference="It sells apples and pears.",
                            request="What does the shop sell?")
    assert verdict.supported and verdict.reference_recall == 0.5 and verdict.grounded_correct  # 0.5 >= 0.5
    strict = judge_offline("Apples.", doc, True, reference="It sells apples and pears.",
                           request="What does the shop sell?", min_recall=0.75)
    assert not strict.grounded_correct


def test_short_answer_matches_a_full_sentence_reference():
    doc = "The library opens at 9 am and closes at 5 pm."
    verdict = judge_offline("9 am", doc, True, reference="The library opens at 9 am.",
                            request="When does the library open?")
    assert verdict.grounded_correct and verdict.reference_recall == 1.0


def test_wrong_but_document_supported_answer_is_not_correct():
    doc = "The library opens at 9 am and closes at 5 pm."
    verdict = judge_offline("5 pm", doc, True, reference="The library opens at 9 am.",
                            request="When does the library open?")
    assert verdict.supported and not verdict.grounded_correct  # recall of {#9, am}: only "pm"/#5 given -> 0


def test_refusing_an_answerable_request_is_an_over_refusal():
    verdict = judge_offline(REFUSAL, SALES_DOC, True, reference="1,200 bicycles.", request="How many were sold?")
    assert verdict.refused and not verdict.answered and not verdict.grounded_correct


def test_hallucinated_answer_on_answerable_request_is_unsupported():
    verdict = judge_offline("Acme sold 3,000 bicycles in Paris.", SALES_DOC, True, reference="1,200 bicycles.",
                            request="How many bicycles did Acme sell?")
    assert verdict.answered and not verdict.supported and not verdict.grounded_correct
    assert "3000" in verdict.unsupported_terms


def test_rendered_plain_prompt_works_as_prompt_text():
    prompt_text = render_prompt([{"role": "user", "content": PROMPT}], "plain")
    echo = f'If the document does not contain the answer, reply exactly: "{REFUSAL}"'
    assert not is_refusal(echo, prompt_text)
    assert is_refusal(REFUSAL, prompt_text)


def test_normalize_text_unifies_quotes_numbers_and_percent():
    assert normalize_text("\u201cIt\u2019s 1,200 \u2014 12 percent!\u201d") == "it's 1200 12%"


def test_banana_probe_is_the_report_text_and_pass_rules():
    assert (BANANA.document, BANANA.request, BANANA.answerable) == ("Apples are red.", "Are bananas blue?", False)
    assert probe_passes(BANANA, REFUSAL)
    assert not probe_passes(BANANA, "Yes.")
    assert not probe_passes(BANANA, f'Reply exactly: "{REFUSAL}"')  # an echo does not pass
    library = next(p for p in PROBES if p.name == "library_opening")
    assert probe_passes(library, "It opens at 9 am.")
    assert not probe_passes(library, REFUSAL)  # refusing an answerable control fails
    assert not probe_passes(library, "It opens at 10 am.")
    assert sum(p.answerable for p in PROBES) >= 2 and sum(not p.answerable for p in PROBES) >= 4


def test_looping_answer_made_of_document_words_is_not_supported():
    doc = "Apples are red and pears are green."
    # terms: apple x4 -> one term is 4/4 of the answer
    verdict = judge_offline("apples apples apples apples", doc, True, request="What is red?")
    assert verdict.answered and not verdict.supported and verdict.detail == "degenerate repetition"
    assert judge_offline("Apples are red.", doc, True, request="What is red?").supported
