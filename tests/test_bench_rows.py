"""docs/RESULTS.md's benchmark lines come from the scripts' JSON: a timed-out variant is reported, not dropped."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_a_timed_out_trl_variant_keeps_ours_and_the_finished_ratio():
    run_all, bench = _load("run_all"), _load("bench_train_config")
    ours = {"seconds_per_step": 8.0, "peak_memory": {"bytes": 2 * 2**30}, "trainable_params": 10}
    fp32 = {"seconds_per_step": 32.0, "peak_memory": {"bytes": 8 * 2**30}, "trainable_params": 1000}
    output = {"model_id": "m", "steps": 2, "ours": ours,
              "trl_defaults": {"timed_out": True, "error": "did not finish 2 steps within 480 s"},
              "trl_defaults_fp32": fp32, "ratios_ours_over": {"trl_defaults_fp32": bench.ratios(ours, fp32)}}
    rows = {r["name"]: r["figure"] for r in run_all.summary_rows({"train_config": {"output": output}})}
    assert rows["training, ours (m, 2 steps)"] == "8.0 s/step, peak 2.00 GiB"
    assert rows["training, TRL defaults"] == "did not finish 2 steps within 480 s"
    assert rows["training seconds per step, ours / TRL defaults with bf16 off"] == "0.25×"
    assert rows["training peak memory, ours / TRL defaults with bf16 off"] == "0.25×"
    assert not any("ours / TRL defaults" == name.split(", ", 1)[-1] for name in rows)


def test_ratios_are_none_when_a_figure_is_missing():
    bench = _load("bench_train_config")
    assert bench.ratios({"seconds_per_step": 2.0}, {"seconds_per_step": None})["seconds_per_step"] is None
    assert bench.ratios({"seconds_per_step": 2.0}, {"seconds_per_step": 4.0})["seconds_per_step"] == 0.5


def test_only_commands_that_produced_a_kept_record_stay_listed():
    run_all = _load("run_all")
    kept = {"teacher_concurrency": {"date": "d"}}
    assert run_all.produced_any("python bench/run_all.py --profile local --only teacher_concurrency generation", kept)
    assert not run_all.produced_any("python bench/run_all.py --profile local --only train_config --train-steps 2", kept)
    assert run_all.produced_any("python bench/run_all.py --profile local", kept)  # ran everything
    kept = {"generation": {"run_by": "python bench/run_all.py --only generation"}}
    assert run_all.produced_any("python bench/run_all.py --only generation", kept)
    assert not run_all.produced_any("python bench/run_all.py --profile local", kept)
    # a mix: the older record without run_by still keeps the command whose --only named it
    kept = {"teacher_concurrency": {"date": "d"}, "generation": {"run_by": "python bench/run_all.py --only generation"}}
    assert run_all.produced_any("python bench/run_all.py --only teacher_concurrency generation", kept)
    assert run_all.produced_any("python bench/run_all.py --only generation", kept)
    assert not run_all.produced_any("python bench/run_all.py --only train_config", kept)


def test_both_generation_benches_get_a_line_and_the_short_one_has_the_target():
    run_all = _load("run_all")
    raw = {"generation": {"output": {"speedup": 4.1, "model": "m"}}, "generation_long": {"output": {"speedup": 2.5}}}
    rows = {r["name"]: (r["figure"], r["target"]) for r in run_all.summary_rows(raw)}
    assert rows == {"evaluation generation, batched vs per-example (m)": ("4.10×", "≥ 4×"),
                    "the same on whole FACTS documents (test-split length)": ("2.50×", "")}
    raw["generation"]["output"].update(batched_passes_s=[10.0, 11.0, 12.0], per_example_passes_s=[40.0, 41.0, 42.0])
    names = [r["name"] for r in run_all.summary_rows(raw)]
    assert names[0] == "evaluation generation, batched vs per-example (m), median of 3 alternating passes"
