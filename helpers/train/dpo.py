"""Stage 02: DPO with QLoRA on the preference pairs, through TRL's ``DPOTrainer``.

One code path for every profile: the model comes from the one loader (4-bit nf4 on a T4 and on the
CPU alike), LoRA is added by TRL from ``lora_config`` and the reference model is that same network
with the adapter disabled (no second copy in memory). Precision follows the hardware: bf16 on
Ampere+, fp16 on a T4 with the LoRA weights kept in fp32, no mixed precision on the CPU.

Checkpoints go to ``TrainConfig.checkpoint_dir`` and a re-run resumes from the latest one, so a Colab
disconnect costs at most ``save_steps`` steps. The CLI runs unchanged under ``accelerate launch``::

    python -m helpers.train --profile local --max-steps 4
    accelerate launch -m helpers.train --config my_run.json   (the same as gemma-facts train)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import ModelConfig, TrainConfig, config_for, output_root
from helpers.data.pairs import PAIR_COLUMNS, PAIRS_MADE_BY
from helpers.prompts import to_trl_example

__all__ = [
    "TrainingRun",
    "build_dpo_config",
    "build_trainer",
    "check_single_bos",
    "describe_example",
    "dev_split",
    "document_grouped_order",
    "estimate_eta",
    "finish_run",
    "find_resume_checkpoint",
    "keep_trainable_fp32",
    "list_checkpoints",
    "load_pairs",
    "order_by_document",
    "main",
    "mixed_precision_flags",
    "model_checkpointing",
    "no_triton_below_sm80",
    "prepare_model",
    "push_adapter",
    "reload_check",
    "run_signature",
    "run_dpo",
    "run_training",
    "save_adapter",
    "select_pairs",
    "start_run",
    "to_trl_dataset",
]

RUN_SIGNATURE = "gemma_facts_run.json"
SIGNATURE_KEYS = ("model_id", "prompt_format", "max_length", "load_in_4bit", "lora_r", "lora_alpha",
                  "lora_target_modules")
# What a run trains on and how: resuming across a change of these would splice two different runs.
# (max_steps / num_train_epochs may change: raising them continues a finished run.)
TRAIN_SIGNATURE_KEYS = ("dpo", "beta", "loss_type", "loss_weights", "learning_rate", "lr_scheduler_type", "optim",
                        "per_device_train_batch_size", "gradient_accumulation_steps", "max_train_pairs",
                        "batch_order", "seed")


# --------------------------------------------------------------------------- configuration


def mixed_precision_flags(train_cfg: TrainConfig, *, cuda: bool | None = None,
                          bf16_supported: bool | None = None) -> dict[str, bool]:
    """``{"fp16", "bf16"}`` for the hardware: bf16 on Ampere+, fp16 on a T4, neither on the CPU.

    TRL's ``DPOConfig`` turns bf16 on whenever fp16 is off, so both flags are always set explicitly.
    ``bf16_supported`` defaults to ``helpers.models.native_bf16()`` (a T4 only emulates bf16).
    """
    import torch

    from helpers.models import native_bf16

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if bf16_supported is None:
        bf16_supported = bool(cuda and native_bf16())
    mode = train_cfg.mixed_precision
    if mode == "auto":
        mode = ("bf16" if bf16_supported else "fp16") if cuda else "no"
    if mode == "fp16" and not cuda:
        raise ValueError("TrainConfig.mixed_precision='fp16' needs a CUDA GPU; use 'auto' or 'no' on the CPU")
    if mode == "bf16" and cuda and not bf16_supported:
        raise ValueError("TrainConfig.mixed_precision='bf16' needs an Ampere+ GPU; a T4 has no bf16, use 'fp16'")
    return {"fp16": mode == "fp16", "bf16": mode == "bf16"}


def model_checkpointing(model_cfg: ModelConfig) -> bool:
    """Whether the model checkpoints its own activations: ``ModelConfig.gradient_checkpointing``, unless FSDP does.

    Under ``accelerate launch`` with ``fsdp_activation_checkpointing: true`` FSDP wraps every decoder
    layer in its own checkpoint; the model's as well would recompute each layer twice (and
    transformers refuses the pair), so that run uses FSDP's alone.
    """
    from helpers.models import fsdp_activation_checkpointing

    return bool(model_cfg.gradient_checkpointing) and not fsdp_activation_checkpointing()


def build_dpo_config(model_cfg: ModelConfig, train_cfg: TrainConfig, *, has_eval: bool = True,
                     precision: dict[str, bool] | None = None) -> Any:
    """Map our two stage configs onto TRL's ``DPOConfig`` (TRL 1.16 names); ``TrainConfig.dpo`` passes through.

    Raises:
        ValueError: ``TrainConfig.dpo`` names a field that is not TRL's, or one set by our configs.
    """
    import trl
    from trl import DPOConfig

    flags = precision or mixed_precision_flags(train_cfg)
    ours = dict(
        output_dir=train_cfg.checkpoint_dir, max_length=model_cfg.max_length, beta=train_cfg.beta,
        loss_type=list(train_cfg.loss_type), loss_weights=list(train_cfg.loss_weights),
        precompute_ref_log_probs=train_cfg.precompute_ref_log_probs,
        learning_rate=train_cfg.learning_rate, lr_scheduler_type=train_cfg.lr_scheduler_type, optim=train_cfg.optim,
        num_train_epochs=train_cfg.num_train_epochs, max_steps=train_cfg.max_steps,
        per_device_train_batch_size=train_cfg.per_device_train_batch_size,
        per_device_eval_batch_size=train_cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps,
        warmup_steps=train_cfg.warmup_ratio, max_grad_norm=train_cfg.max_grad_norm,
        # transformers 5 renamed gradient_checkpointing(_kwargs); the old names mirror these. Off when
        # FSDP checkpoints the activations itself (model_checkpointing)
        activation_checkpointing=model_checkpointing(model_cfg),
        activation_checkpointing_kwargs={"use_reentrant": False},
        fp16=flags["fp16"], bf16=flags["bf16"],
        logging_steps=train_cfg.logging_steps, logging_first_step=True, logging_nan_inf_filter=False,
        eval_strategy="steps" if has_eval else "no", eval_steps=train_cfg.eval_steps,
        prediction_loss_only=True,  # else eval gathers (batch, length, vocab) logits: ~1 GB per batch for Gemma
        save_strategy="steps", save_steps=train_cfg.save_steps, save_total_limit=train_cfg.save_total_limit,
        report_to="none", seed=train_cfg.seed, data_seed=train_cfg.seed, dataloader_num_workers=0,
        # by_document: the order is built by order_by_document and must not be reshuffled
        train_sampling_strategy="sequential" if train_cfg.batch_order == "by_document" else "random",
    )
    passed = dict(train_cfg.dpo or {})
    known = {f.name for f in dataclasses.fields(DPOConfig)}
    unknown = sorted(set(passed) - known)
    if unknown:
        raise ValueError(f"TrainConfig.dpo: {unknown} are not fields of trl.DPOConfig (TRL {trl.__version__})")
    ours_too = sorted(set(passed) & set(ours))
    if ours_too:
        raise ValueError(f"TrainConfig.dpo sets {ours_too}, which gemma-facts sets from its own configs; "
                         "set the TrainConfig / ModelConfig field of that name instead")
    return DPOConfig(**ours, **passed)


# --------------------------------------------------------------------------- data


def load_pairs(pairs_dir: str | Path) -> Any:
    """The ``DatasetDict`` of stage 01, checked against the shared contract (train split, columns).

    Held in memory, so the maps of this stage (TRL examples, tokenization) write no cache files into
    stage 01's folder: under DDP every rank would write the same files there at once.
    """
    from datasets import DatasetDict, load_from_disk

    pairs = load_from_disk(str(pairs_dir), keep_in_memory=True)
    if not isinstance(pairs, DatasetDict) or "train" not in pairs:
        raise ValueError(f"{pairs_dir} must hold a DatasetDict with a 'train' split (and 'test'); "
                         f"it is made by {PAIRS_MADE_BY}")
    for name, split in pairs.items():
        missing = [c for c in PAIR_COLUMNS if c not in split.column_names]
        if missing:
            raise ValueError(f"pairs split {name!r} in {pairs_dir} lacks column(s) {missing}")
    return pairs


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


def dev_documents(train_cfg: TrainConfig) -> int:
    """Training documents held out as dev: the checkpoint choice's, else the eval curves' own."""
    return train_cfg.select_dev_documents or train_cfg.eval_dev_documents


def select_pairs(pairs: Any, train_cfg: TrainConfig, dev: Any | None = None) -> tuple[Any, Any | None]:
    """Train and the trainer's eval split (``dev``: never the test split), each capped at ``max_*_pairs``."""

    def cap(split: Any, limit: int | None) -> Any:
        if limit is None or len(split) <= limit:
            return split
        return split.shuffle(seed=train_cfg.seed).select(range(limit))

    train = cap(pairs["train"], train_cfg.max_train_pairs)
    if train_cfg.batch_order == "by_document":
        train = order_by_document(train, train_cfg)
    dev = cap(dev, train_cfg.max_eval_pairs) if dev is not None and len(dev) else None
    return train, dev


