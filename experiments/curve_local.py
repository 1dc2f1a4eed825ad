"""The measured curve: hallucination and over-refusal of every saved checkpoint of a training run.

``make demo-long`` keeps a checkpoint every ``save_steps``; this script loads the base model once,
attaches each checkpoint's adapter in turn and measures, on the same held-out requests as
``python -m helpers.evaluate`` (the document-disjoint test split, and the second held-out set when
present), how often the model answers what it should refuse and refuses what it should answer.
Step 0 is the base model (adapter disabled). It reports; it is not used to pick a checkpoint.

    python experiments/curve_local.py --run-dir outputs/long [--out results/local-long/curve.json]

Prints one JSON object and writes it with a figure (``curve.png`` beside the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RATES = ("hallucination_rate", "over_refusal_rate", "grounded_accuracy")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``checkpoint-N`` holding an adapter, in step order."""
    found = []
    for path in (run_dir / "checkpoints").glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / "adapter_config.json").exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


def measure(model: object, tokenizer: object, items: list[dict], side: str, model_cfg: object,
            eval_cfg: object) -> dict:
    """The three headline rates of one side on ``items`` (offline judge), with counts."""
    from helpers.evaluate.run import side_metrics_offline

    metrics = side_metrics_offline(model, tokenizer, items, side, model_cfg, eval_cfg)
    return {k: {"value": metrics[k]["value"], "n": metrics[k]["n"]} for k in RATES}


def plot(curve: dict, path: Path) -> None:
    """Hallucination and over-refusal against the training step, one panel per evaluation set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(curve["points"][0]["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 3.6), squeeze=False)
    steps = [p["step"] for p in curve["points"]]
    for ax, name in zip(axes[0], sets, strict=True):
        for key, style in (("hallucination_rate", "o-"), ("over_refusal_rate", "s--"), ("grounded_accuracy", "^:")):
            ax.plot(steps, [100 * p["sets"][name][key]["value"] for p in curve["points"]], style,
                    label=key.replace("_", " "))
        n = curve["points"][0]["sets"][name]["hallucination_rate"]["n"]
        ax.set_title(f"{name} (n = {n} per side)")
        ax.set_xlabel("optimizer step (0 = base model)")
        ax.set_ylabel("% of requests")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Measured curve: {curve['run_dir']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="the output root of the run (pairs/, checkpoints/)")
    parser.add_argument("--out", default=None, help="JSON path (default: <run-dir>/curve.json)")
    parser.add_argument("--max-examples", type=int, default=None, help="per side; default: the profile's preset")
    parser.add_argument("--profile", default="local", choices=("local", "smoke", "colab"))
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    os.environ["GEMMA_FACTS_PROFILE"] = args.profile
    from helpers.config import EvalConfig, ModelConfig, config_for
    from helpers.evaluate.run import eval_items, heldout_items, load_test_rows
    from helpers.models import load_model_and_tokenizer
    from helpers.train.report import code_revision

    model_cfg = config_for(ModelConfig)
    eval_cfg = config_for(EvalConfig, **({"max_examples": args.max_examples} if args.max_examples else {}))
    found = checkpoints(run_dir)
    if not found:
        raise SystemExit(f"no checkpoint-N folders with an adapter under {run_dir / 'checkpoints'}; train with "
                         "a save_total_limit that keeps them (configs/local_long.json does)")
    started = time.perf_counter()
    base, tokenizer = load_model_and_tokenizer(model_cfg)
    sets = {"test": eval_items(load_test_rows(str(run_dir / "pairs")), eval_cfg.max_examples, eval_cfg.seed)}
    if eval_cfg.heldout_path:
        sets["heldout_2"] = heldout_items(eval_cfg.heldout_path, tokenizer, model_cfg, eval_cfg)

    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(found[0][1]), adapter_name=f"step{found[0][0]}").eval()
    points = [{"step": 0, "sets": {name: measure(model, tokenizer, items, "base", model_cfg, eval_cfg)
                                   for name, items in sets.items()}}]
    for step, folder in found:
        name = f"step{step}"
        if name not in model.peft_config:
            model.load_adapter(str(folder), adapter_name=name)
        model.set_adapter(name)
        points.append({"step": step, "sets": {s: measure(model, tokenizer, items, "aligned", model_cfg, eval_cfg)
                                              for s, items in sets.items()}})
        print(json.dumps({"step": step, **{s: {k: v["value"] for k, v in m.items()}
                                           for s, m in points[-1]["sets"].items()}}), flush=True)
    curve = {"run_dir": str(run_dir), "points": points, "judge": "offline",
             "seconds": round(time.perf_counter() - started, 1),
             "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "machine": f"{platform.machine()} cpus={os.cpu_count()}",
             "code": code_revision(), "run_code": _run_code(run_dir),
             "command": "python experiments/curve_local.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out) if args.out else run_dir / "curve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(curve, indent=2), encoding="utf-8")
    plot(curve, out.with_suffix(".png"))
    print(json.dumps(curve["points"][-1]))
    return 0


def _run_code(run_dir: Path) -> dict | None:
    """The commit the measured run was trained at (its run_report), so the curve names both revisions."""
    report = run_dir / "run_report.json"
    try:
        return json.loads(report.read_text(encoding="utf-8")).get("code")
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
