"""Benchmark (CUDA): Gemma 2 2B memory in nf4 vs fp16, and the peak of one 512-token QLoRA DPO step.

No download: the Gemma 2 2B *architecture* (``Gemma2Config()`` defaults are the 2B: 26 layers, hidden
2304, vocab 256k) is built with random weights and saved once to a temporary folder; the project's
one loader then loads it in fp16 and in 4-bit nf4, and ``helpers.train`` runs one DPO step on a
synthetic pair of ``--seq-len`` tokens (batch 1) with the colab profile's LoRA and DPO settings.
Random weights weigh exactly what trained ones do, so the memory numbers transfer; the loss does not.

    python bench/gpu_memory.py [--seq-len 512] [--keep DIR]
    python bench/gpu_memory.py --tiny --allow-cpu   # dry run of the script on a CPU (numbers meaningless)

Prints one JSON object; exits with a message when no CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.config import REFUSAL, ModelConfig, TrainConfig, config_for  # noqa: E402
from helpers.prompts import build_messages  # noqa: E402

GIB = 1024**3
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, vocab_size=4096)


def build_random_gemma2(target: Path, tiny: bool) -> Path:
    """Save a random Gemma 2 2B (or a tiny one) with the tiny model's tokenizer; no hub access."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config

    from helpers.models import TINY_GEMMA2, resolve_model_path

    tokenizer_dir = Path(resolve_model_path(TINY_GEMMA2))  # 2k-token BPE: every id is valid in a 256k vocab
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Gemma2Config(**(TINY if tiny else {}), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # initialised directly in fp16: an fp32 2B would not fit a T4 next to its copy
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return target


def weights_on_device(model_cfg: ModelConfig) -> dict:
    """Footprint of one load through the loader, and the CUDA memory it actually occupies."""
    import torch

    from helpers.models import load_model_and_tokenizer, weight_footprint_bytes

    before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    model, _ = load_model_and_tokenizer(model_cfg)
    if torch.cuda.is_available() and not model_cfg.load_in_4bit:
        model.to("cuda")  # the loader only places quantised models; move the fp16 one for a fair reading
    result = {"footprint_bytes": weight_footprint_bytes(model),
              "cuda_allocated_bytes": (torch.cuda.memory_allocated() - before) if torch.cuda.is_available() else None}
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def synthetic_pair(tokenizer, prompt_format: str, seq_len: int) -> dict:
    """One contract pair whose prompt + chosen answer is about ``seq_len`` tokens."""
    from helpers.prompts import render_prompt

    answer = "The report says the budget rose by 4 percent in 2023."
    words = "The council reviewed the annual report on transport, housing and parks in detail."
    doc = words
    while len(tokenizer(render_prompt(build_messages(doc, "By how much did the budget rise?"), prompt_format,
                                      tokenizer))["input_ids"]) < seq_len - 24:
        doc += " " + words
    row = {"prompt": build_messages(doc, "By how much did the budget rise?"),
           "chosen": [{"role": "assistant", "content": answer}],
           "rejected": [{"role": "assistant", "content": REFUSAL}]}
    return {**row, "pair_type": "over_refusal", "source": "bench", "doc_id": "d0", "domain": "", "answerable": True,
            "document": doc, "request": "By how much did the budget rise?", "system_instruction": "",
            "reference": answer}


def one_dpo_step(model_cfg: ModelConfig, seq_len: int, work: Path) -> dict:
    """Peak CUDA memory and time of one QLoRA DPO step (batch 1) with the colab profile's settings."""
    from datasets import Dataset, DatasetDict

    from helpers.models import load_tokenizer
    from helpers.train.callbacks import PeakMemoryTracker, ProgressPrinter
    from helpers.train.dpo import run_training, start_run

    train_cfg = config_for(TrainConfig, "colab", max_steps=1, per_device_train_batch_size=1,
                           gradient_accumulation_steps=1, save_steps=100, resume_from_checkpoint=False,
                           measure_16bit_footprint=False, checkpoint_dir=str(work / "ckpt"),
                           output_dir=str(work / "adapter"))
    pair = synthetic_pair(load_tokenizer(model_cfg), model_cfg.prompt_format, seq_len)
    progress, memory = ProgressPrinter(printer=lambda *_: None), PeakMemoryTracker()
    run = start_run(model_cfg, train_cfg, DatasetDict({"train": Dataset.from_list([pair] * 2)}),
                    callbacks=[progress, memory])
    tokens = len(run.trainer.train_dataset[0]["prompt_ids"]) + len(run.trainer.train_dataset[0]["chosen_ids"])
    started = time.perf_counter()
    run_training(run)
    return {"sequence_tokens": tokens, "peak_memory": memory.peak, "step_seconds": time.perf_counter() - started,
            "precision": {"fp16": run.trainer.args.fp16, "bf16": run.trainer.args.bf16}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=512, help="tokens of prompt + chosen answer")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model instead of the 2B (dry run)")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (dry run only)")
    parser.add_argument("--keep", help="keep the random checkpoint in this folder (default: a temp folder)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("bench/gpu_memory.py needs a CUDA GPU and none is visible (torch.cuda.is_available() is "
                         "False). Run it on a Colab T4 or any NVIDIA GPU; --tiny --allow-cpu only dry-runs the script.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp) / "gemma2-2b-random"
        if not (folder / "config.json").exists():
            build_random_gemma2(folder, args.tiny)
        base = config_for(ModelConfig, "colab", model_id=str(folder), max_length=args.seq_len + 64)
        fp16 = weights_on_device(dataclasses.replace(base, load_in_4bit=False, compute_dtype="float16"))
        nf4 = weights_on_device(base)
        step = one_dpo_step(base, args.seq_len, Path(tmp))
    print(json.dumps({
        "bench": "gpu_memory", "architecture": "gemma2-2b" if not args.tiny else "gemma2-tiny (dry run)",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "weights_fp16": fp16, "weights_nf4": nf4,
        "nf4_over_fp16": round(nf4["footprint_bytes"] / fp16["footprint_bytes"], 3),
        "qlora_dpo_step": step,
        "gib": {"fp16": round(fp16["footprint_bytes"] / GIB, 2), "nf4": round(nf4["footprint_bytes"] / GIB, 2),
                "step_peak": round(step["peak_memory"].get("bytes", 0) / GIB, 2)},
    }, indent=2, default=str))


if __name__ == "__main__":
    main()
