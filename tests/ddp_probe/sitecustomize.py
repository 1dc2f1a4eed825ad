"""Imported at interpreter start when this folder is on PYTHONPATH (``tests/test_distributed.py`` only).

In each worker of an ``accelerate launch``ed run (``RANK`` set by the launcher) with ``DDP_PROBE_DIR``
set, it records into that folder:

* ``rank<k>-writes.txt``: every file this process created, wrote, renamed or deleted under
  ``GEMMA_FACTS_OUTPUT``. Python-level writes come from an audit hook (``open`` for writing,
  ``os.rename``/``os.replace``, deleting an existing file or folder, ``os.mkdir`` of a new one); the writers that bypass Python's
  ``open`` (safetensors and torch's zip writer, in C++/Rust, and the Rust tokenizer) are wrapped at
  their public entry points (``safetensors.torch.save_file``, ``torch.save``,
  ``PreTrainedTokenizerBase.save_pretrained``).
* ``rank<k>.pt`` and ``rank<k>.json`` when ``Trainer.train`` returns: the trainable (LoRA) weights this
  rank holds, and what the trainer was (world size, the wrapper around the model, the global step,
  the shared-prompt forward's counters).

Nothing here changes what the run does; a probe error is recorded, never raised.
"""

from __future__ import annotations

import os


def _install() -> None:  # noqa: C901 - one self-contained probe
    import functools
    import json
    import sys
    from pathlib import Path

    probe = Path(os.environ["DDP_PROBE_DIR"])
    rank = int(os.environ["RANK"])
    out_root = os.path.realpath(os.environ.get("GEMMA_FACTS_OUTPUT", "/nonexistent"))
    log_path = probe / f"rank{rank}-writes.txt"
    busy = [False]

    def record(kind: str, target: object) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            if isinstance(target, bytes):
                target = target.decode(errors="replace")
            if not isinstance(target, (str, os.PathLike)):
                return
            full = os.path.realpath(os.fspath(target))
            if full == out_root or full.startswith(out_root + os.sep):
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(f"{kind}\t{os.path.relpath(full, out_root)}\n")
        except Exception as exc:  # noqa: BLE001 - a probe never breaks the run
            with open(probe / f"rank{rank}-errors.txt", "a", encoding="utf-8") as fh:
                fh.write(f"{kind} {target!r}: {exc!r}\n")
        finally:
            busy[0] = False

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def audit(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & write_flags)
            if writing:
                record("write", path)
        elif event in ("os.rename", "os.replace"):
            record("write", args[1])
        elif event in ("os.remove", "os.rmdir", "shutil.rmtree"):
            if isinstance(args[0], (str, bytes, os.PathLike)) and os.path.lexists(args[0]):
                record("delete", args[0])
        elif event == "os.mkdir":  # the hook runs before the call: only a folder that is not there yet counts
            if isinstance(args[0], (str, bytes, os.PathLike)) and not os.path.isdir(args[0]):
                record("mkdir", args[0])

    sys.addaudithook(audit)

    import safetensors.torch
    import torch

    def wrap(owner: object, name: str, kind: str, target_of) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*a, **k):
            try:
                record(kind, target_of(*a, **k))
            except Exception:  # noqa: BLE001
                pass
            return original(*a, **k)

        setattr(owner, name, wrapper)

    wrap(safetensors.torch, "save_file", "write", lambda tensors, filename, *a, **k: filename)
    wrap(torch, "save", "write", lambda obj, f, *a, **k: f)

    from transformers import PreTrainedTokenizerBase, Trainer

    wrap(PreTrainedTokenizerBase, "save_pretrained", "write",
         lambda self, save_directory, *a, **k: os.path.join(os.fspath(save_directory), "tokenizer.json"))

    original_train = Trainer.train

    @functools.wraps(original_train)
    def train(self, *a, **k):
        result = original_train(self, *a, **k)
        try:
            from helpers.train.shared_prompt import shared_prompt_stats

            weights = {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}
            busy[0] = True  # the probe's own files are not the run's
            try:
                torch.save(weights, probe / f"rank{rank}.pt")
            finally:
                busy[0] = False
            info = {"rank": rank, "world_size": self.args.world_size, "process_index": self.args.process_index,
                    "is_world_process_zero": self.is_world_process_zero(),
                    "wrapped": type(self.model_wrapped).__name__, "global_step": self.state.global_step,
                    "distributed_type": str(self.accelerator.distributed_type),
                    "shared_prompt": shared_prompt_stats(self.model)}
            (probe / f"rank{rank}.json").write_text(json.dumps(info), encoding="utf-8")
        except Exception as exc:  # noqa: BLE001
            (probe / f"rank{rank}-errors.txt").write_text(repr(exc), encoding="utf-8")
        return result

    Trainer.train = train


if os.environ.get("DDP_PROBE_DIR") and os.environ.get("RANK") is not None:
    _install()
