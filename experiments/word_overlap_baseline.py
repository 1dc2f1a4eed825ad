"""A no-model baseline: how well does "share of the request's words found in the document" separate answerable
from unanswerable prompts?

Why: the trained adapters' refusals ignore the document on whole documents (refusal gap <= 0). If
word overlap alone separates the two kinds, the cue is in the data and the models do not use it; if
it does not, the data gives them nothing cheap to learn. Prints the AUC (the chance that a random
answerable prompt overlaps more than a random unanswerable one; 0.5 = no signal) for each pairs
folder's training split and its evaluation items (the same capped items ``gemma-facts evaluate``
asks), per unanswerable kind; then the rule "refuse below a share of the request's words", its threshold
fitted on the training split only (largest refusal gap), scored on the test items like a model. Reads
prompts and labels only, no model and no answers.

    python experiments/word_overlap_baseline.py outputs/seeds/pairs outputs/dev_whole_documents/pairs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.evaluate.answerability_head import auc, overlap  # noqa: E402  (the head uses the same share)


def separation(items: list[dict]) -> dict:
    """AUC over all items and per unanswerable kind (``source``)."""
    pos = [overlap(it["request"], it["document"]) for it in items if it["answerable"]]
    kinds: dict[str, list[float]] = {}
    for it in items:
        if not it["answerable"]:
            source = it["source"][0] if isinstance(it["source"], list) else it["source"]
            kinds.setdefault(source, []).append(overlap(it["request"], it["document"]))
    return {"answerable": len(pos), "unanswerable": sum(map(len, kinds.values())),
            "auc": auc(pos, [v for vs in kinds.values() for v in vs]),
            "auc_by_kind": {k: auc(pos, v) for k, v in sorted(kinds.items())}}


def rule_on(items: list[dict], threshold: float) -> dict:
    """The rule "refuse when less than ``threshold`` of the request's words are in the document", scored like a
    model: hallucination (unanswerable answered), over-refusal (answerable refused) and their refusal gap."""
    refused = [(overlap(it["request"], it["document"]) < threshold, it["answerable"]) for it in items]
    unanswerable = [r for r, a in refused if not a]
    answerable = [r for r, a in refused if a]
    from tools.readme_results import refusal_gap

    halluc = 1 - sum(unanswerable) / max(1, len(unanswerable))
    over = sum(answerable) / max(1, len(answerable))
    return {"threshold": threshold, "hallucination_rate": round(halluc, 4), "over_refusal_rate": round(over, 4),
            "refusal_gap": round(refusal_gap(halluc, over), 4), "n_answerable": len(answerable),
            "n_unanswerable": len(unanswerable)}


def fit_threshold(items: list[dict]) -> float:
    """The threshold with the largest refusal gap on ``items`` (the training pairs: tuned on train only)."""
    candidates = sorted({round(overlap(it["request"], it["document"]), 4) for it in items} | {1.01})
    return max(candidates, key=lambda t: (rule_on(items, t)["refusal_gap"], -t))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs_dirs", nargs="+")
    parser.add_argument("--max-examples", type=int, default=96, help="EvalConfig.max_examples of the run")
    parser.add_argument("--out", default=None, help="also write the JSON here (e.g. results/word_overlap_baseline.json)")
    args = parser.parse_args()
    from datasets import load_from_disk

    from helpers.evaluate.run import eval_items

    out = {}
    for path in args.pairs_dirs:
        data = load_from_disk(path)
        unique = {(r["doc_id"], r["request"], r["answerable"], r["document"]): r for r in data["train"]}
        train = [{**r, "source": [r["source"]]} for r in unique.values()]
        test = eval_items(list(data["test"]), args.max_examples, 42)
        threshold = fit_threshold(train)
        out[path] = {"train": separation(train), "test_items": separation(test),
                     "rule_fitted_on_train": {"train": rule_on(train, threshold), "test_items": rule_on(test, threshold)}}
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
