"""Benchmark (CUDA): Gemma 2 2B memory in nf4 vs fp16, and the peak of one 512-token QLoRA DPO step.

No download: the Gemma 2 2B *architecture* (``Gemma2Config()`` defaults are the 2B: 26 layers, hidden
2304, vocab 256k) is built with random weights and saved once to a temporary folder; the project's
one loader then loads it in fp16 and in 4-bit nf4, and ``helpers.train`` runs one DPO step on a
synthetic pair of ``--seq-len`` tokens (batch 1) with the colab profile's LoRA and DPO settings.
Random weights weigh exactly what trained ones do, so the memory numbers transfer; the loss does not.

    python bench/gpu_memory.py [--seq-len 512] [--keep DIR]
    python bench/gpu_memory.py --tiny --allow-cpu   # dry run of the script on a CPU (numbers meaningless)
    python bench/gpu_memory.py --estimate configs/gemma2_9b_fsdp.json --gpus 1 2 4   # no GPU needed

Prints one JSON object; exits with a message when no CUDA GPU is visible. Next to the measured peak it
prints ``estimate_qlora_memory`` for the same step and their ratio: the formula that sizes runs this
project has not made (``--estimate``: a larger model, several GPUs under FSDP) is checked against
every measurement.
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
#: Gemma 2 sizes from the published ``config.json`` files (no download). The 2B is ``Gemma2Config()``'s defaults.
GEMMA2_SIZES = {
    "google/gemma-2-2b-it": dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                                 num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000),
    "google/gemma-2-9b-it": dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                                 num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=256000),
}
#: bitsandbytes nf4 with double quantisation: 4 bits per weight, an 8-bit absmax per 64 weights and an
#: fp32 absmax per 256 of those.
NF4_PACKED_BYTES = 0.5
NF4_STATE_BYTES = 1 / 64 + 4 / (64 * 256)
#: TRL's fused LM head projects at most this many tokens x vocabulary columns at a time.
LM_HEAD_TILE = (4096, 32768)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, vocab_size=4096)


def linear_shapes(sizes: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one Gemma 2 decoder layer."""
    hidden, inter = sizes["hidden_size"], sizes["intermediate_size"]
    q, kv = sizes["num_attention_heads"] * sizes["head_dim"], sizes["num_key_value_heads"] * sizes["head_dim"]
    return {"q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden),
            "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}


def estimate_qlora_memory(sizes: dict, *, seq_len: int, batch: int = 1, lora_r: int = 16,
                          lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                          gpus: int = 1, checkpointing: bool = True, dtype_bytes: int = 2) -> dict:
    """Peak CUDA memory (``max_memory_allocated``) of one QLoRA DPO step, per GPU, from the architecture.

    What the project's training holds, term by term (bytes):

    * base linear weights in nf4: packed 4-bit data sharded over ``gpus`` by FSDP (one GPU: all of it),
      quantisation state (absmax) on every GPU;
    * the other weights (embeddings = tied LM head, norms) in fp32, as ``prepare_model_for_kbit_training``
      leaves them, sharded over ``gpus``;
    * LoRA on ``lora_targets``: fp32 weights, gradients and two AdamW moments (16 bytes each), sharded;
    * under FSDP (``gpus`` > 1), what is gathered whole during the step, in the 16-bit compute dtype of
      FSDP's mixed-precision policy: the root unit (embeddings = LM head, final norm; FSDP keeps it
      gathered from forward to backward) and two decoder layers (the one computing, the one prefetched);
    * activations, per GPU (data parallel: never sharded), for ``batch`` pairs as TRL's two rows of
      ``seq_len`` tokens (the shared-prompt forward packs a pair into fewer tokens, so this bounds it):
      with checkpointing, every layer's input (counted in fp32: the fp32 embeddings keep the residual
      stream fp32 under autocast) plus one layer's working set (eager attention scores, MLP
      intermediates, projections, the layer's largest weight dequantised for its matmul); without, every
      layer's working set; plus one tile of TRL's fused LM head.

    Not counted: the CUDA context and allocator slack (outside ``max_memory_allocated``), the reference
    forward (no gradients, the same weights, smaller than the policy step).

    ``load_bytes``: before FSDP shards anything every rank holds the whole prepared model (4-bit base,
    fp32 other weights plus their 16-bit originals while ``prepare_model`` casts them, fp32 LoRA), so a
    GPU needs ``max(total, load)``: ``peak_gib``.
    """
    layers, hidden, heads = sizes["num_hidden_layers"], sizes["hidden_size"], sizes["num_attention_heads"]
    shapes = linear_shapes(sizes)
    linear = layers * sum(i * o for i, o in shapes.values())
    other = sizes["vocab_size"] * hidden + layers * 4 * hidden + hidden  # embeddings, 4 norms per layer, final norm
    lora = layers * sum(lora_r * (shapes[t][0] + shapes[t][1]) for t in lora_targets)
    rows, tokens = 2 * batch, 2 * batch * seq_len
    q_width = heads * sizes["head_dim"]
    kv_width = sizes["num_key_value_heads"] * sizes["head_dim"]
    attention = heads * rows * seq_len**2 * (dtype_bytes * 3 + 4)  # scores, softcapped, probs + fp32 softmax
    mlp = tokens * sizes["intermediate_size"] * dtype_bytes * 4  # gate, up, activation, product
    projections = tokens * (2 * q_width + 2 * kv_width + 2 * hidden) * dtype_bytes
    largest_weight = max(i * o for i, o in shapes.values()) * dtype_bytes
    layer_working_set = attention + mlp + projections + largest_weight
    shard = max(1, gpus)
    terms = {
        "base_nf4_packed": linear * NF4_PACKED_BYTES / shard,
        "base_nf4_quant_state": linear * NF4_STATE_BYTES,
        "other_weights_fp32": other * 4 / shard,
        "lora_weights_grads_adamw": lora * 16 / shard,
        "fsdp_gathered": (other * dtype_bytes + 2 * (linear / layers * NF4_PACKED_BYTES + 4 * hidden * dtype_bytes)
                          if gpus > 1 else 0),
        "checkpointed_layer_inputs": layers * tokens * hidden * 4 if checkpointing else 0,
        "layer_working_set": layer_working_set if checkpointing else layers * layer_working_set,
        "lm_head_tile": min(tokens, LM_HEAD_TILE[0]) * LM_HEAD_TILE[1] * 4,
    }
    total = sum(terms.values())
    load = linear * (NF4_PACKED_BYTES + NF4_STATE_BYTES) + other * (4 + dtype_bytes) + lora * 4
    return {"gpus": gpus, "params": {"linear_nf4": linear, "other": other, "lora": lora},
            "bytes": {k: int(v) for k, v in terms.items()}, "total_bytes": int(total),
            "total_gib": round(total / GIB, 2), "load_bytes": int(load), "load_gib": round(load / GIB, 2),
            "peak_gib": round(max(total, load) / GIB, 2)}


def estimate_for_config(path: str | Path, gpus: list[int]) -> dict:
    """``estimate_qlora_memory`` for the model and sizes a ``--config`` file sets, at each GPU count."""
    from helpers.config import config_sections

    sections = config_sections(path)
    model, train = sections.get("model", {}), sections.get("train", {})
    model_id = model.get("model_id", "")
    if model_id not in GEMMA2_SIZES:
        raise SystemExit(f"--estimate: no architecture sizes for {model_id!r}; known: {sorted(GEMMA2_SIZES)}")
    kwargs = dict(seq_len=int(model.get("max_length", ModelConfig.max_length)),
                  batch=int(train.get("per_device_train_batch_size", 1)),
                  lora_r=int(model.get("lora_r", ModelConfig.lora_r)),
                  lora_targets=tuple(model.get("lora_target_modules", ModelConfig.lora_target_modules)),
                  checkpointing=bool(model.get("gradient_checkpointing", True)))
    rows = [estimate_qlora_memory(GEMMA2_SIZES[model_id], gpus=n, **kwargs) for n in gpus]
    return {"estimate": "qlora_dpo_step_peak_per_gpu", "config": str(path), "model_id": model_id, **kwargs,
            "lora_targets": list(kwargs["lora_targets"]), "per_gpu": rows,
            "table": {f"{r['gpus']} GPU": f"step {r['total_gib']} GiB, load {r['load_gib']} GiB" for r in rows}}


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
    parser.add_argument("--estimate", metavar="CONFIG", help="print estimate_qlora_memory for a --config file "
                                                             "(no GPU, no model) and exit")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4], help="GPU counts for --estimate")
    args = parser.parse_args()
    if args.estimate:
        print(json.dumps(estimate_for_config(args.estimate, args.gpus), indent=2))
        return

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
        from transformers import AutoConfig

        sizes = AutoConfig.from_pretrained(folder).to_dict()
    # the same step by the formula: tokens per row as the bench built them, the colab preset's LoRA
    estimate = estimate_qlora_memory(sizes, seq_len=step["sequence_tokens"], lora_r=base.lora_r,
                                     lora_targets=base.lora_target_modules, checkpointing=base.gradient_checkpointing)
    measured = step["peak_memory"].get("bytes") or 0
    print(json.dumps({
        "bench": "gpu_memory", "architecture": "gemma2-2b" if not args.tiny else "gemma2-tiny (dry run)",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "weights_fp16": fp16, "weights_nf4": nf4,
        "nf4_over_fp16": round(nf4["footprint_bytes"] / fp16["footprint_bytes"], 3),
        "qlora_dpo_step": step,
        "estimate": estimate,
        "estimate_over_measured": round(estimate["total_bytes"] / measured, 3) if measured else None,
        "gib": {"fp16": round(fp16["footprint_bytes"] / GIB, 2), "nf4": round(nf4["footprint_bytes"] / GIB, 2),
                "step_peak": round(step["peak_memory"].get("bytes", 0) / GIB, 2)},
    }, indent=2, default=str))


if __name__ == "__main__":
    main()
