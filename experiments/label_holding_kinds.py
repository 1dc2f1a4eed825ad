"""Re-reading recorded test results on the unanswerable kinds whose labels hold.

The unanswerable side's label audit (``docs/label_audit_unanswerable.md``) found that an answer-removed
document usually still answers its request (the cut removes the sentences behind the offline teacher's
short answer; a broad FACTS request is answered by others too), while near misses hold, and a request shown
with another row's document is unanswerable by construction. So the hallucination rate over all three
kinds mixes right answers into the count. This script pools the recorded per-kind counts of the two kinds
whose labels hold (near miss + other document) for the base, each DPO seed and the base gated by the
answerability head.

It reads the committed ``metrics.json`` breakdowns only: no model runs and no test prompt is read again.

    python experiments/label_holding_kinds.py [--out results/label_holding_kinds.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.evaluate.metrics import wilson_ci  # noqa: E402

#: the unanswerable kinds (pair ``source``) whose labels the audit found to hold
HOLDING_KINDS = ("near_miss", "unrelated_doc")


def pooled(by_source: dict[str, Any], kinds: tuple[str, ...] = HOLDING_KINDS) -> dict[str, Any]:
    """Answered unanswerable prompts over ``kinds``, from a breakdown by source (rates x n back to counts)."""
    answered = n = 0
    for kind in kinds:
        rate = by_source[kind]["hallucination_rate"]
        answered += round(rate["value"] * rate["n"])
        n += rate["n"]
    lo, hi = wilson_ci(answered, n)
    return {"answered": answered, "n": n, "hallucination_rate": round(answered / n, 4),
            "ci95": [round(lo, 4), round(hi, 4)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=str(REPO / "results" / "local-seeds"))
    parser.add_argument("--head", default=str(REPO / "results" / "answerability-head-stage" / "metrics.json"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sides: dict[str, Any] = {}
    for folder in sorted(Path(args.seeds).glob("seed-*")):
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        sides.setdefault("base", pooled(metrics["breakdowns"]["base"]["source"]))
        sides[f"aligned {folder.name}"] = {**pooled(metrics["breakdowns"]["aligned"]["source"]),
                                           "over_refusal_rate": metrics["aligned"]["over_refusal_rate"]["value"]}
    head = json.loads(Path(args.head).read_text(encoding="utf-8"))["answerability_head"]
    sides["base + answerability head"] = {**pooled(head["breakdowns"]["source"]),
                                          "over_refusal_rate": head["base_with_head"]["over_refusal_rate"]["value"]}
    base = sides["base"]["hallucination_rate"]
    for name, side in sides.items():
        if name != "base":
            side["relative_cut"] = round(1 - side["hallucination_rate"] / base, 4) if base else None
    record = {"kinds": list(HOLDING_KINDS), "sources": [str(Path(args.seeds).relative_to(REPO)),
                                                        str(Path(args.head).relative_to(REPO))],
              "sides": sides}
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
