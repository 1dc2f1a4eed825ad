"""What every notebook's first cells need: Colab detection, secrets into the process, paths.

The setup cell in each notebook clones and installs the repo on Colab (it cannot import ``helpers``
before that), then calls ``prepare_notebook``. Elsewhere nothing is installed and nothing raises.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from helpers.config import detect_profile, output_root

__all__ = ["IN_COLAB", "mount_drive_outputs", "prepare_notebook", "require_input"]

IN_COLAB = "google.colab" in sys.modules


def prepare_notebook(stage: str) -> dict[str, str]:
    """Quiet noisy loggers, load Colab secrets into the process env (never echoed); report the setup."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if IN_COLAB:  # pragma: no cover - Colab only
        from helpers.secrets import get_secret

        for kind, env in (("gemini", "GOOGLE_API_KEY"), ("hf", "HF_TOKEN")):
            value = get_secret(kind)
            if value:
                os.environ[env] = value
    profile = detect_profile()
    root = output_root()
    root.mkdir(parents=True, exist_ok=True)
    info = {"stage": stage, "profile": profile, "outputs": str(root), "colab": str(IN_COLAB)}
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))
    return info


def mount_drive_outputs(subdir: str = "gemma-facts") -> Path | None:
    """On Colab, keep outputs on Google Drive so a disconnect loses nothing; elsewhere a no-op."""
    if not IN_COLAB:
        return None
    from google.colab import drive  # pragma: no cover - Colab only

    drive.mount("/content/drive")
    target = Path("/content/drive/MyDrive") / subdir / "outputs"
    target.mkdir(parents=True, exist_ok=True)
    os.environ["GEMMA_FACTS_OUTPUT"] = str(target)
    return target


def require_input(path: str | Path, made_by: str) -> Path:
    """Fail early with a message that says which notebook or command produces a missing input."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist yet. It is made by {made_by}. Run that first, "
                                f"or point GEMMA_FACTS_OUTPUT at the folder (e.g. on Google Drive) that holds it.")
    return p
