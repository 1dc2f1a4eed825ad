"""Dev diagnostic: do the kept adapters tell answerable from unanswerable when dev documents are shown whole?

The re-scored seeds refuse whole-document test requests at a seed-dependent rate whatever the document
holds (refusal gap <= 0), while on the 128-token dev excerpts they were chosen on, two of three had
gaps of about +20 points. This asks the question on dev, without reading the test split: the pairs
are built a second time with *every* split at the test budget (``document_tokens`` =
``test_document_tokens``, ``max_length`` = ``test_max_length``) into a scratch folder (same rows,
same split, the same dev documents through ``dev_split`` and the fixed ``dev_seed``; near misses are
verified against the whole document by the builder), then the base and each seed's kept adapter
answer those dev requests exactly as the dev choice asks them (``select_max_examples``,
``select_max_new_tokens``, offline judge). Printed and written: each side's rates and refusal gap,
next to the gap recorded on the excerpts (``train_report.json``).

    python experiments/dev_whole_documents.py --seeds-root outputs/seeds --seeds 42 7 1234 \\
        --out results/dev_whole_documents.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds-root", default="outputs/seeds")
    parser.add_argument("--seeds", nargs="+", default=["42", "7", "1234"])
    parser.add_argument("--work", default="outputs/dev_whole_documents", help="scratch folder for the rebuilt pairs")
    parser.add_argument("--out", default="results/dev_whole_documents.json")
    parser.add_argument("--all-checkpoints", action="store_true",
                        help="also score every checkpoint the dev choice looked at, and say what its rule would keep "
                             "on whole dev documents")
    args = parser.parse_args()

    from peft import set_peft_model_state_dict

    from helpers.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, config_for
    from helpers.data.build import build_preference_data
    from helpers.evaluate.run import eval_items, load_aligned_model
    from helpers.select.dev_choice import choose_checkpoint, dev_errors, rule_text, score_on_dev
    from helpers.select.dev_choice import refusal_gap as gap
    from helpers.train.checkpoint_average import load_adapter_weights
    from helpers.train.dpo import dev_split, load_pairs
    from helpers.train.report import code_revision

    started = time.perf_counter()
    root = Path(args.seeds_root)
    base_data = config_for(DataConfig, "local")
    whole = config_for(DataConfig, "local", pairs_dir=str(Path(args.work) / "pairs"),
                       document_tokens=base_data.test_document_tokens, max_length=base_data.test_max_length)
    build_preference_data(whole)
    train_cfg = config_for(TrainConfig, "local")
    recorded_train = load_pairs(root / "pairs")["train"]
    rebuilt_train = load_pairs(whole.pairs_dir)["train"]
    if set(recorded_train["doc_id"]) != set(rebuilt_train["doc_id"]):
        raise SystemExit("the whole-document build has other training documents than the seeds' build")
    _, dev_excerpts = dev_split(recorded_train, train_cfg.select_dev_documents, train_cfg.dev_seed)
    _, dev_whole = dev_split(rebuilt_train, train_cfg.select_dev_documents, train_cfg.dev_seed)
    if set(dev_excerpts["doc_id"]) != set(dev_whole["doc_id"]):
        raise SystemExit("the dev documents differ between the two builds")
    items = eval_items(list(dev_whole), train_cfg.select_max_examples, train_cfg.dev_seed, set_name="dev")
    model_cfg = config_for(ModelConfig, "local")
    eval_cfg = config_for(EvalConfig, "local", max_new_tokens=train_cfg.select_max_new_tokens)
    model, tokenizer = load_aligned_model(model_cfg, root / f"seed-{args.seeds[0]}" / "adapter")
    model.eval()
    base_rates, base_refused = score_on_dev(model, tokenizer, items, model_cfg, eval_cfg, side="base")
    answerable = [bool(it["answerable"]) for it in items]
    n_ans, n_una = sum(answerable), len(answerable) - sum(answerable)
    base_errors = dev_errors(base_refused, answerable)
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code": code_revision(),
              "command": "python experiments/dev_whole_documents.py " + " ".join(sys.argv[1:]),
              "dev_documents": len(set(dev_whole["doc_id"])), "dev_answerable": sum(it["answerable"] for it in items),
              "dev_unanswerable": sum(not it["answerable"] for it in items),
              "max_new_tokens": eval_cfg.max_new_tokens,
              "rule": rule_text(train_cfg.select_min_gain, train_cfg.select_max_p),
              "base": {"whole": {**base_rates, "refusal_gap": gap(base_errors, n_ans, n_una), "errors": base_errors}},
              "seeds": {}}
    for seed in args.seeds:
        selection = json.loads((root / f"seed-{seed}" / "train_report.json").read_text())["checkpoint_selection"]
        ex_ans, ex_una = selection["dev_answerable"], selection["dev_unanswerable"]
        chosen = next((p for p in selection["curve"] if p["step"] == selection["chosen_step"]), None)
        curve = []
        if args.all_checkpoints:  # the dev choice's own rule, asked on whole dev documents
            for point in selection["curve"]:
                folder = root / f"seed-{seed}" / "checkpoints" / f"checkpoint-{point['step']}"
                set_peft_model_state_dict(model, load_adapter_weights(folder))
                step_rates, refused = score_on_dev(model, tokenizer, items, model_cfg, eval_cfg)
                errors = dev_errors(refused, answerable)
                curve.append({"step": point["step"], "aligned": {**step_rates, "refusal_gap": gap(errors, n_ans, n_una)},
                              "excerpt_refusal_gap": gap(point["errors"], ex_ans, ex_una), "errors": errors})
        kept = next((p for p in curve if p["step"] == selection["chosen_step"]), None)
        if kept is None:  # else the kept adapter is that checkpoint's weights (gemma-facts select copies them)
            set_peft_model_state_dict(model, load_adapter_weights(root / f"seed-{seed}" / "adapter"))
            rates, refused = score_on_dev(model, tokenizer, items, model_cfg, eval_cfg)
            kept = {"aligned": {**rates, "refusal_gap": gap(dev_errors(refused, answerable), n_ans, n_una)}}
        record["seeds"][seed] = {
            "chosen_step": selection["chosen_step"],
            "excerpts": None if chosen is None else {**chosen["aligned"],
                                                     "refusal_gap": gap(chosen["errors"], ex_ans, ex_una)},
            "whole": kept["aligned"]}
        if curve:
            picked = choose_checkpoint(curve, base_errors, train_cfg.select_min_gain, train_cfg.select_max_p)
            record["seeds"][seed]["whole_curve"] = curve
            record["seeds"][seed]["rule_on_whole_documents_keeps"] = picked["step"] if picked else "base"
        print(f"seed {seed} (step {selection['chosen_step']}): refusal gap on 128-token dev excerpts "
              f"{record['seeds'][seed]['excerpts'] and record['seeds'][seed]['excerpts']['refusal_gap']:+.2f}, "
              f"on whole dev documents {record['seeds'][seed]['whole']['refusal_gap']:+.2f}", flush=True)
    record["base"]["excerpts"] = {**selection["base"]["aligned"],
                                  "refusal_gap": gap(selection["base"]["errors"], ex_ans, ex_una)}
    record["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"base": record["base"], **{s: v for s, v in record["seeds"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
