"""Early stopping on dev: keep the checkpoint a fixed rule picks from dev scores, not the last one.

Why: on the local profile the model swings between refusing too little and too much from one
checkpoint to the next (``results/local-long/curve.json``), so *which* weights are kept matters as
much as the recipe. The choice must not look at the held-out sets, so a few *training* documents
are moved to a dev split before training (``TrainConfig.select_dev_documents``); after training the
later checkpoints answer the dev requests, the offline judge reads the answers, and

    rule: among the candidates whose dev over-refusal is at most ``select_max_over_refusal`` (the
    issue's "+5 points" over a base model that refuses none), the one with the lowest dev
    hallucination rate, the later one on a tie; if none qualifies, the lowest sum of the two rates.

The rule was fixed before any test number was read (the retired ``bench/dev_early_stopping.py`` measured it on
a separate dev run first). ``experiments/tune_local.py`` uses the same dev split for tuning.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["RATE_KEYS", "choose_checkpoint", "rule_text", "score_on_dev",
           "select_checkpoint", "select_on_dev"]

RATE_KEYS = ("hallucination_rate", "over_refusal_rate", "grounded_accuracy")


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
    from helpers.evaluate.run import side_metrics_offline

    m = side_metrics_offline(model, tokenizer, items, side, model_cfg, eval_cfg)
    return {k: round(m[k]["value"], 4) for k in RATE_KEYS}


def select_checkpoint(model: Any, tokenizer: Any, dev_pairs: Any, found: list[tuple[int, Path]], final_step: int,
                      final_dir: Path, model_cfg: Any, train_cfg: Any) -> dict[str, Any]:
    """Score the candidates on dev with ``model`` (a PEFT model), return the record with the chosen step.

    ``found`` are the run's checkpoints; ``final_dir`` holds the final weights in case the last step
    was not checkpointed. The candidates are ``helpers.train.checkpoint_average.later_weights``, the same
    window the checkpoint average uses.
    """
    from peft import set_peft_model_state_dict

    from helpers.config import EvalConfig, config_for
    from helpers.evaluate.run import eval_items
    from helpers.train.checkpoint_average import later_weights, load_adapter_weights

    started = time.perf_counter()
    eval_cfg = config_for(EvalConfig, train_cfg.profile, max_new_tokens=train_cfg.select_max_new_tokens)
    items = eval_items(list(dev_pairs), train_cfg.select_max_examples, model_cfg.seed, set_name="dev")
    if not items:
        raise ValueError("the dev documents produced no dev requests; raise TrainConfig.select_dev_documents")
    folders = {step: path or final_dir
               for step, path in later_weights(found, final_step, train_cfg.select_from_fraction)}
    model.eval()
    curve = []
    for step, folder in folders.items():
        set_peft_model_state_dict(model, load_adapter_weights(folder))
        curve.append({"step": step, "aligned": score_on_dev(model, tokenizer, items, model_cfg, eval_cfg)})
        print(f"dev, step {step}: hallucination {curve[-1]['aligned']['hallucination_rate']:.1%}, "
              f"over-refusal {curve[-1]['aligned']['over_refusal_rate']:.1%}", flush=True)
    chosen = choose_checkpoint(curve, train_cfg.select_max_over_refusal)
    return {
        "rule": rule_text(train_cfg.select_max_over_refusal),
        "dev_documents": train_cfg.select_dev_documents, "dev_pairs": len(dev_pairs),
        "dev_answerable": sum(it["answerable"] for it in items),
        "dev_unanswerable": sum(not it["answerable"] for it in items),
        "max_new_tokens": eval_cfg.max_new_tokens, "from_fraction": train_cfg.select_from_fraction,
        "curve": curve, "chosen_step": chosen["step"], "final_step": final_step,
        "chosen_from": str(folders[chosen["step"]]), "seconds": round(time.perf_counter() - started, 1),
    }


def select_on_dev(model_cfg: Any, train_cfg: Any, into: Any | None = None) -> dict[str, Any] | None:
    """After training: choose among the run's checkpoints on dev and make the chosen one *the* adapter.

    Runs on a freshly loaded base (its own process in ``make demo``): the trainer's model generates
    ~1.8x slower on a CPU than the loader's (measured: 16 dev prompts in ~36 s vs ~19 s), and a
    fresh process returns the training memory first. Writes the chosen weights into
    ``train_cfg.output_dir``, the choice into ``train_report.json`` and the model card. Idempotent:
    candidates are read from the checkpoints, so a second call makes the same choice.
    ``into``: a PEFT model still in memory (the notebook's trainer model) that receives the chosen
    weights too, so what is in memory matches the saved adapter.
    Returns None (and changes nothing) when ``select_dev_documents`` is 0.
    """
    import shutil

    from helpers.config import output_root
    from helpers.evaluate.run import ADAPTER_MADE_BY, load_aligned_model
    from helpers.notebook import require_input
    from helpers.train.checkpoint_average import ADAPTER_WEIGHTS
    from helpers.train.dpo import PAIRS_MADE_BY, dev_split, list_checkpoints, load_pairs
    from helpers.train.model_card import write_model_card
    from helpers.train.report import write_train_report

    if not train_cfg.select_dev_documents:
        print("TrainConfig.select_dev_documents is 0: the adapter is the run's last weights.")
        return None
    adapter_dir = Path(require_input(train_cfg.output_dir, ADAPTER_MADE_BY))
    report_path = output_root() / "train_report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
    found = [(s, p) for s, p in list_checkpoints(Path(train_cfg.checkpoint_dir)) if (p / ADAPTER_WEIGHTS).exists()]
    final_step = int(report.get("steps") or (found[-1][0] if found else 0))
    if not found and not final_step:
        raise ValueError(f"no checkpoint under {train_cfg.checkpoint_dir} and no train report: train first "
                         f"({ADAPTER_MADE_BY})")
    if (report.get("checkpoint_selection") or {}).get("final_step") == final_step and \
            not any(s == final_step for s, _ in found):
        raise ValueError("the adapter already holds a chosen checkpoint and the final weights were not "
                         "checkpointed, so the choice cannot be remade; rerun training")
    _, dev_pairs = dev_split(load_pairs(require_input(train_cfg.pairs_dir, PAIRS_MADE_BY))["train"],
                             train_cfg.select_dev_documents, model_cfg.seed)
    model, tokenizer = load_aligned_model(model_cfg, adapter_dir)
    selection = select_checkpoint(model, tokenizer, dev_pairs, found, final_step, adapter_dir, model_cfg, train_cfg)
    source = Path(selection["chosen_from"]) / ADAPTER_WEIGHTS
    if source.resolve() != (adapter_dir / ADAPTER_WEIGHTS).resolve():
        shutil.copyfile(source, adapter_dir / ADAPTER_WEIGHTS)
    if into is not None:
        from peft import set_peft_model_state_dict

        from helpers.train.checkpoint_average import load_adapter_weights

        set_peft_model_state_dict(into, load_adapter_weights(adapter_dir))
    print(f"Adapter = step {selection['chosen_step']} of {final_step} ({selection['rule']}).")
    if report:
        report["checkpoint_selection"] = selection
        write_train_report(report, report_path)
        write_model_card(adapter_dir, report)
    return selection


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.select.dev_choice``: the pipeline's stage between training and evaluation."""
    import argparse

    from helpers.config import ModelConfig, TrainConfig, config_for, detect_profile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)
    profile = detect_profile(args.profile)
    select_on_dev(config_for(ModelConfig, profile), config_for(TrainConfig, profile))  # --config: helpers.cli
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
