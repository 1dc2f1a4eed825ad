"""Teacher outputs → DPO preference pairs in the shared contract, split by document.

Four pair types (counts per seed row from ``DataConfig.pairs_per_kind``):

* ``hallucination``: grounded answer (chosen) vs a fabricated answer that contradicts the document;
* ``unanswerable``: the refusal (chosen) vs a confident answer, for a near-miss request on the same
  document (``source="near_miss"``, kind ``unanswerable``) or for the row's own request shown with
  an unrelated document from the same split (``source="unrelated_doc"``, kind ``unrelated``);
* ``over_refusal``: grounded answer (chosen) vs the refusal, so the model does not learn to refuse
  everything;
* ``paraphrase``: a reworded answerable request, grounded answer vs a fabrication or the refusal.

Documents are assigned to train/test before any pair is built (unrelated documents are drawn from
the same split), so no document ever appears on both sides.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from helpers.config import REFUSAL
from helpers.excerpts import content_words, normalize
from helpers.prompts import build_messages
from helpers.rows import Row
from helpers.teachers import TeacherOutput

__all__ = [
    "PAIR_COLUMNS",
    "PAIR_TYPES",
    "DocContext",
    "build_row_pairs",
    "build_unrelated_pairs",
    "dedup_pairs",
    "make_pair",
    "pick_unrelated",
    "split_documents",
]

PAIR_TYPES = ("hallucination", "unanswerable", "over_refusal", "paraphrase")
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


def split_documents(doc_ids: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Map each document id to "train" or "test" (seeded shuffle; at least one test doc when possible)."""
    unique = sorted(set(doc_ids))
    random.Random(seed).shuffle(unique)
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


def _round_robin(lists: Sequence[Sequence[Any]], n: int) -> list[Any]:
    """First item of each list, then the second of each, … up to ``n`` items."""
    out: list[Any] = []
    depth = 0
    while len(out) < n and any(depth < len(x) for x in lists):
        out += [x[depth] for x in lists if depth < len(x)][: n - len(out)]
        depth += 1
    return out


def build_row_pairs(row: Row, doc: DocContext, taught: TeacherOutput, counts: dict[str, int],
                    rng: random.Random | None = None) -> list[dict[str, Any]]:
    """Hallucination, near-miss unanswerable, over-refusal and paraphrase pairs for one row."""
    rng = rng or random.Random(row.id)
    common = dict(document=doc.excerpt, system_instruction=row.system_instruction, doc_id=doc.doc_id,
                  domain=doc.domain)
    pairs = []
    fakes = _round_robin([[(qa, f) for f in qa.fabrications] for qa in taught.qa], counts.get("hallucination", 0))
    for qa, fake in fakes:
        pairs.append(make_pair(**common, request=qa.request, chosen=qa.answer, rejected=fake.text,
                               pair_type="hallucination", source=fake.source))
    for near in taught.near_misses[: counts.get("unanswerable", 0)]:
        pairs.append(make_pair(**common, request=near.request, chosen=REFUSAL, rejected=near.confident_answer,
                               pair_type="unanswerable", source="near_miss"))
    for qa in taught.qa[: counts.get("over_refusal", 0)]:
        pairs.append(make_pair(**common, request=qa.request, chosen=qa.answer, rejected=REFUSAL,
                               pair_type="over_refusal", source="refusal"))
    rewordings = _round_robin([[(qa, p) for p in qa.paraphrases] for qa in taught.qa], counts.get("paraphrase", 0))
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
