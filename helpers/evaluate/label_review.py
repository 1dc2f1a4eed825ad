"""The reviewed labels: test prompts whose label two blind readers confirmed, and the rates on them.

Why: a test prompt's label comes from how it was built. "Answerable" is a FACTS request with its own
document; "unanswerable" is a near miss (the request's subject swapped), another row's request, or
the document with its answering passage removed. Construction is wrong for some prompts: a document
that starts mid-text half answers its request, "summarise this text" is answerable from any text,
and removing one passage rarely removes every sentence that answers. Every such prompt moves a rate:
a right refusal becomes over-refusal, a right answer becomes a hallucination, so the cut a model can
show is capped by the share of labels that hold (docs/label_audit_unanswerable.md).

The review (``tools/label_audit.py --side review``) gave every evaluation prompt of the bundled test
split to two readers who saw only the request and the text the model sees, never the label or the
kind, in a shuffled order. A prompt keeps its label when **both** readers' verdicts confirm it
(answerable: both "answerable"; unanswerable: both "not answerable"); a "partly", a disagreement or
a reversal leaves it out of the reviewed rates, counted by kind. The rule was fixed before any
verdict was read.

The record (``helpers.config.LABEL_REVIEW_FILE``) names each prompt by its id and a hash of its request and text, so it
applies only to the very prompts that were read: evaluation reports the reviewed rates when every
evaluation item of the run has a matching entry (the bundled split built by ``configs/local.json``),
and says why not otherwise (another corpus, a rebuilt split, the smoke profile).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["confirmed_ids", "item_key", "keep_confirmed", "label_holds", "load_review"]

#: The verdict that confirms each label.
CONFIRMS = {True: "answerable", False: "not answerable"}


def item_key(request: str, document: str) -> str:
    """A short hash of what a reader saw (the request and the text shown): the review's match key."""
    payload = json.dumps([request, document], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:16]


def load_review(path: str | Path) -> dict[str, Any]:
    """A review record, checked: every entry has an id, a key, a label and two verdicts from the allowed set."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"label review {path} not found (EvalConfig.label_review; '' turns it off)")
    review = json.loads(path.read_text(encoding="utf-8"))
    allowed = set(CONFIRMS.values()) | {"partly"}
    for entry in review.get("items", []):
        missing = {"id", "key", "answerable", "kind", "readings"} - set(entry)
        if missing:
            raise ValueError(f"{path}: entry {entry.get('id', '?')} lacks {sorted(missing)}")
        verdicts = [r.get("verdict") for r in entry["readings"]]
        if len(verdicts) < 2 or any(v not in allowed for v in verdicts):
            raise ValueError(f"{path}: entry {entry['id']} needs two verdicts from {sorted(allowed)}, got {verdicts}")
    return review


def label_holds(entry: dict[str, Any]) -> bool:
    """Whether every reader's verdict confirms the entry's label."""
    return all(r["verdict"] == CONFIRMS[bool(entry["answerable"])] for r in entry["readings"])


def _matches(entry: dict[str, Any] | None, item: dict[str, Any]) -> bool:
    """Whether a review entry describes this very prompt: the text the readers saw and the label it carries."""
    return (entry is not None and entry["key"] == item_key(item["request"], item["document"])
            and bool(entry["answerable"]) == bool(item["answerable"]))


def confirmed_ids(items: Sequence[dict[str, Any]], review: dict[str, Any]) -> tuple[set[str] | None, dict[str, Any]]:
    """The ids of ``items`` whose label the review confirms, and a summary.

    Returns ``(None, summary)`` when some item has no entry with the same id, label and hash (the
    review then does not describe this test split, and no reviewed rate is given); the summary says
    how many matched. Otherwise the kept ids, and per kind how many were kept and left out.
    """
    entries = {e["id"]: e for e in review.get("items", [])}
    unmatched = [it["id"] for it in items if not _matches(entries.get(it["id"]), it)]
    if unmatched:
        return None, {"applied": False, "matched": len(items) - len(unmatched), "items": len(items),
                      "reason": f"{len(unmatched)} of {len(items)} evaluation items are not in the review "
                                f"(first: {unmatched[0]}): it describes another test split"}
    kept: set[str] = set()
    by_kind: dict[str, dict[str, int]] = {}
    for it in items:
        entry = entries[it["id"]]
        counts = by_kind.setdefault(entry["kind"], {"kept": 0, "left_out": 0})
        if label_holds(entry):
            kept.add(it["id"])
            counts["kept"] += 1
        else:
            counts["left_out"] += 1
    return kept, {"applied": True, "items": len(items), "kept": len(kept), "by_kind": by_kind,
                  "rule": review.get("rule", "")}


def keep_confirmed(items: Sequence[dict[str, Any]], review: dict[str, Any], name: str = "prompts"
                   ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The items whose label the review confirms, matched by what the readers saw (request and text, not the id:
    the head's fit and dev items are numbered per dev split), and the counts kept and left out.

    Raises ValueError when an item is not in the review or carries another label there: the review then
    describes another split, and fitting on a partial filter would hide it."""
    entries = {e["key"]: e for e in review.get("items", [])}
    kept: list[dict[str, Any]] = []
    for it in items:
        entry = entries.get(item_key(it["request"], it["document"]))
        if not _matches(entry, it):
            raise ValueError(f"the label review does not cover {name} item {it['id']} ({it['request'][:60]!r}) with "
                             "this text and label: it describes another split (rebuild the review, or set "
                             "TrainConfig.answerability_label_review to '')")
        if label_holds(entry):
            kept.append(it)
    return kept, {"kept": len(kept), "left_out": len(items) - len(kept)}
