"""What a real request asks for, and near-miss requests made from it with the answer verifiably absent.

Real FACTS requests are not one-fact questions: "list every …", "summarise the arguments …",
"explain why …". Their *style* decides how much of a document answers them (one sentence or
several), so the offline teacher sizes its extractive answer by it and the evaluation breaks its
rates down by it.

A near miss must be a request a careless model would answer, about *this* document's topic, whose
answer is not in the text. Two are built from the real request, never from templates:

* ``subject_swap``: the request's named subject (a proper-noun phrase the document contains) is
  replaced by a subject taken from another document of the same split that this document never
  names ("What are Hasbro's 2023 developments?" → "What are Mattel's 2023 developments?");
* ``topic_neighbour``: the request of the document closest in vocabulary (BM25), shown with this
  document, when none of its distinctive terms occurs here.

Both are verified: the new subject / the distinctive terms are absent from the whole document
(not only the excerpt), otherwise the candidate is rejected and counted.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from helpers.data.excerpts import content_words, normalize

__all__ = [
    "REQUEST_STYLES",
    "answer_sentences_for",
    "distinctive_terms",
    "named_subjects",
    "request_style",
    "subject_swap",
    "terms_absent",
    "topic_neighbours",
]

REQUEST_STYLES = ("question", "list", "summary", "explanation")

_SUMMARY = re.compile(r"\b(summar\w*|overview|recap|main points|key points|key takeaways|gist|in brief|outline|"
                      r"tl;?dr)\b", re.IGNORECASE)
_LIST = re.compile(r"\b(list\w*|enumerate|name (all|the|every|each|some)|what are (all )?the|which (are|were)|"
                   r"bullet\w*|every|all (the|of the)|steps|ways|types of|kinds of|examples of|factors|"
                   r"reasons|benefits|advantages|disadvantages|pros and cons|aspects)\b", re.IGNORECASE)
_EXPLAIN = re.compile(r"\b(explain\w*|why|how (does|do|did|is|are|can|could|would|should)|describe|"
                      r"elaborate|discuss|compare|contrast|what (is|are) the (difference|relationship|impact|"
                      r"role|effect|significance))\b", re.IGNORECASE)


def request_style(request: str) -> str:
    """"summary", "list", "explanation" or "question" (checked in that order: the broadest ask wins)."""
    if _SUMMARY.search(request):
        return "summary"
    if _LIST.search(request):
        return "list"
    if _EXPLAIN.search(request):
        return "explanation"
    return "question"


def answer_sentences_for(style: str) -> int:
    """How many excerpt sentences an extractive answer of this style takes (a fact: one; the rest: three)."""
    return 1 if style == "question" else 3


def distinctive_terms(request: str, own_document: str, limit: int = 3) -> list[str]:
    """The request's content words that its own document contains, rarest in the request first.

    These are what a document must mention to answer the request (stopwords and the generic words
    every request shares are left out by ``content_words``)."""
    present = set(content_words(own_document))
    words = [w for w in dict.fromkeys(content_words(request)) if w in present and len(w) > 2]
    return sorted(words, key=lambda w: (-len(w), words.index(w)))[:limit]


def terms_absent(terms: Sequence[str], document: str) -> bool:
    """True when none of ``terms`` (lower-cased content words) occurs in ``document``."""
    words = set(content_words(document))
    return bool(terms) and not any(t in words for t in terms)


_NAME = re.compile(r"\b[A-Z][\w&'’.-]*(?:\s+(?:of|and|for|the|de|&)?\s*[A-Z][\w&'’.-]*)*")


def named_subjects(text: str) -> list[str]:
    """Proper-noun phrases in ``text`` (the request's first word only if it is not a question word)."""
    out = []
    for match in _NAME.finditer(text):
        phrase = match.group().strip(" .,'’-")
        words = phrase.split()
        while words and words[0].lower() in _LEAD_WORDS:
            words = words[1:]
        phrase = " ".join(words)
        if len(phrase) >= 3 and phrase.lower() not in _LEAD_WORDS:
            out.append(phrase)
    return out


_LEAD_WORDS = frozenset("what who when where which why how is are was were do does did can could should would will "
                        "list describe explain summarize summarise give name according based using i please tell the "
                        "a an in on of for and or if this that these those it my our your provide write compare "
                        "identify".split())


def subject_swap(request: str, document: str, candidates: Sequence[str], rng: random.Random) -> tuple[str, str, str] | None:
    """``request`` with its named subject replaced by one of ``candidates`` that ``document`` never names.

    Returns (new request, old subject, new subject), or None when the request names no subject that
    the document contains or no candidate is absent from the document.
    """
    lowered = normalize(document)
    subjects = [s for s in named_subjects(request) if normalize(s) in lowered]
    if not subjects:
        return None
    old = max(subjects, key=len)
    options = [c for c in dict.fromkeys(candidates)
               if normalize(c) not in lowered and not (set(content_words(c)) & set(content_words(document)))
               and normalize(c) not in normalize(request) and len(c.split()) <= 4]
    if not options:
        return None
    same_shape = [c for c in options if (len(c.split()) > 1) == (len(old.split()) > 1)] or options
    new = rng.choice(same_shape)
    return request.replace(old, new, 1), old, new


def topic_neighbours(documents: Sequence[str], requests: Sequence[str], own_documents: Sequence[str] | None = None
                     ) -> list[int | None]:
    """For each document, the closest other document (BM25 on content words) whose request cannot be
    answered here: none of that request's distinctive terms occurs in this document. None when no
    document qualifies. ``own_documents``: the full texts the terms are taken from and checked against
    (default: ``documents``)."""
    from rank_bm25 import BM25Okapi

    full = list(own_documents or documents)
    corpus = [content_words(d) or ["_"] for d in documents]
    bm25 = BM25Okapi(corpus)
    terms = [distinctive_terms(r, d) for r, d in zip(requests, full, strict=True)]
    out: list[int | None] = []
    for i, words in enumerate(corpus):
        query = list(dict.fromkeys(words))[:200]
        scores = bm25.get_scores(query)
        order = sorted((j for j in range(len(documents)) if j != i), key=lambda j: -scores[j])
        out.append(next((j for j in order if normalize(documents[j]) != normalize(documents[i])
                         and terms_absent(terms[j], full[i])), None))
    return out
