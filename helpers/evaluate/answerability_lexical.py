"""Word-level evidence for the answerability head: which of the request's words the document holds, and where.

Why it exists: on the reviewed training prompts the word-overlap share alone separates answerable from
unanswerable prompts about as well as the model's state (out-of-fold AUC 0.971 against 0.972 for layer 10 +
overlap; ``experiments/head_lexical.py``), so the head's errors are largely lexical ones the single share
cannot see. A near miss swaps one rare word (the subject) for one the document lacks; an answerable request
often misses common instruction words ("summarize", "bullet", "using"). Six summaries tell them apart:

* ``share``: the request's content words found in the document (the head's overlap share);
* ``idf missing``: the missing words' share of the request's IDF weight (rare words weigh more);
* ``best sentence``: the largest share of the request's words found in one sentence of the document;
* ``bigram share``: the request's adjacent content-word pairs found as pairs in the document;
* ``specific share`` / ``specific idf missing``: the same as the first two over the request's *specific* words,
  those outside the vocabulary of requests in general (words in at least ``GENERIC_SHARE`` of the fit requests);
* ``missing name`` (only for a vocabulary fitted with ``names=True``): 1 when the request names something the
  document never mentions (``missing_names``). The shares above dilute one missing subject in a long request; on
  the out-of-fold training prompts, 15 of the 20 unanswerable prompts the six summaries scored most answerable were
  near misses whose swapped-in name ("Nanopore", "Neoantigens") the document lacks (experiments/head_words_oof.py).
  On the pseudo-test it did not help (docs/local_results.md, thirteenth pass).

The IDF table and the generic words come from the fit prompts only (``LexicalVocabulary.fit``) and are saved in the
head's JSON, so evaluation scores a test prompt with the statistics of the training documents, never its own.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["GENERIC_SHARE", "LEXICAL_NAMES", "NAME_SUMMARY", "LexicalVocabulary", "lexical_features", "lexical_summary",
           "missing_names", "request_names"]

LEXICAL_NAMES = ("share", "idf missing", "best sentence", "bigram share", "specific share", "specific idf missing")
NAME_SUMMARY = "missing name"
#: A word in at least this share of the fit requests is an instruction word, not the request's subject.
GENERIC_SHARE = 0.02
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# where a name cannot be told by its capital: after a sentence end, a colon or a comma (the builder's request
# prefixes: "Based on the text above, My ...", "Question about the document: What ...")
_CLAUSE_START = re.compile(r"(?<=[.!?:;,])\s+|\n+")
_NAME_TOKEN = re.compile(r"[A-Za-z][\w'’-]*")
_CONTRACTION = re.compile(r"['’](m|ve|d|ll|re|t)$")
_POSSESSIVE = re.compile(r"(['’]s|['’])$")


@dataclasses.dataclass
class LexicalVocabulary:
    """What the summaries need from the fit prompts: the IDF of every word in two or more fit documents (rarer
    words share ``unseen_idf``) and the generic request words. Plain types, so the head saves it as JSON."""

    idf: dict[str, float]
    unseen_idf: float
    generic: list[str]
    names: bool = False  # also the ``missing name`` summary (after the others: vocabularies saved before load unchanged)

    @classmethod
    def fit(cls, items: Sequence[dict[str, Any]], names: bool = False) -> LexicalVocabulary:
        """From the items' distinct documents and requests (``document`` and ``request`` of each item)."""
        from helpers.data.excerpts import content_words

        documents = sorted({it["document"] for it in items})
        requests = sorted({it["request"] for it in items})
        if not documents or not requests:
            raise ValueError("the lexical vocabulary needs fit prompts with a document and a request")
        frequency: Counter[str] = Counter()
        for doc in documents:
            frequency.update(set(content_words(doc)))
        n = len(documents)
        idf = {w: round(math.log((n + 1) / (c + 1)) + 1, 4) for w, c in sorted(frequency.items()) if c >= 2}
        asked: Counter[str] = Counter()
        for request in requests:
            asked.update(set(content_words(request)))
        generic = sorted(w for w, c in asked.items() if c / len(requests) >= GENERIC_SHARE)
        return cls(idf, round(math.log((n + 1) / 2) + 1, 4), generic, names)

    def weight(self, word: str) -> float:
        return self.idf.get(word, self.unseen_idf)

    @property
    def summary_names(self) -> tuple[str, ...]:
        """The names of the numbers ``lexical_summary`` gives with this vocabulary."""
        return LEXICAL_NAMES + ((NAME_SUMMARY,) if self.names else ())


def request_names(request: str, generic: Sequence[str] = ()) -> list[str]:
    """What the request names: words with a capital inside ("TikTok", "OPM") or at the start where a clause cannot
    begin, without a possessive ending, skipping contractions ("I'm") and ``generic`` instruction words ("Please")."""
    skip = {w.lower() for w in generic}
    found = []
    for clause in _CLAUSE_START.split(request):
        for position, token in enumerate(_NAME_TOKEN.findall(clause)):
            if _CONTRACTION.search(token):
                continue
            core = _POSSESSIVE.sub("", token)
            if len(core) < 2 or core.lower() in skip:
                continue
            if (position > 0 and core[0].isupper()) or any(c.isupper() for c in core[1:]):
                found.append(core)
    return found


def missing_names(request: str, document: str, generic: Sequence[str] = ()) -> list[str]:
    """The ``request_names`` the document never mentions (case-insensitive, a plural's ``s`` dropped, anywhere in
    the text: "COLAs" is found in "cola", "Disney" in "Disney's")."""
    text = document.lower()
    missing = []
    for name in request_names(request, generic):
        stem = name.lower()
        stem = stem[:-1] if stem.endswith("s") and len(stem) > 3 else stem
        if stem not in text:
            missing.append(name)
    return missing


def lexical_summary(request: str, document: str, vocab: LexicalVocabulary) -> list[float]:
    """The numbers of ``vocab.summary_names`` for one prompt (see the module docstring)."""
    from helpers.data.excerpts import content_words

    asked, doc_words = content_words(request), content_words(document)
    words, held = set(asked), set(doc_words)
    generic = set(vocab.generic)
    specific = {w for w in words if w not in generic} or words

    def shares(group: set[str]) -> tuple[float, float]:
        if not group:
            return 0.0, 1.0
        missing = [w for w in group if w not in held]
        total = sum(vocab.weight(w) for w in group)
        return 1 - len(missing) / len(group), sum(vocab.weight(w) for w in missing) / total

    share, idf_missing = shares(words)
    specific_share, specific_missing = shares(specific)
    best = max((len(words & set(content_words(s))) / len(words) for s in _SENTENCE_END.split(document) if s.strip()),
               default=0.0) if words else 0.0
    doc_pairs = set(zip(doc_words, doc_words[1:], strict=False))
    pairs = list(zip(asked, asked[1:], strict=False))
    bigram = sum(p in doc_pairs for p in pairs) / len(pairs) if pairs else 0.0
    summary = [share, idf_missing, best, bigram, specific_share, specific_missing]
    if vocab.names:
        summary.append(float(bool(missing_names(request, document, vocab.generic))))
    return summary


def lexical_features(items: Sequence[dict[str, Any]], vocab: LexicalVocabulary) -> Any:
    """``lexical_summary`` of every item, a float32 ``(items, len(vocab.summary_names))`` tensor."""
    import torch

    return torch.tensor([lexical_summary(it["request"], it["document"], vocab) for it in items],
                        dtype=torch.float32).reshape(len(items), len(vocab.summary_names))
