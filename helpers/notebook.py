"""What every notebook's first cell needs: Colab set-up, secrets, Google Drive, the gated model, paths.

On Colab **each notebook runs in its own runtime**: nothing written under ``/content`` by notebook 01
is there when notebook 02 starts. So on Colab every notebook mounts the same Google Drive folder and
makes it the output root; that folder is the only thing the three runtimes share. The setup cell
clones the repo (its bootstrap is the same text in every notebook: ``bootstrap_source``), then
calls ``prepare_notebook``. Elsewhere nothing is installed or mounted and nothing raises.

Forks: change ``REPO_URL`` here and run ``python -m helpers.notebook --sync`` to rewrite the three
setup cells (``tests/test_notebook_hygiene.py`` checks they match).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from helpers.config import PROFILE_ENV, cuda_available, detect_profile, in_colab, output_root

__all__ = ["REPO_URL", "GatedModelError", "bootstrap_source", "check_model_access", "is_gated",
           "mount_drive_outputs", "prepare_notebook", "require_input"]

#: Where the notebooks clone the project from on Colab (``$GEMMA_FACTS_REPO`` overrides it for one run).
REPO_URL = "https://github.com/gemma-facts/gemma-facts.git"
#: Colab's working folder (``/content``); the simulated Colab run moves it into a temporary folder.
CONTENT_ENV = "GEMMA_FACTS_CONTENT"
DRIVE_OUTPUTS = "gemma-facts/outputs"  # under MyDrive: the one folder the three runtimes share
#: Hub ids whose weights need the licence accepted on the Hub and a token (all of Google's Gemma releases).
GATED_PREFIXES = ("google/gemma-", "google/medgemma", "google/codegemma", "google/recurrentgemma")


class GatedModelError(RuntimeError):
    """The base model is gated on the Hub and this runtime cannot read it yet; the message lists the steps."""


def bootstrap_source() -> str:
    """The lines every setup cell starts with: on Colab, clone the repo and put it first on ``sys.path``."""
    return f'''import os, subprocess, sys
if "google.colab" in sys.modules:  # Colab: this runtime has nothing of ours yet; fetch the repo
    ROOT = os.path.join(os.environ.get("{CONTENT_ENV}", "/content"), "gemma-facts")
    if not os.path.isdir(ROOT):
        subprocess.run(["git", "clone", "--depth", "1", os.environ.get("GEMMA_FACTS_REPO", "{REPO_URL}"), ROOT],
                       check=True)
    os.chdir(ROOT)
    sys.path[:0] = [] if ROOT in sys.path else [ROOT]'''


def _requirements_met(path: Path) -> bool:
    """True when every ``name==version`` pin in ``path`` is installed at that version (then pip is skipped)."""
    from importlib import metadata

    for line in path.read_text(encoding="utf-8").splitlines():
        spec = line.split("#", 1)[0].strip()
        if not spec or spec.startswith("-"):
            continue
        name, _, version = spec.partition("==")
        name = name.split(">")[0].split("<")[0].split("[")[0].strip()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            return False
        if version and installed != version.strip():
            return False
    return True


def install_colab_requirements(root: str | Path | None = None) -> bool:
    """Install ``requirements-colab.txt`` (Colab's own torch and widgets are kept); skipped when already met.

    Returns True when pip ran. A re-run of the setup cell in the same runtime costs nothing.
    """
    root = Path(root or Path(__file__).resolve().parents[1])
    requirements = root / "requirements-colab.txt"
    if _requirements_met(requirements):
        return False
    print("Installing the pinned stack (requirements-colab.txt, about 1-2 min)…")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    return True


def is_gated(model_id: str) -> bool:
    """Whether ``model_id`` is a Hub id that needs an accepted licence and a token."""
    return model_id.startswith(GATED_PREFIXES)


def _gated_steps(model_id: str, why: str) -> str:
    return (f"{model_id} is gated on the Hugging Face Hub: {why}\n"
            f"  1. Sign in at https://huggingface.co/{model_id} and accept the Gemma licence (once per account).\n"
            f"  2. Create a read token at https://huggingface.co/settings/tokens.\n"
            f"  3. Colab: key icon in the left bar → Add new secret → name HF_TOKEN, value the token, "
            f"'Notebook access' on (terminal: export HF_TOKEN=...).\n"
            f"  4. Run this cell again.")


def check_model_access(model_id: str) -> str:
    """Stop early, with the steps to fix it, when a gated base cannot be read; return what was checked.

    Without a token the first download fails minutes later with a bare 401, so the check runs in
    the setup cell. Online, the Hub's ``auth-check`` says whether this token's account accepted the
    licence; offline (``HF_HUB_OFFLINE=1``, weights already in the local Hub cache) that part is skipped.
    """
    from helpers.secrets import colab_secret_problems, get_secret, redact

    if not is_gated(model_id):
        return "not gated"
    token = get_secret("hf")
    if not token:
        problems = "; ".join(colab_secret_problems("hf"))
        raise GatedModelError(_gated_steps(model_id, "no HF_TOKEN found" + (f" ({problems})" if problems else "")))
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:  # what huggingface_hub itself read from HF_HUB_OFFLINE
        return "token set; licence not checked (HF_HUB_OFFLINE: the local Hub cache is used)"
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).auth_check(model_id, token=token)
    except GatedRepoError:
        raise GatedModelError(_gated_steps(model_id, "this token's account has not accepted the licence "
                                                     "(or the request is still pending)")) from None
    except RepositoryNotFoundError:
        raise GatedModelError(_gated_steps(model_id, "the Hub does not accept this token (invalid or expired) "
                                                     "or the model id is wrong")) from None
    except HfHubHTTPError as exc:
        raise GatedModelError(f"could not check access to {model_id}: {redact(str(exc))}") from None
    return "token set; licence accepted"


def mount_drive_outputs(mountpoint: str = "") -> Path | None:
    """On Colab, make ``MyDrive/gemma-facts/outputs`` the output root (the runtimes' only shared folder).

    Elsewhere a no-op that returns None. Re-running is safe: a mounted Drive is left as it is.
    """
    if not in_colab():
        return None
    from google.colab import drive

    mountpoint = mountpoint or os.path.join(os.environ.get(CONTENT_ENV, "/content"), "drive")
    if not (Path(mountpoint) / "MyDrive").is_dir():
        drive.mount(mountpoint)
    target = Path(mountpoint) / "MyDrive" / DRIVE_OUTPUTS
    target.mkdir(parents=True, exist_ok=True)
    os.environ["GEMMA_FACTS_OUTPUT"] = str(target)
    return target


def _load_secrets_into_env() -> dict[str, str]:
    """Colab secrets → process environment, never echoed; returns which are set ("set" / "not set")."""
    from helpers.secrets import forget_colab_secrets, get_secret

    forget_colab_secrets()  # a secret added since the last run of this cell is seen now
    status = {}
    for kind, env in (("gemini", "GOOGLE_API_KEY"), ("hf", "HF_TOKEN")):
        value = get_secret(kind)
        if value:
            os.environ[env] = value
        status[env] = "set" if value else "not set"
    return status


def prepare_notebook(stage: str, profile: str | None = None) -> dict[str, str]:
    """Set up a notebook run: profile, (Colab) install + secrets + Drive, gated-model check; print a summary.

    Args:
        stage: the notebook's name, for the summary line.
        profile: "colab", "local" or "smoke"; empty/None: ``$GEMMA_FACTS_PROFILE``, else colab on Colab or
            a CUDA machine, else local.
    Raises:
        GatedModelError: the profile's base model is gated and no usable HF token is set.
    """
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    profile = detect_profile(profile or None)
    os.environ[PROFILE_ENV] = profile  # every config_for() in this kernel follows the same profile
    info = {"stage": stage, "profile": profile}
    colab = in_colab()
    if colab:
        info["repo"] = str(Path(__file__).resolve().parents[1])  # this runtime's own clone
        install_colab_requirements()
        info.update(_load_secrets_into_env())
        info["drive"] = str(mount_drive_outputs())
    if colab and not cuda_available():
        print("*** This Colab runtime has no GPU. Runtime → Change runtime type → T4 GPU, then run again. "
              f"Continuing with the {profile} profile on the CPU: expect hours, not minutes. ***")
    from helpers.config import ModelConfig, config_for

    model_id = config_for(ModelConfig, profile).model_id
    if is_gated(model_id):
        info["model access"] = check_model_access(model_id)
    root = output_root()
    root.mkdir(parents=True, exist_ok=True)
    info["outputs"] = str(root)
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))
    return info


def require_input(path: str | Path, made_by: str) -> Path:
    """Fail early with a message that says which notebook or command produces a missing input."""
    p = Path(path)
    if not p.exists():
        where = (" On Colab it must be on Google Drive (MyDrive/gemma-facts/outputs): run that notebook to the "
                 "end with the same Google account." if in_colab() else "")
        raise FileNotFoundError(f"{p} does not exist yet. It is made by {made_by}. Run that first, "
                                f"or point GEMMA_FACTS_OUTPUT at the folder that holds it.{where}")
    return p


def sync_setup_cells(notebooks: list[Path] | None = None) -> list[Path]:
    """Rewrite the bootstrap at the top of each notebook's setup cell from ``bootstrap_source``."""
    import json

    root = Path(__file__).resolve().parents[1]
    changed = []
    for nb_path in notebooks or sorted((root / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        text = "".join(cell["source"])
        start = text.index("import os, subprocess, sys")
        end = text.index("from helpers.notebook import")
        new = text[:start] + bootstrap_source() + "\n" + text[end:]
        if new != text:
            cell["source"] = new.splitlines(keepends=True)
            nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            changed.append(nb_path)
    return changed


if __name__ == "__main__":  # python -m helpers.notebook --sync
    if sys.argv[1:] == ["--sync"]:
        print("rewritten:", [p.name for p in sync_setup_cells()] or "none")
    else:
        print("usage: python -m helpers.notebook --sync   (after changing REPO_URL)")