def document_grouped_order(doc_ids: Sequence[str], answerable: Sequence[bool], group_size: int,
                           seed: int) -> list[int]:
    """Row order where each run of ``group_size`` rows shares one document, refusal/answer alternating.

    Within a document the refusal-chosen and answer-chosen pairs are interleaved (so a micro-batch
    of two already holds one of each when the document has both), cut into groups of
    ``group_size``; the groups of all documents are shuffled with the seed. Leftover rows (a
    document's last, incomplete group) are pooled and grouped at the end of the shuffle so that no
    row is dropped.
    """
    if group_size <= 0:
        raise ValueError(f"group_size must be > 0, got {group_size}")
    rng = random.Random(seed)
    by_doc: dict[str, tuple[list[int], list[int]]] = {}
    for i, (doc, ans) in enumerate(zip(doc_ids, answerable, strict=True)):
        by_doc.setdefault(str(doc), ([], []))[0 if ans else 1].append(i)
    groups: list[list[int]] = []
    leftovers: list[int] = []
    for doc in sorted(by_doc):
        answers, refusals = by_doc[doc]
        rng.shuffle(answers)
        rng.shuffle(refusals)
        mixed = [i for pair in itertools.zip_longest(refusals, answers) for i in pair if i is not None]
        full = len(mixed) - len(mixed) % group_size
        groups += [mixed[k:k + group_size] for k in range(0, full, group_size)]
        leftovers += mixed[full:]
    rng.shuffle(groups)
    rng.shuffle(leftovers)
    groups += [leftovers[k:k + group_size] for k in range(0, len(leftovers), group_size)]
    return [i for group in groups for i in group]


