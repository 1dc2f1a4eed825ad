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
  those outside the vocabulary of requests in general (words in at least ``GENERIC_SHARE`` of the fit requests).

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

__all__ = ["GENERIC_SHARE", "LEXICAL_NAMES", "LexicalVocabulary", "lexical_features", "lexical_summary"]

LEXICAL_NAMES = ("share", "idf missing", "best sentence", "bigram share", "specific share", "specific idf missing")
#: A word in at least this share of the fit requests is an instruction word, not the request's subject.
GENERIC_SHARE = 0.02
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclasses.dataclass
class LexicalVocabulary:
    """What the summaries need from the fit prompts: the IDF of every word in two or more fit documents (rarer
    words share ``unseen_idf``) and the generic request words. Plain types, so the head saves it as JSON."""

    idf: dict[str, float]
    unseen_idf: float
    generic: list[str]

    @classmethod
    def fit(cls, items: Sequence[dict[str, Any]]) -> LexicalVocabulary:
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
        return cls(idf, round(math.log((n + 1) / 2) + 1, 4), generic)

    def weight(self, word: str) -> float:
        return self.idf.get(word, self.unseen_idf)


def lexical_summary(request: str, document: str, vocab: LexicalVocabulary) -> list[float]:
    """The six numbers of ``LEXICAL_NAMES`` for one prompt (see the module docstring)."""
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
    return [share, idf_missing, best, bigram, specific_share, specific_missing]


def lexical_features(items: Sequence[dict[str, Any]], vocab: LexicalVocabulary) -> Any:
    """``lexical_summary`` of every item, a float32 ``(items, 6)`` tensor."""
    import torch

    return torch.tensor([lexical_summary(it["request"], it["document"], vocab) for it in items],
                        dtype=torch.float32).reshape(len(items), len(LEXICAL_NAMES))
