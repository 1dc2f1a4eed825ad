"""Early stopping on dev: keep the checkpoint a fixed rule picks from dev verdicts, never one no better than the base.

Why: on the local profile the model swings between refusing too little and too much from one
checkpoint to the next, so *which* weights are kept matters as much as the recipe. The choice must
not look at the test split, so training documents are moved to a dev split before training
(``TrainConfig.select_dev_documents``, chosen with ``dev_seed``: the same for every training seed).
After training the base and the later checkpoints answer the dev requests, the offline judge reads
whether each one refused, and

    rule: errors = unanswerable dev requests answered + answerable dev requests refused, each side
    weighted so both count alike (``balanced_errors``: the two error rates' sum times the mean side
    size; with as many answerable as unanswerable requests it is the plain count). A checkpoint
    qualifies only if it makes at least ``select_min_gain`` fewer of them than the base *and* answers
    at least ``select_min_gain`` fewer unanswerable requests than the base *and* its refusals follow
    the document: refused more often on unanswerable than on answerable requests, with a one-sided
    Fisher exact p-value at most ``select_max_p`` (``refusal_independence_p``). Among those, the
    fewest errors, the later step on a tie. If none qualifies, the adapter is the base itself (its LoRA
    ``B`` matrices zeroed: the adapter changes nothing), said loudly and recorded.

The first rule (lowest hallucination with over-refusal <= 5%) kept an untrained checkpoint on a
newcomer's machine: its constraint turned on one dev request of 24 (docs/local_results.md). Counting
raw errors fixed that but not the next trap: dev holds more unanswerable than answerable requests
(48 vs 40), so a checkpoint that refuses at random half the time makes fewer raw errors than the base
that answers everything, and the raw count keeps it (seed 42's step 80 on whole dev documents: 44
errors against the base's 49, with a refusal gap of -1 point against the base's -3;
results/dev_whole_documents.json). Weighted, a model that refuses whatever the document holds scores
the mean side size whatever its refusal rate, exactly like the base that never refuses: only telling
the two kinds apart lowers the score (it is ``(1 - refusal gap) x mean side size``).

A margin of a few errors is still noise, though: a model that refuses half the requests at random has
a standard deviation of about 4.7 balanced errors on 40 + 48 dev requests, so it beats the base by 2
nearly half the time (seed 42 trained on whole documents: its step 60 refused 56% of unanswerable and
52% of answerable dev requests and cleared that margin). The Fisher test asks the question the margin
cannot: are refusals independent of the label?

``sensitivity`` says how fragile a choice is: every single dev verdict is flipped in turn and the
choice remade.
"""

from __future__ import annotations

import json
import time
from math import comb
from pathlib import Path
from typing import Any

__all__ = ["RATE_KEYS", "choose_checkpoint", "dev_errors", "error_counts", "rechoose", "refusal_gap", "refusal_independence_p",
           "rule_text",
           "score_on_dev", "select_checkpoint",
           "select_on_dev", "sensitivity"]

RATE_KEYS = ("hallucination_rate", "over_refusal_rate", "grounded_accuracy")


def rule_text(min_gain: int, max_p: float = 1.0) -> str:
    significance = (f", whose refusals follow the document (one-sided Fisher exact p <= {max_p} that refusals are "
                    f"independent of answerability)" if max_p < 1 else "")
    return (f"fewest balanced dev errors (unanswerable answered + answerable refused, each side weighted to the "
            f"mean side size) among checkpoints with at least {min_gain} fewer balanced errors and {min_gain} "
            f"fewer hallucinations than the base{significance}; none: the base")


def refusal_gap(errors: dict[str, Any], answerable: int | None = None, unanswerable: int | None = None) -> float:
    """Unanswerable refused − answerable refused, from ``dev_errors`` counts (0: refusals blind to the label).

    Counted from refusals, not as 1 − hallucination rate − over-refusal rate: with short dev answers some
    outputs are neither a refusal nor an answer, which the rates leave out. ``answerable`` /
    ``unanswerable``: side sizes for records whose counts predate ``dev_errors`` holding them."""
    n_ans = answerable if answerable is not None else errors["answerable"]
    n_una = unanswerable if unanswerable is not None else errors["unanswerable"]
    return round((1 - errors["hallucinations"] / n_una) - errors["over_refusals"] / n_ans, 4)


