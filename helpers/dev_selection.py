"""Early stopping on dev: keep the checkpoint a fixed rule picks from dev scores, not the last one.

Why: on the local profile the model swings between refusing too little and too much from one
checkpoint to the next (``results/local-long/curve.json``), so *which* weights are kept matters as
much as the recipe. The choice must not look at the held-out sets, so a few *training* documents
are moved to a dev split before training (``TrainConfig.select_dev_documents``); after training the
later checkpoints answer the dev requests, the offline judge reads the answers, and

    rule: among the candidates whose dev over-refusal is at most ``select_max_over_refusal`` (the
    issue's "+5 points" over a base model that refuses none), the one with the lowest dev
    hallucination rate, the later one on a tie; if none qualifies, the lowest sum of the two rates.

The rule was fixed before any test number was read (``bench/dev_early_stopping.py`` measured it on
a separate dev run first). ``bench/tune_local.py`` uses the same dev split for tuning.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

__all__ = ["RATE_KEYS", "choose_checkpoint", "dev_split", "rule_text", "score_on_dev", "select_checkpoint"]

RATE_KEYS = ("hallucination_rate", "over_refusal_rate", "grounded_accuracy")


def dev_split(train: Any, n_dev_docs: int, seed: int) -> tuple[Any, Any]:
    """Training pairs → (train', dev): ``n_dev_docs`` training documents, chosen with the seed, go to dev.

    Whole documents move, so no dev request shares an excerpt with a training pair.
    """
    docs = sorted(set(train["doc_id"]))
    if n_dev_docs >= len(docs):
        raise ValueError(f"select_dev_documents={n_dev_docs} would leave no training document "
                         f"(the training split has {len(docs)}); lower it or build more pairs")
    random.Random(seed).shuffle(docs)
    dev_docs = set(docs[:n_dev_docs])
    keep = [i for i, d in enumerate(train["doc_id"]) if d not in dev_docs]
    dev = [i for i, d in enumerate(train["doc_id"]) if d in dev_docs]
    return train.select(keep), train.select(dev)


def rule_text(max_over_refusal: float) -> str:
    return f"lowest dev hallucination among checkpoints with dev over-refusal <= {max_over_refusal}"


def choose_checkpoint(curve: list[dict[str, Any]], max_over_refusal: float) -> dict[str, Any]:
    """The entry the rule picks from ``[{"step": int, "aligned": {rates}}]``."""
    if not curve:
        raise ValueError("no checkpoint was scored on dev: nothing to choose from")
    ok = [p for p in curve if p["aligned"]["over_refusal_rate"] <= max_over_refusal + 1e-9]
    if ok:
        return min(ok, key=lambda p: (p["aligned"]["hallucination_rate"], -p["step"]))
    return min(curve, key=lambda p: (p["aligned"]["hallucination_rate"] + p["aligned"]["over_refusal_rate"],
                                     -p["step"]))


def score_on_dev(model: Any, tokenizer: Any, items: list[dict[str, Any]], model_cfg: Any, eval_cfg: Any,
                 side: str = "aligned") -> dict[str, float]:
    """Hallucination / over-refusal / grounded accuracy of one side on the dev items (offline judge)."""
    from helpers.evaluate import side_metrics_offline

    m = side_metrics_offline(model, tokenizer, items, side, model_cfg, eval_cfg)
    return {k: round(m[k]["value"], 4) for k in RATE_KEYS}


def candidates(found: list[tuple[int, Path]], final_step: int, from_fraction: float) -> list[tuple[int, Path | None]]:
    """Kept checkpoints from ``from_fraction`` of the run on, and the final weights (path None) if unsaved."""
    start = from_fraction * final_step
    picked: list[tuple[int, Path | None]] = [(s, p) for s, p in found if start <= s <= final_step]
    if not any(s == final_step for s, _ in picked):
        picked.append((final_step, None))
    return picked


def select_checkpoint(model: Any, tokenizer: Any, dev_pairs: Any, checkpoint_dir: str | Path, final_step: int,
                      model_cfg: Any, train_cfg: Any) -> dict[str, Any]:
    """Score the candidate checkpoints on dev, load the chosen weights into ``model``, return the record.

    ``model`` is the trained PEFT model; it ends holding the chosen adapter weights (the caller
    saves them as the adapter).
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from helpers.checkpoint_average import ADAPTER_WEIGHTS, load_adapter_weights
    from helpers.config import EvalConfig, config_for
    from helpers.evaluate import eval_items
    from helpers.train import _checkpoints

    started = time.perf_counter()
    eval_cfg = config_for(EvalConfig, train_cfg.profile, max_new_tokens=train_cfg.select_max_new_tokens)
    items = eval_items(list(dev_pairs), train_cfg.select_max_examples, model_cfg.seed, set_name="dev")
    if not items:
        raise ValueError("the dev documents produced no dev requests; raise TrainConfig.select_dev_documents")
    found = [(s, p) for s, p in _checkpoints(Path(checkpoint_dir)) if (p / ADAPTER_WEIGHTS).exists()]
    final = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    was_training = model.training
    model.eval()
    curve = []
    for step, path in candidates(found, final_step, train_cfg.select_from_fraction):
        set_peft_model_state_dict(model, final if path is None else load_adapter_weights(path))
        curve.append({"step": step, "aligned": score_on_dev(model, tokenizer, items, model_cfg, eval_cfg)})
        print(f"dev, step {step}: hallucination {curve[-1]['aligned']['hallucination_rate']:.1%}, "
              f"over-refusal {curve[-1]['aligned']['over_refusal_rate']:.1%}", flush=True)
    chosen = choose_checkpoint(curve, train_cfg.select_max_over_refusal)
    path = dict(found).get(chosen["step"]) if chosen["step"] != final_step else None
    set_peft_model_state_dict(model, final if path is None else load_adapter_weights(path))
    model.train(was_training)
    print(f"Kept the weights of step {chosen['step']} of {final_step} ({rule_text(train_cfg.select_max_over_refusal)}).")
    return {
        "rule": rule_text(train_cfg.select_max_over_refusal),
        "dev_documents": train_cfg.select_dev_documents, "dev_pairs": len(dev_pairs),
        "dev_answerable": sum(it["answerable"] for it in items),
        "dev_unanswerable": sum(not it["answerable"] for it in items),
        "max_new_tokens": eval_cfg.max_new_tokens, "from_fraction": train_cfg.select_from_fraction,
        "curve": curve, "chosen_step": chosen["step"], "final_step": final_step,
        "seconds": round(time.perf_counter() - started, 1),
    }