def order_by_document(split: Any, train_cfg: TrainConfig) -> Any:
    """The train split in ``document_grouped_order`` (one optimizer step ≈ one document)."""
    group = train_cfg.per_device_train_batch_size * train_cfg.gradient_accumulation_steps
    order = document_grouped_order(split["doc_id"], split["answerable"], group, train_cfg.seed)
    return split.select(order)


def to_trl_dataset(split: Any, prompt_format: str) -> Any:
    """Stored pairs → TRL's prompt/chosen/rejected examples for this prompt format."""
    return split.map(lambda ex: to_trl_example(ex, prompt_format), remove_columns=split.column_names)


def check_single_bos(tokenized: dict[str, Any], tokenizer: Any) -> int:
    """Fail when a TRL-tokenized example does not start with exactly one BOS (double BOS hurts Gemma)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return 0
    ids = list(tokenized["prompt_ids"]) + list(tokenized["chosen_ids"])
    count = ids.count(bos)
    if not ids or ids[0] != bos or count != 1:
        raise ValueError(f"expected exactly one BOS at the start of the training sequence, found {count} "
                         f"(first ids {ids[:4]}); check the prompt format and add_special_tokens")
    return count


def describe_example(tokenized: dict[str, Any], tokenizer: Any, tail_tokens: int = 48) -> str:
    """The end of a tokenized training prompt and both completions, exactly as the model sees them."""
    prompt = tokenized["prompt_ids"]
    head = tokenizer.convert_ids_to_tokens(prompt[:2])
    return (f"{len(prompt)} prompt tokens, starting {head}; BOS count {check_single_bos(tokenized, tokenizer)}\n"
            f"…{tokenizer.decode(prompt[-tail_tokens:])}\n"
            f"CHOSEN   → {tokenizer.decode(tokenized['chosen_ids'])!r}\n"
            f"REJECTED → {tokenizer.decode(tokenized['rejected_ids'])!r}")


# --------------------------------------------------------------------------- model and trainer


def prepare_model(model: Any, model_cfg: ModelConfig) -> Any:
    """QLoRA preparation for a 4-bit model (frozen base, fp32 norms, non-reentrant checkpointing).

    Also keeps bitsandbytes from repacking the frozen 4-bit weights on AVX512-BF16 CPUs
    (``helpers.models.keep_cpu_4bit_layout``; the loader already does, this covers other loads):
    the repacking's lossy undo at each checkpoint save would change the base during training.
    """
    if not getattr(model, "is_loaded_in_4bit", False):
        return model
    from peft import prepare_model_for_kbit_training

    from helpers.models import keep_cpu_4bit_layout

    keep_cpu_4bit_layout(model)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=model_checkpointing(model_cfg),
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def keep_trainable_fp32(model: Any) -> int:
    """Cast the trainable (LoRA) weights to fp32; TRL makes them bf16, which fp16 AMP on a T4 cannot unscale."""
    import torch

    count = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            count += 1
    return count


def score_only_completion_tokens_on_cpu() -> bool:
    """Make TRL's fused LM head project only completion positions on the CPU too (exact, ~3x faster).

    TRL 1.16 scores every position on devices without Triton (to keep tile shapes fixed for Neuron
    compilation) and masks the prompt afterwards. With Gemma's 262k-token vocabulary that projects
    the head over every prompt token: on the CPU the head then dominates a DPO step. Scoring only the
    label positions gives identical log-probs (``tests/test_train.py`` checks it); CUDA is untouched.
    Returns True when the patch is (now) active.
    """
    import trl.trainer.utils as trl_utils

    _override_use_triton(trl_utils, "_gemma_facts_cpu_compact", lambda device: True if device.type == "cpu" else None)
    return True


def no_triton_below_sm80() -> bool:
    """Run TRL's chunked log-prob folds in torch, not Triton, on CUDA GPUs below sm_80 (a T4).

    TRL 1.16 asks ``trl.kernels.chunked_logprob._use_triton(device)`` (also imported by
    ``chunked_divergence``) at every tile whether to fold it with a Triton kernel or with the torch
    fallback (``_forward_tile`` / ``_backward_tile``, which CPUs and Neuron use, same results). The
    Triton kernels fail to compile bf16 for sm_75, so on such a GPU the torch fold is used. The
    separate ``trl.trainer.utils._use_triton`` (whether only completion positions are projected, see
    ``score_only_completion_tokens_on_cpu``) is pure torch and stays as it is. Returns True when the
    switch is (now) in place.
    """
    import trl.kernels.chunked_divergence as trl_divergence
    import trl.kernels.chunked_logprob as trl_logprob

    from helpers.models import native_bf16

    for module in (trl_logprob, trl_divergence):
        _override_use_triton(module, "_gemma_facts_sm80",
                             lambda device: False if device.type == "cuda" and not native_bf16(device) else None)
    return True


def _override_use_triton(module: Any, marker: str, decide: Any) -> None:
    """Wrap ``module._use_triton(device)`` once: ``decide(device)`` answers, or None defers to TRL's own."""
    original = module._use_triton
    if getattr(original, marker, False):
        return

    def use_triton(device: Any) -> bool:
        answer = decide(device)
        return original(device) if answer is None else answer

    setattr(use_triton, marker, True)
    module._use_triton = use_triton


