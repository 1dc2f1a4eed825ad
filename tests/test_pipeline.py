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
