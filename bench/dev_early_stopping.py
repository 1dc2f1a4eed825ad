"""Early stopping on a dev metric, measured: pick a checkpoint on dev, then read its test numbers.

The local runs swing between refusing too little and too much from one checkpoint to the next, so
which checkpoint is kept matters as much as the recipe. This script takes a dev run of
``bench/tune_local.py --curve`` (trained without the dev documents, every kept checkpoint scored
on them), applies a rule fixed *before* looking at any test number, and only then evaluates the
chosen checkpoint — and, for comparison, the run's last one and the base model — on the test split
and the second held-out set, with the built-in probes (the Banana test among them):

    rule: among checkpoints whose dev over-refusal is at most ``--max-over-refusal`` (the issue's
    "+5 points" over a base model that refuses none), the one with the lowest dev hallucination
    rate, the later one on a tie; if none qualifies, the lowest sum of the two rates.

    python bench/dev_early_stopping.py --tune-name preset_long_dev

Rerun the dev run first on a fresh machine (its adapters live in the scratch ``--work`` folder;
the command is in its record in ``results/tuning.jsonl``). Writes ``results/dev_early_stopping.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def choose(curve: list[dict], max_over_refusal: float) -> dict:
    """The checkpoint the rule picks from a dev curve (``[{"step", "aligned": {...rates}}]``)."""
    if not curve:
        raise ValueError("the dev record has no curve: run bench/tune_local.py with --curve")
    from helpers.dev_selection import choose_checkpoint

    return choose_checkpoint(curve, max_over_refusal)


def probe_answers(model: object, tokenizer: object, side: str, model_cfg: object, eval_cfg: object) -> list[dict]:
    """The built-in probes (the Banana test first) answered by one side."""
    from helpers.evaluate import generate_side
    from helpers.probes import run_probes

    return run_probes(lambda msgs: generate_side(model, tokenizer, msgs, side, model_cfg, eval_cfg,
                                                 desc=f"{side} probes"))


def last_record(path: Path, name: str) -> dict:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    named = [r for r in records if r.get("name") == name]
    if not named:
        raise SystemExit(f"no run named {name!r} in {path}")
    return named[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune-name", required=True, help="name of the tune_local --curve run")
    parser.add_argument("--record", default=str(REPO / "results" / "tuning.jsonl"))
    parser.add_argument("--work", default="/tmp/gemma-facts-tune", help="tune_local's scratch folder")
    parser.add_argument("--max-over-refusal", type=float, default=0.05)
    parser.add_argument("--out", default=str(REPO / "results" / "dev_early_stopping.json"))
    parser.add_argument("--profile", default="local", choices=("local", "smoke"))
    args = parser.parse_args(argv)
    os.environ["GEMMA_FACTS_PROFILE"] = args.profile

    from curve_local import measure
    from peft import PeftModel

    from helpers.config import EvalConfig, ModelConfig, config_for
    from helpers.dev_selection import rule_text
    from helpers.evaluate import _load_test_rows, eval_items, heldout_items
    from helpers.models import load_model_and_tokenizer
    from helpers.train_report import code_revision

    record = last_record(Path(args.record), args.tune_name)
    chosen = choose(record.get("curve") or [], args.max_over_refusal)
    last = max(record["curve"], key=lambda p: p["step"])
    folder = Path(args.work) / args.tune_name / "checkpoints"
    model_cfg, eval_cfg = config_for(ModelConfig), config_for(EvalConfig)
    started = time.perf_counter()
    base, tokenizer = load_model_and_tokenizer(model_cfg)
    sets = {"test": eval_items(_load_test_rows(record["dev_from"]), eval_cfg.max_examples, eval_cfg.seed)}
    if eval_cfg.heldout_path:
        sets["heldout_2"] = heldout_items(eval_cfg.heldout_path, tokenizer, model_cfg, eval_cfg)
    steps = sorted({chosen["step"], last["step"]})
    missing = [s for s in steps if not (folder / f"checkpoint-{s}" / "adapter_config.json").exists()]
    if missing:
        raise SystemExit(f"checkpoints {missing} are not under {folder}; rerun the dev run: {record['command']}")
    model = PeftModel.from_pretrained(base, str(folder / f"checkpoint-{steps[0]}"), adapter_name=f"step{steps[0]}")
    model.eval()
    scores = {"base": {name: measure(model, tokenizer, items, "base", model_cfg, eval_cfg)
                       for name, items in sets.items()}}
    probes = {"base": probe_answers(model, tokenizer, "base", model_cfg, eval_cfg)}
    for step in steps:
        if f"step{step}" not in model.peft_config:
            model.load_adapter(str(folder / f"checkpoint-{step}"), adapter_name=f"step{step}")
        model.set_adapter(f"step{step}")
        scores[f"step{step}"] = {name: measure(model, tokenizer, items, "aligned", model_cfg, eval_cfg)
                                 for name, items in sets.items()}
        probes[f"step{step}"] = probe_answers(model, tokenizer, "aligned", model_cfg, eval_cfg)
        print(json.dumps({"step": step, **scores[f"step{step}"]}), flush=True)
    result = {
        "tune_name": args.tune_name, "tune_command": record["command"], "tune_code": record.get("code"),
        "rule": rule_text(args.max_over_refusal),
        "dev_curve": record["curve"], "chosen_step": chosen["step"], "last_step": last["step"],
        "scores": scores, "probes": probes, "judge": "offline", "seconds": round(time.perf_counter() - started, 1),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} cpus={os.cpu_count()}", "code": code_revision(),
        "command": "python bench/dev_early_stopping.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"chosen_step": chosen["step"], "last_step": last["step"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
