"""Re-reading recorded test results on the unanswerable kinds whose labels hold.

The unanswerable side's label audit (``docs/label_audit_unanswerable.md``) found that an answer-removed
document usually still answers its request (the cut removes the sentences behind the offline teacher's
short answer; a broad FACTS request is answered by others too), while near misses hold, and a request shown
with another row's document is unanswerable by construction. So the hallucination rate over all three
kinds mixes right answers into the count. This script pools the recorded per-kind counts of the two kinds
whose labels hold (near miss + other document) for the base, each DPO seed and the base gated by each
recorded answerability head (the stage's on the whole-document pairs; the one fitted and chosen without the
answer-removed kind, ``results/answerability-head-clean-labels/``; the same reading the request surprisal and
cut on out-of-fold scores, ``results/answerability-head-surprisal/``).

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

from helpers.evaluate.metrics import mean_min_max, wilson_ci  # noqa: E402

#: the unanswerable kinds (pair ``source``) whose labels the audit found to hold
HOLDING_KINDS = ("near_miss", "unrelated_doc")
CLEAN_HEADS = REPO / "results" / "answerability-head-clean-labels"
SURPRISAL_HEADS = REPO / "results" / "answerability-head-surprisal"
DEFAULT_HEADS = {
    "base + answerability head": str(REPO / "results" / "answerability-head-stage" / "metrics.json"),
    **{f"base + answerability head, clean labels, dev seed {seed}": str(CLEAN_HEADS / f"dev-seed-{seed}" / "metrics.json")
       for seed in (42, 7, 1234)},
    **{f"base + answerability head, request surprisal, dev seed {seed}":
       str(SURPRISAL_HEADS / f"dev-seed-{seed}" / "metrics.json") for seed in (42, 7, 1234)},
}
#: the spreads over dev splits written beside the sides: record key -> what a side's name holds
SPREADS = {"clean_label_heads_spread": ", clean labels, ", "surprisal_heads_spread": ", request surprisal, "}


def spread(sides: dict[str, Any], fields: tuple[str, ...] = ("hallucination_rate", "relative_cut", "over_refusal_rate",
                                                               "all_kinds_hallucination_rate", "all_kinds_relative_cut")
           ) -> dict[str, Any]:
    """Mean, min and max of each field over ``sides`` (the clean-label heads of three dev splits), and how many
    pass the Banana test."""
    out: dict[str, Any] = {"runs": list(sides)}
    for field in fields:
        out[field] = mean_min_max([side[field] for side in sides.values()])
    out["banana_passed"] = sum(side["banana_passed"] for side in sides.values())
    return out


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
    parser.add_argument("--head", action="append", metavar="NAME=METRICS", default=None,
                        help="a gated base's metrics.json (default: every recorded head, DEFAULT_HEADS)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sides: dict[str, Any] = {}
    for folder in sorted(Path(args.seeds).glob("seed-*")):
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        sides.setdefault("base", pooled(metrics["breakdowns"]["base"]["source"]))
        sides[f"aligned {folder.name}"] = {**pooled(metrics["breakdowns"]["aligned"]["source"]),
                                           "over_refusal_rate": round(metrics["aligned"]["over_refusal_rate"]["value"], 4)}
    heads = dict(h.split("=", 1) for h in args.head) if args.head else DEFAULT_HEADS
    for name, path in heads.items():
        head = json.loads(Path(path).read_text(encoding="utf-8"))["answerability_head"]
        sides[name] = {**pooled(head["breakdowns"]["source"]),
                       "over_refusal_rate": round(head["base_with_head"]["over_refusal_rate"]["value"], 4),
                       "all_kinds_hallucination_rate": round(head["base_with_head"]["hallucination_rate"]["value"], 4),
                       "all_kinds_relative_cut": round(head["relative_hallucination_reduction"], 4),
                       "banana_passed": bool(head["banana"]["passed"])}
    base = sides["base"]["hallucination_rate"]
    for name, side in sides.items():
        if name != "base":
            side["relative_cut"] = round(1 - side["hallucination_rate"] / base, 4) if base else None
    record = {"kinds": list(HOLDING_KINDS), "sources": [str(Path(args.seeds).resolve().relative_to(REPO)),
                                                        *(str(Path(p).resolve().relative_to(REPO)) for p in heads.values())],
              "sides": sides}
    for key, marker in SPREADS.items():
        runs = {name: side for name, side in sides.items() if marker in name}
        if runs:
            record[key] = spread(runs)
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
