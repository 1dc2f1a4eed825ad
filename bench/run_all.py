"""Run every CPU benchmark once and record their printed figures in ``results/bench.json``.

    python bench/run_all.py [--profile local] [--out results/bench.json]

Each benchmark is its own script printing one JSON object (run them alone to see the full output);
this runner keeps that object, adds the command, date and machine, and a one-line figure per
benchmark for the README. ``bench/gpu_memory.py`` needs a CUDA GPU and is run separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: float | None = None) -> dict:
    """Run a benchmark script and parse the last JSON object it printed."""
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=True,
                         timeout=timeout).stdout
    start = out.rfind("\n{")
    return json.loads(out[start + 1 if start >= 0 else out.index("{"):])


def _ratio(x: object) -> str:
    return f"{x:.2f}×" if isinstance(x, (int, float)) else str(x)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local", choices=("smoke", "local"))
    parser.add_argument("--out", default=str(REPO / "results" / "bench.json"))
    parser.add_argument("--only", nargs="*", help="run only these benchmarks (names as in the output)")
    parser.add_argument("--train-steps", type=int, default=3,
                        help="optimizer steps per training variant (the first is not timed)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark before it is recorded as timed out")
    parser.add_argument("--variant-timeout", type=float, default=480,
                        help="seconds per training variant before it is recorded as timed out (the others are kept)")
    args = parser.parse_args()
    runs = {
        "teacher_concurrency": ["bench/bench_teacher_concurrency.py", "--items", "24", "--latency", "0.2"],
        "generation": ["bench/bench_generation.py", "--profile", args.profile, "--prompts", "16", "--repeats", "3"],
        "generation_long": ["bench/bench_generation.py", "--profile", args.profile, "--prompts", "16", "--long",
                            "--repeats", "3"],
        "train_config": ["bench/bench_train_config.py", "--profile", args.profile, "--steps", str(args.train_steps),
                         "--pairs", "16", "--variants", "ours", "ours_two_rows", "trl_defaults",
                         "trl_defaults_fp32",
                         "--variant-timeout", f"{args.variant_timeout:.0f}"],
    }
    raw = {}
    for name, cmd in runs.items():
        if args.only and name not in args.only:
            continue
        print(f"running {' '.join(cmd)}", flush=True)
        entry: dict = {"command": "python " + " ".join(cmd),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            entry["output"] = _run(cmd, args.timeout)
        except subprocess.TimeoutExpired:
            entry.update(output=None, error=f"did not finish within {args.timeout:.0f} s on this machine")
        raw[name] = entry
    command = (f"python bench/run_all.py --profile {args.profile}" + (f" --only {' '.join(args.only)}" if args.only else "")
               + (f" --train-steps {args.train_steps}" if args.train_steps != 3 else "")
               + (f" --variant-timeout {args.variant_timeout:.0f}" if args.variant_timeout != 480 else ""))
    commands = [command]
    previous = json.loads(Path(args.out).read_text()) if args.only and Path(args.out).exists() else None
    for entry in raw.values():
        entry["run_by"] = command
    if previous:  # --only refreshes some benchmarks and keeps the others' earlier records (each with its date)
        kept = {k: {"date": previous.get("date"), **v} for k, v in previous.get("raw", {}).items() if k not in raw}
        if kept:
            older = previous.get("commands") or [previous.get("command", "")]
            commands = [c for c in older if c and produced_any(c, kept)] + commands
            raw = {**kept, **raw}
    record = {
        "command": "; ".join(commands),
        "commands": commands,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores, {platform.python_version()}",
        "raw": raw,
        "rows": summary_rows(raw),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["rows"], indent=2))
    return 0


def produced_any(command: str, kept: dict) -> bool:
    """Whether an earlier run_all command produced one of the records still kept (so it stays listed).

    Records name the command that made them (``run_by``); for older records without it, a command
    counts when its ``--only`` list (or no ``--only``: every benchmark) includes the record.
    """
    only = command.split("--only", 1)[1].split("--")[0].split() if "--only" in command else None
    for name, entry in kept.items():
        made_by = entry.get("run_by")
        if made_by == command or (not made_by and (only is None or name in only)):
            return True
    return False


def _passes(output: dict) -> str:
    """How a generation figure was timed, when each way ran in several alternating passes."""
    passes = output.get("batched_passes_s") or []
    return f", median of {len(passes)} alternating passes" if len(passes) > 1 else ""


def summary_rows(raw: dict) -> list[dict]:
    """One README line per benchmark, read from the scripts' own JSON keys."""
    rows = []
    for name, entry in raw.items():
        if entry.get("output") is None:
            rows.append({"name": name.replace("_", " "), "figure": entry.get("error", "no output"), "target": ""})
    teacher = (raw.get("teacher_concurrency") or {}).get("output")
    if teacher:
        rows.append({"name": "teacher calls, concurrency 8 vs sequential (200 ms fake server)",
                     "figure": _ratio(teacher.get("speedup")), "target": "≥ 6×"})
        rows.append({"name": "API calls on a rerun after completion",
                     "figure": str(teacher.get("rerun_api_calls")), "target": "0"})
    gen = (raw.get("generation") or {}).get("output")
    if gen:
        rows.append({"name": f"evaluation generation, batched vs per-example ({gen.get('model', '')}){_passes(gen)}",
                     "figure": _ratio(gen.get("speedup")), "target": "≥ 4×"})
    long = (raw.get("generation_long") or {}).get("output")
    if long:
        rows.append({"name": f"the same on whole FACTS documents (test-split length){_passes(long)}",
                     "figure": _ratio(long.get("speedup")), "target": ""})
    train = (raw.get("train_config") or {}).get("output")
    if train:
        rows += train_rows(train)
    return rows


# what "ours" is compared with: our path with TRL's two-row forward, then TRL's defaults
OTHER_VARIANTS = {"ours_two_rows": "ours with two rows per pair", "trl_defaults": "TRL defaults",
                  "trl_defaults_fp32": "TRL defaults with bf16 off"}


def train_rows(train: dict) -> list[dict]:
    """Our step time and peak, then per other variant: ours / theirs, or the timeout it hit."""
    rows = []
    ours = train.get("ours") or {}
    if ours.get("seconds_per_step"):
        peak = (ours.get("peak_memory") or {}).get("bytes")
        rows.append({"name": f"training, ours ({train.get('model_id', '')}, {train.get('steps')} steps)",
                     "figure": f"{ours['seconds_per_step']:.1f} s/step"
                               + (f", peak {peak / 2**30:.2f} GiB" if peak else ""), "target": ""})
    ratios = train.get("ratios_ours_over") or train.get("ratios_ours_over_defaults") or {}
    if ratios and not isinstance(next(iter(ratios.values())), dict):  # older records: one TRL variant
        ratios = {"trl_defaults": ratios}
    for variant, label in OTHER_VARIANTS.items():
        result = train.get(variant)
        if result is None:
            continue
        if result.get("timed_out"):
            rows.append({"name": f"training, {label}", "figure": result.get("error", "timed out"), "target": ""})
            continue
        for key, value in (ratios.get(variant) or {}).items():
            if key == "trainable_params" and value == 1:  # the same adapter: nothing to compare
                continue
            rows.append({"name": f"training {key.replace('_', ' ')}, ours / {label}",
                         "figure": _ratio(value), "target": "< 1×"})
    return rows


if __name__ == "__main__":
    sys.exit(main())
