"""Collect dev-only training runs (their dev choice and cost) into one record, no test split read.

For recipe experiments judged on dev alone: each run is a ``gemma-facts train`` + ``gemma-facts select``
output folder; this keeps what its ``train_report.json`` says of the dev curve (rates, balanced errors,
refusal gap, the Fisher p of label-blind refusals), the step the current rule keeps, and the training cost.

    python experiments/collect_dev_runs.py --run whole=outputs/whole/seed-42 \\
        --run whole_request_first=outputs/whole_qfirst/seed-42 --out results/whole_document_training.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--out", required=True)
    parser.add_argument("--note", default="", help="what the runs changed, recorded with them")
    args = parser.parse_args()
    from helpers.config import TrainConfig, config_for
    from helpers.select.dev_choice import rechoose, refusal_gap, refusal_independence_p, rule_text

    cfg = config_for(TrainConfig, "local")

    record = {"note": args.note, "command": "python experiments/collect_dev_runs.py " + " ".join(sys.argv[1:]),
              "runs": {}}
    for item in args.run:
        name, folder = item.split("=", 1)
        report = json.loads((Path(folder) / "train_report.json").read_text(encoding="utf-8"))
        sel = report["checkpoint_selection"]
        points = [{"step": "base", **sel["base"]}] + sel["curve"]
        record["runs"][name] = {
            "code": report["machine"]["code"], "date": report["date"], "config": {"max_length": report["config"]["model"]["max_length"], "seed": report["config"]["train"]["seed"],
                       "pairs_dir": report["config"]["train"]["pairs_dir"]},
            "steps": report["steps"], "seconds_per_step": report["seconds_per_step"],
            "train_minutes": round(report["train_seconds"] / 60, 1), "final_eval": report.get("final_eval"),
            "rule": sel["rule"], "chosen_step": sel["chosen_step"],
            "current_rule": rule_text(cfg.select_min_gain, cfg.select_max_p),
            "current_rule_keeps": rechoose(sel, cfg.select_min_gain, cfg.select_max_p), "dev_answerable": sel["dev_answerable"],
            "dev_unanswerable": sel["dev_unanswerable"], "select_minutes": round(sel["seconds"] / 60, 1),
            "dev": [{"step": p["step"], **p["aligned"], "balanced_errors": p["errors"]["balanced_errors"],
                     "refusal_gap": refusal_gap(p["errors"]),
                     "refusal_independence_p": refusal_independence_p(p["errors"])} for p in points]}
        for p in record["runs"][name]["dev"]:
            print(f"{name:>22} step {p['step']!s:>4}: hallucination {p['hallucination_rate']:.1%}, over-refusal "
                  f"{p['over_refusal_rate']:.1%}, gap {p['refusal_gap']:+.2f}, p {p['refusal_independence_p']:.3f}")
        now = record["runs"][name]["current_rule_keeps"]
        print(f"{name:>22} kept: {sel['chosen_step'] or 'the base'}; the current rule keeps: {now or 'the base'}")
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
