"""LoRA adapters on disk: what base they belong to, loading them safely, merging them for serving.

An adapter only makes sense on the base model it was trained on. PEFT happily loads q/k/v/o LoRA
weights onto any model with the same module names and then fails deep inside with a shape error,
or, worse, loads onto a same-shaped but different checkpoint and silently produces nonsense. So
training records the base (logical model id, checkpoint name, architecture numbers) next to the
adapter, and ``load_adapter`` compares them with the model it is given first.

Used by training (save, reload check, merge) and evaluation (load); imports no training code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from helpers.config import ModelConfig
from helpers.models import adapter_base_model

__all__ = [
    "ADAPTER_METADATA",
    "AdapterMismatchError",
    "architecture_of",
    "load_adapter",
    "merge_adapter_to_16bit",
    "read_adapter_metadata",
    "write_adapter_metadata",
]

ADAPTER_METADATA = "gemma_facts_adapter.json"
ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


class AdapterMismatchError(ValueError):
    """Raised when an adapter is loaded onto a base model other than the one it was trained on."""


def architecture_of(model: Any) -> dict[str, Any]:
    """The numbers that must match between an adapter's base and the model it is loaded onto."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return {key: getattr(config, key, None) for key in ARCH_KEYS}


def _checkpoint_name(model: Any) -> str:
    """The checkpoint's last path part: stable across machines (cache folders differ, names do not)."""
    return Path(str(getattr(model.config, "_name_or_path", "") or "")).name


def write_adapter_metadata(adapter_dir: str | Path, model: Any, model_cfg: ModelConfig) -> Path:
    """Record the base model (id, checkpoint name, architecture) and the model config next to the adapter."""
    path = Path(adapter_dir) / ADAPTER_METADATA
    data = {"model_id": model_cfg.model_id, "checkpoint_name": _checkpoint_name(model),
            "architecture": architecture_of(model), "model_config": dataclasses.asdict(model_cfg)}
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return path


def read_adapter_metadata(adapter_dir: str | Path) -> dict[str, Any] | None:
    """Our record of the adapter's base, or None for adapters trained elsewhere."""
    path = Path(adapter_dir) / ADAPTER_METADATA
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def check_adapter_base(model: Any, adapter_dir: str | Path, *, check_name: bool = True) -> None:
    """Raise ``AdapterMismatchError`` when ``model`` is not the base the adapter was trained on."""
    meta = read_adapter_metadata(adapter_dir)
    loaded_name = _checkpoint_name(model)
    if meta is None:
        recorded = Path(str(adapter_base_model(adapter_dir) or "")).name
        if check_name and recorded and loaded_name and recorded != loaded_name:
            raise AdapterMismatchError(f"The adapter in {adapter_dir} was trained on {recorded!r}, but the model "
                                       f"being loaded is {loaded_name!r}. Load the matching base model.")
        return
    arch = architecture_of(model)
    diffs = {k: (meta["architecture"].get(k), arch[k]) for k in ARCH_KEYS if meta["architecture"].get(k) != arch[k]}
    name_differs = check_name and meta.get("checkpoint_name") and meta["checkpoint_name"] != loaded_name
    if diffs or name_differs:
        detail = ", ".join(f"{k} {a!r} (adapter) vs {b!r} (model)" for k, (a, b) in diffs.items())
        raise AdapterMismatchError(
            f"The adapter in {adapter_dir} was trained on {meta['model_id']!r} ({meta.get('checkpoint_name')!r}), "
            f"but the model being loaded is {loaded_name!r}{': ' + detail if detail else ''}. Load the base with "
            f"ModelConfig(model_id={meta['model_id']!r}) (or the profile that trained it).")


def load_adapter(model: Any, adapter_dir: str | Path, *, is_trainable: bool = False, check_name: bool = True) -> Any:
    """Wrap ``model`` with the LoRA adapter in ``adapter_dir`` after checking it is the right base.

    Args:
        model: the base model, loaded through ``helpers.models.load_model_and_tokenizer``.
        adapter_dir: a folder written by training (``adapter_config.json`` + weights).
        is_trainable: keep the adapter trainable (to continue training).
        check_name: also require the same checkpoint name (not only the same architecture).
    Returns:
        a ``peft.PeftModel`` in eval mode unless ``is_trainable``.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json; it is written by notebook 02 / "
                                "python -m helpers.train")
    check_adapter_base(model, adapter_dir, check_name=check_name)
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    except RuntimeError as exc:
        if "size mismatch" in str(exc):
            raise AdapterMismatchError(f"The adapter in {adapter_dir} does not fit this base model (weight shapes "
                                       f"differ): {str(exc)[:300]}") from exc
        raise
    return peft_model if is_trainable else peft_model.eval()


def merge_adapter_to_16bit(model_cfg: ModelConfig, adapter_dir: str | Path, out_dir: str | Path,
                           dtype: str | None = None) -> Path:
    """Load the base unquantised, merge the adapter into it and save a plain checkpoint for serving.

    Args:
        model_cfg: the config that trained the adapter (its 4-bit flag is ignored here).
        adapter_dir: the trained adapter.
        out_dir: where the merged model and tokenizer go.
        dtype: ``"bfloat16"``/``"float16"``/``"float32"``; default bf16 (fp16 on GPUs without native bf16, a T4).
    Returns:
        ``out_dir``.
    """
    import torch

    from helpers.models import load_model_and_tokenizer, native_bf16

    if dtype is None:
        dtype = "float16" if torch.cuda.is_available() and not native_bf16() else "bfloat16"
    base_cfg = dataclasses.replace(model_cfg, load_in_4bit=False, compute_dtype=dtype)
    base, tokenizer = load_model_and_tokenizer(base_cfg)
    merged = load_adapter(base, adapter_dir).merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
