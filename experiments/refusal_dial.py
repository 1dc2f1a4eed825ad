"""Dev diagnostic: can a trained checkpoint's own refusal probability be the refusal dial?

The seventh pass of issue 16 trained whole-document DPO checkpoints whose greedy refusals follow the
document (dev refusal gap about +22 points) but refuse half or more of the answerable requests. The
greedy answer is one point on a curve; the refusal sentence's log-probability under the checkpoint is the
whole curve. Thresholded on dev, it gives any over-refusal rate the user wants. This asks how good that
curve is, against the answerability head on the base model (the project's strong baseline), on the same
dev items the checkpoint choice scores.

For each dev prompt (rendered as evaluation renders it, the refusal sentence appended), one forward pass
with the adapter on and one with it off gives the refusal's mean token log-probability. Scores compared:

* ``aligned``: the checkpoint's refusal log-probability (high = refuse);
* ``shift``: aligned minus base, how much training raised the refusal on this prompt;
* ``base``: the base model's (the fourth pass found it blind: dev AUC 0.42);
* ``head``: the answerability head of the select stage (``choose_head``: fitted on the training documents
  outside dev, chosen on dev), with ``--head``; its fit costs one prompt-only pass per fit prompt.

Reported per score: the dev AUC with a 95% interval from a bootstrap over dev documents, and the rates of
a dial set to the issue's over-refusal budget (the most unanswerable refused with answerable refused at
most the base's greedy rate + 5 points), the cut chosen on the other dev documents for each held-out
document (leave one document out), so the rates are not the threshold's own fit. The rates are of the
refuse-or-answer decision; what the model answers where the dial says answer is not generated here.

Reads the training split only (its dev documents), never the test split.

    python experiments/refusal_dial.py --config configs/local_whole_clean_labels.json \\
        --pairs outputs/whole_clean/pairs --checkpoint step80=outputs/whole_clean/seed-42/checkpoints/checkpoint-80 \\
        --head --out results/refusal_dial.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from answerability_probe import features, prompt_key  # noqa: E402

BUDGET = 0.05  # the over-refusal target: at most base + 5 points
BOOTSTRAP = 2000


def refusal_logp(model, tokenizer, item: dict, prompt_format: str) -> float:
    """The refusal sentence's mean token log-probability after the prompt: the probe experiment's reading
    (``answerability_probe.features``, whose positions its test checks), one forward pass."""
    return features(model, tokenizer, item, prompt_format)["refusal_logp"]


def doc_auc(scores: list[float], items: list[dict], seed: int = 0) -> dict:
    """AUC of ``scores`` (high = unanswerable) and a 95% bootstrap interval, resampling dev documents."""
    from helpers.evaluate.answerability_head import auc

    def value(idx):
        pos = [scores[i] for i in idx if not items[i]["answerable"]]
        neg = [scores[i] for i in idx if items[i]["answerable"]]
        return auc(pos, neg)

    by_doc: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_doc.setdefault(it["doc_id"], []).append(i)
    docs = sorted(by_doc)
    rng = random.Random(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        idx = [i for d in rng.choices(docs, k=len(docs)) for i in by_doc[d]]
        v = value(idx)
        if v is not None:
            draws.append(v)
    draws.sort()
    return {"auc": value(range(len(items))),
            "ci95": [draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]]}


def budget_cut(scores: list[float], answerable: list[bool], budget: float) -> float:
    """Refuse when score > cut: the lowest cut whose answerable-refused share is within ``budget``."""
    ans = sorted((s for s, a in zip(scores, answerable, strict=True) if a), reverse=True)
    allowed = int(budget * len(ans) + 1e-9)  # answerable prompts that may sit above the cut
    if allowed >= len(ans):
        return min(scores) - 1.0
    return ans[allowed]  # refusing strictly above the (allowed + 1)-th highest answerable score


def dial_rates(scores: list[float], items: list[dict], budget: float) -> dict:
    """Leave one dev document out: the cut set on the others (``budget_cut``), applied to it."""
    answerable = [bool(it["answerable"]) for it in items]
    refused = [False] * len(items)
    for doc in {it["doc_id"] for it in items}:
        rest = [i for i, it in enumerate(items) if it["doc_id"] != doc]
        cut = budget_cut([scores[i] for i in rest], [answerable[i] for i in rest], budget)
        for i, it in enumerate(items):
            if it["doc_id"] == doc:
                refused[i] = scores[i] > cut
    n_ans, n_una = sum(answerable), len(answerable) - sum(answerable)
    over = sum(r for r, a in zip(refused, answerable, strict=True) if a)
    caught = sum(r for r, a in zip(refused, answerable, strict=True) if not a)
    return {"over_refusal": round(over / n_ans, 4), "hallucination": round(1 - caught / n_una, 4),
            "answerable_refused": over, "unanswerable_answered": n_una - caught}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="the run's config overlay (its dev split and model budget)")
    parser.add_argument("--pairs", required=True, help="the run's pairs (its training split holds the dev documents)")
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--head", action="store_true", help="also fit and score the answerability head (its fit pass)")
    parser.add_argument("--base-over-refusal", type=float, default=None,
                        help="the base's greedy dev over-refusal (the budget is it + 5 points); default: 0")
    parser.add_argument("--work", default="outputs/refusal_dial")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.config:
        os.environ["GEMMA_FACTS_CONFIG"] = str(Path(args.config).resolve())

    from peft import set_peft_model_state_dict
    from tqdm.auto import tqdm

    from helpers.config import ModelConfig, TrainConfig, config_for
    from helpers.evaluate.answerability_head import choose_head, prompt_states
    from helpers.evaluate.run import eval_items, load_aligned_model, side_of
    from helpers.train.checkpoint_average import load_adapter_weights
    from helpers.train.dpo import dev_split, load_pairs
    from helpers.train.report import code_revision

    started = time.perf_counter()
    train_cfg, model_cfg = config_for(TrainConfig, "local"), config_for(ModelConfig, "local")
    fit_rows, dev_rows = dev_split(load_pairs(args.pairs)["train"], train_cfg.select_dev_documents, train_cfg.dev_seed)
    items = eval_items(list(dev_rows), train_cfg.select_max_examples, train_cfg.dev_seed, set_name="dev")
    answerable = [bool(it["answerable"]) for it in items]
    checkpoints = dict(c.split("=", 1) for c in args.checkpoint)
    model, tokenizer = load_aligned_model(model_cfg, next(iter(checkpoints.values())))
    model.eval()
    work = Path(args.work)

    def cached_logps(side: str, tag: str) -> list[float]:
        path = work / f"{tag}.json"
        done = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        out = []
        with side_of(model, side):
            for it in tqdm(items, desc=f"refusal log-prob ({tag})"):
                key = prompt_key(it)
                if key not in done:
                    done[key] = refusal_logp(model, tokenizer, it, model_cfg.prompt_format)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(done), encoding="utf-8")  # resumable
                out.append(done[key])
        return out

    base = cached_logps("base", "base")
    budget = (args.base_over_refusal or 0.0) + BUDGET
    scores: dict[str, list[float]] = {"base refusal log-prob": base}
    for name, folder in checkpoints.items():
        set_peft_model_state_dict(model, load_adapter_weights(Path(folder)))
        weights = hashlib.sha256(Path(folder, "adapter_model.safetensors").read_bytes()).hexdigest()[:12]
        aligned = cached_logps("aligned", f"aligned-{weights}")
        scores[f"{name}: refusal log-prob"] = aligned
        scores[f"{name}: shift (aligned - base)"] = [a - b for a, b in zip(aligned, base, strict=True)]
    head_record = None
    if args.head:
        fit_items = eval_items(list(fit_rows), set_name="fit")
        with side_of(model, "base"):
            fit_states = prompt_states(model, tokenizer, fit_items, model_cfg, desc="head: fit prompts")
            dev_states = prompt_states(model, tokenizer, items, model_cfg, desc="head: dev prompts")
        head = choose_head(fit_items, fit_states, items, dev_states, model_cfg.model_id)
        scores["answerability head (base)"] = [-s for s in head.scores(dev_states, items)]  # high = refuse
        head_record = {k: head.dev[k] for k in ("dev_auc", "fit", "dev")} | {"layer": head.layer,
                                                                              "with_overlap": head.with_overlap}
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python experiments/refusal_dial.py " + " ".join(sys.argv[1:]),
        "code": code_revision(), "pairs": args.pairs, "checkpoints": checkpoints,
        "dev": {"documents": len({it["doc_id"] for it in items}), "answerable": sum(answerable),
                "unanswerable": len(items) - sum(answerable)},
        "budget": {"answerable_refused_at_most": round(budget, 4),
                   "rule": "base greedy dev over-refusal + 5 points; the cut set on the other dev documents "
                           "(leave one document out)"},
        "head": head_record,
        "scores": {name: {**doc_auc(s, items), "dial_at_budget": dial_rates(s, items, budget)}
                   for name, s in scores.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(record, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
