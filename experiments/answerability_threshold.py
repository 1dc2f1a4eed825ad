"""Dev diagnostic: is the answerability head limited by its threshold or by what it reads?

The head's threshold is set on 125 dev prompts (largest refusal gap), and the one test read was less good
than dev (62.5% of unanswerable refused on test, 81% on dev). Here the training documents outside dev are
split in five folds by document; each fold in turn is a pseudo-test, the rest is the fit, and the head
(the dev choice's family: layer 7, state + overlap share, L2 0.1) is thresholded three ways:

* A: the largest refusal gap on the dev prompts (``TrainConfig.answerability_threshold="dev_largest_gap"``);
* B: the largest refusal gap on out-of-fold scores over fit + dev (five document folds), refitted on both
  (``"out_of_fold_largest_gap"``; the package's ``out_of_fold_scores``);
* C: as B, but the cut that refuses at most a budget (2-5%) of the answerable out-of-fold prompts
  (``"out_of_fold_budget"``; ``budget_threshold``).

With ``--surprisal`` the family reads the request surprisal beside the state and the overlap share
(``TrainConfig.answerability_surprisal``).

Reads the training split only (the states the select stage caches), never the test split.

    python experiments/answerability_threshold.py --pairs outputs/whole/pairs --out results/answerability_threshold.json
    python experiments/answerability_threshold.py --config configs/local_whole_clean_labels.json \
        --pairs outputs/whole_clean/pairs --layer 10 --l2 0.01 --out results/answerability_threshold_clean_labels.json
    python experiments/answerability_threshold.py --config configs/local_whole_clean_labels.json \
        --pairs outputs/whole_clean/pairs --layer L --l2 X --surprisal --out results/answerability_threshold_surprisal.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.evaluate.answerability_head import (  # noqa: E402
    budget_threshold,
    document_folds,
    fit_logistic,
    head_features,
    out_of_fold_scores,
    refused_shares,
    youden_threshold,
)

LAYER, WITH_OVERLAP, L2 = 7, True, 0.1
BUDGETS = (0.02, 0.03, 0.04, 0.05)


def rates(scores, items, cut):
    """(answerable refused, unanswerable refused, {unanswerable kind: [refused, prompts]}) when refusing below
    ``cut``; the kind is the pair ``source`` (near miss, another document)."""
    over, caught = refused_shares(scores, [it["answerable"] for it in items], cut)
    kinds: dict[str, list[int]] = {}
    for s, it in zip(scores, items, strict=True):
        if not it["answerable"]:
            count = kinds.setdefault("+".join(it["source"]), [0, 0])
            count[0] += s < cut
            count[1] += 1
    return over, caught, kinds


def design(x, items, sur=None):
    """The family's features: the state at LAYER, the overlap share, and the request surprisal when given."""
    return head_features(x, items, LAYER, WITH_OVERLAP, surprisal=sur)


