"""Pair construction, dedup and the document-level split."""

from __future__ import annotations

import random

import pytest

from helpers.config import REFUSAL
from helpers.data.pairs import (
    PAIR_COLUMNS,
    DocContext,
    build_answer_removed_pairs,
    build_row_pairs,
    build_unrelated_pairs,
    dedup_pairs,
    make_pair,
    pick_unrelated,
    remove_answer,
    split_documents,
)
from helpers.data.rows import Row
from helpers.data.teachers import Fabrication, GroundedQA, NearMiss, TeacherOutput
from helpers.prompts import build_messages

ROW = Row(id="r1", system_instruction="Be brief.", user_request="What is the fee?",
          context_document="The fee is $275.", domain="policy", doc_id="r1")
DOC = DocContext("r1", "policy", "The fee is $275. Renewal costs $150.")


def taught(n_qa: int = 2) -> TeacherOutput:
    qa = [GroundedQA(request=f"Question {i}?", answer=f"Answer {i}.", supporting_quote=f"Answer {i}.",
                     fabrications=[Fabrication(text=f"Wrong {i}a.", source="number_swap"),
                                   Fabrication(text=f"Wrong {i}b.", source="negation")],
                     paraphrases=[f"Reworded {i}?", f"Rephrased {i}?"]) for i in range(n_qa)]
    near = [NearMiss(request=f"Unknown {i}?", confident_answer=f"Confident {i}.") for i in range(3)]
    return TeacherOutput(row_id="r1", teacher="offline", qa=qa, near_misses=near)


def test_make_pair_follows_the_shared_contract():
    pair = make_pair(document="Doc.", request="Q?", system_instruction="S.", chosen=REFUSAL, rejected="Yes.",
                     pair_type="unanswerable", source="near_miss", doc_id="d", domain="")
    assert tuple(pair) == PAIR_COLUMNS
    assert pair["prompt"] == build_messages("Doc.", "Q?", "S.")
    assert pair["chosen"] == [{"role": "assistant", "content": REFUSAL}]
    assert (pair["answerable"], pair["reference"]) == (False, REFUSAL)
    with pytest.raises(ValueError, match="pair_type must be one of"):
        make_pair(document="D", request="Q", system_instruction="", chosen="a", rejected="b", pair_type="x",
                  source="s", doc_id="d", domain="")


def test_row_pairs_follow_the_configured_counts():
    counts = {"hallucination": 3, "unanswerable": 2, "over_refusal": 2, "paraphrase": 2}
    pairs = build_row_pairs(ROW, DOC, taught(), counts, random.Random(0))
    by_type = {t: [p for p in pairs if p["pair_type"] == t] for t in counts}
    assert {t: len(v) for t, v in by_type.items()} == counts
    # round robin over QA items: Wrong 0a, Wrong 1a, then Wrong 0b
    assert [p["rejected"][0]["content"] for p in by_type["hallucination"]] == ["Wrong 0a.", "Wrong 1a.", "Wrong 0b."]
    assert all(p["chosen"][0]["content"] == REFUSAL and not p["answerable"] for p in by_type["unanswerable"])
    assert all(p["rejected"][0]["content"] == REFUSAL and p["answerable"] for p in by_type["over_refusal"])
    assert {p["source"] for p in by_type["paraphrase"]} == {"paraphrase_refusal", "paraphrase_fabrication"}
    assert all(p["document"] == DOC.excerpt and p["doc_id"] == "r1" for p in pairs)


def test_missing_material_gives_fewer_pairs_not_errors():
    pairs = build_row_pairs(ROW, DOC, TeacherOutput(row_id="r1", teacher="offline"), {"hallucination": 2})
    assert pairs == []


