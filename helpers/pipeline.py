"""The main command: every stage of the local profile, end to end, timed (``gemma-facts run``, ``make demo``).

Each stage runs as its own process through the command a user would type (``gemma-facts data``,
``train``, ``select`` (the checkpoint chosen on dev; a no-op unless ``TrainConfig.select_dev_documents``),
``evaluate``, ``figures``), so the pipeline proves the terminal path works and a stage's memory is
returned before the next starts. ``--config`` / ``--set`` reach every stage (``GEMMA_FACTS_CONFIG``).
Wall time and peak RSS per stage go to ``<output root>/run_report.json``.

``--seeds 42 7 1234`` (``make demo-seeds``) runs the same recipe once per training seed: the pairs
are built once (the data, its split and the dev documents do not depend on the training seed), each
seed trains, selects and evaluates into ``<output root>/seed-<N>/``, and ``seeds_summary.json``
holds every seed's rates with their mean, min and max. A seed whose ``metrics.json`` exists is not
run again, so an interrupted run resumes at the next seed.
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
from helpers.evaluate.metrics import mean_min_max
from helpers.train.report import code_revision

__all__ = ["SEED_RATES", "STAGES", "main", "run_pipeline", "run_seeds", "summarise_seeds"]

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


def run_pipeline(profile: str, skip: tuple[str, ...] = (), *, env: dict[str, str] | None = None,
                 report_name: str = "run_report.json") -> dict:
    """Run the stages in order; stop at the first failing one with its exit code.

    The config file in ``GEMMA_FACTS_CONFIG`` (``gemma-facts run --config``) is recorded with the run.
    ``env``: variables set for the stages (``run_seeds`` points each seed at its own folder and config).
    """
    import os

    from helpers.config import CONFIG_ENV

    child_env = {**os.environ, **(env or {})}
    config = child_env.get(CONFIG_ENV)
    root = Path(child_env["GEMMA_FACTS_OUTPUT"]) if "GEMMA_FACTS_OUTPUT" in child_env else output_root()
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
        rc = subprocess.call(cmd, env=child_env)
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
    (root / report_name).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


#: (metrics.json path, name in the summary) of every rate the seed spread reports.
SEED_RATES: list[tuple[tuple[str, ...], str]] = [
    (("base", "hallucination_rate", "value"), "base_hallucination"),
    (("aligned", "hallucination_rate", "value"), "aligned_hallucination"),
    (("relative_hallucination_reduction",), "hallucination_cut"),
    (("base", "over_refusal_rate", "value"), "base_over_refusal"),
    (("aligned", "over_refusal_rate", "value"), "aligned_over_refusal"),
    (("base", "grounded_accuracy", "value"), "base_grounded_accuracy"),
    (("aligned", "grounded_accuracy", "value"), "aligned_grounded_accuracy"),
    # the base gated by the answerability head (TrainConfig.answerability_head; absent without one)
    (("answerability_head", "base_with_head", "hallucination_rate", "value"), "head_hallucination"),
    (("answerability_head", "relative_hallucination_reduction"), "head_hallucination_cut"),
    (("answerability_head", "base_with_head", "over_refusal_rate", "value"), "head_over_refusal"),
    (("heldout_2", "base", "hallucination_rate", "value"), "written_base_hallucination"),
    (("heldout_2", "aligned", "hallucination_rate", "value"), "written_aligned_hallucination"),
    (("heldout_2", "relative_hallucination_reduction"), "written_hallucination_cut"),
    (("heldout_2", "base", "over_refusal_rate", "value"), "written_base_over_refusal"),
    (("heldout_2", "aligned", "over_refusal_rate", "value"), "written_aligned_over_refusal"),
]


def _dig(data: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data if isinstance(data, (int, float)) and not isinstance(data, bool) else None


def summarise_seeds(root: Path, seeds: list[int]) -> dict:
    """Every finished seed's rates, Banana verdict and dev choice, and the mean / min / max of each rate."""
    per_seed = {}
    for seed in seeds:
        path = root / f"seed-{seed}" / "metrics.json"
        if not path.exists():
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        train = json.loads((root / f"seed-{seed}" / "train_report.json").read_text(encoding="utf-8")) \
            if (root / f"seed-{seed}" / "train_report.json").exists() else {}
        selection = train.get("checkpoint_selection") or {}
        entry = {name: _dig(metrics, path_) for path_, name in SEED_RATES}
        entry.update({"banana_passed": bool(metrics.get("banana", {}).get("aligned", {}).get("passed")),
                      "chosen_step": selection.get("chosen_step"), "beats_base_on_dev": selection.get("beats_base"),
                      "dev_sensitivity": selection.get("sensitivity"),
                      "n_answerable": metrics.get("n_answerable"), "n_unanswerable": metrics.get("n_unanswerable"),
                      "aligned_hallucination_ci95": metrics["aligned"]["hallucination_rate"].get("ci95"),
                      "aligned_over_refusal_ci95": metrics["aligned"]["over_refusal_rate"].get("ci95"),
                      "base_over_refusal_ci95": metrics["base"]["over_refusal_rate"].get("ci95")})
        per_seed[str(seed)] = entry
    spread = {}
    for _, name in SEED_RATES:
        values = [e[name] for e in per_seed.values() if e[name] is not None]
        if values:
            spread[name] = mean_min_max(values)
    return {"seeds": seeds, "finished": list(per_seed), "per_seed": per_seed, "spread": spread,
            "banana_passed": sum(e["banana_passed"] for e in per_seed.values()),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code": code_revision()}


def run_seeds(profile: str, seeds: list[int], skip: tuple[str, ...] = ()) -> dict:
    """The recipe once per training seed over one build of the pairs; ``seeds_summary.json`` at the end.

    A seed with a ``metrics.json`` is kept, unless ``skip`` names a stage: ``skip=("train", "select")``
    re-evaluates every seed's chosen adapter on a rebuilt test split (the training split must be
    unchanged: its pairs' fingerprint is checked against the one each seed trained on)."""
    import os

    from helpers.config import CONFIG_ENV, config_sections

    root = output_root()
    root.mkdir(parents=True, exist_ok=True)
    base_config = os.environ.get(CONFIG_ENV)
    sections = config_sections(base_config) if base_config else {}
    started = time.perf_counter()
    shared = run_pipeline(profile, skip=("train", "select", "evaluate", "figures", *skip),
                          report_name="data_run_report.json")
    if "failed_stage" in shared:
        return shared
    for seed in seeds:
        seed_root = root / f"seed-{seed}"
        if skip:
            _check_trained_on(seed_root, root / "pairs")
        elif (seed_root / "metrics.json").exists():
            print(f"\n=== seed {seed}: {seed_root / 'metrics.json'} exists, kept", flush=True)
            continue
        seed_root.mkdir(parents=True, exist_ok=True)
        config = {name: dict(values) for name, values in sections.items()}
        config.setdefault("model", {})["seed"] = seed
        config.setdefault("train", {}).update(seed=seed, pairs_dir=str(root / "pairs"))
        config.setdefault("eval", {})["pairs_dir"] = str(root / "pairs")
        config_path = seed_root / "config.json"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        env = {CONFIG_ENV: str(config_path), "GEMMA_FACTS_OUTPUT": str(seed_root)}
        print(f"\n=== seed {seed} → {seed_root}", flush=True)
        report = run_pipeline(profile, skip=("prepare_model", "data", *skip), env=env,
                              report_name="rerun_report.json" if skip else "run_report.json")
        if "failed_stage" in report:
            return report
    summary = summarise_seeds(root, seeds)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (root / "seeds_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary["spread"], indent=2))
    return summary


def _check_trained_on(seed_root: Path, pairs_dir: Path) -> None:
    """Refuse to re-evaluate a seed whose adapter was trained on other training pairs than the current build."""
    from helpers.train.dpo import train_split_fingerprint

    report_path = seed_root / "train_report.json"
    if not report_path.exists():
        raise FileNotFoundError(f"{report_path} is missing: train seed {seed_root.name} first (no --skip)")
    trained = json.loads(report_path.read_text(encoding="utf-8")).get("data", {}).get("train_fingerprint")
    current = train_split_fingerprint(pairs_dir)
    if trained is not None and trained != current:
        raise ValueError(f"{seed_root.name} trained on training pairs {trained}, the current build has {current}: "
                         "the rebuilt data changed the training split, so its adapter cannot be re-evaluated; "
                         "rerun without --skip")
    print(f"=== {seed_root.name}: training split {current} (as trained{'' if trained else ': not recorded'})",
          flush=True)


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
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="run the recipe once per training seed (seed-<N>/ folders + seeds_summary.json)")
    parser.add_argument("--prepare-model-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    profile = detect_profile(args.profile)
    if args.prepare_model_only:
        print(f"model ready at {prepare_model(profile)}")
        return 0
    import os

    os.environ["GEMMA_FACTS_PROFILE"] = profile
    if args.seeds:
        if len(set(args.seeds)) != len(args.seeds):
            raise ValueError(f"--seeds {args.seeds}: each seed once")
        summary = run_seeds(profile, args.seeds, tuple(args.skip))
        return 1 if "failed_stage" in summary else 0
    report = run_pipeline(profile, tuple(args.skip))
    return 1 if "failed_stage" in report else 0


if __name__ == "__main__":
    sys.exit(main())
