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


def gap(rates: dict) -> float:
    """Unanswerable refused − answerable refused (``tools.readme_results.refusal_gap``)."""
    from tools.readme_results import refusal_gap

    return round(refusal_gap(rates["hallucination_rate"], rates["over_refusal_rate"]), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds-root", default="outputs/seeds")
    parser.add_argument("--seeds", nargs="+", default=["42", "7", "1234"])
    parser.add_argument("--work", default="outputs/dev_whole_documents", help="scratch folder for the rebuilt pairs")
    parser.add_argument("--out", default="results/dev_whole_documents.json")
    args = parser.parse_args()

    from peft import set_peft_model_state_dict

    from helpers.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, config_for
    from helpers.data.build import build_preference_data
    from helpers.evaluate.run import eval_items, load_aligned_model
    from helpers.select.dev_choice import score_on_dev
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
    base_rates, _ = score_on_dev(model, tokenizer, items, model_cfg, eval_cfg, side="base")
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code": code_revision(),
              "command": "python experiments/dev_whole_documents.py " + " ".join(sys.argv[1:]),
              "dev_documents": len(set(dev_whole["doc_id"])), "dev_answerable": sum(it["answerable"] for it in items),
              "dev_unanswerable": sum(not it["answerable"] for it in items),
              "max_new_tokens": eval_cfg.max_new_tokens,
              "base": {"whole": {**base_rates, "refusal_gap": gap(base_rates)}}, "seeds": {}}
    for seed in args.seeds:
        selection = json.loads((root / f"seed-{seed}" / "train_report.json").read_text())["checkpoint_selection"]
        chosen = next((p for p in selection["curve"] if p["step"] == selection["chosen_step"]), None)
        set_peft_model_state_dict(model, load_adapter_weights(root / f"seed-{seed}" / "adapter"))
        rates, _ = score_on_dev(model, tokenizer, items, model_cfg, eval_cfg)
        record["seeds"][seed] = {
            "chosen_step": selection["chosen_step"],
            "excerpts": None if chosen is None else {**chosen["aligned"], "refusal_gap": gap(chosen["aligned"])},
            "whole": {**rates, "refusal_gap": gap(rates)}}
        print(f"seed {seed} (step {selection['chosen_step']}): refusal gap on 128-token dev excerpts "
              f"{record['seeds'][seed]['excerpts'] and record['seeds'][seed]['excerpts']['refusal_gap']:+.2f}, "
              f"on whole dev documents {record['seeds'][seed]['whole']['refusal_gap']:+.2f}", flush=True)
    record["base"]["excerpts"] = {**selection["base"]["aligned"], "refusal_gap": gap(selection["base"]["aligned"])}
    record["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"base": record["base"], **{s: v for s, v in record["seeds"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
