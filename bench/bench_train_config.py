"""Benchmark: our DPO training config vs plain TRL defaults, same model, same data, same batch.

* ``ours``: the project path (``helpers.train``): 4-bit nf4 base, LoRA on q/k/v/o, the reference is
  the base with the adapter disabled, precision from the hardware;
* ``ours_two_rows`` (opt-in): the same with TRL's two-row forward instead of one row per pair with
  the prompt scored once (``TrainConfig.shared_prompt``);
* ``trl_defaults``: ``DPOTrainer(model=<checkpoint path>, args=DPOConfig(...))`` with TRL's defaults
  (full fine-tuning, a second model copy as reference, bf16 autocast, AdamW on every weight), only
  batch size, steps and data set to ours, saving off, and ``use_cpu`` on a CPU / fp16 on a T4, without
  which TRL's default bf16 refuses to start;
* ``trl_defaults_fp32`` (opt-in): the same with ``bf16=False``. On a CPU without bf16 units TRL's
  default bf16 autocast is emulated and very slow, so this variant separates "what TRL's defaults
  cost" (full fine-tuning, a reference copy) from "bf16 on a CPU".

Each variant runs once, in its own process (a process's peak RSS cannot be reset), with an optional
``--variant-timeout``. Each variant's result is printed to stderr as soon as it finishes, and the final
JSON keeps the finished ones when another timed out (recorded as such, with no ratio for it).

    python bench/bench_train_config.py [--profile smoke|local] [--steps 4] [--pairs 16] [--words N]
                                       [--variants ours ours_two_rows trl_defaults trl_defaults_fp32]
                                       [--variant-timeout SECONDS]

Defaults: the smoke profile (tiny random Gemma 2), which checks the script, not the hardware; use
``--profile local`` (embedded Gemma 3 270M, a few minutes on a CPU) for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.config import REFUSAL, DataConfig, ModelConfig, TrainConfig, config_for  # noqa: E402
from helpers.prompts import build_messages  # noqa: E402

SAMPLE = REPO / "helpers" / "resources" / "facts_sample.jsonl"
FALLBACK = [("The museum opens at 9 am and closes at 5 pm. Entry is free on Sundays.",
             "When does the museum open?", "It opens at 9 am.")]


def sample_pairs(n: int, words: int) -> list[dict]:
    """``n`` contract pairs from the bundled sample: grounded answer vs refusal, refusal vs made-up answer."""
    rows = []
    if SAMPLE.exists():
        for line in SAMPLE.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                doc = " ".join(row["context_document"].split()[:words])
                rows.append((doc, row["user_request"], row["answer"]))
    rows = rows or FALLBACK
    pairs = []
    for i in range(n):
        doc, request, answer = rows[i % len(rows)]
        answerable = i % 2 == 0
        chosen, rejected = (answer, REFUSAL) if answerable else (REFUSAL, answer)
        req = request if answerable else "What was the total budget in the previous decade?"
        pairs.append({"prompt": build_messages(doc, req), "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}],
                      "pair_type": "over_refusal" if answerable else "unanswerable", "source": "bench",
                      "doc_id": f"d{i}", "domain": "", "answerable": answerable, "document": doc, "request": req,
                      "system_instruction": "", "reference": answer if answerable else REFUSAL})
    return pairs


def configs(profile: str, steps: int, work: Path, **overrides: object) -> tuple[ModelConfig, TrainConfig]:
    """The profile's configs with ``steps`` steps, no evaluation, no checkpoints, no extra loads."""
    train = config_for(TrainConfig, profile, max_steps=steps, save_steps=10 * steps, resume_from_checkpoint=False,
                       measure_16bit_footprint=False, select_dev_documents=0, checkpoint_dir=str(work / "checkpoints"),
                       output_dir=str(work / "adapter"), **overrides)
    return config_for(ModelConfig, profile), train


def run_ours(profile: str, steps: int, pairs_dir: Path, work: Path, shared_prompt: bool = True) -> dict:
    """One run of the project's own path; seconds/step and peak from its callbacks.

    ``shared_prompt=False`` is the same path with TRL's two-row forward (``ours_two_rows``): what
    scoring a pair's prompt once (``helpers.train.shared_prompt``) saves.
    """
    from datasets import load_from_disk

    from helpers.train.callbacks import PeakMemoryTracker, ProgressPrinter
    from helpers.train.dpo import run_training, start_run

    model_cfg, train_cfg = configs(profile, steps, work, shared_prompt=shared_prompt)
    progress, memory = ProgressPrinter(printer=lambda *_: None), PeakMemoryTracker()
    pairs = load_from_disk(str(pairs_dir))
    run = start_run(model_cfg, train_cfg, {"train": pairs["train"]}, callbacks=[progress, memory])
    run_training(run)
    return {"seconds_per_step": progress.seconds_per_step(), "peak_memory": memory.peak,
            "trainable_params": sum(p.numel() for p in run.trainer.model.parameters() if p.requires_grad)}


