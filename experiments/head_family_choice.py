"""Dev diagnostic: should the answerability head's family (layer, L2, features) be chosen out of fold?

The ninth pass of issue 16 read three heads (one per dev split) that read the request surprisal and are cut where
at most 4% of the answerable training prompts are refused out of fold. Their over-refusal held, their catch did
not: the dev AUC on one split's 88-109 prompts chose layers 10, 16 and 6, and the later two caught 67-72% of the
unanswerable prompts out of fold against 85%. Fit + dev is the whole training split whichever 24 documents are dev,
so a family chosen by out-of-fold AUC over fit + dev would not depend on the dev split at all.

A pseudo-test checks it without the test split: the training documents outside dev are split in five folds by
document (as ``answerability_threshold.py``); for each held fold and each dev split, the family is chosen two ways
on the rest (``dev``: highest dev AUC, the pipeline's rule; ``out_of_fold``: highest out-of-fold AUC over the rest
+ dev, five inner document folds), refitted on the rest + dev, cut at the 4% out-of-fold budget
(``configs/local_head_surprisal.json``), and scored on the held fold. Candidates: layers x L2 x (state + overlap
share | + request surprisal). Reads the training split only, from the select stage's feature cache.

    python experiments/head_family_choice.py --pairs outputs/whole_clean/pairs --out results/head_family_choice.json
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

CONFIG = REPO / "configs" / "local_head_surprisal.json"
L2S = (1e-3, 1e-2, 1e-1)
DEV_SEEDS = (42, 7, 1234)


def prompt_key(item: dict) -> tuple:
    """A training prompt across dev splits: its ids change with the split, its document, text and label do not."""
    return (item["doc_id"], item["request"].strip(), item["answerable"])


def training_prompt_features(pairs: str, model_cfg, surprisal: bool = True) -> tuple:
    """``(rows, items, states, surprisal)`` of the training split: its pair rows, their prompts as evaluation
    items, and each prompt's states and request surprisal (``prompt_features``: from the select stage's cache
    when it holds them; the model is loaded to fill it and freed on return). ``surprisal=False``: None for it, and
    no pass for it (a recipe without the surprisal needs only the states the select stage caches)."""
    from helpers.evaluate.answerability_head import prompt_features
    from helpers.evaluate.run import eval_items
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import load_pairs

    rows = load_pairs(pairs)["train"]
    items = eval_items(list(rows), set_name="fit")
    model, tokenizer = load_model_and_tokenizer(model_cfg)
    states, summaries = prompt_features(model, tokenizer, items, model_cfg, surprisal=surprisal, desc="training prompts")
    return rows, items, states, summaries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="outputs/whole_clean/pairs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ["GEMMA_FACTS_CONFIG"] = str(CONFIG)

    import torch

    from helpers.config import ModelConfig, TrainConfig, config_for
    from helpers.evaluate.answerability_head import (
        budget_threshold,
        document_folds,
        fit_logistic,
        head_features,
        label_auc,
        out_of_fold_scores,
        overlap_shares,
        refused_shares,
    )
    from helpers.evaluate.run import eval_items
    from helpers.train.dpo import dev_documents, dev_split
    from helpers.train.report import code_revision

    started = time.perf_counter()
    model_cfg = config_for(ModelConfig, "local")
    train_cfg = config_for(TrainConfig, "local")
    rows, everything, states, surprisal = training_prompt_features(args.pairs, model_cfg)
    shares = overlap_shares(everything)
    index = {prompt_key(it): i for i, it in enumerate(everything)}

    def rows_of(items):
        return torch.tensor([index[prompt_key(it)] for it in items])

    def design(idx, items, layer, with_surprisal):
        return head_features(states[idx], items, layer, True, shares[idx], surprisal[idx] if with_surprisal else None)

    def items_auc(scores, items):
        return label_auc(scores, [it["answerable"] for it in items])

    candidates = [(layer, l2, s) for layer in range(states.shape[1]) for l2 in L2S for s in (False, True)]
    record: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "command": "python experiments/head_family_choice.py " + " ".join(sys.argv[1:]),
                    "code": code_revision(), "budget": train_cfg.answerability_budget,
                    "candidates": len(candidates), "dev_splits": {}}
    for dev_seed in DEV_SEEDS:
        fit_rows, dev_rows = dev_split(rows, dev_documents(train_cfg), dev_seed)
        fit_items, dev_items = eval_items(list(fit_rows), set_name="fit"), eval_items(list(dev_rows), set_name="dev")
        dev_idx = rows_of(dev_items)
        result: dict = {"dev": {"per_fold": [], "chosen": []}, "out_of_fold": {"per_fold": [], "chosen": []}}
        for held in document_folds(fit_items, 5, seed=0):
            rest = [it for it in fit_items if it["doc_id"] not in held]
            test = [it for it in fit_items if it["doc_id"] in held]
            rest_idx, test_idx = rows_of(rest), rows_of(test)
            pooled_items, pooled_idx = rest + dev_items, torch.cat([rest_idx, dev_idx])
            y_rest = torch.tensor([it["answerable"] for it in rest])
            by_dev, by_oof = {}, {}
            for layer, l2, with_s in candidates:
                score = fit_logistic(design(rest_idx, rest, layer, with_s), y_rest, l2)
                by_dev[(layer, l2, with_s)] = items_auc(score(design(dev_idx, dev_items, layer, with_s)).tolist(), dev_items)
                oof = out_of_fold_scores(design(pooled_idx, pooled_items, layer, with_s), pooled_items, l2)
                by_oof[(layer, l2, with_s)] = (items_auc(oof, pooled_items), oof)
            for rule, table in (("dev", by_dev), ("out_of_fold", {k: v[0] for k, v in by_oof.items()})):
                layer, l2, with_s = max(table, key=lambda k: (table[k], -k[0], -k[1], not k[2]))
                x_pool = design(pooled_idx, pooled_items, layer, with_s)
                cut, _ = budget_threshold(by_oof[(layer, l2, with_s)][1], [it["answerable"] for it in pooled_items],
                                          train_cfg.answerability_budget)
                final = fit_logistic(x_pool, torch.tensor([it["answerable"] for it in pooled_items]), l2)
                scores = final(design(test_idx, test, layer, with_s)).tolist()
                over, caught = refused_shares(scores, [it["answerable"] for it in test], cut)
                result[rule]["per_fold"].append([round(over, 3), round(caught, 3)])
                result[rule]["chosen"].append(f"layer {layer}, l2 {l2}{', surprisal' if with_s else ''}")
        for rule in ("dev", "out_of_fold"):
            folds = result[rule]["per_fold"]
            result[rule]["answerable_refused"] = round(sum(f[0] for f in folds) / len(folds), 3)
            result[rule]["unanswerable_refused"] = round(sum(f[1] for f in folds) / len(folds), 3)
        record["dev_splits"][str(dev_seed)] = result
        print(dev_seed, {r: (result[r]["answerable_refused"], result[r]["unanswerable_refused"], result[r]["chosen"])
                         for r in ("dev", "out_of_fold")}, flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