def refusal_independence_p(errors: dict[str, Any]) -> float:
    """One-sided Fisher exact p-value of "refusals ignore the document", from ``dev_errors`` counts.

    Under that null the refusals are spread over the requests regardless of label, so the number of
    refused unanswerable requests is hypergeometric (all requests, the refused ones, the unanswerable
    ones drawn). The p-value is the chance of refusing at least as many unanswerable requests as
    observed: small when refusals concentrate on the requests the document cannot answer."""
    n_ans, n_una = errors["answerable"], errors["unanswerable"]
    total, refused = n_ans + n_una, (n_una - errors["hallucinations"]) + errors["over_refusals"]
    observed = n_una - errors["hallucinations"]
    ways = comb(total, n_una)
    tail = sum(comb(refused, k) * comb(total - refused, n_una - k) for k in range(observed, min(refused, n_una) + 1))
    return round(tail / ways, 6)


def dev_errors(refused: list[bool], answerable: list[bool]) -> dict[str, Any]:
    """Counts from per-item refusal verdicts (``error_counts``)."""
    halluc = sum(1 for r, a in zip(refused, answerable, strict=True) if not a and not r)
    over = sum(1 for r, a in zip(refused, answerable, strict=True) if a and r)
    n_ans = sum(1 for a in answerable if a)
    return error_counts(halluc, over, n_ans, len(answerable) - n_ans)


def error_counts(hallucinations: int, over_refusals: int, answerable: int, unanswerable: int) -> dict[str, Any]:
    """Hallucinations (unanswerable answered), over-refusals, their sum, each side's size, and
    ``balanced_errors``: the two error rates' sum times the mean side size.

    Balanced, one error on the smaller side weighs more than one on the larger, so a model's score no
    longer falls by refusing more when unanswerable requests outnumber answerable ones."""
    if not answerable or not unanswerable:
        raise ValueError(f"dev needs answerable and unanswerable requests, got {answerable} and {unanswerable}: "
                         "raise TrainConfig.select_dev_documents or select_max_examples")
    balanced = (hallucinations / unanswerable + over_refusals / answerable) * (answerable + unanswerable) / 2
    return {"hallucinations": hallucinations, "over_refusals": over_refusals, "errors": hallucinations + over_refusals,
            "answerable": answerable, "unanswerable": unanswerable, "balanced_errors": round(balanced, 3)}


def choose_checkpoint(curve: list[dict[str, Any]], base: dict[str, Any], min_gain: int,
                      max_p: float = 1.0) -> dict[str, Any] | None:
    """The entry the rule picks from ``[{"step": int, "errors": {dev_errors}}]``; None: no checkpoint beats the base.

    ``max_p`` = 1 leaves the significance condition out (the smoke profile's 4 dev requests can never reach
    p <= 0.05)."""
    if not curve:
        raise ValueError("no checkpoint was scored on dev: nothing to choose from")
    ok = [p for p in curve if p["errors"]["balanced_errors"] <= base["balanced_errors"] - min_gain
          and p["errors"]["hallucinations"] <= base["hallucinations"] - min_gain
          and (max_p >= 1 or refusal_independence_p(p["errors"]) <= max_p)]
    return min(ok, key=lambda p: (p["errors"]["balanced_errors"], -p["step"])) if ok else None


def rechoose(selection: dict[str, Any], min_gain: int, max_p: float) -> int | None:
    """The step this rule keeps from a recorded ``checkpoint_selection`` (None: the base).

    The rule reads only verdict counts, which every record holds, so a record made under an earlier
    rule says exactly what the current one would have kept from the same dev answers."""
    def full(errors: dict[str, Any]) -> dict[str, Any]:  # records made before the counts held the side sizes
        return error_counts(errors["hallucinations"], errors["over_refusals"], selection["dev_answerable"],
                            selection["dev_unanswerable"])

    curve = [{"step": p["step"], "errors": full(p["errors"])} for p in selection["curve"]]
    picked = choose_checkpoint(curve, full(selection["base"]["errors"]), min_gain, max_p)
    return picked["step"] if picked else None


