"""Dev diagnostic: is the answerability head limited by its threshold or by what it reads?

The head's threshold is set on 125 dev prompts (largest refusal gap), and the one test read was less good
than dev (62.5% of unanswerable refused on test, 81% on dev). Here the training documents outside dev are
split in five folds by document; each fold in turn is a pseudo-test, the rest is the fit, and the head
(the dev choice's family: layer 7, state + overlap share, L2 0.1) is thresholded three ways:

* A: as the pipeline does, the largest refusal gap on the dev prompts;
* B: the largest refusal gap on out-of-fold scores over fit + dev (five document folds), refitted on both;
* C: as B, but the cut that refuses at most a budget (2-5%) of the answerable out-of-fold prompts.

Reads the training split only (the states the select stage caches), never the test split.

    python experiments/answerability_threshold.py --pairs outputs/whole/pairs --out results/answerability_threshold.json
    python experiments/answerability_threshold.py --config configs/local_whole_clean_labels.json \
        --pairs outputs/whole_clean/pairs --layer 10 --l2 0.01 --out results/answerability_threshold_clean_labels.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.evaluate.answerability_head import fit_logistic, head_features, youden_threshold  # noqa: E402

LAYER, WITH_OVERLAP, L2 = 7, True, 0.1
BUDGETS = (0.02, 0.03, 0.04, 0.05)


def rates(scores, items, cut):
    """(answerable refused, unanswerable refused) when refusing below ``cut``."""
    ans = [s < cut for s, it in zip(scores, items, strict=True) if it["answerable"]]
    una = [s < cut for s, it in zip(scores, items, strict=True) if not it["answerable"]]
    return sum(ans) / len(ans), sum(una) / len(una)


def doc_folds(items, k, seed):
    docs = sorted({it["doc_id"] for it in items})
    random.Random(seed).shuffle(docs)
    return [set(docs[i::k]) for i in range(k)]


def fit(x, items):
    import torch

    return fit_logistic(head_features(x, items, LAYER, WITH_OVERLAP), torch.tensor([it["answerable"] for it in items]), L2)


def set_family(layer: int, l2: float) -> None:
    """Another head family than the fifth pass's (e.g. the clean-label head's layer 10, L2 0.01)."""
    global LAYER, L2
    LAYER, L2 = layer, l2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="outputs/whole/pairs")
    parser.add_argument("--out", default=None)
    parser.add_argument("--config", default=None, help="the pairs' config overlay (its dev split and model budget)")
    parser.add_argument("--layer", type=int, default=LAYER)
    parser.add_argument("--l2", type=float, default=L2)
    args = parser.parse_args()
    if args.config:
        os.environ["GEMMA_FACTS_CONFIG"] = str(Path(args.config).resolve())
    set_family(args.layer, args.l2)

    import torch

    from helpers.config import ModelConfig, TrainConfig, config_for
    from helpers.evaluate.answerability_head import prompt_states
    from helpers.evaluate.run import eval_items
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import dev_split, load_pairs
    from helpers.train.report import code_revision

    train_cfg, model_cfg = config_for(TrainConfig, "local"), config_for(ModelConfig, "local")
    fit_rows, dev_rows = dev_split(load_pairs(args.pairs)["train"], train_cfg.select_dev_documents, train_cfg.dev_seed)
    fit_items, dev_items = eval_items(list(fit_rows), set_name="fit"), eval_items(list(dev_rows), set_name="dev")
    model, tokenizer = load_model_and_tokenizer(model_cfg)  # states come from the select stage's cache when there
    x_fit = prompt_states(model, tokenizer, fit_items, model_cfg, desc="fit prompts")
    x_dev = prompt_states(model, tokenizer, dev_items, model_cfg, desc="dev prompts")
    y_dev = [it["answerable"] for it in dev_items]

    per_fold: dict[str, list] = {}
    for held in doc_folds(fit_items, 5, 0):
        tr = [i for i, it in enumerate(fit_items) if it["doc_id"] not in held]
        te = [i for i, it in enumerate(fit_items) if it["doc_id"] in held]
        tr_items, te_items = [fit_items[i] for i in tr], [fit_items[i] for i in te]
        score = fit(x_fit[tr], tr_items)
        cut_a, _ = youden_threshold(score(head_features(x_dev, dev_items, LAYER, WITH_OVERLAP)).tolist(), y_dev)
        per_fold.setdefault("A_dev_largest_gap", []).append(
            rates(score(head_features(x_fit[te], te_items, LAYER, WITH_OVERLAP)).tolist(), te_items, cut_a))
        all_items, x_all = tr_items + dev_items, torch.cat([x_fit[tr], x_dev])
        oof = [0.0] * len(all_items)
        for group in doc_folds(all_items, 5, 1):
            a = [i for i, it in enumerate(all_items) if it["doc_id"] not in group]
            b = [i for i, it in enumerate(all_items) if it["doc_id"] in group]
            part = fit(x_all[a], [all_items[i] for i in a])
            for i, v in zip(b, part(head_features(x_all[b], [all_items[i] for i in b], LAYER, WITH_OVERLAP)).tolist(),
                            strict=True):
                oof[i] = v
        final = fit(x_all, all_items)
        te_scores = final(head_features(x_fit[te], te_items, LAYER, WITH_OVERLAP)).tolist()
        cut_b, _ = youden_threshold(oof, [it["answerable"] for it in all_items])
        per_fold.setdefault("B_out_of_fold_largest_gap", []).append(rates(te_scores, te_items, cut_b))
        ans = sorted(v for v, it in zip(oof, all_items, strict=True) if it["answerable"])
        for budget in BUDGETS:
            k = int(budget * len(ans))
            cut = (ans[k - 1] + ans[k]) / 2 if k else ans[0] - 1e-6
            per_fold.setdefault(f"C_out_of_fold_budget_{budget}", []).append(rates(te_scores, te_items, cut))
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python experiments/answerability_threshold.py " + " ".join(sys.argv[1:]),
              "code": code_revision(), "head": {"layer": LAYER, "with_overlap": WITH_OVERLAP, "l2": L2},
              "pseudo_test": "five folds of the training documents outside dev, by document", "rules": {}}
    for rule, folds in per_fold.items():
        over = sum(f[0] for f in folds) / len(folds)
        caught = sum(f[1] for f in folds) / len(folds)
        record["rules"][rule] = {"answerable_refused": round(over, 3), "unanswerable_refused": round(caught, 3),
                                 "refusal_gap": round(caught - over, 3),
                                 "per_fold": [[round(a, 3), round(b, 3)] for a, b in folds]}
        print(f"{rule:32s} answerable refused {over:6.1%}  unanswerable refused {caught:6.1%}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