def build_trainer(model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any | None, model_cfg: ModelConfig,
                  train_cfg: TrainConfig, callbacks: list[Any] | None = None) -> Any:
    """A ``DPOTrainer`` with LoRA from ``lora_config``; the reference is the base (adapter disabled).

    Args:
        model, tokenizer: from ``helpers.models.load_model_and_tokenizer``.
        train_ds, eval_ds: TRL examples (``to_trl_dataset``); ``eval_ds`` may be None.
        model_cfg, train_cfg: the stage configs.
        callbacks: default ``helpers.train.callbacks.default_callbacks()``.
    Returns:
        the trainer, LoRA weights in fp32, tokenized data checked for a single BOS.
    """
    from trl import DPOTrainer

    from helpers.models import lora_config
    from helpers.train.callbacks import default_callbacks
    from helpers.train.shared_prompt import install_shared_prompt_forward

    args = build_dpo_config(model_cfg, train_cfg, has_eval=eval_ds is not None)
    score_only_completion_tokens_on_cpu()
    no_triton_below_sm80()
    trainer = DPOTrainer(model=prepare_model(model, model_cfg), args=args, train_dataset=train_ds,
                         eval_dataset=eval_ds, processing_class=tokenizer, peft_config=lora_config(model_cfg),
                         callbacks=default_callbacks() if callbacks is None else callbacks)
    keep_trainable_fp32(trainer.model)
    if train_cfg.shared_prompt and not install_shared_prompt_forward(trainer.model):
        print("Note: this model's attention takes no custom mask; pairs are scored as two rows (TRL's forward).")
    kept = len(trainer.train_dataset)
    if kept < len(train_ds):  # TRL drops pairs whose prompt alone fills max_length
        message = (f"{len(train_ds) - kept} of {len(train_ds)} training pairs have a prompt of at least "
                   f"ModelConfig.max_length={model_cfg.max_length} tokens and were dropped")
        if not kept:
            raise ValueError(message + "; shorten the excerpts (DataConfig) or raise max_length")
        print(f"Warning: {message}.")
    check_single_bos(trainer.train_dataset[0], tokenizer)
    return trainer


# --------------------------------------------------------------------------- checkpoints and ETA