def sensitivity(verdicts: dict[Any, list[bool]], answerable: list[bool], min_gain: int,
                max_p: float = 1.0) -> dict[str, Any]:
    """Flip each single dev verdict (of the base and of every candidate) and remake the choice.

    ``verdicts``: "base" and each step → per-item refusal. Returns how many of the flips change the
    choice, and the error gaps behind it (to the runner-up and to the base's qualification line)."""
    steps = [k for k in verdicts if k != "base"]

    def choose(v: dict[Any, list[bool]]) -> Any:
        base = dev_errors(v["base"], answerable)
        curve = [{"step": s, "errors": dev_errors(v[s], answerable)} for s in steps]
        picked = choose_checkpoint(curve, base, min_gain, max_p)
        return picked["step"] if picked else "base"

    chosen = choose(verdicts)
    changed = total = 0
    for key in verdicts:
        for i in range(len(answerable)):
            flipped = dict(verdicts)
            flipped[key] = list(verdicts[key])
            flipped[key][i] = not flipped[key][i]
            total += 1
            changed += choose(flipped) != chosen
    errors = {s: dev_errors(verdicts[s], answerable)["balanced_errors"] for s in steps}
    base_errors = dev_errors(verdicts["base"], answerable)["balanced_errors"]
    others = sorted(e for s, e in errors.items() if s != chosen)
    return {"single_flips": total, "single_flips_changing_choice": changed,
            "share_changing_choice": round(changed / max(1, total), 4),
            "errors_gap_to_runner_up": round(others[0] - errors[chosen], 3) if chosen != "base" and others else None,
            "errors_below_base": round(base_errors - errors[chosen], 3) if chosen != "base" else None}


def score_on_dev(model: Any, tokenizer: Any, items: list[dict[str, Any]], model_cfg: Any, eval_cfg: Any,
                 side: str = "aligned") -> tuple[dict[str, float], list[bool]]:
    """One side on the dev items (offline judge): its rates and its per-item refusal verdicts."""
    from helpers.evaluate.metrics import side_metrics
    from helpers.evaluate.run import generate_side, judge_side, verdict_records

    answers = generate_side(model, tokenizer, [it["prompt"] for it in items], side, model_cfg, eval_cfg)
    records = verdict_records(items, judge_side(items, answers, eval_cfg), "offline")
    m = side_metrics(records)
    return {k: round(m[k]["value"], 4) for k in RATE_KEYS}, [bool(r["refused"]) for r in records]


def _zero_adapter(model: Any) -> dict[str, Any]:
    """The adapter's weights with every LoRA ``B`` zeroed: B·A = 0, so the adapted model is the base."""
    import torch
    from peft import get_peft_model_state_dict

    return {k: (torch.zeros_like(v) if "lora_B" in k else v) for k, v in get_peft_model_state_dict(model).items()}


