"""The label audit (docs/label_audit.json → docs/label_audit.md): complete, and the page is what the record renders."""

from __future__ import annotations

import json

import pytest

import tools.label_audit as label_audit
from helpers.config import repo_root
from helpers.evaluate.label_review import item_key, label_holds, load_review
from tools.label_audit import (
    AUDIT_JSON,
    AUDIT_MD,
    REVIEWED_JSON,
    REVIEWED_MD,
    TRAINING_JSON,
    TRAINING_KINDS,
    TRAINING_MD,
    UNANSWERABLE_JSON,
    UNANSWERABLE_KINDS,
    UNANSWERABLE_MD,
    UNANSWERABLE_VERDICTS,
    VERDICTS,
    draw_reviewed,
    render,
    render_training,
    render_unanswerable,
    summary,
)

ROOT = repo_root()


def test_every_drawn_prompt_has_a_verdict_and_a_reason():
    audit = json.loads((ROOT / AUDIT_JSON).read_text(encoding="utf-8"))
    assert len(audit["items"]) >= 30  # issue 16: >= 30 randomly drawn answerable test prompts
    assert len({it["id"] for it in audit["items"]}) == len(audit["items"])
    for item in audit["items"]:
        assert item["verdict"] in VERDICTS and item["reason"].strip(), item["id"]
        assert item["excerpt"].strip() and item["request"].strip()


def test_the_page_is_what_the_record_renders():
    audit = json.loads((ROOT / AUDIT_JSON).read_text(encoding="utf-8"))
    assert (ROOT / AUDIT_MD).read_text(encoding="utf-8") == render(audit)


def test_partly_answerable_counts_against_the_share():
    items = [{"id": str(i), "doc_id": "d", "request": "r", "excerpt": "e", "reference": "", "reason": "x",
              "verdict": v} for i, v in enumerate(["answerable", "answerable", "partly", "not answerable"])]
    assert summary({"items": items})["share_answerable"] == 0.5
    lo, hi = summary({"items": items})["ci95"]  # 2 of 4: a Wilson interval about the share, wide at n = 4
    assert lo < 0.5 < hi and hi - lo > 0.6
    items[0]["verdict"] = None
    assert summary({"items": items})["share_answerable"] is None  # unfinished: no share
    assert summary({"items": items})["ci95"] is None


