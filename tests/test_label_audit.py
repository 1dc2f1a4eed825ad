"""The label audit (docs/label_audit.json → docs/label_audit.md): complete, and the page is what the record renders."""

from __future__ import annotations

import json

from helpers.config import repo_root
from tools.label_audit import AUDIT_JSON, AUDIT_MD, VERDICTS, render, summary

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
    items[0]["verdict"] = None
    assert summary({"items": items})["share_answerable"] is None  # unfinished: no share