def run_trl_defaults(profile: str, steps: int, pairs_dir: Path, work: Path, fp32: bool = False) -> dict:
    """One run with TRL's defaults on the same checkpoint, data, batch and steps (``fp32``: bf16 off)."""
    from datasets import load_from_disk
    from trl import DPOConfig, DPOTrainer

    from helpers.models import load_tokenizer, resolve_model_path
    from helpers.prompts import to_trl_example
    from helpers.train.callbacks import PeakMemoryTracker, ProgressPrinter

    model_cfg, train_cfg = configs(profile, steps, work)
    split = load_from_disk(str(pairs_dir))["train"]
    data = split.map(lambda ex: to_trl_example(ex, model_cfg.prompt_format), remove_columns=split.column_names)
    import torch

    cuda = torch.cuda.is_available()
    # TRL's default bf16=True needs use_cpu on a CPU and fails on a T4 (no bf16), where fp16 is the only choice
    from helpers.models import native_bf16

    hardware = {"use_cpu": True} if not cuda else {} if native_bf16() else {"fp16": True}
    if fp32:
        hardware.update(bf16=False, fp16=False)
    args = DPOConfig(output_dir=str(work / "trl"), max_steps=steps, report_to="none", save_strategy="no",
                     per_device_train_batch_size=train_cfg.per_device_train_batch_size,
                     gradient_accumulation_steps=train_cfg.gradient_accumulation_steps, **hardware)
    progress, memory = ProgressPrinter(printer=lambda *_: None), PeakMemoryTracker()
    trainer = DPOTrainer(model=resolve_model_path(model_cfg.model_id), args=args, train_dataset=data,
                         processing_class=load_tokenizer(model_cfg), callbacks=[progress, memory])
    trainer.train()
    return {"seconds_per_step": progress.seconds_per_step(), "peak_memory": memory.peak,
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "bf16": bool(args.bf16), "fp16": bool(args.fp16)}


VARIANTS = ("ours", "ours_two_rows", "trl_defaults", "trl_defaults_fp32")


def child(variant: str, profile: str, steps: int, pairs_dir: Path) -> None:
    """Run one variant in this process and print its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        if variant in ("ours", "ours_two_rows"):
            result = run_ours(profile, steps, pairs_dir, Path(tmp), shared_prompt=variant == "ours")
        else:
            result = run_trl_defaults(profile, steps, pairs_dir, Path(tmp), fp32=variant == "trl_defaults_fp32")
        print("BENCH_RESULT " + json.dumps(result, default=str))


def spawn(variant: str, args: argparse.Namespace, pairs_dir: Path) -> dict:
    """Run a variant in a fresh process; its parsed result, or a record of the timeout."""
    cmd = [sys.executable, __file__, "--child", variant, "--profile", args.profile, "--steps", str(args.steps),
           "--pairs-dir", str(pairs_dir)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=args.variant_timeout)
    except subprocess.TimeoutExpired:
        result = {"timed_out": True,
                  "error": f"did not finish {args.steps} steps (model load included) within {args.variant_timeout:.0f} s"}
    else:
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
        if done.returncode or not lines:
            raise SystemExit(f"{variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    print(f"{variant}: {json.dumps(result, default=str)}", file=sys.stderr, flush=True)
    return result


def ratios(ours: dict, other: dict) -> dict[str, float | None]:
    """ours / other for memory, time per step and trainable parameters (None where either is missing)."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    return {"peak_memory": ratio((ours.get("peak_memory") or {}).get("bytes"),
                                 (other.get("peak_memory") or {}).get("bytes")),
            "seconds_per_step": ratio(ours.get("seconds_per_step"), other.get("seconds_per_step")),
            "trainable_params": ratio(ours.get("trainable_params"), other.get("trainable_params"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke", choices=("smoke", "local", "colab"))
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per variant (the first is not timed)")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--words", type=int, help="document words per prompt (default: the profile's passage_words)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["ours", "trl_defaults"],
                        help="variants to run, in order; the first is the one the ratios divide")
    parser.add_argument("--variant-timeout", type=float, default=None,
                        help="seconds per variant before it is recorded as timed out")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--pairs-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.profile, args.steps, Path(args.pairs_dir))
        return

    from datasets import Dataset, DatasetDict

    from helpers.train.report import machine_info

    words = args.words or config_for(DataConfig, args.profile).passage_words
    with tempfile.TemporaryDirectory() as tmp:
        pairs_dir = Path(tmp) / "pairs"
        DatasetDict({"train": Dataset.from_list(sample_pairs(args.pairs, words))}).save_to_disk(str(pairs_dir))
        results = {variant: spawn(variant, args, pairs_dir) for variant in args.variants}

    first, *others = args.variants
    model_cfg = config_for(ModelConfig, args.profile)
    print(json.dumps({
        "bench": "train_config", "profile": args.profile, "model_id": model_cfg.model_id, "steps": args.steps,
        "pairs": args.pairs, "document_words": words, "variant_timeout_s": args.variant_timeout,
        **results,
        f"ratios_{first}_over": {v: ratios(results[first], results[v]) for v in others
                                 if not results[v].get("timed_out") and not results[first].get("timed_out")},
        "machine": machine_info()}, indent=2, default=str))


if __name__ == "__main__":
    main()