def test_the_unanswerable_side_is_audited_evenly_per_kind_and_rendered_from_its_record():
    audit = json.loads((ROOT / UNANSWERABLE_JSON).read_text(encoding="utf-8"))
    assert audit["side"] == "unanswerable" and len(audit["items"]) >= 30
    assert len({it["id"] for it in audit["items"]}) == len(audit["items"])
    kinds = [it["kind"] for it in audit["items"]]
    assert {kinds.count(k) for k in UNANSWERABLE_KINDS} == {len(kinds) // len(UNANSWERABLE_KINDS)}
    for item in audit["items"]:
        assert item["verdict"] in UNANSWERABLE_VERDICTS and item["reason"].strip(), item["id"]
    assert (ROOT / UNANSWERABLE_MD).read_text(encoding="utf-8") == render_unanswerable(audit)


def test_the_unanswerable_share_counts_only_unanswerable_verdicts_per_kind():
    items = [{"id": str(i), "doc_id": "d", "kind": k, "request": "r", "excerpt": "e", "reason": "x", "verdict": v}
             for i, (k, v) in enumerate([("near_miss", "unanswerable"), ("near_miss", "answerable"),
                                         ("answer_removed", "partly"), ("answer_removed", "unanswerable")])]
    result = summary({"side": "unanswerable", "items": items})
    assert result["share_unanswerable"] == 0.5 and "share_answerable" not in result
    assert result["by_kind"]["near_miss"] == {"unanswerable": 1, "partly": 0, "answerable": 1}
    items[1]["verdict"] = "not answerable"  # the answerable side's word is not a verdict here
    assert summary({"side": "unanswerable", "items": items})["share_unanswerable"] is None


def test_the_training_pairs_audit_draws_both_kinds_evenly_and_is_rendered_from_its_record():
    audit = json.loads((ROOT / TRAINING_JSON).read_text(encoding="utf-8"))
    assert audit["side"] == "training" and len(audit["items"]) >= 30
    kinds = [it["kind"] for it in audit["items"]]
    assert {kinds.count(k) for k in TRAINING_KINDS} == {len(kinds) // len(TRAINING_KINDS)}
    assert kinds != sorted(kinds)  # shuffled: a reader cannot tell the kind from the position
    for item in audit["items"]:
        assert item["label"] == TRAINING_KINDS[item["kind"]]
        assert item["verdict"] in UNANSWERABLE_VERDICTS and item["reason"].strip(), item["id"]
    assert (ROOT / TRAINING_MD).read_text(encoding="utf-8") == render_training(audit)


def test_the_training_share_is_per_kind_against_each_kinds_own_label():
    items = [{"id": str(i), "doc_id": "d", "kind": k, "label": TRAINING_KINDS[k], "request": "r", "excerpt": "e",
              "reason": "x", "verdict": v}
             for i, (k, v) in enumerate([("answer_removed", "answerable"), ("answer_removed", "unanswerable"),
                                         ("refusal", "answerable"), ("refusal", "partly")])]
    result = summary({"side": "training", "items": items})
    assert result["by_kind"]["answer_removed"]["share_label_holds"] == 0.5
    assert result["by_kind"]["refusal"]["share_label_holds"] == 0.5  # partly is not "answerable"
    items[0]["verdict"] = None
    assert summary({"side": "training", "items": items})["by_kind"]["refusal"]["share_label_holds"] is None


def test_the_reviewed_audit_reads_only_prompts_both_readers_confirmed_and_is_rendered_from_its_record():
    audit = json.loads((ROOT / REVIEWED_JSON).read_text(encoding="utf-8"))
    assert audit["side"] == "reviewed" and len(audit["items"]) >= 30
    entries = {e["id"]: e for e in load_review(ROOT / audit["review"])["items"]}
    for item in audit["items"]:
        entry = entries[item["id"]]  # the very prompt the review read: same text, confirmed answerable
        assert entry["key"] == item_key(item["request"], item["excerpt"]), item["id"]
        assert entry["answerable"] and label_holds(entry), item["id"]
        assert item["verdict"] in VERDICTS and item["reason"].strip(), item["id"]
    assert (ROOT / REVIEWED_MD).read_text(encoding="utf-8") == render(audit)


def _review_of(items, confirmed):
    """A review record of ``items`` whose two readers confirm the ids in ``confirmed`` and call the rest partly."""
    def readings(ok, answerable):
        verdict = ("answerable" if answerable else "not answerable") if ok else "partly"
        return [{"reader": r, "verdict": verdict, "reason": "x"} for r in ("a", "b")]
    return {"items": [{"id": it["id"], "key": item_key(it["request"], it["document"]), "doc_id": it["doc_id"],
                       "kind": "refusal", "answerable": it["answerable"],
                       "readings": readings(it["id"] in confirmed, it["answerable"])} for it in items]}


def test_the_reviewed_draw_takes_confirmed_answerable_prompts_and_stops_on_another_split(tmp_path, monkeypatch):
    items = [{"id": f"test-{i}", "doc_id": str(i), "request": f"request {i}", "document": f"text {i}",
              "reference": "", "answerable": i % 3 != 0} for i in range(12)]
    monkeypatch.setattr(label_audit, "_test_items", lambda pairs_dir, max_examples: items)
    confirmed = {"test-1", "test-2", "test-4", "test-5", "test-3"}  # test-3 is unanswerable: never drawn
    review = tmp_path / "review.json"
    review.write_text(json.dumps(_review_of(items, confirmed)), encoding="utf-8")
    drawn = draw_reviewed("pairs", 10, 0, None, review_path=review)
    assert drawn["population"] == 4 and drawn["answerable_built"] == 8
    assert sorted(it["id"] for it in drawn["items"]) == ["test-1", "test-2", "test-4", "test-5"]
    assert [it["id"] for it in draw_reviewed("pairs", 2, 5, None, review_path=review)["items"]] == \
        [it["id"] for it in draw_reviewed("pairs", 2, 5, None, review_path=review)["items"]]  # seeded
    items[7] = {**items[7], "document": "text 7, rebuilt"}  # a prompt the review never read
    with pytest.raises(ValueError, match="does not describe"):
        draw_reviewed("pairs", 10, 0, None, review_path=review)
