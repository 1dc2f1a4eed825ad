"""Average the adapter weights of a run's later checkpoints (stochastic weight averaging of LoRA).

Why: on the local profile the aligned model's refusal rate swings from one checkpoint to the next
(``experiments/curve_local.py``: 12% → 42% → 12% hallucination 25 steps apart on the same run), so the
last checkpoint is partly luck. Averaging the trainable weights along the late part of the
trajectory (Izmailov et al., 2018, "Averaging Weights Leads to Wider Optima") gives one adapter that
sits between those swings, with no dev data needed at training time; whether it helps is measured on
a dev split by ``experiments/tune_local.py --curve`` before a profile turns it on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def checkpoints_from(checkpoint_dirs: list[tuple[int, Path]], final_step: int, fraction: float) -> list[tuple[int, Path]]:
    """The checkpoints at or after ``fraction`` of the run's ``final_step`` that hold adapter weights."""
    start = fraction * final_step
    return [(step, path) for step, path in checkpoint_dirs
            if step >= start and step <= final_step and (path / ADAPTER_WEIGHTS).exists()]


def average_state_dicts(state_dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of same-keyed tensors (in fp32), refusing adapters of different shapes."""
    if not state_dicts:
        raise ValueError("nothing to average: no checkpoint holds adapter weights")
    keys = set(state_dicts[0])
    for other in state_dicts[1:]:
        if set(other) != keys:
            raise ValueError("the checkpoints hold different adapter weights (another LoRA config?); "
                             f"differing keys: {sorted(keys ^ set(other))[:4]}")
    averaged = {}
    for key in sorted(keys):
        tensors = [sd[key] for sd in state_dicts]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ValueError(f"{key}: shapes differ between checkpoints ({[tuple(t.shape) for t in tensors]})")
        averaged[key] = sum(t.float() for t in tensors) / len(tensors)
    return averaged


def load_adapter_weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / ADAPTER_WEIGHTS))


def average_into(model: Any, folders: list[Path], include_current: bool = False) -> int:
    """Load into ``model``'s active adapter the mean of the adapters in ``folders`` (and its own weights).

    ``include_current``: the model's present weights count as one more member (the end of training
    when the last step was not checkpointed). Returns how many adapters were averaged.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    members = [load_adapter_weights(folder) for folder in folders]
    if include_current:
        members.append({k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()})
    averaged = average_state_dicts(members)
    device = next(p.device for p in model.parameters() if p.requires_grad)
    result = set_peft_model_state_dict(model, {k: v.to(device) for k, v in averaged.items()})
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"averaged adapter weights did not fit the model: {unexpected[:4]}")
    return len(members)


def later_weights(found: list[tuple[int, Path]], final_step: int, fraction: float) -> list[tuple[int, Path | None]]:
    """``checkpoints_from``, plus ``(final_step, None)`` — the weights in memory — when the last step
    was not checkpointed: the run's weights from ``fraction`` of it on, each exactly once."""
    picked: list[tuple[int, Path | None]] = list(checkpoints_from(found, final_step, fraction))
    if not picked or picked[-1][0] != final_step:
        picked.append((final_step, None))
    return picked


def average_run_checkpoints(model: Any, found: list[tuple[int, Path]], final_step: int, fraction: float) -> list[int]:
    """Average into ``model`` the checkpoints from ``fraction`` of the run on, plus its current weights
    when the last step was not checkpointed; returns the steps averaged."""
    picked = later_weights(found, final_step, fraction)
    average_into(model, [path for _, path in picked if path is not None], include_current=picked[-1][1] is None)
    return [step for step, _ in picked]
