"""The main command: every stage of the local profile, end to end, timed (``gemma-facts run``, ``make demo``).

Each stage runs as its own process through the command a user would type (``gemma-facts data``,
``train``, ``select`` (the checkpoint chosen on dev; a no-op unless ``TrainConfig.select_dev_documents``),
``evaluate``, ``figures``), so the pipeline proves the terminal path works and a stage's memory is
returned before the next starts. ``--config`` / ``--set`` reach every stage (``GEMMA_FACTS_CONFIG``).
Wall time and peak RSS per stage go to ``<output root>/run_report.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from helpers.config import ModelConfig, config_for, detect_profile, output_root
from helpers.train.report import code_revision

__all__ = ["STAGES", "main", "run_pipeline"]

STAGES: list[tuple[str, list[str]]] = [
    ("prepare_model", [sys.executable, "-m", "helpers.pipeline", "--prepare-model-only"]),
    ("data", [sys.executable, "-m", "helpers.cli", "data"]),
    ("train", [sys.executable, "-m", "helpers.cli", "train"]),
    ("select", [sys.executable, "-m", "helpers.cli", "select"]),  # a no-op unless select_dev_documents
    ("evaluate", [sys.executable, "-m", "helpers.cli", "evaluate"]),
    ("figures", [sys.executable, "-m", "helpers.cli", "figures"]),
]


def _children_peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the largest RSS of any finished child so far.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def prepare_model(profile: str) -> str:
    """Convert/build the profile's offline model once (timed as its own stage)."""
    from helpers.models import resolve_model_path

    return resolve_model_path(config_for(ModelConfig, profile).model_id)


def run_pipeline(profile: str, skip: tuple[str, ...] = ()) -> dict:
    """Run the stages in order; stop at the first failing one with its exit code.

    The config file in ``GEMMA_FACTS_CONFIG`` (``gemma-facts run --config``) is recorded with the run.
    """
    import os

    from helpers.config import CONFIG_ENV

    config = os.environ.get(CONFIG_ENV)
    root = output_root()
    root.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "profile": profile,
        "command": "gemma-facts run" + (f" --config {config}" if config else ""),
        "config": json.loads(Path(config).read_text()) if config else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={_cpu_count()}".strip(),
        "code": code_revision(),
        "model_build_cached": _model_build_cached(profile),
        "stages": {},
    }
    start = time.perf_counter()
    for name, cmd in STAGES:
        if name in skip:
            continue
        print(f"\n=== stage {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        report["stages"][name] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb_so_far": round(_children_peak_rss_mb(), 1),
            "exit_code": rc,
        }
        if rc != 0:
            report["failed_stage"] = name
            break
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    report["peak_rss_mb"] = round(_children_peak_rss_mb(), 1)
    (root / "run_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


def _model_build_cached(profile: str) -> bool | None:
    from helpers.models import offline_build_cached

    return offline_build_cached(config_for(ModelConfig, profile).model_id)


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="colab | local | smoke (default: env / hardware)")
    parser.add_argument("--skip", nargs="*", default=[], help="stage names to skip (e.g. data)")
    parser.add_argument("--prepare-model-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    profile = detect_profile(args.profile)
    if args.prepare_model_only:
        print(f"model ready at {prepare_model(profile)}")
        return 0
    import os

    os.environ["GEMMA_FACTS_PROFILE"] = profile
    report = run_pipeline(profile, tuple(args.skip))
    return 1 if "failed_stage" in report else 0


if __name__ == "__main__":
    sys.exit(main())
