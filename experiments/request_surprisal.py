"""Dev diagnostic: does the document explain the request? Request surprisal as an answerability feature.

The answerability head (fourth and fifth passes of issue 16) reads the base model's state at the last prompt
token and catches another document's request well but only about half of the near misses (a request whose
subject is swapped for one the document lacks). A near miss has a tell the last state may blur: a word of
the request that the document does not explain. The prompt puts the request after the document, so the
forward pass the head already makes also scores every request token given the document. Beside it, a short
pass over the same prompt with an empty document scores the request alone. Per request token:

* surprisal given the document, ``-log p(token | document, earlier request tokens)``;
* pointwise mutual information, ``log p(token | document) - log p(token | no document)``: what reading the
  document bought for that token (an entity the document names is copied; one it lacks is not).

Summaries (mean, max, mean of the three largest surprisals; mean and min PMI; the share of tokens the
document made likelier) go to the same logistic regression as the head, alone and beside the head's
features. Fit: the training documents outside dev; scored on the dev documents the head is chosen on (the
select stage's ``choose_head`` split). Reports dev AUC by feature set, by unanswerable kind, and the rates of
a refuse-or-answer dial held to the over-refusal budget (base + 5 points), its cut set with one dev document
left out at a time. Reads the training split only, never the test split.

    python experiments/request_surprisal.py --config configs/local_whole_documents.json \\
        --pairs outputs/whole/pairs --out results/request_surprisal.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from refusal_dial import dial_rates, doc_auc  # noqa: E402

from helpers.evaluate.answerability_head import (  # noqa: E402  (the package's features; this script compares them)
    SURPRISAL_NAMES,
    prompt_features,
)

L2S = (1e-2, 1e-1, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="the run's config overlay (its dev split, the model budget)")
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--base-over-refusal", type=float, default=0.0,
                        help="the base's greedy over-refusal; the dial's budget is it + 5 points")
    parser.add_argument("--out", default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many fit prompts (timing runs)")
    parser.add_argument("--dev-seed", type=int, default=None, help="another dev split (TrainConfig.dev_seed)")
    args = parser.parse_args()
    if args.config:
        os.environ["GEMMA_FACTS_CONFIG"] = str(Path(args.config).resolve())

    import torch

    from helpers.config import ModelConfig, TrainConfig, config_for
    from helpers.evaluate.answerability_head import auc, fit_logistic, head_features, label_auc, overlap_shares
    from helpers.evaluate.run import eval_items
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import dev_documents, dev_split, load_pairs
    from helpers.train.report import code_revision

    started = time.perf_counter()
    train_cfg = config_for(TrainConfig, "local", **({"dev_seed": args.dev_seed} if args.dev_seed is not None else {}))
    model_cfg = config_for(ModelConfig, "local")
    fit_rows, dev_rows = dev_split(load_pairs(args.pairs)["train"], dev_documents(train_cfg), train_cfg.dev_seed)
    fit_items, dev_items = eval_items(list(fit_rows), set_name="fit"), eval_items(list(dev_rows), set_name="dev")
    if args.limit:
        fit_items = fit_items[: args.limit]
    model, tokenizer = load_model_and_tokenizer(model_cfg)
    model.eval()

    def features(items, name):  # the package's features and cache (the select stage's, with the surprisal)
        return prompt_features(model, tokenizer, items, model_cfg, surprisal=True, desc=f"{name} prompts")

    fit_states, fit_sur = features(fit_items, "fit")
    dev_states, dev_sur = features(dev_items, "dev")
    y_fit = torch.tensor([bool(it["answerable"]) for it in fit_items])
    y_dev = [bool(it["answerable"]) for it in dev_items]

    fit_share, dev_share = overlap_shares(fit_items), overlap_shares(dev_items)  # once, not per candidate

    def design(states, sur, items, share, layer, kind):
        if kind == "surprisal":
            return torch.cat([sur, share], 1)  # + overlap share
        base = head_features(states, items, layer, kind != "state", share)
        return torch.cat([base, sur], 1) if kind == "state+overlap+surprisal" else base

    kinds = ("state", "state+overlap", "surprisal", "state+overlap+surprisal")
    table, best = {}, {}
    for kind in kinds:
        for layer in (range(fit_states.shape[1]) if kind != "surprisal" else [0]):
            for l2 in L2S:
                score = fit_logistic(design(fit_states, fit_sur, fit_items, fit_share, layer, kind), y_fit, l2)
                dev_scores = score(design(dev_states, dev_sur, dev_items, dev_share, layer, kind)).tolist()
                value = label_auc(dev_scores, y_dev)
                table[f"{kind}/{layer}/l2={l2}"] = value
                if kind not in best or (value, -layer, -l2) > best[kind][0]:
                    best[kind] = ((value, -layer, -l2), layer, l2, [-s for s in dev_scores])  # high = refuse

    def by_kind(scores):  # each unanswerable kind against all answerable prompts
        out = {}
        ans = [s for s, it in zip(scores, dev_items, strict=True) if it["answerable"]]
        for kind in sorted({"+".join(it["source"]) for it in dev_items if not it["answerable"]}):
            una = [s for s, it in zip(scores, dev_items, strict=True)
                   if not it["answerable"] and "+".join(it["source"]) == kind]
            out[kind] = {"n": len(una), "auc": auc(una, ans)}
        return out

    single = {name: [row[i] for row in dev_sur.tolist()] for i, name in enumerate(SURPRISAL_NAMES)}
    budget = args.base_over_refusal + 0.05
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python experiments/request_surprisal.py " + " ".join(sys.argv[1:]),
        "code": code_revision(), "pairs": args.pairs,
        "fit": {"answerable": int(y_fit.sum()), "unanswerable": int((~y_fit).sum())},
        "dev": {"documents": len({it["doc_id"] for it in dev_items}), "answerable": sum(y_dev),
                "unanswerable": len(y_dev) - sum(y_dev)},
        "rule": "per feature set, the highest dev AUC over layers x L2 (ties: lower layer, smaller L2); the dial "
                f"refuses the most unanswerable dev prompts with at most {budget:.1%} of the answerable refused, its "
                "cut set on the other dev documents (leave one document out)",
        "single_feature_dev_auc (unanswerable higher; below 0.5: lower)": {
            name: auc([v for v, a in zip(vals, y_dev, strict=True) if not a],
                      [v for v, a in zip(vals, y_dev, strict=True) if a]) for name, vals in single.items()},
        "feature_sets": {kind: {"layer": layer if kind != "surprisal" else None, "l2": l2, **doc_auc(scores, dev_items),
                                "by_kind": by_kind(scores), "dial_at_budget": dial_rates(scores, dev_items, budget)}
                         for kind, (_, layer, l2, scores) in best.items()},
        "dev_auc_by_candidate": table,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps({k: v for k, v in record.items() if k != "dev_auc_by_candidate"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