def run_signature(model_cfg: ModelConfig, train_cfg: TrainConfig | None = None,
               pairs_digest: str | None = None) -> dict[str, Any]:
    """What checkpoints must share with a run to be resumed by it: model, training settings, data."""
    def pick(cfg: Any, keys: tuple[str, ...]) -> dict[str, Any]:
        data = dataclasses.asdict(cfg)
        return {key: list(data[key]) if isinstance(data[key], tuple) else data[key] for key in keys}

    signature = pick(model_cfg, SIGNATURE_KEYS)
    if train_cfg is not None:
        signature["train"] = pick(train_cfg, TRAIN_SIGNATURE_KEYS)
        if not signature["train"]["dpo"]:  # nothing passed to TRL: the signature of runs made before the field
            del signature["train"]["dpo"]
    if pairs_digest is not None:
        signature["train_pairs_sha256"] = pairs_digest
    return signature


def train_split_fingerprint(pairs_dir: str | Path) -> str:
    """``pairs_digest`` of a pairs folder's whole training split (what ``train_report.json`` records as
    ``data.train_fingerprint``): a rebuilt test split leaves it unchanged, a changed training split does not."""
    return pairs_digest(load_pairs(pairs_dir)["train"])


def pairs_digest(split: Any) -> str:
    """A hash of the training pairs in training order (same data rebuilt → same hash)."""
    import hashlib

    digest = hashlib.sha256()
    for prompt, chosen, rejected in zip(split["prompt"], split["chosen"], split["rejected"], strict=True):
        digest.update(json.dumps([prompt, chosen, rejected], sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _differences(recorded: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(recorded) | set(current)):
        there, here = recorded.get(key, "<not recorded>"), current.get(key, "<not recorded>")
        if isinstance(there, dict) and isinstance(here, dict):
            out += _differences(there, here, f"{prefix}{key}.")
        elif there != here:
            out.append(f"{prefix}{key}: {there!r} there, {here!r} here")
    return out


def list_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (with trainer_state.json), oldest first; half-written ones are skipped."""
    found = []
    for path in checkpoint_dir.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / "trainer_state.json").exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_resume_checkpoint(train_cfg: TrainConfig, model_cfg: ModelConfig,
                           train_pairs_digest: str | None = None) -> str | None:
    """The latest complete checkpoint to resume from, or None.

    Refuses checkpoints of another model, other training settings or other training pairs (a run
    resumed from them would be neither the old run nor the new one); the error names what differs.
    """
    ckpt_dir = Path(train_cfg.checkpoint_dir)
    found = list_checkpoints(ckpt_dir) if train_cfg.resume_from_checkpoint and ckpt_dir.is_dir() else []
    if not found:
        return None
    sig_path = ckpt_dir / RUN_SIGNATURE
    if sig_path.exists():
        recorded = json.loads(sig_path.read_text(encoding="utf-8"))
        current = run_signature(model_cfg, train_cfg, train_pairs_digest)
        if train_pairs_digest is None:
            recorded.pop("train_pairs_sha256", None)
        differs = _differences(recorded, current)
        if differs:
            raise ValueError(f"The checkpoints in {ckpt_dir} were made with other settings ({'; '.join(differs)}). "
                             "Delete that folder, point TrainConfig.checkpoint_dir elsewhere, or set "
                             "TrainConfig.resume_from_checkpoint=False to start a fresh run.")
    return str(found[-1][1])


def _step_of(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text()).get("global_step", 0))


def _planned_steps(trainer: Any) -> int:
    args = trainer.args
    if args.max_steps > 0:
        return int(args.max_steps)
    batches = len(trainer.get_train_dataloader())
    return int(math.ceil(batches / args.gradient_accumulation_steps * args.num_train_epochs))


def estimate_eta(trainer: Any, resume_from: str | None = None) -> dict[str, Any]:
    """Time one forward+backward on the first batch and extrapolate to the remaining optimizer steps.

    The probe leaves no trace: gradients are cleared and the logged metrics reset. Evaluation and
    checkpointing come on top of the estimate.
    """
    import torch

    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    started = time.perf_counter()
    with trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(trainer.model, batch)
    trainer.accelerator.backward(loss)
    per_step = (time.perf_counter() - started) * trainer.args.gradient_accumulation_steps
    trainer.model.zero_grad(set_to_none=True)
    trainer._metrics["train"].clear()
    trainer._total_train_tokens = 0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    total, done = _planned_steps(trainer), _step_of(resume_from)
    from helpers.train.callbacks import format_seconds

    eta = per_step * max(0, total - done)
    text = (f"{total - done} optimizer steps to go ({done} done) at about {per_step:.2f} s/step "
            f"→ ETA ≈ {format_seconds(eta)} (plus evaluation and checkpoints)")
    return {"seconds_per_step": per_step, "total_steps": total, "done_steps": done, "eta_seconds": eta, "text": text}


# --------------------------------------------------------------------------- one run


@dataclass
class TrainingRun:
    """Everything a run holds between its steps (the notebook walks through them one by one)."""

    model_cfg: ModelConfig
    train_cfg: TrainConfig
    trainer: Any
    tokenizer: Any
    data_summary: dict[str, Any]
    footprint_4bit_bytes: int | None
    resume_from: str | None
    train_seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    averaged: dict[str, Any] | None = None  # which checkpoints were averaged into the saved adapter
    dev_pairs: Any | None = None  # training documents held out for the checkpoint choice (select_dev_documents)
    signature: dict[str, Any] = field(default_factory=dict)  # written beside the checkpoints


def _summarise(split: Any) -> dict[str, Any]:
    if split is None:
        return {"pairs": 0}
    counts: dict[str, int] = {}
    for kind in split["pair_type"]:
        counts[kind] = counts.get(kind, 0) + 1
    return {"pairs": len(split), "pair_types": dict(sorted(counts.items())), "documents": len(set(split["doc_id"]))}


def start_run(model_cfg: ModelConfig, train_cfg: TrainConfig, pairs: Any | None = None,
              callbacks: list[Any] | None = None) -> TrainingRun:
    """Load pairs and the 4-bit model, build the trainer and find a checkpoint to resume from."""
    from helpers.models import load_model_and_tokenizer, weight_footprint_bytes
    from helpers.notebook import require_input

    if pairs is None:
        pairs = load_pairs(require_input(train_cfg.pairs_dir, PAIRS_MADE_BY))
    train_fingerprint = pairs_digest(pairs["train"])  # the whole training split, dev included
    dev_pairs = None
    if dev_documents(train_cfg):
        kept, dev_pairs = dev_split(pairs["train"], dev_documents(train_cfg), train_cfg.dev_seed)
        pairs = {**dict(pairs.items()), "train": kept}
    train_split, eval_split = select_pairs(pairs, train_cfg, dev_pairs)
    model, tokenizer = load_model_and_tokenizer(model_cfg)
    four_bit = weight_footprint_bytes(model) if getattr(model, "is_loaded_in_4bit", False) else None
    trainer = build_trainer(model, tokenizer, to_trl_dataset(train_split, model_cfg.prompt_format),
                            None if eval_split is None else to_trl_dataset(eval_split, model_cfg.prompt_format),
                            model_cfg, train_cfg, callbacks)
    summary = {"train": _summarise(train_split), "dev": _summarise(dev_pairs), "eval": _summarise(eval_split),
               "pairs_dir": train_cfg.pairs_dir, "train_fingerprint": train_fingerprint}
    digest = pairs_digest(train_split)
    return TrainingRun(model_cfg, train_cfg, trainer, tokenizer, summary, four_bit,
                       find_resume_checkpoint(train_cfg, model_cfg, digest),
                       signature=run_signature(model_cfg, train_cfg, digest), dev_pairs=dev_pairs)


def run_training(run: TrainingRun) -> Any:
    """Train (resuming when a checkpoint exists); return TRL's ``TrainOutput``."""
    ckpt_dir = Path(run.train_cfg.checkpoint_dir)
    if run.trainer.is_world_process_zero():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        signature = run.signature or run_signature(run.model_cfg, run.train_cfg)
        # written whole, then renamed: under DDP another rank may be reading it (find_resume_checkpoint)
        partial = ckpt_dir / f"{RUN_SIGNATURE}.partial"
        partial.write_text(json.dumps(signature), encoding="utf-8")
        partial.replace(ckpt_dir / RUN_SIGNATURE)
        if run.resume_from:
            print(f"Resuming from {run.resume_from} (step {_step_of(run.resume_from)})")
    started = time.perf_counter()
    output = run.trainer.train(resume_from_checkpoint=run.resume_from)
    run.train_seconds = time.perf_counter() - started
    return output


def save_adapter(trainer: Any, model_cfg: ModelConfig, out_dir: str | Path) -> Path:
    """Adapter weights + tokenizer (``trainer.save_model``) and our record of the base model.

    Every rank calls it (under FSDP the weights are gathered from all of them); only rank 0 writes.
    """
    from helpers.adapters import write_adapter_metadata

    out = Path(out_dir)
    if getattr(trainer, "is_fsdp_enabled", False):
        # checkpoints stay sharded (fast, resumable); the adapter is gathered whole, or save_model writes nothing
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle of the trainer args: of no use to users
        write_adapter_metadata(out, trainer.model, model_cfg)
    return out


def average_checkpoints(run: TrainingRun) -> dict[str, Any]:
    """Replace the trained adapter weights by their mean over the run's later checkpoints (and the end)."""
    from helpers.train.checkpoint_average import average_run_checkpoints

    fraction = float(run.train_cfg.average_checkpoints_from or 0.0)
    steps = average_run_checkpoints(run.trainer.model, list_checkpoints(Path(run.train_cfg.checkpoint_dir)),
                                    run.trainer.state.global_step, fraction)
    print(f"Adapter = mean of {len(steps)} checkpoints (steps {steps}): "
          f"TrainConfig.average_checkpoints_from={fraction}")
    return {"from_fraction": fraction, "steps": steps}


def logged_eval_at(history: list[dict[str, Any]], step: int) -> dict[str, Any] | None:
    """The trainer's eval metrics logged at ``step``, if it evaluated there (None: it did not)."""
    for entry in reversed(history):
        if entry.get("step") == step and "eval_loss" in entry:
            return {key: value for key, value in entry.items() if key.startswith("eval_")}
    return None


def finish_run(run: TrainingRun) -> dict[str, Any]:
    """Final evaluation, adapter + model card, ``train_report.json``; optional push and merge.

    The final evaluation is the one the trainer logged at its last step when there was one and the
    weights are still that step's (no checkpoint averaging): evaluating the same weights on the same
    dev pairs again gave the same figures and cost 13 s of ``make demo``.
    """
    from helpers.train.model_card import write_model_card
    from helpers.train.report import build_train_report, measure_weight_footprint, write_train_report

    trainer, train_cfg = run.trainer, run.train_cfg
    if train_cfg.average_checkpoints_from is not None:
        run.averaged = average_checkpoints(run)
    final_eval: dict[str, Any] = {}
    if trainer.eval_dataset is not None:
        logged = None if run.averaged else logged_eval_at(trainer.state.log_history, trainer.state.global_step)
        final_eval = logged if logged is not None else trainer.evaluate()
    adapter_dir = save_adapter(trainer, run.model_cfg, train_cfg.output_dir)
    if not trainer.is_world_process_zero():  # under DDP only rank 0 measures, writes and publishes
        return run.report
    footprint = measure_weight_footprint(run.model_cfg, run.footprint_4bit_bytes,
                                         measure_16bit=train_cfg.measure_16bit_footprint)
    run.report = build_train_report(run, final_eval=final_eval, footprint=footprint)
    write_model_card(adapter_dir, run.report)
    if train_cfg.push_to_hub:
        run.report["hub_url"] = push_adapter(adapter_dir, train_cfg)
    if train_cfg.merge_and_save_16bit:
        from helpers.adapters import merge_adapter_to_16bit

        run.report["merged_dir"] = str(merge_adapter_to_16bit(run.model_cfg, adapter_dir, train_cfg.merged_dir))
    write_train_report(run.report, output_root() / "train_report.json")
    return run.report


def run_dpo(model_cfg: ModelConfig, train_cfg: TrainConfig, pairs: Any | None = None,
            callbacks: list[Any] | None = None) -> TrainingRun:
    """The whole stage: start, train (resuming), finish; returns the run with its trainer and report."""
    run = start_run(model_cfg, train_cfg, pairs, callbacks)
    run_training(run)
    finish_run(run)
    return run


# --------------------------------------------------------------------------- after training


def push_adapter(adapter_dir: str | Path, train_cfg: TrainConfig) -> str:
    """Upload the adapter folder to ``hub_repo_id`` with the HF token; errors never echo the token."""
    from helpers.secrets import redact, require_secret

    token = require_secret("hf")
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=token)
        api.create_repo(train_cfg.hub_repo_id, private=train_cfg.hub_private, exist_ok=True)
        api.upload_folder(folder_path=str(adapter_dir), repo_id=train_cfg.hub_repo_id,
                          commit_message="gemma-facts DPO adapter")
    except Exception as exc:  # noqa: BLE001 - re-raised without the token
        raise RuntimeError(f"push to {train_cfg.hub_repo_id} failed: {redact(str(exc))}") from None
    return f"https://huggingface.co/{train_cfg.hub_repo_id}"


def reload_check(trained_model: Any, adapter_dir: str | Path, model_cfg: ModelConfig, tokenizer: Any,
                 text: str, atol: float | None = None) -> dict[str, Any]:
    """Load a fresh base + the saved adapter and compare its logits with the in-memory trained model.

    Like with like: the fresh base is prepared as the trained one was (``prepare_model``: fp32 norms
    and embeddings on a GPU), every reloaded tensor takes the dtype of its trained counterpart (the
    LoRA weights are fp32 in training), and the trained model runs without the autocast wrapper that
    accelerate puts on its forward under fp16/bf16 AMP. Both then run the same kernels on the same
    weights in the same dtypes, so they agree up to the summation order of a kernel at most.
    """
    import torch

    from helpers.adapters import load_adapter
    from helpers.models import load_model_and_tokenizer, resolve_compute_dtype

    base, _ = load_model_and_tokenizer(model_cfg)
    reloaded = load_adapter(prepare_model(base, model_cfg), adapter_dir)
    trained_params = dict(trained_model.named_parameters())
    for name, param in reloaded.named_parameters():
        theirs = trained_params.get(name)
        if theirs is not None and param.dtype != theirs.dtype and param.dtype.is_floating_point \
                and param.__class__.__name__ != "Params4bit":
            param.data = param.data.to(theirs.dtype)
    device = next(trained_model.parameters()).device
    inputs = tokenizer(text, return_tensors="pt").to(device)
    trained_model.eval()
    reloaded.eval()
    forward = getattr(trained_model, "_original_forward", None) or trained_model  # accelerate's AMP-free forward
    with torch.no_grad():
        ours = forward(**inputs).logits.float()
        theirs = reloaded(**inputs).logits.float().to(device)
    diff = float((ours - theirs).abs().max())
    if atol is None:
        # fp32 compute (the CPU): two forwards of one fp32 computation agree to ~1e-6 (measured: 0.0
        # here); 1e-4 leaves room for a reduction order while a base re-quantised by a lossy
        # round trip (~5e-3 on the tiny model) or a wrong adapter fails it.
        # 16-bit compute (a GPU; bnb matmuls in bf16/fp16, the rest fp32 after prepare_model): the same
        # kernels on bit-identical inputs give bit-identical results on one GPU, but a reordered sum
        # may flip one 16-bit rounding (bf16 ulp 2^-8 of a layer output); 1e-2 absorbs that and is
        # still five times tighter than the 5e-2 the old unlike-for-like comparison (16-bit vs fp32
        # norms, with vs without autocast) needed.
        atol = 1e-4 if resolve_compute_dtype(model_cfg) == torch.float32 else 1e-2
    return {"max_abs_diff": diff, "atol": atol, "allclose": diff <= atol}


# --------------------------------------------------------------------------- CLI


def configs_from_args(argv: list[str] | None = None) -> tuple[ModelConfig, TrainConfig]:
    """Parse the stage's own flags (``--config`` / ``--set`` are the CLI's: ``helpers.cli``), on top of the config."""
    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("colab", "local", "smoke"))
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--pairs-dir")
    parser.add_argument("--output-dir", help="where the adapter goes")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--no-4bit", action="store_true", help="load the base unquantised (plain LoRA)")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the adapter (needs HF_TOKEN)")
    parser.add_argument("--merge", action="store_true", help="also save base+adapter merged in 16 bits")
    args = parser.parse_args(argv)
    model_over: dict = {}  # --config / --set reach config_for through GEMMA_FACTS_CONFIG (helpers.cli)
    train_over: dict = {}
    flags = {"max_steps": args.max_steps, "learning_rate": args.learning_rate, "pairs_dir": args.pairs_dir,
             "output_dir": args.output_dir, "checkpoint_dir": args.checkpoint_dir, "hub_repo_id": args.push_to_hub}
    train_over.update({k: v for k, v in flags.items() if v is not None})
    if args.push_to_hub:
        train_over["push_to_hub"] = True
    if args.no_resume:
        train_over["resume_from_checkpoint"] = False
    if args.merge:
        train_over["merge_and_save_16bit"] = True
    if args.no_4bit:
        model_over["load_in_4bit"] = False
    return config_for(ModelConfig, args.profile, **model_over), config_for(TrainConfig, args.profile, **train_over)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: train, then print the headline numbers of the report as JSON."""
    model_cfg, train_cfg = configs_from_args(argv)
    from helpers.train.report import report_headline

    run = run_dpo(model_cfg, train_cfg)
    if run.trainer.is_world_process_zero():
        print(json.dumps(report_headline(run.report), indent=2, default=str))
        if train_cfg.select_dev_documents:
            print("Next: python -m helpers.select.dev_choice (keeps the checkpoint chosen on the dev documents; "
                  "make demo runs it as its own stage).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
