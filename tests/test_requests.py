"""What a real request asks for, and near misses made from it (helpers.data.requests)."""

from __future__ import annotations

import random

import pytest

from helpers.data.requests import (
    answer_sentences_for,
    distinctive_terms,
    named_subjects,
    request_style,
    subject_swap,
    terms_absent,
    topic_neighbours,
)


@pytest.mark.parametrize(("request_text", "style"), [
    ("Summarize the arguments for and against the proposal.", "summary"),
    ("Give me an overview of the report.", "summary"),
    ("List every side effect mentioned.", "list"),
    ("What are the primary positive aspects reviewers refer to?", "list"),
    ("Explain why Staphylococcus aureus is a worry for humans.", "explanation"),
    ("How does the self employment tax get split?", "explanation"),
    ("When was the company founded?", "question"),
    ("What is the SDWA?", "question"),
])
def test_request_style(request_text, style):
    assert request_style(request_text) == style
    assert answer_sentences_for(style) == (1 if style == "question" else 3)


def test_distinctive_terms_are_request_words_the_document_holds():
    doc = "The self-employment tax rate is 15.3 percent: 12.4 for social security and 2.9 for Medicare."
    terms = distinctive_terms("How is the self employment tax rate distributed?", doc)
    assert set(terms) <= {"employment", "self", "rate", "tax"} and "distributed" not in terms
    assert terms_absent(["leptospirosis"], doc) and not terms_absent(["medicare"], doc)
    assert not terms_absent([], doc)  # no terms: nothing is verified absent


def test_subject_swap_takes_a_subject_the_document_never_names():
    doc = "Hasbro reported strong 2023 results. Hasbro sold its eOne film business."
    request = "What are the most impactful 2023 developments for Hasbro?"
    new, old, subject = subject_swap(request, doc, ["Hasbro", "Mattel", "Celestial Seasonings"], random.Random(0))
    assert old == "Hasbro" and subject in ("Mattel", "Celestial Seasonings") and subject in new and "Hasbro" not in new
    assert subject_swap(request, doc, ["Hasbro"], random.Random(0)) is None  # no absent candidate
    assert subject_swap("What are the 2023 developments?", doc, ["Mattel"], random.Random(0)) is None  # no subject
    assert named_subjects("What did Rosa Delgadillo say to the Board of Health?") == ["Rosa Delgadillo",
                                                                                      "Board of Health"]


def test_topic_neighbours_are_close_and_verified_unanswerable():
    docs = ["Bronchitis is an inflammation of the bronchial tubes. Coughing lasts weeks.",
            "Pneumonia is an infection of the lungs. Coughing and fever are common; antibiotics treat it.",
            "Self-employment tax is 15.3 percent of net earnings."]
    requests = ["How long does the coughing of bronchitis last?", "Which antibiotics treat pneumonia?",
                "How is the self-employment tax split?"]
    out = topic_neighbours(docs, requests)
    assert out[0] == 1  # the lung document is closest, and "antibiotics"/"pneumonia" are absent from doc 0
    for i, j in enumerate(out):
        assert j != i
        if j is not None:
            assert terms_absent(distinctive_terms(requests[j], docs[j]), docs[i])
