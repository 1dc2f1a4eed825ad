"""``<output root>/train_report.json``: what a training run cost and what it reached.

Steps, seconds per optimizer step, tokens per second, final train and eval DPO metrics, peak memory,
and the weight footprint of the base in 4 bits vs 16 bits, measured by loading the same checkpoint
both ways through the one loader. Plus config, profile, model id, date and machine, so a number in
the README can always be traced back to the run that produced it. The text is scrubbed of secrets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from helpers.config import ModelConfig

__all__ = [
    "METRIC_KEYS",
    "build_train_report",
    "effective_batch",
    "final_metrics",
    "machine_info",
    "measure_weight_footprint",
    "report_headline",
    "write_train_report",
]

#: The DPO numbers reported for train and eval (eval keys carry the ``eval_`` prefix in the logs).
METRIC_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
GIB = 1024**3


def sixteen_bit_dtype() -> str:
    """bf16 on the CPU and where the GPU computes it natively (Ampere+), fp16 on a T4 (``native_bf16``)."""
    import torch

    from helpers.models import native_bf16

    if torch.cuda.is_available() and not native_bf16():
        return "float16"
    return "bfloat16"


def _footprint_of(model_cfg: ModelConfig, **changes: Any) -> int:
    from helpers.models import load_model_and_tokenizer, weight_footprint_bytes

    model, _ = load_model_and_tokenizer(dataclasses.replace(model_cfg, **changes))
    size = weight_footprint_bytes(model)
    del model
    gc.collect()
    return size


def measure_weight_footprint(model_cfg: ModelConfig, four_bit_bytes: int | None = None,
                             measure_16bit: bool = True) -> dict[str, Any]:
    """Bytes of the base weights loaded in 4-bit nf4 and in 16 bits (same checkpoint, same loader).

    On the CPU the loader keeps the unquantised parts (embeddings, norms) of the 4-bit model in fp32,
    so an fp32 load is measured as well: it is the "not 4-bit" model that would train there.

    Args:
        model_cfg: the base model config.
        four_bit_bytes: the 4-bit footprint when already measured on the training model.
        measure_16bit: load the base again unquantised (skip on tight machines).
    Returns:
        ``{"4bit_bytes", "16bit_bytes", "16bit_dtype", "fp32_bytes", "ratio_16bit_over_4bit"}``
        (None where not measured).
    """
    from helpers.models import resolve_compute_dtype

    if four_bit_bytes is None:
        four_bit_bytes = _footprint_of(model_cfg, load_in_4bit=True)
    dtype = sixteen_bit_dtype()
    sixteen = _footprint_of(model_cfg, load_in_4bit=False, compute_dtype=dtype) if measure_16bit else None
    on_fp32 = str(resolve_compute_dtype(model_cfg)) == "torch.float32"
    fp32 = _footprint_of(model_cfg, load_in_4bit=False, compute_dtype="float32") if measure_16bit and on_fp32 else None
    ratio = round(sixteen / four_bit_bytes, 3) if sixteen and four_bit_bytes else None
    return {"4bit_bytes": four_bit_bytes, "16bit_bytes": sixteen, "16bit_dtype": dtype, "fp32_bytes": fp32,
            "ratio_16bit_over_4bit": ratio}


def final_metrics(log_history: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """The last logged value of each DPO metric (``prefix="eval_"`` for evaluation)."""
    found: dict[str, float] = {}
    for entry in log_history:
        if f"{prefix}loss" not in entry:
            continue
        found.update({key: float(entry[f"{prefix}{key}"]) for key in METRIC_KEYS if f"{prefix}{key}" in entry})
    return found


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def code_revision() -> dict[str, Any] | None:
    """The git commit of this checkout and whether tracked files differ from it; None outside git.

    A record that names its commit can be reproduced after the code moves on
    (``git checkout <commit> && make demo``), which a date alone does not allow.
    """
    import subprocess

    from helpers.config import repo_root

    repo = repo_root()
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)} if commit else None


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: OS, CPU count, accelerator, library versions, code revision."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "gpu": gpu, "versions": {p: _version(p) for p in ("torch", "transformers", "trl", "peft",
                                                               "bitsandbytes", "accelerate", "datasets")},
            "code": code_revision()}


def _callback(trainer: Any, name: str) -> Any | None:
    return next((cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == name), None)


def tokens_per_second(log_history: list[dict[str, Any]], first_step: int, seconds: float | None) -> float | None:
    """Tokens this session processed (TRL's running ``num_tokens`` restarts on resume) over step time."""
    tokens = [e["num_tokens"] for e in log_history if "num_tokens" in e and e.get("step", 0) > first_step]
    return round(max(tokens) / seconds, 1) if tokens and seconds else None


def effective_batch(args: Any) -> dict[str, int]:
    """Pairs per optimizer step = per device × accumulation × processes (``world_size``: 1 without DDP/FSDP)."""
    per_device, accumulation = int(args.per_device_train_batch_size), int(args.gradient_accumulation_steps)
    processes = int(args.world_size)
    return {"per_device_train_batch_size": per_device, "gradient_accumulation_steps": accumulation,
            "processes": processes, "pairs_per_step": per_device * accumulation * processes}


def build_train_report(run: Any, final_eval: dict[str, Any], footprint: dict[str, Any]) -> dict[str, Any]:
    """The report dict for a finished ``helpers.train.TrainingRun``."""
    from helpers.train.shared_prompt import shared_prompt_stats

    trainer = run.trainer
    history = list(trainer.state.log_history)
    progress, memory = _callback(trainer, "ProgressPrinter"), _callback(trainer, "PeakMemoryTracker")
    per_step = progress.seconds_per_step() if progress else None
    first_step = 0
    if run.resume_from:
        first_step = int(json.loads((Path(run.resume_from) / "trainer_state.json").read_text())["global_step"])
    session_seconds = sum(progress.step_seconds) if progress else None
    peak = dict(memory.peak) if memory and memory.peak else {}
    if peak:
        peak["gib"] = round(peak["bytes"] / GIB, 3)
    return {
        "stage": "02_dpo_training", "profile": run.model_cfg.profile, "model_id": run.model_cfg.model_id,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
        "steps": trainer.state.global_step, "resumed_from_step": first_step if run.resume_from else None,
        "seconds_per_step": round(per_step, 4) if per_step else None,
        "train_seconds": round(run.train_seconds, 2),
        "tokens_per_second": tokens_per_second(history, first_step, session_seconds),
        "final_train": final_metrics(history), "final_eval": {k.removeprefix("eval_"): v for k, v in
                                                             final_eval.items() if k.removeprefix("eval_")
                                                             in METRIC_KEYS},
        "peak_memory": peak, "weight_footprint": footprint,
        "precision": {"fp16": bool(trainer.args.fp16), "bf16": bool(trainer.args.bf16)},
        "effective_batch": effective_batch(trainer.args),
        # tokens through the model with each pair's prompt scored once vs TRL's two rows (None: two rows)
        "shared_prompt": shared_prompt_stats(trainer.model),
        "averaged_checkpoints": getattr(run, "averaged", None),  # None: the adapter is the last weights
        "checkpoint_selection": None,  # python -m helpers.select.dev_choice fills it in when it picks a checkpoint
        "data": run.data_summary,
        "config": {"model": dataclasses.asdict(run.model_cfg), "train": dataclasses.asdict(run.train_cfg)},
        "log_history": history,
    }


def report_headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers worth printing after a run (the full report also holds configs and the log)."""
    keys = ("profile", "model_id", "steps", "resumed_from_step", "seconds_per_step", "tokens_per_second",
            "train_seconds", "final_train", "final_eval", "peak_memory", "weight_footprint", "precision",
            "effective_batch", "checkpoint_selection")
    return {key: report.get(key) for key in keys}


def write_train_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as JSON, scrubbed of anything shaped like a key or token."""
    from helpers.secrets import redact

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(redact(json.dumps(report, indent=2, default=str)), encoding="utf-8")
    return out
