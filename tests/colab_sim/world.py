"""Build the world a simulated Colab runtime sees: a "GitHub" remote, the Hub caches, Drive, secrets.

Everything is real except the platform itself: ``git clone`` clones a real repository (a commit of
this working tree), ``transformers`` loads ``google/gemma-2-2b-it`` from a real Hub cache (holding a
tiny random Gemma 2 under that id) and ``datasets`` loads ``google/FACTS-grounding-public`` from its
real offline cache (holding the bundled FACTS rows), both with ``HF_HUB_OFFLINE=1`` as if downloaded
earlier. Only ``google.colab`` (this folder) is a stand-in.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SIM_DIR = Path(__file__).resolve().parent
REPO = SIM_DIR.parents[1]
COMMIT = "5" * 40  # the snapshot "revision" of the simulated Hub cache


def make_remote(dest: Path) -> Path:
    """A git repository holding this working tree as one commit: what ``git clone`` fetches on Colab."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git = ["git", "-c", "user.name=sim", "-c", "user.email=sim@localhost", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "simulated remote"], cwd=dest, check=True)
    return dest


def make_hub_model_cache(hub_cache: Path, model_id: str, model_dir: Path) -> Path:
    """Put the files of ``model_dir`` in the Hub cache layout under ``model_id`` (as a download leaves them)."""
    repo = hub_cache / f"models--{model_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, snapshot / item.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def make_hub_dataset_cache(datasets_cache: Path, dataset_id: str, config: str, split: str,
                           rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` where ``datasets.load_dataset(dataset_id, config, split=split)`` finds them offline."""
    import datasets
    from datasets.arrow_writer import ArrowWriter
    from datasets.naming import camelcase_to_snakecase, filenames_for_dataset_split

    namespace, name = dataset_id.split("/")
    target = datasets_cache / f"{namespace}___{camelcase_to_snakecase(name)}" / config / "0.0.0" / "simulated"
    target.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_list(rows)
    builder_name = camelcase_to_snakecase(name)
    (path,) = filenames_for_dataset_split(str(target), builder_name, split, filetype_suffix="arrow")
    with ArrowWriter(path=path, features=table.features) as writer:
        writer.write_table(table.data.table)
        count, size = writer.finalize()
    splits = datasets.SplitDict({split: datasets.SplitInfo(name=split, num_bytes=size, num_examples=count,
                                                           dataset_name=builder_name)}, dataset_name=builder_name)
    datasets.DatasetInfo(features=table.features, dataset_name=builder_name, config_name=config,
                         splits=splits).write_to_directory(str(target))
    return target


def write_secrets(path: Path, secrets: dict[str, tuple[str, bool]]) -> Path:
    """The simulated Colab secrets panel: name → (value, notebook access)."""
    path.write_text(json.dumps({k: {"value": v, "access": a} for k, (v, a) in secrets.items()}))
    return path


def kernel_env(*, content: Path, remote: Path, drive: Path, secrets: Path, hub_cache: Path, datasets_cache: Path,
               gemini_url: str, config_file: Path, home: Path) -> dict[str, str]:
    """A Colab runtime's environment: nothing of the test process's own settings or keys leaks in."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("GEMMA_FACTS_", "HF_", "GOOGLE_", "GEMINI_", "HUGGING_FACE", "PYTEST", "COLAB_"))}
    keep.pop("PYTHONPATH", None)
    return {**keep,
            "PYTHONPATH": str(SIM_DIR),  # google.colab, imported at start by sitecustomize
            "COLAB_RELEASE_TAG": "simulated", "HOME": str(home), "MPLBACKEND": "agg",
            "GEMMA_FACTS_CONTENT": str(content), "GEMMA_FACTS_REPO": str(remote),
            "COLAB_SIM_DRIVE": str(drive), "COLAB_SIM_SECRETS": str(secrets),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache),
            "HF_DATASETS_CACHE": str(datasets_cache), "GOOGLE_GEMINI_BASE_URL": gemini_url,
            "GEMMA_FACTS_CONFIG": str(config_file), "GEMMA_FACTS_CACHE": str(home / "model-cache"),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def execute(nb_path: Path, env: dict[str, str], cwd: Path, *, edit: dict[str, str] | None = None,
            cells: int | None = None, timeout: int = 600) -> Any:
    """Run a notebook in a fresh kernel (one Colab runtime); returns the executed notebook.

    ``edit`` replaces text in code cells, as a user would type; ``cells`` runs only the first N cells.
    Raises nbclient's ``CellExecutionError`` when a cell fails.
    """
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class ThisPythonKernel(KernelManager):
        """The kernel runs on this interpreter, whatever kernelspecs the machine has."""

        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, *cmd[1:]]

    nb = nbformat.read(nb_path, as_version=4)
    if cells is not None:
        nb.cells = nb.cells[:cells]
    for old, new in (edit or {}).items():
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert hits, f"{old!r} not found in {nb_path.name}"
        for cell in hits:
            cell.source = cell.source.replace(old, new)
    cwd.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", kernel_manager_class=ThisPythonKernel,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env, cwd=str(cwd))
    return nb


def outputs_text(nb: Any) -> str:
    """Everything the executed cells showed (streams, results, errors), as one string."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(str(out.get("text", "")))
            parts += [str(v) for v in out.get("data", {}).values()]
            parts += [str(out.get("evalue", ""))] + list(out.get("traceback", []))
    return "\n".join(parts)