def select_checkpoint(model: Any, tokenizer: Any, dev_pairs: Any, found: list[tuple[int, Path]], final_step: int,
                      final_dir: Path, model_cfg: Any, train_cfg: Any) -> dict[str, Any]:
    """Score the base and the candidates on dev with ``model`` (a PEFT model), return the record with the choice.

    ``found`` are the run's checkpoints; ``final_dir`` holds the final weights in case the last step
    was not checkpointed. The candidates are ``helpers.train.checkpoint_average.later_weights``, the same
    window the checkpoint average uses. ``chosen_step`` is None when no candidate beats the base.
    """
    from peft import set_peft_model_state_dict

    from helpers.config import EvalConfig, config_for
    from helpers.evaluate.run import eval_items
    from helpers.train.checkpoint_average import later_weights, load_adapter_weights

    started = time.perf_counter()
    eval_cfg = config_for(EvalConfig, train_cfg.profile, max_new_tokens=train_cfg.select_max_new_tokens)
    items = eval_items(list(dev_pairs), train_cfg.select_max_examples, train_cfg.dev_seed, set_name="dev")
    if not items:
        raise ValueError("the dev documents produced no dev requests; raise TrainConfig.select_dev_documents")
    answerable = [bool(it["answerable"]) for it in items]
    folders = {step: path or final_dir
               for step, path in later_weights(found, final_step, train_cfg.select_from_fraction)}
    model.eval()
    base_rates, base_refused = score_on_dev(model, tokenizer, items, model_cfg, eval_cfg, side="base")
    base_errors = dev_errors(base_refused, answerable)
    verdicts: dict[Any, list[bool]] = {"base": base_refused}
    curve = []
    for step, folder in folders.items():
        set_peft_model_state_dict(model, load_adapter_weights(folder))
        rates, verdicts[step] = score_on_dev(model, tokenizer, items, model_cfg, eval_cfg)
        errors = dev_errors(verdicts[step], answerable)
        curve.append({"step": step, "aligned": rates, "errors": errors,
                      "refusal_independence_p": refusal_independence_p(errors)})
        print(f"dev, step {step}: hallucination {rates['hallucination_rate']:.1%}, over-refusal "
              f"{rates['over_refusal_rate']:.1%} ({errors['balanced_errors']:.1f} balanced errors, base "
              f"{base_errors['balanced_errors']:.1f}; refusals independent of the label: p = "
              f"{curve[-1]['refusal_independence_p']:.3f})", flush=True)
    chosen = choose_checkpoint(curve, base_errors, train_cfg.select_min_gain, train_cfg.select_max_p)
    return {
        "rule": rule_text(train_cfg.select_min_gain, train_cfg.select_max_p), "min_gain": train_cfg.select_min_gain,
        "max_p": train_cfg.select_max_p,
        "dev_documents": train_cfg.select_dev_documents, "dev_seed": train_cfg.dev_seed, "dev_pairs": len(dev_pairs),
        "dev_answerable": sum(answerable), "dev_unanswerable": len(answerable) - sum(answerable),
        "max_new_tokens": eval_cfg.max_new_tokens, "from_fraction": train_cfg.select_from_fraction,
        "base": {"aligned": base_rates, "errors": base_errors}, "curve": curve,
        "chosen_step": chosen["step"] if chosen else None, "beats_base": chosen is not None,
        "final_step": final_step, "chosen_from": str(folders[chosen["step"]]) if chosen else "base (LoRA B = 0)",
        "sensitivity": sensitivity(verdicts, answerable, train_cfg.select_min_gain, train_cfg.select_max_p),
        "seconds": round(time.perf_counter() - started, 1),
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
                             train_cfg.select_dev_documents, train_cfg.dev_seed)
    model, tokenizer = load_aligned_model(model_cfg, adapter_dir)
    selection = select_checkpoint(model, tokenizer, dev_pairs, found, final_step, adapter_dir, model_cfg, train_cfg)
    if selection["beats_base"]:
        source = Path(selection["chosen_from"]) / ADAPTER_WEIGHTS
        if source.resolve() != (adapter_dir / ADAPTER_WEIGHTS).resolve():
            shutil.copyfile(source, adapter_dir / ADAPTER_WEIGHTS)
    else:
        from safetensors.torch import save_file

        print("\n*** NO CHECKPOINT BEATS THE BASE ON DEV: the adapter is set to the base itself (LoRA B = 0). "
              "This run taught nothing the dev split can see; its test numbers will equal the base's. ***\n")
        save_file({k: v.contiguous() for k, v in _zero_adapter(model).items()}, str(adapter_dir / ADAPTER_WEIGHTS))
    if into is not None:
        from peft import set_peft_model_state_dict

        from helpers.train.checkpoint_average import load_adapter_weights

        set_peft_model_state_dict(into, load_adapter_weights(adapter_dir))
    print(f"Adapter = {('step ' + str(selection['chosen_step'])) if selection['beats_base'] else 'the base'} of "
          f"{final_step} ({selection['rule']}); one dev verdict flipped changes the choice in "
          f"{selection['sensitivity']['single_flips_changing_choice']} of {selection['sensitivity']['single_flips']} "
          f"cases.")
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
    parser.add_argument("--head-only", action="store_true",
                        help="fit only the answerability head on the base model (no trained adapter needed)")
    args = parser.parse_args(argv)
    profile = detect_profile(args.profile)
    model_cfg, train_cfg = config_for(ModelConfig, profile), config_for(TrainConfig, profile)  # --config: helpers.cli
    if not args.head_only:
        select_on_dev(model_cfg, train_cfg)
    if train_cfg.answerability_head or args.head_only:
        from helpers.select.answerability_fit import fit_answerability_head

        fit_answerability_head(model_cfg, train_cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
