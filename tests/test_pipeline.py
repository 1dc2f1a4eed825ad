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
    assert list(run["stages"]) == ["prepare_model", "data", "train", "evaluate", "figures"]
    assert all(stage["exit_code"] == 0 for stage in run["stages"].values())
    assert run["peak_rss_mb"] > 0 and run["total_seconds"] > 0
    # the artefact contract of issue 2
    assert (out / "pairs" / "train").is_dir() and (out / "pairs" / "test").is_dir()
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "adapter" / "README.md").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["profile"] == "smoke" and {"base", "aligned", "banana"} <= set(metrics)
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"01_token_lengths.png", "01_pair_types.png", "training_curves.png", "eval_base_vs_aligned.png"} <= figures
