"""Teacher outputs → DPO preference pairs in the shared contract, split by document.

Four pair types (counts per seed row from ``DataConfig.pairs_per_kind``):

* ``hallucination``: grounded answer (chosen) vs a fabricated answer that contradicts the document;
* ``unanswerable``: the refusal (chosen) vs a confident answer, for a near-miss request on the same
  document (``source="near_miss"``, kind ``unanswerable``) or for the row's own request shown with
  an unrelated document from the same split (``source="unrelated_doc"``, kind ``unrelated``);
* ``over_refusal``: grounded answer (chosen) vs the refusal, so the model does not learn to refuse
  everything;
* ``paraphrase``: a reworded answerable request, grounded answer vs a fabrication or the refusal;
* ``answer_removed`` (counterfactual, opt-in): the row's own answerable request shown with its own
  excerpt *minus the sentences that hold the answer* — refusal (chosen) vs the original answer. The
  request and the rest of the document are unchanged, so the only thing that separates this pair
  from the ``over_refusal`` one is whether the answer is in the document. Rows where the answer
  cannot be cut out cleanly (its distinctive terms still in the text, or most of the excerpt would
  go) are skipped, not guessed (``remove_answer`` returns None).

Documents are assigned to train/test before any pair is built (unrelated documents are drawn from
the same split), so no document ever appears on both sides.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from helpers.config import REFUSAL
from helpers.data.excerpts import content_words, normalize, round_robin, sentence_spans
from helpers.data.rows import Row
from helpers.data.teachers import TeacherOutput
from helpers.prompts import build_messages

__all__ = [
    "PAIRS_MADE_BY",
    "PAIR_COLUMNS",
    "PAIR_TYPES",
    "DocContext",
    "build_answer_removed_pairs",
    "build_row_pairs",
    "build_unrelated_pairs",
    "dedup_pairs",
    "make_pair",
    "pick_unrelated",
    "remove_answer",
    "split_documents",
]

PAIR_TYPES = ("hallucination", "unanswerable", "over_refusal", "paraphrase")
#: Where ``<output root>/pairs`` comes from, for "missing input" messages of later stages.
PAIRS_MADE_BY = "notebook 01 (01_build_preference_pairs.ipynb) / gemma-facts data"
PAIR_COLUMNS = ("prompt", "chosen", "rejected", "pair_type", "source", "doc_id", "domain", "answerable",
                "document", "request", "system_instruction", "reference")


@dataclass
class DocContext:
    """A document as placed in prompts: its id, domain and excerpt."""

    doc_id: str
    domain: str
    excerpt: str


def make_pair(*, document: str, request: str, system_instruction: str, chosen: str, rejected: str,
              pair_type: str, source: str, doc_id: str, domain: str) -> dict[str, Any]:
    """One row of the pairs dataset; the prompt comes only from ``build_messages``."""
    if pair_type not in PAIR_TYPES:
        raise ValueError(f"pair_type must be one of {PAIR_TYPES}, got {pair_type!r}")
    answerable = chosen != REFUSAL
    return {
        "prompt": build_messages(document, request, system_instruction),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "pair_type": pair_type, "source": source, "doc_id": doc_id, "domain": domain or "",
        "answerable": answerable, "document": document, "request": request,
        "system_instruction": system_instruction, "reference": chosen if answerable else REFUSAL,
    }


def split_documents(doc_ids: Sequence[str], test_fraction: float, seed: int, *,
                    n_test: int | None = None) -> dict[str, str]:
    """Map each document id to "train" or "test" (seeded shuffle; at least one test doc when possible).

    ``n_test``: this many test documents instead of ``test_fraction`` of them (at most all but one)."""
    unique = sorted(set(doc_ids))
    random.Random(seed).shuffle(unique)
    if n_test is not None:
        return {doc: ("test" if i < min(n_test, len(unique) - 1) else "train") for i, doc in enumerate(unique)}
    n_test = round(test_fraction * len(unique))
    if test_fraction > 0 and len(unique) >= 2:
        n_test = min(max(n_test, 1), len(unique) - 1)
    return {doc: ("test" if i < n_test else "train") for i, doc in enumerate(unique)}


def _overlap(a: str, b: str) -> float:
    words_a = set(content_words(a))
    return len(words_a & set(content_words(b))) / max(1, len(words_a))


def pick_unrelated(request: str, answer: str, own_doc: str, candidates: Sequence[DocContext],
                   rng: random.Random, n: int = 1) -> list[DocContext]:
    """Documents that cannot answer ``request``: least word overlap with request and answer, never the row's own."""
    pool = [c for c in candidates if c.doc_id != own_doc and _overlap(answer, c.excerpt) < 0.5]
    rng.shuffle(pool)  # ties broken by the seed, not by input order
    pool.sort(key=lambda c: _overlap(request, c.excerpt) + _overlap(answer, c.excerpt))
    return pool[:n]


