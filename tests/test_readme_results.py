"""The README's results section is exactly what the committed run records generate.

Numbers reach the README only through ``python -m helpers.readme_results`` reading ``results/``;
hand-editing a number there (or committing new results without regenerating) fails this test.
"""

from __future__ import annotations

import json

from helpers.config import repo_root
from helpers.readme_results import END, START, render_results, update_readme


def test_readme_results_section_matches_the_committed_records():
    text = (repo_root() / "README.md").read_text(encoding="utf-8")
    section = text.split(START, 1)[1].split(END, 1)[0]
    assert section == "\n" + render_results()


def test_render_reads_numbers_from_the_records(tmp_path):
    metrics = {
        "base": {"hallucination_rate": {"value": 0.9, "n": 10, "ci95": [0.6, 0.98]}},
        "aligned": {"hallucination_rate": {"value": 0.1, "n": 10, "ci95": [0.02, 0.4]}},
        "relative_hallucination_reduction": 0.8889, "banana": {}, "n_answerable": 10, "n_unanswerable": 10,
        "judge": "offline", "model": "m", "profile": "local",
    }
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "metrics.json").write_text(json.dumps(metrics))
    out = render_results(tmp_path)
    # 0.9 -> "90.0%", 0.1 -> "10.0%"; relative 0.8889 -> "88.9%"
    assert "90.0% [60.0–98.0] (n=10)" in out and "10.0% [2.0–40.0] (n=10)" in out
    assert "**88.9%**" in out
    run = {"command": "make demo", "machine": "x", "date": "d", "total_seconds": 600, "peak_rss_mb": 1024,
           "code": {"commit": "0123456789abcdef", "dirty": True}, "stages": {}}
    (tmp_path / "local" / "run_report.json").write_text(json.dumps(run))
    assert "d at commit `0123456789` (with local changes): **10.0 min**" in render_results(tmp_path)
    assert "Made before run records named their commit" not in render_results(tmp_path)
    (tmp_path / "local" / "run_report.json").write_text(json.dumps({k: v for k, v in run.items() if k != "code"}))
    assert "Made before run records named their commit" in render_results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold 12%\n{END}\ntail\n")
    assert update_readme(readme, tmp_path) is True
    assert "old 12%" not in readme.read_text() and readme.read_text().endswith(f"{END}\ntail\n")


def test_curve_and_tuning_records_reach_the_section(tmp_path):
    metrics = {"base": {}, "aligned": {}, "banana": {}, "model": "m", "profile": "local"}
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "metrics.json").write_text(json.dumps(metrics))
    rate = lambda v: {"value": v, "n": 4}  # noqa: E731
    curve = {"command": "python bench/curve_local.py --run-dir x", "points": [
        {"step": 0, "sets": {"test": {"hallucination_rate": rate(1.0), "over_refusal_rate": rate(0.0),
                                      "grounded_accuracy": rate(0.25)}}},
        {"step": 25, "sets": {"test": {"hallucination_rate": rate(0.5), "over_refusal_rate": rate(0.25),
                                       "grounded_accuracy": rate(0.75)}}}]}
    (tmp_path / "local" / "curve.json").write_text(json.dumps(curve))
    tuning = {"name": "by_doc", "train_overrides": {"batch_order": "by_document"}, "train_pairs": 9, "steps": 3,
              "dev_docs": 2, "dev_answerable": 4, "dev_unanswerable": 4, "pairs_dir": "/x/outputs/pairs",
              "aligned": {"hallucination_rate": 0.75, "over_refusal_rate": 0.0, "grounded_accuracy": 0.5},
              "base": {"hallucination_rate": 1.0, "over_refusal_rate": 0.0, "grounded_accuracy": 0.25},
              "curve": [{"step": 2, "aligned": {"hallucination_rate": 0.5, "over_refusal_rate": 0.25,
                                                "grounded_accuracy": 0.5}}],
              "averaged": [{"from_fraction": 0.5, "steps": [2, 3], "aligned": {
                  "hallucination_rate": 0.25, "over_refusal_rate": 0.0, "grounded_accuracy": 0.75}}]}
    (tmp_path / "tuning.jsonl").write_text(json.dumps(tuning) + "\n")
    out = render_results(tmp_path)
    assert "| 25 | 50.0% | 25.0% | 75.0% |" in out and "| 0 | 100.0% | 0.0% | 25.0% |" in out
    assert '| by_doc | `{"batch_order": "by_document"}` | 9 | 3 | 75.0% | 0.0% | 50.0% |' in out
    assert "hallucination rate 100.0%" in out  # the base model's dev rates, from the record
    assert "| by_doc, checkpoint 2 | same run | | | 50.0% | 25.0% | 50.0% |" in out
    assert "| by_doc, mean of checkpoints 2, 3 | same run | | | 25.0% | 0.0% | 75.0% |" in out


def test_collect_drops_a_curve_and_figures_left_from_an_earlier_run(tmp_path):
    from helpers.readme_results import collect_run

    source, dest = tmp_path / "out", tmp_path / "results" / "local-long"
    (source / "figures").mkdir(parents=True)
    (source / "metrics.json").write_text(json.dumps({"model": "m"}))
    (source / "figures" / "new.png").write_bytes(b"png")
    (dest / "figures").mkdir(parents=True)
    (dest / "curve.json").write_text("{}")
    (dest / "figures" / "old.png").write_bytes(b"png")
    collect_run("local-long", source=source, dest=dest)
    assert not (dest / "curve.json").exists() and not (dest / "figures" / "old.png").exists()
    assert (dest / "figures" / "new.png").exists() and json.loads((dest / "metrics.json").read_text()) == {"model": "m"}
    (source / "curve.json").write_text('{"points": []}')
    collect_run("local-long", source=source, dest=dest)
    assert json.loads((dest / "curve.json").read_text()) == {"points": []}