def fit(x, items, sur=None):
    import torch

    return fit_logistic(design(x, items, sur), torch.tensor([it["answerable"] for it in items]), L2)


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
    parser.add_argument("--show-missed", default=None, metavar="C_out_of_fold_budget_0.04",
                        help="print the unanswerable pseudo-test prompts this budget rule answers, by kind")
    parser.add_argument("--surprisal", action="store_true",
                        help="the family reads the request surprisal too (TrainConfig.answerability_surprisal)")
    args = parser.parse_args()
    if args.config:
        os.environ["GEMMA_FACTS_CONFIG"] = str(Path(args.config).resolve())
    set_family(args.layer, args.l2)

    import torch

    from helpers.config import ModelConfig, TrainConfig, config_for
    from helpers.evaluate.answerability_head import prompt_features
    from helpers.evaluate.run import eval_items
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import dev_split, load_pairs
    from helpers.train.report import code_revision

    train_cfg, model_cfg = config_for(TrainConfig, "local"), config_for(ModelConfig, "local")
    fit_rows, dev_rows = dev_split(load_pairs(args.pairs)["train"], train_cfg.select_dev_documents, train_cfg.dev_seed)
    fit_items, dev_items = eval_items(list(fit_rows), set_name="fit"), eval_items(list(dev_rows), set_name="dev")
    model, tokenizer = load_model_and_tokenizer(model_cfg)  # states come from the select stage's cache when there
    x_fit, s_fit = prompt_features(model, tokenizer, fit_items, model_cfg, surprisal=args.surprisal, desc="fit prompts")
    x_dev, s_dev = prompt_features(model, tokenizer, dev_items, model_cfg, surprisal=args.surprisal, desc="dev prompts")
    y_dev = [it["answerable"] for it in dev_items]

    def take(idx):  # the fit prompts' states and surprisal at these positions
        return x_fit[idx], (s_fit[idx] if s_fit is not None else None)

    per_fold: dict[str, list] = {}
    missed: list[tuple[str, str]] = []
    for held in document_folds(fit_items, 5, seed=0):
        tr = [i for i, it in enumerate(fit_items) if it["doc_id"] not in held]
        te = [i for i, it in enumerate(fit_items) if it["doc_id"] in held]
        tr_items, te_items = [fit_items[i] for i in tr], [fit_items[i] for i in te]
        (x_tr, s_tr), (x_te, s_te) = take(tr), take(te)
        score = fit(x_tr, tr_items, s_tr)
        cut_a, _ = youden_threshold(score(design(x_dev, dev_items, s_dev)).tolist(), y_dev)
        te_x = design(x_te, te_items, s_te)
        per_fold.setdefault("A_dev_largest_gap", []).append(rates(score(te_x).tolist(), te_items, cut_a))
        # B and C: the package's out-of-fold rules (choose_head's out_of_fold_largest_gap / out_of_fold_budget)
        all_items = tr_items + dev_items
        x_all = torch.cat([design(x_tr, tr_items, s_tr), design(x_dev, dev_items, s_dev)])
        y_all = [it["answerable"] for it in all_items]
        oof = out_of_fold_scores(x_all, all_items, L2)
        final = fit_logistic(x_all, torch.tensor(y_all), L2)
        te_scores = final(te_x).tolist()
        cut_b, _ = youden_threshold(oof, y_all)
        per_fold.setdefault("B_out_of_fold_largest_gap", []).append(rates(te_scores, te_items, cut_b))
        for budget in BUDGETS:
            cut, _ = budget_threshold(oof, y_all, budget)
            per_fold.setdefault(f"C_out_of_fold_budget_{budget}", []).append(rates(te_scores, te_items, cut))
            if args.show_missed == f"C_out_of_fold_budget_{budget}":  # what the rule lets through, to read
                missed.extend((("+".join(it["source"])), it["request"]) for v, it in zip(te_scores, te_items, strict=True)
                              if not it["answerable"] and v >= cut)
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python experiments/answerability_threshold.py " + " ".join(sys.argv[1:]),
              "code": code_revision(), "head": {"layer": LAYER, "with_overlap": WITH_OVERLAP, "l2": L2,
                       "with_surprisal": args.surprisal},
              "pseudo_test": "five folds of the training documents outside dev, by document", "rules": {}}
    for rule, folds in per_fold.items():
        over = sum(f[0] for f in folds) / len(folds)
        caught = sum(f[1] for f in folds) / len(folds)
        by_kind: dict[str, list[int]] = {}
        for *_, kinds in folds:
            for kind, (refused, n) in kinds.items():
                by_kind.setdefault(kind, [0, 0])
                by_kind[kind][0] += refused
                by_kind[kind][1] += n
        record["rules"][rule] = {"answerable_refused": round(over, 3), "unanswerable_refused": round(caught, 3),
                                 "refusal_gap": round(caught - over, 3),
                                 "per_fold": [[round(a, 3), round(b, 3)] for a, b, _ in folds],
                                 "unanswerable_refused_by_kind (pooled over folds)": {
                                     k: {"refused": r, "n": n, "share": round(r / n, 3)} for k, (r, n) in sorted(by_kind.items())}}
        print(f"{rule:32s} answerable refused {over:6.1%}  unanswerable refused {caught:6.1%}", flush=True)
    for kind, request in sorted(missed):
        print(f"missed ({kind}): {request[:110]!r}")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
