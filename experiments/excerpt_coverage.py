"""How much of its document a test excerpt shows, and the rates where the excerpt *is* the document.

The label audit (``docs/label_audit.md``) found most answerable-labelled real FACTS requests only
partly answerable from their 320-token excerpt: FACTS requests are long-form ("summarise …", "list
every …") and the documents run to ~1k tokens, so an excerpt holds a fifth of one. This script
measures that for every test item of a run (excerpt words / document words, matched to the bundled
FACTS rows by request and document) and splits each side's over-refusal and hallucination by
"whole document shown" vs "part shown". The whole-document items are the ones whose label needs no
audit. It reads ``generations.jsonl``; it runs no model.

    python experiments/excerpt_coverage.py outputs/seeds/seed-42 [outputs/seeds/seed-7 ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _documents() -> list[str]:
    from helpers.data.rows import BUNDLED_FACTS_PATHS

    return [json.loads(line)["context_document"] for path in BUNDLED_FACTS_PATHS
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def coverage(excerpt: str, documents: list[str]) -> float:
    """Share of its source document's words an excerpt shows (the document holding its first passage)."""
    from helpers.data.excerpts import GAP

    first = excerpt.split(GAP)[0].strip()[:200]
    source = next((d for d in documents if first and first in d), None)
    if source is None:
        return 1.0
    return min(1.0, len(excerpt.replace(GAP, " ").split()) / max(1, len(source.split())))


def summarise(run_dir: Path, documents: list[str]) -> dict:
    rows = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    rows = [r for r in rows if r["set"] == "test"]
    out: dict = {"run": str(run_dir), "items": len(rows)}
    for r in rows:
        r["whole"] = coverage(r["document"], documents) >= 0.95
    ans = [r for r in rows if r["answerable"]]
    out["answerable_mean_coverage"] = round(sum(coverage(r["document"], documents) for r in ans) / max(1, len(ans)), 3)
    for label, group in (("whole document", True), ("part of the document", False)):
        a = [r for r in rows if r["answerable"] and r["whole"] is group]
        u = [r for r in rows if not r["answerable"] and r["whole"] is group]
        out[label] = {"answerable": len(a), "unanswerable": len(u)}
        for side in ("base", "aligned"):
            out[label][side] = {
                "over_refusal": round(sum(r[side]["offline"]["refused"] for r in a) / len(a), 4) if a else None,
                "hallucination": round(sum(not r[side]["offline"]["refused"] for r in u) / len(u), 4) if u else None}
    return out


def main(argv: list[str]) -> int:
    documents = _documents()
    print(json.dumps([summarise(Path(d), documents) for d in argv], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