def test_wall_time_check_says_when_the_model_conversion_was_cached():
    from helpers.readme_results import target_checks

    metrics = {"base": {"hallucination_rate": {"value": 1.0}, "over_refusal_rate": {"value": 0.0}},
               "aligned": {"hallucination_rate": {"value": 0.5}, "over_refusal_rate": {"value": 0.0}}}
    note = "model conversion was already cached"
    fresh = {"total_seconds": 1200, "stages": {"prepare_model": {"seconds": 70.0}}}
    assert not any(note in line for line in target_checks(metrics, fresh))
    old_warm = {"total_seconds": 1200, "stages": {"prepare_model": {"seconds": 0.0}}}
    assert any(note in line for line in target_checks(metrics, old_warm))
    assert any(note in line for line in target_checks(metrics, {**fresh, "model_build_cached": True}))


def test_offline_build_cached_is_none_for_hub_models_and_tracks_the_marker(tmp_path, monkeypatch):
    from helpers.models import BUILD_MARKER, offline_build_cached

    monkeypatch.setenv("GEMMA_FACTS_CACHE", str(tmp_path))
    assert offline_build_cached("google/gemma-2-2b-it") is None
    assert offline_build_cached("embedded:gemma3-270m") is False
    (tmp_path / "gemma3-270m").mkdir()
    (tmp_path / "gemma3-270m" / BUILD_MARKER).write_text("{}")
    assert offline_build_cached("embedded:gemma3-270m") is True


def test_early_stopping_record_reaches_the_section(tmp_path):
    rate = lambda v: {"value": v, "n": 8}  # noqa: E731
    scores = lambda h, o: {"test": {"hallucination_rate": rate(h), "over_refusal_rate": rate(o),  # noqa: E731
                                    "grounded_accuracy": rate(0.5)}}
    early = {"command": "python bench/dev_early_stopping.py --tune-name long", "tune_name": "long", "rule": "r",
             "chosen_step": 50, "last_step": 75,
             "scores": {"base": scores(1.0, 0.0), "step50": scores(0.25, 0.0), "step75": scores(0.5, 0.125)},
             "probes": {"base": [{"name": "banana", "answer": "Yes.", "passed": False}],
                        "step50": [{"name": "banana", "answer": "No info.", "passed": True}]}}
    early["seconds"] = 300.0
    (tmp_path / "dev_early_stopping.json").write_text(json.dumps(early))
    tuning = {"name": "long", "train_overrides": {}, "train_pairs": 9, "steps": 75, "dev_docs": 2, "dev_answerable": 4,
              "dev_unanswerable": 4, "train_seconds": 600.0, "total_seconds": 900.0, "command": "tune",
              "aligned": {"hallucination_rate": 0.5, "over_refusal_rate": 0.0, "grounded_accuracy": 0.5}}
    (tmp_path / "tuning.jsonl").write_text(json.dumps(tuning) + "\n")
    out = render_results(tmp_path)
    assert "Wall time: 15.0 min for the dev run with its checkpoint scoring, then 5.0 min" in out
    assert "→ checkpoint **50** (last: 75)" in out
    assert "| chosen on dev (step 50) | test | 25.0% (n=8) | 0.0% (n=8) | 50.0% (n=8) |" in out
    assert "| last checkpoint (step 75) | test | 50.0% (n=8) | 12.5% (n=8) | 50.0% (n=8) |" in out
    assert "| base | test | 100.0% (n=8) |" in out
    assert "base: “Yes.” (fail); chosen on dev (step 50): “No info.” (pass)." in out


def test_checkpoint_choice_of_the_main_command_reaches_the_section(tmp_path):
    from helpers.readme_results import selection_line

    sel = {"rule": "lowest dev hallucination among checkpoints with dev over-refusal <= 0.05", "dev_documents": 8,
           "dev_answerable": 24, "dev_unanswerable": 23, "chosen_step": 90, "final_step": 108, "seconds": 210,
           "curve": [{"step": 72, "aligned": {"hallucination_rate": 0.5, "over_refusal_rate": 0.0}},
                     {"step": 90, "aligned": {"hallucination_rate": 0.125, "over_refusal_rate": 0.0417}}]}
    line = selection_line(sel)
    assert "**step 90 of 108**" in line and "step 72: 50.0% / 0.0%; step 90: 12.5% / 4.2%" in line
    assert "(dev scoring 3.5 min)" in line and "24 answerable + 23 unanswerable" in line
    (tmp_path / "local").mkdir()
    metrics = {"base": {}, "aligned": {}, "banana": {}, "model": "m"}
    (tmp_path / "local" / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "local" / "run_report.json").write_text(json.dumps({"command": "c", "stages": {}, "total_seconds": 1}))
    (tmp_path / "local" / "train_report.json").write_text(json.dumps({"steps": 108, "checkpoint_selection": sel}))
    assert line in render_results(tmp_path)