def build_row_pairs(row: Row, doc: DocContext, taught: TeacherOutput, counts: dict[str, int],
                    rng: random.Random | None = None) -> list[dict[str, Any]]:
    """Hallucination, near-miss unanswerable, over-refusal and paraphrase pairs for one row."""
    rng = rng or random.Random(row.id)
    common = dict(document=doc.excerpt, system_instruction=row.system_instruction, doc_id=doc.doc_id,
                  domain=doc.domain)
    pairs = []
    fakes = round_robin([[(qa, f) for f in qa.fabrications] for qa in taught.qa], counts.get("hallucination", 0))
    for qa, fake in fakes:
        pairs.append(make_pair(**common, request=qa.request, chosen=qa.answer, rejected=fake.text,
                               pair_type="hallucination", source=fake.source))
    for near in taught.near_misses[: counts.get("unanswerable", 0)]:
        pairs.append(make_pair(**common, request=near.request, chosen=REFUSAL, rejected=near.confident_answer,
                               pair_type="unanswerable", source="near_miss"))
    for qa in taught.qa[: counts.get("over_refusal", 0)]:
        pairs.append(make_pair(**common, request=qa.request, chosen=qa.answer, rejected=REFUSAL,
                               pair_type="over_refusal", source="refusal"))
    rewordings = round_robin([[(qa, p) for p in qa.paraphrases] for qa in taught.qa], counts.get("paraphrase", 0))
    offset = rng.randrange(2)  # which paraphrase pairs get a fabrication (vs the refusal) as rejected
    for k, (qa, reworded) in enumerate(rewordings):
        use_fake = (k + offset) % 2 == 1 and bool(qa.fabrications)
        rejected = qa.fabrications[-1].text if use_fake else REFUSAL
        pairs.append(make_pair(**common, request=reworded, chosen=qa.answer, rejected=rejected,
                               pair_type="paraphrase", source="paraphrase_fabrication" if use_fake
                               else "paraphrase_refusal"))
    return pairs


def build_unrelated_pairs(row: Row, taught: TeacherOutput, own_doc: str, candidates: Sequence[DocContext],
                          n: int, rng: random.Random) -> list[dict[str, Any]]:
    """The row's answerable requests shown with unrelated documents: refusal (chosen) vs its own answer."""
    pairs = []
    for qa in taught.qa[:n]:
        for other in pick_unrelated(qa.request, qa.answer, own_doc, candidates, rng):
            pairs.append(make_pair(document=other.excerpt, request=qa.request,
                                   system_instruction=row.system_instruction, chosen=REFUSAL, rejected=qa.answer,
                                   pair_type="unanswerable", source="unrelated_doc", doc_id=other.doc_id,
                                   domain=other.domain))
    return pairs


def _distinctive_terms(answer: str, request: str, quote: str) -> set[str]:
    """Answer words the request does not already contain: what the document must hold to answer."""
    asked = set(content_words(request))
    return {w for w in content_words(answer) + content_words(quote) if w not in asked and len(w) > 1}


def remove_answer(excerpt: str, answer: str, request: str, quote: str = "", *,
                  max_removed_share: float = 0.5, max_left_share: float = 0.2) -> str | None:
    """``excerpt`` without the sentences that support ``answer``, or None when that cannot be done cleanly.

    A sentence goes when it contains the teacher's supporting quote or shares distinctive terms
    (answer words the request does not contain) with the answer; sentences go best match first until
    at most ``max_left_share`` of those terms are left in the text. None when the answer has no
    distinctive terms, when more than ``max_removed_share`` of the sentences would have to go, or
    when a number from the answer is still in the text: an "answer removed" document that still
    answers would teach the model to refuse answerable requests.
    """
    terms = _distinctive_terms(answer, request, quote)
    spans = sentence_spans(excerpt)
    if not terms or len(spans) < 2:
        return None
    quote_norm = normalize(quote)
    found = [terms & set(content_words(excerpt[a:b])) for a, b in spans]  # distinctive terms per sentence
    scored = []
    for k, (a, b) in enumerate(spans):
        sentence = normalize(excerpt[a:b])
        holds_quote = bool(quote_norm) and (quote_norm in sentence or sentence in quote_norm)
        scored.append((holds_quote, len(found[k]), k))
    scored.sort(key=lambda t: (not t[0], -t[1], t[2]))
    removed: set[int] = set()
    left = set().union(*found)
    for holds_quote, hits, k in scored:
        if len(left) <= max_left_share * len(terms) or (not holds_quote and hits == 0):
            break
        removed.add(k)
        left = set().union(*(f for i, f in enumerate(found) if i not in removed))
    numbers_left = {w for w in left if any(ch.isdigit() for ch in w)}
    if (not removed or len(removed) > max_removed_share * len(spans)
            or len(left) > max_left_share * len(terms) or numbers_left):
        return None
    pieces, cursor = [], 0
    for k, (a, b) in enumerate(spans):
        if k in removed:
            pieces.append(excerpt[cursor:a])
            cursor = b
    pieces.append(excerpt[cursor:])
    text = "".join(pieces)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


def build_answer_removed_pairs(row: Row, doc: DocContext, taught: TeacherOutput, n: int) -> tuple[list[dict[str, Any]], int]:
    """Counterfactual refusals: the row's answerable requests with their answer cut out of the excerpt.

    Returns the pairs and how many requests were skipped because the answer could not be cut cleanly.
    """
    pairs, skipped = [], 0
    for qa in taught.qa[:n]:
        edited = remove_answer(doc.excerpt, qa.answer, qa.request, qa.supporting_quote)
        if edited is None:
            skipped += 1
            continue
        pairs.append(make_pair(document=edited, request=qa.request, system_instruction=row.system_instruction,
                               chosen=REFUSAL, rejected=qa.answer, pair_type="unanswerable",
                               source="answer_removed", doc_id=doc.doc_id, domain=doc.domain))
    return pairs, skipped


def dedup_pairs(pairs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Drop repeated (prompt, chosen, rejected) triples and pairs whose two answers are the same text."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for pair in pairs:
        chosen, rejected = normalize(pair["chosen"][0]["content"]), normalize(pair["rejected"][0]["content"])
        key = (normalize(pair["prompt"][0]["content"]), chosen, rejected)
        if chosen == rejected or key in seen:
            continue
        seen.add(key)
        kept.append(pair)
    return kept, len(pairs) - len(kept)
