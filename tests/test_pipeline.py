"""The main command's terminal path, end to end in the smoke profile: every stage as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_pipeline_runs_every_stage_and_writes_the_artefact_contract(tmp_path):
    out = tmp_path / "outputs"
    env = {**os.environ, "GEMMA_FACTS_PROFILE": "smoke", "GEMMA_FACTS_OUTPUT": str(out)}
    proc = subprocess.run([sys.executable, "-m", "helpers.pipeline"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = json.loads((out / "run_report.json").read_text())
    assert list(run["stages"]) == ["prepare_model", "data", "train", "select", "evaluate", "figures"]
    assert all(stage["exit_code"] == 0 for stage in run["stages"].values())
    assert run["peak_rss_mb"] > 0 and run["total_seconds"] > 0
    # the artefact contract of issue 2
    assert (out / "pairs" / "train").is_dir() and (out / "pairs" / "test").is_dir()
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "adapter" / "README.md").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["profile"] == "smoke" and {"base", "aligned", "banana"} <= set(metrics)
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"01_token_lengths.png", "01_pair_types.png", "training_curves.png", "eval_base_vs_aligned.png"} <= figures

    # the measured curve (experiments/curve_local.py) reads the same run: base + every kept checkpoint
    curve_json = tmp_path / "curve.json"
    proc = subprocess.run([sys.executable, "experiments/curve_local.py", "--profile", "smoke", "--run-dir", str(out),
                           "--out", str(curve_json)], env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    curve = json.loads(curve_json.read_text())
    kept = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert [p["step"] for p in curve["points"]] == [0, *kept] and kept
    test_n = metrics["n_answerable"]
    assert all(p["sets"]["test"]["over_refusal_rate"]["n"] == test_n for p in curve["points"])
    assert curve_json.with_suffix(".png").stat().st_size > 0

    # the tuning script carves its dev split out of the *training* documents only
    record = tmp_path / "tuning.jsonl"
    proc = subprocess.run([sys.executable, "experiments/tune_local.py", "--profile", "smoke", "--name", "check",
                           "--pairs-dir", str(out / "pairs"), "--dev-docs", "2", "--max-examples", "2",
                           "--with-base", "--work", str(tmp_path / "tune"), "--record", str(record),
                           "--train", '{"max_steps": 2, "save_steps": 1, "save_total_limit": 5}', "--curve",
                           "--average-from", "0.5", "--data", '{"pairs_per_kind": {"unanswerable": 1}}'],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    tuned = json.loads(record.read_text().splitlines()[-1])
    assert tuned["steps"] == 2 and tuned["dev_answerable"] >= 1 and tuned["dev_unanswerable"] >= 1
    assert [point["step"] for point in tuned["curve"]] == [1, 2]  # every kept checkpoint scored on dev
    assert tuned["averaged"][0]["steps"] == [1, 2] and "hallucination_rate" in tuned["averaged"][0]["aligned"]
    assert {"hallucination_rate", "over_refusal_rate"} <= set(tuned["aligned"]) and "base" in tuned
    # --data rebuilt the training pairs with only near-miss refusals, scored on the default pairs' dev requests
    assert tuned["data_overrides"] == {"pairs_per_kind": {"unanswerable": 1}}
    assert tuned["pairs_dir"] != str(out / "pairs") and tuned["dev_from"] == str(out / "pairs")


def test_seeds_run_once_per_seed_reuses_the_base_answers_and_reports_the_spread(tmp_path):
    """`gemma-facts run --seeds` (make demo-seeds): one data build, one folder per training seed, the base's
    answers generated once, and a summary whose spread is computed from the seeds' own metrics."""
    out, cache = tmp_path / "outputs", tmp_path / "cache"
    env = {**os.environ, "GEMMA_FACTS_PROFILE": "smoke", "GEMMA_FACTS_OUTPUT": str(out), "GEMMA_FACTS_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "helpers.cli", "run", "--seeds", "3", "5"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "pairs").is_dir() and not (out / "seed-3" / "pairs").exists()  # the pairs are built once
    metrics = {s: json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (3, 5)}
    assert metrics[3]["config"]["model"]["seed"] == 3 and metrics[5]["config"]["model"]["seed"] == 5
    # the two seeds trained different adapters from the same pairs ...
    from helpers.train.checkpoint_average import load_adapter_weights

    a, b = (load_adapter_weights(out / f"seed-{s}" / "adapter") for s in (3, 5))
    key = next(k for k in a if "lora_A" in k)
    assert not (a[key] == b[key]).all()
    # ... and the second read the base's answers from the cache instead of generating them again
    assert proc.stdout.count("base_answers") >= 1
    rows = {s: [json.loads(line) for line in (out / f"seed-{s}" / "generations.jsonl").read_text().splitlines()]
            for s in (3, 5)}
    assert [r["base"]["answer"] for r in rows[3]] == [r["base"]["answer"] for r in rows[5]]
    summary = json.loads((out / "seeds_summary.json").read_text())
    assert summary["finished"] == ["3", "5"]
    values = [m["aligned"]["over_refusal_rate"]["value"] for m in metrics.values()]
    assert summary["spread"]["aligned_over_refusal"] == {"mean": round(sum(values) / 2, 4), "min": round(min(values), 4),
                                                         "max": round(max(values), 4)}
    # a rerun keeps finished seeds: nothing is trained again
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                           cwd=Path(__file__).resolve().parents[1])
    assert again.returncode == 0 and again.stdout.count("exists, kept") == 2
    assert "stage train" not in again.stdout

    # re-evaluation of the trained seeds on a rebuilt test split: no training, every seed evaluated again
    adapter_bytes = (out / "seed-3" / "adapter" / "adapter_model.safetensors").read_bytes()
    rerun = subprocess.run(cmd + ["--skip", "train", "select"], env=env, capture_output=True, text=True,
                           timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "stage train" not in rerun.stdout and rerun.stdout.count("stage evaluate") == 2
    assert rerun.stdout.count("(as trained)") == 2  # the training split's fingerprint checked per seed
    assert (out / "seed-3" / "adapter" / "adapter_model.safetensors").read_bytes() == adapter_bytes
    assert (out / "seed-5" / "rerun_report.json").exists()
    # a build that changes the training split cannot be paired with adapters trained on the old one
    config = tmp_path / "other_train.json"
    config.write_text(json.dumps({"data": {"pairs_per_kind": {"unanswerable": 1}}}))
    refused = subprocess.run(cmd + ["--skip", "train", "select"], env={**env, "GEMMA_FACTS_CONFIG": str(config)},
                             capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert refused.returncode != 0 and "changed the training split" in refused.stderr