def test_unrelated_doc_pairs_refuse_on_the_least_related_document():
    candidates = [DocContext("r1", "policy", "The fee is $275."),
                  DocContext("d2", "sports", "Question 0 answer 0 appears here."),
                  DocContext("d3", "science", "Bees visit flowers in spring.")]
    pairs = build_unrelated_pairs(ROW, taught(1), "r1", candidates, 1, random.Random(0))
    [pair] = pairs
    assert (pair["doc_id"], pair["domain"], pair["source"]) == ("d3", "science", "unrelated_doc")
    assert pair["chosen"][0]["content"] == REFUSAL and pair["rejected"][0]["content"] == "Answer 0."
    assert pick_unrelated("q", "a", "r1", candidates[:1], random.Random(0)) == []  # never the row's own doc


def test_split_is_by_document_deterministic_and_never_empty_on_either_side():
    docs = [f"d{i}" for i in range(10)]
    split = split_documents(docs + docs[:3], 0.2, seed=42)
    assert split == split_documents(docs, 0.2, seed=42)
    assert sorted(split.values()).count("test") == 2  # round(0.2 * 10)
    assert list(split_documents(["a", "b"], 0.01, 0).values()).count("test") == 1  # at least one test doc
    assert set(split_documents(["a"], 0.2, 0).values()) == {"train"}


def test_dedup_drops_repeats_and_identical_answers():
    a = make_pair(document="D", request="Q", system_instruction="", chosen="x", rejected="y",
                  pair_type="hallucination", source="s", doc_id="d", domain="")
    same_answers = make_pair(document="D", request="Q", system_instruction="", chosen="X ", rejected="x",
                             pair_type="hallucination", source="s", doc_id="d", domain="")
    kept, dropped = dedup_pairs([a, dict(a), same_answers])
    assert kept == [a] and dropped == 2


def test_remove_answer_cuts_the_supporting_sentence_and_keeps_the_rest():
    excerpt = ("The museum opened in 1998 on the old harbour site.\n"
               "Admission costs 12 euros for adults and 6 euros for children.\n"
               "The café on the top floor serves lunch until 3 pm.")
    edited = remove_answer(excerpt, "Adults pay 12 euros and children pay 6 euros.",
                           "How much does admission cost?", "Admission costs 12 euros for adults and 6 euros for children.")
    assert edited is not None
    assert "12 euros" not in edited and "6 euros" not in edited
    assert "opened in 1998" in edited and "serves lunch" in edited


def test_remove_answer_refuses_when_the_answer_is_still_in_the_text():
    # the answer's number appears in two sentences; cutting the quote alone would leave it answerable
    excerpt = ("Admission costs 12 euros.\nThe 12 euros ticket also covers the garden.\n"
               "The café serves lunch.\nThe shop sells maps.")
    assert remove_answer(excerpt, "It costs 12 euros.", "How much is admission?", "Admission costs 12 euros.",
                         max_removed_share=0.25) is None
    # nothing distinctive in the answer (it only repeats the request): cannot tell what to cut
    assert remove_answer(excerpt, "Admission.", "What about admission?") is None


def test_answer_removed_pairs_are_refusals_on_the_same_request_and_count_skips():
    doc = DocContext("d1", "news", "The bridge opened in 1932.\nIt is 503 metres long.\nTolls were dropped in 1990.")
    taught = TeacherOutput(row_id="r1", teacher="t", qa=[
        GroundedQA(request="How long is the bridge?", answer="It is 503 metres long.",
                   supporting_quote="It is 503 metres long."),
        GroundedQA(request="What about the bridge?", answer="The bridge.")])
    pairs, skipped = build_answer_removed_pairs(ROW, doc, taught, n=2)
    assert skipped == 1 and len(pairs) == 1
    (pair,) = pairs
    assert pair["chosen"][0]["content"] == REFUSAL and pair["rejected"][0]["content"] == "It is 503 metres long."
    assert pair["source"] == "answer_removed" and pair["doc_id"] == "d1" and not pair["answerable"]
    assert "503" not in pair["document"] and "1932" in pair["document"]
