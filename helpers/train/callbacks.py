"""Trainer callbacks that make a DPO run safe to leave alone: overflow watch, ETA, peak memory.

* ``NonFiniteWatch`` stops a run whose loss turns NaN/inf (the classic fp16 overflow on a T4) with a
  message that names the fix, instead of letting it burn the remaining Colab hours on garbage;
* ``ProgressPrinter`` times every optimizer step (evaluation and checkpointing excluded) and prints
  one line per log with seconds/step and the ETA;
* ``PeakMemoryTracker`` records the peak: CUDA ``max_memory_allocated`` on a GPU, the process's peak
  RSS (``resource.getrusage``) on the CPU.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from typing import Any

from transformers import TrainerCallback

__all__ = [
    "NonFiniteTrainingError",
    "NonFiniteWatch",
    "PeakMemoryTracker",
    "ProgressPrinter",
    "default_callbacks",
    "format_seconds",
    "peak_memory",
    "reset_peak_memory",
]

#: Log keys that must stay finite; a non-finite ``grad_norm`` alone can be a skipped fp16 step.
LOSS_KEYS = ("loss", "eval_loss")
GRAD_KEY = "grad_norm"


class NonFiniteTrainingError(RuntimeError):
    """Raised when the loss or the gradient norm stops being a finite number."""


def _is_bad(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isfinite(float(value))


def nonfinite_message(key: str, value: float, step: int) -> str:
    """The error text: what went wrong, where, and the usual fixes."""
    return (f"{key} is {value} (NaN/inf) at step {step}: fp16 overflow on a T4 is the usual cause; lower "
            "learning_rate, keep the LoRA weights in fp32 (helpers.train does), lower max_grad_norm, or use bf16 "
            "on an Ampere+ GPU (TrainConfig.mixed_precision='bf16'); then resume from the last checkpoint in "
            "TrainConfig.checkpoint_dir.")


class NonFiniteWatch(TrainerCallback):
    """Stop at the first NaN/inf loss, or after ``grad_patience`` consecutive non-finite gradient norms.

    With fp16 loss scaling, an occasional inf gradient norm is normal (the scaler skips that step
    and lowers the scale); several in a row mean the run is broken.
    """

    def __init__(self, grad_patience: int = 2) -> None:
        self.grad_patience = grad_patience
        self.bad_grad_logs = 0

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        for key in LOSS_KEYS:
            if _is_bad(logs.get(key)):
                raise NonFiniteTrainingError(nonfinite_message(key, logs[key], state.global_step))
        if GRAD_KEY in logs:
            self.bad_grad_logs = self.bad_grad_logs + 1 if _is_bad(logs[GRAD_KEY]) else 0
            if self.bad_grad_logs >= self.grad_patience:
                raise NonFiniteTrainingError(nonfinite_message(GRAD_KEY, logs[GRAD_KEY], state.global_step))


def format_seconds(seconds: float) -> str:
    """``75`` → ``'1m15s'``; ``3725`` → ``'1h02m05s'``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressPrinter(TrainerCallback):
    """Time each optimizer step and print step k/N, s/step, ETA and the DPO metrics at every log."""

    def __init__(self, printer: Any = print) -> None:
        self.printer = printer
        self.step_seconds: list[float] = []
        self._started: float | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._started is not None:
            self.step_seconds.append(time.perf_counter() - self._started)
            self._started = None

    def seconds_per_step(self) -> float | None:
        """Mean step time, leaving out the first (warm-up) step when there are more."""
        times = self.step_seconds[1:] if len(self.step_seconds) > 1 else self.step_seconds
        return sum(times) / len(times) if times else None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        per_step = self.seconds_per_step()
        if not state.is_world_process_zero or per_step is None or "loss" not in (logs or {}):
            return
        eta = format_seconds(per_step * max(0, state.max_steps - state.global_step))
        metrics = " ".join(f"{k.split('/')[-1]} {logs[k]:.3g}" for k in ("loss", "rewards/margins",
                                                                         "rewards/accuracies") if k in logs)
        self.printer(f"step {state.global_step}/{state.max_steps} | {per_step:.2f} s/step | ETA {eta} | {metrics}")


def _cuda_ready() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_initialized())


def reset_peak_memory() -> None:
    """Start a fresh CUDA peak (the CPU peak RSS of a process cannot be reset)."""
    if _cuda_ready():
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, Any]:
    """Peak memory so far: CUDA max allocated on a GPU, else the peak RSS of this process."""
    if _cuda_ready():
        import torch

        return {"kind": "cuda_max_memory_allocated", "bytes": int(torch.cuda.max_memory_allocated()),
                "device": torch.cuda.get_device_name()}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux kilobytes
    return {"kind": "cpu_peak_rss", "bytes": int(rss * scale), "device": "cpu"}


class PeakMemoryTracker(TrainerCallback):
    """Reset the CUDA peak when training starts and keep the highest reading seen at each step."""

    def __init__(self) -> None:
        self.peak: dict[str, Any] = {}

    def _update(self) -> None:
        now = peak_memory()
        if now["bytes"] >= self.peak.get("bytes", -1):
            self.peak = now

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        reset_peak_memory()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._update()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._update()


def default_callbacks() -> list[TrainerCallback]:
    """The callbacks every DPO run gets: overflow watch, progress/ETA, peak memory."""
    return [NonFiniteWatch(), ProgressPrinter(), PeakMemoryTracker()]
