"""The README's headline and docs/RESULTS.md are exactly what the committed run records generate.

Numbers reach them only through ``python -m tools.readme_results`` reading ``results/``: hand-editing
a number (or committing new results without regenerating) fails these tests, and so does a README
that outgrows its five-minute read or a superseded record under ``results/archive/`` that reappears.
"""

from __future__ import annotations

import json

from helpers.config import repo_root
from tools.readme_results import (
    END,
    RESULTS_DOC,
    START,
    render_headline,
    render_results_doc,
    update_readme,
    write_results_doc,
)

ROOT = repo_root()


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(START, 1)[1].split(END, 1)[0]


def test_readme_headline_matches_the_committed_records():
    assert _readme_block() == "\n" + render_headline()


def test_results_doc_matches_the_committed_records():
    assert (ROOT / RESULTS_DOC).read_text(encoding="utf-8") == render_results_doc()


def test_readme_is_a_five_minute_read():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_headline_is_the_heads_table_then_the_dpo_spread_and_the_rest_is_in_the_doc():
    block, doc = _readme_block(), render_results_doc()
    assert "results/local-seeds/" in block and "Targets (issue 16)" in block and "docs/RESULTS.md" in block
    assert "real FACTS test split" in block and "| base model alone |" in block and "Banana" in block
    assert block.index("| base model alone |") < block.index("Targets (issue 16)") < block.index("The DPO recipe")
    assert "| seed |" not in block and "Benchmarks" not in block and "## Profile" not in block
    # what left the README is in the doc: each seed's row and target checks, the no-model rule, the first head
    assert "## The DPO recipe with" in doc and "## Benchmarks" in doc and "| seed |" in doc
    assert "checked against this record" in doc and "A no-model rule" in doc and "linear answerability head" in doc


def _reviewed_record(families: dict, answerable: int = 85, near_misses: int = 125) -> dict:
    """An ``experiments/reviewed_labels.py`` record: base rates and kept counts, each family's runs and spreads."""
    def v(mean, lo, hi):
        return {"mean": mean, "min": lo, "max": hi}

    out = {}
    for key, cuts in families.items():
        runs = {f"{key}-dev-seed-{seed}": {"reviewed": {"relative_cut": cut}, "banana_passed": cut > 0.5}
                for seed, cut in zip((42, 7, 1234), cuts, strict=True)}
        mean = sum(cuts) / 3
        spread = {"hallucination_rate": v(0.98 * (1 - mean), 0.01, 0.2), "relative_cut": v(mean, min(cuts), max(cuts)),
                  "over_refusal_rate": v(0.09, 0.08, 0.1), "grounded_accuracy": v(0.02, 0.02, 0.02)}
        out[key] = {"label": f"the {key} recipe", "runs": runs, "banana_passed": sum(c > 0.5 for c in cuts),
                    "reviewed_spread": spread}
    return {"base": {"reviewed": {"hallucination_rate": 0.98, "over_refusal_rate": 0.059, "grounded_accuracy": 0.02},
                     "reviewed_n": {"answerable": answerable, "unanswerable": 234,
                                    "by_kind": {"near_miss": {"kept": near_misses, "left_out": 26}}}},
            "families": out}


def test_the_heads_table_shows_each_splits_last_recipes_and_the_targets_read_the_last_one(tmp_path):
    """The table reads the records (the 104-document split first, each split's last ``TABLE_RECIPES`` families);
    the targets are checked against the first split's last family, run by run, and the bench's ratio."""
    from tools.readme_results import TABLE_RECIPES, head_targets, headline_heads, reviewed_heads_table

    assert reviewed_heads_table(tmp_path) == "" and headline_heads(tmp_path) is None
    (tmp_path / "reviewed_labels_whole_split.json").write_text(json.dumps(_reviewed_record(
        {"clean": (0.5, 0.6, 0.7), "window": (0.94, 0.93, 0.87), "bagged": (0.92, 0.93, 0.91)}, answerable=70)))
    (tmp_path / "reviewed_labels_104_test_docs.json").write_text(json.dumps(_reviewed_record(
        {"window-104-test-docs": (0.83, 0.85, 0.84), "bagged-104-test-docs": (0.904, 0.895, 0.904)})))
    table = reviewed_heads_table(tmp_path)
    assert TABLE_RECIPES == 2 and "the clean recipe" not in table and "the window recipe" in table
    assert table.index("[104 documents]") < table.index("[88 documents]")
    assert "85 answerable + 234 unanswerable" in table and "70 answerable + 234 unanswerable" in table
    assert "| **90.1%** [89.5%, 90.4%] | **9.0%** [8.0%, 10.0%] | 3 of 3 |" in table  # the bagged family's row
    assert headline_heads(tmp_path)[1] == "bagged-104-test-docs"
    (tmp_path / "bench.json").write_text(json.dumps({"raw": {"generation": {"output": {"speedup": 3.19,
                                                                                      "prompts": 16}}}}))
    lines = head_targets(tmp_path, [(True, "a shared check")])
    assert "(104 documents: the bagged-104-test-docs recipe)" in lines[0]
    assert ("- ❌ every run: hallucination cut ≥ 90% (90.4% (dev split 1234), 90.4% (dev split 42), "
            "89.5% (dev split 7))") in lines
    assert "- ❌ mean relative cut ≥ 95%: 90.1%" in lines
    assert "- ✅ over-refusal ≤ base + 5 points (mean): 9.0% vs base 5.9%" in lines
    assert any(line.startswith("- ✅ ≥ 80 answerable") and "125 near misses" in line for line in lines)
    assert "- ✅ a shared check" in lines and any("❌ batched generation" in line and "3.19×" in line for line in lines)
    (tmp_path / "bench.json").write_text(json.dumps({"raw": {"generation": {"output": {
        "speedup": 4.14, "prompts": 16, "batched_passes_s": [16.8, 17.7, 14.9],
        "per_example_passes_s": [74.8, 68.3, 69.6]}}}}))
    bench_line = head_targets(tmp_path, [])[-1]
    assert bench_line.startswith("- ✅ batched generation") and "4.14×" in bench_line
    assert "each pass 3.86-4.67×" in bench_line  # 68.3 / 17.7 and 69.6 / 14.9: the spread shows the low pass
    # too few reviewed answerable prompts, or fewer than half of the unanswerable ones near misses: not met
    (tmp_path / "reviewed_labels_104_test_docs.json").write_text(json.dumps(_reviewed_record(
        {"bagged-104-test-docs": (0.96, 0.97, 0.95)}, answerable=79, near_misses=100)))
    lines = head_targets(tmp_path, [])
    assert "- ✅ every run: hallucination cut ≥ 90% (95.0% (dev split 1234), 96.0% (dev split 42), 97.0% (dev split 7))" \
        in lines and "- ✅ mean relative cut ≥ 95%: 96.0%" in lines
    assert any(line.startswith("- ❌ ≥ 80 answerable") for line in lines)


def _seed_metrics(halluc: float, over: float, banana: bool) -> dict:
    rate = lambda v: {"value": v, "n": 80, "ci95": [max(0.0, v - 0.1), min(1.0, v + 0.1)]}  # noqa: E731
    return {"base": {"hallucination_rate": rate(1.0), "over_refusal_rate": rate(0.0), "grounded_accuracy": rate(0.2)},
            "aligned": {"hallucination_rate": rate(halluc), "over_refusal_rate": rate(over),
                        "grounded_accuracy": rate(0.3)},
            "relative_hallucination_reduction": 1.0 - halluc, "n_answerable": 83, "n_unanswerable": 96,
            "banana": {"document": "d", "request": "r", "base": {"answer": "Yes.", "passed": False},
                       "aligned": {"answer": "No.", "passed": banana}}, "model": "m", "profile": "local"}


def test_seed_headline_reads_every_number_from_the_seed_records(tmp_path):
    from helpers.pipeline import summarise_seeds
    from tools.readme_results import collect_seeds

    out = tmp_path / "outputs"
    for seed, (h, o, b) in {"1": (0.05, 0.02, True), "2": (0.25, 0.10, False)}.items():
        (out / f"seed-{seed}").mkdir(parents=True)
        (out / f"seed-{seed}" / "metrics.json").write_text(json.dumps(_seed_metrics(h, o, b)))
        evaluate = {"seconds": 600 if seed == "1" else 300}  # the first seed also generated the base's answers
        (out / f"seed-{seed}" / "run_report.json").write_text(json.dumps({"total_seconds": 1500,
                                                                          "stages": {"evaluate": evaluate}}))
        point = {"step": 80, "aligned": {"hallucination_rate": h, "over_refusal_rate": o},
                 "errors": {"hallucinations": 2, "over_refusals": 1, "errors": 3}}
        (out / f"seed-{seed}" / "train_report.json").write_text(json.dumps({"checkpoint_selection": {
            "chosen_step": 80 if seed == "1" else None, "beats_base": seed == "1", "final_step": 100,
            "curve": [point], "rule": "r", "dev_documents": 24, "dev_answerable": 26, "dev_unanswerable": 48,
            "base": {"aligned": {"hallucination_rate": 0.83, "over_refusal_rate": 0.04},
                     "errors": {"hallucinations": 40, "over_refusals": 1, "errors": 41}}, "seconds": 60}}))
    (out / "data_report.json").write_text(json.dumps({"split": {"test_docs": 88}}))
    (out / "data_run_report.json").write_text(json.dumps({"total_seconds": 60}))
    (out / "seeds_summary.json").write_text(json.dumps(summarise_seeds(out, [1, 2])))
    results = tmp_path / "results"
    collect_seeds("local-seeds", source=out, dest=results / "local-seeds")
    block = render_headline(results)
    assert "88 documents, 83 answerable + 96 unanswerable" in block
    assert "**15.0%** [5.0%, 25.0%]" in block  # aligned hallucination: mean, min, max of 0.05 and 0.25
    # chosen under an earlier rule ("r"): the row also says what today's rule keeps from the same dev counts
    assert "| 1 | step 80 (current rule: the same) |" in block
    assert "| 2 | the base (no step beat it on dev) (current rule: step 80) |" in block
    assert "❌ every seed: hallucination cut ≥ 90% (cuts: 95.0%, 75.0%)" in block
    assert "❌ every seed passes the Banana test (1 of 2)" in block
    # a first `make demo` also generates the base's answers: the fastest seed (26 min) + the first seed's extra 5
    assert "❌ one seed of the recipe (= `make demo`) on a first run: ~31.0 min ≤ 30 min (fastest seed 26.0 min" in block
    assert "spent ~5.0 min generating; each seed: 26.0, 26.0 min" in block
    assert "## The DPO recipe with 2 seeds" in render_results_doc(results)


def test_archived_records_are_not_rendered():
    archive = ROOT / "results" / "archive"
    names = [p.name for p in archive.iterdir() if p.is_dir() or p.suffix == ".json"]
    assert names, "results/archive/ holds the superseded records"
    rendered = render_results_doc() + _readme_block()
    for name in names:
        assert name not in rendered, f"archived record {name} is rendered"


def test_archive_folder_is_skipped_and_only_its_tuning_record_is_read(tmp_path):
    metrics = {"base": {}, "aligned": {}, "banana": {}, "model": "m-live", "profile": "local"}
    for folder, model in (("local", "m-live"), ("archive/old-run", "m-archived"), ("archive", "m-archive-root")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "metrics.json").write_text(json.dumps({**metrics, "model": model}))
    (tmp_path / "archive" / "dev_early_stopping.json").write_text(json.dumps({"command": "early-stop-cmd"}))
    doc = render_results_doc(tmp_path)
    assert "m-live" in doc and "m-archived" not in doc and "m-archive-root" not in doc
    assert "old-run" not in doc and "early-stop-cmd" not in doc


def test_render_reads_numbers_from_the_records(tmp_path):
    metrics = {
        "base": {"hallucination_rate": {"value": 0.9, "n": 10, "ci95": [0.6, 0.98]}},
        "aligned": {"hallucination_rate": {"value": 0.1, "n": 10, "ci95": [0.02, 0.4]}},
        "relative_hallucination_reduction": 0.8889, "banana": {}, "n_answerable": 10, "n_unanswerable": 10,
        "judge": "offline", "model": "m", "profile": "local",
    }
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "metrics.json").write_text(json.dumps(metrics))
    for out in (render_results_doc(tmp_path), render_headline(tmp_path)):
        # 0.9 -> "90.0%", 0.1 -> "10.0%"
        assert "90.0% [60.0–98.0] (n=10)" in out and "10.0% [2.0–40.0] (n=10)" in out
    assert "**88.9%**" in render_results_doc(tmp_path)  # relative 0.8889
    run = {"command": "make demo", "machine": "x", "date": "2026-12-01T10:00:00+00:00", "total_seconds": 600,
           "peak_rss_mb": 1024, "code": {"commit": "0123456789abcdef", "dirty": True}, "stages": {}}
    (tmp_path / "local" / "run_report.json").write_text(json.dumps(run))
    doc = render_results_doc(tmp_path)
    assert "2026-12-01T10:00:00+00:00 at commit `0123456789` (with local changes): **10.0 min**" in doc
    assert "at commit `0123456789`: **10.0 min** wall time" in render_headline(tmp_path)
    assert "Made before run records named their commit" not in doc
    (tmp_path / "local" / "run_report.json").write_text(json.dumps({k: v for k, v in run.items() if k != "code"}))
    assert "Made before run records named their commit" in render_results_doc(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold 12%\n{END}\ntail\n")
    assert update_readme(readme, tmp_path) is True and update_readme(readme, tmp_path) is False
    assert "old 12%" not in readme.read_text() and readme.read_text().endswith(f"{END}\ntail\n")
    doc_path = tmp_path / "docs" / "RESULTS.md"
    assert write_results_doc(doc_path, tmp_path) is True and write_results_doc(doc_path, tmp_path) is False
    assert doc_path.read_text() == render_results_doc(tmp_path)


def test_records_made_before_the_bitsandbytes_fix_say_so(tmp_path):
    metrics = {"base": {}, "aligned": {}, "banana": {}, "model": "m", "profile": "local"}
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "metrics.json").write_text(json.dumps(metrics))
    note = "Made before the fix of issue 14's finding 4"
    for date, flagged in (("2026-11-25T16:56:49+00:00", True), ("2026-12-02T09:00:00+00:00", False)):
        run = {"command": "c", "date": date, "stages": {}, "total_seconds": 60}
        (tmp_path / "local" / "run_report.json").write_text(json.dumps(run))
        (tmp_path / "bench.json").write_text(json.dumps({"date": date, "rows": []}))
        doc, headline = render_results_doc(tmp_path), render_headline(tmp_path)
        assert (note in headline) is flagged and doc.count(note) == (2 if flagged else 0)
        assert ("issue 16" in headline) is flagged and ("docs/colab.md" in headline) is flagged


def test_curve_and_tuning_records_reach_the_doc(tmp_path):
    metrics = {"base": {}, "aligned": {}, "banana": {}, "model": "m", "profile": "local"}
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "metrics.json").write_text(json.dumps(metrics))
    rate = lambda v: {"value": v, "n": 4}  # noqa: E731
    curve = {"command": "python experiments/curve_local.py --run-dir x", "points": [
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
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "tuning.jsonl").write_text(json.dumps(tuning) + "\n")
    out = render_results_doc(tmp_path)
    assert "| 25 | 50.0% | 25.0% | 75.0% |" in out and "| 0 | 100.0% | 0.0% | 25.0% |" in out
    assert '| by_doc | `{"batch_order": "by_document"}` | 9 | 3 | 75.0% | 0.0% | 50.0% |' in out
    assert "hallucination rate 100.0%" in out  # the base model's dev rates, from the record
    assert "| by_doc, checkpoint 2 | same run | | | 50.0% | 25.0% | 50.0% |" in out
    assert "| by_doc, mean of checkpoints 2, 3 | same run | | | 25.0% | 0.0% | 75.0% |" in out
    assert "Read from `results/archive/tuning.jsonl`" in out
    assert "by_doc" not in render_headline(tmp_path) and "| 25 | 50.0%" not in render_headline(tmp_path)


def test_collect_drops_a_curve_and_figures_left_from_an_earlier_run(tmp_path):
    from tools.readme_results import collect_run

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
    from tools.readme_results import target_checks

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


def test_checkpoint_choice_of_the_main_command_reaches_the_section(tmp_path):
    from tools.readme_results import selection_line

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
    assert line in render_results_doc(tmp_path)
    assert "**step 90 of 108**" in render_headline(tmp_path)


def test_refusal_gap_is_zero_for_a_refusal_rate_dial_and_one_for_perfect_grounding():
    from tools.readme_results import refusal_gap

    for rate in (0.0, 0.3, 1.0):  # refuses a share `rate` of everything, whatever the document holds
        assert abs(refusal_gap(hallucination=1 - rate, over_refusal=rate)) < 1e-12
    assert refusal_gap(0.0, 0.0) == 1.0 and refusal_gap(1.0, 1.0) == -1.0
    assert refusal_gap(None, 0.2) is None


def test_word_overlap_rule_is_fitted_on_train_and_scored_like_a_model(tmp_path):
    """experiments/word_overlap_baseline.py: the no-model rule shown beside the model in the headline."""
    import importlib.util

    from tools.readme_results import no_model_baseline

    spec = importlib.util.spec_from_file_location("wob", ROOT / "experiments" / "word_overlap_baseline.py")
    wob = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wob)
    doc = "The Nile flows north through Egypt into the Mediterranean Sea."
    items = [{"request": "Which sea does the Nile flow into?", "document": doc, "answerable": True},
             {"request": "Where does the Nile flow?", "document": doc, "answerable": True},
             {"request": "Who painted the Mona Lisa?", "document": doc, "answerable": False},
             {"request": "Which sea does the Danube flow into?", "document": doc, "answerable": False}]
    threshold = wob.fit_threshold(items)  # overlaps: 2/3 and 1/2 answerable, 0 and 1/3 unanswerable
    assert 1 / 3 < threshold <= 1 / 2 and wob.rule_on(items, threshold)["refusal_gap"] == 1.0
    # a near miss that shares most of its words with the document is answered: the rule cannot know better
    items.append({"request": "Which sea does the Nile flow into in Sudan?", "document": doc, "answerable": False})
    scored = wob.rule_on(items, threshold)
    assert scored["over_refusal_rate"] == 0.0 and abs(scored["hallucination_rate"] - 1 / 3) < 1e-3
    assert wob.auc([1.0, 1.0], [0.0, 0.75]) == 1.0 and wob.auc([0.5], [0.5]) == 0.5
    assert no_model_baseline(tmp_path) == ""  # nothing recorded: no line
    (tmp_path / "word_overlap_baseline.json").write_text(json.dumps({"p": {"rule_fitted_on_train": {
        "test_items": {**scored, "threshold": threshold}}}}))
    line = no_model_baseline(tmp_path)
    assert "hallucination **33.3%**, over-refusal **0.0%**, refusal gap **+66.7 pts**" in line


def test_answerability_head_threshold_and_probe_are_fitted_not_assumed(tmp_path):
    """experiments/answerability_probe.py: the dev threshold is the one with the largest refusal gap (a cut
    that refuses everything or nothing scores 0), and the logistic probe separates a direction it was shown
    (not a constant); the README line renders the recorded test rates and says when the Banana test fails."""
    import importlib.util

    import torch

    from tools.readme_results import answerability_head_line

    spec = importlib.util.spec_from_file_location("probe", ROOT / "experiments" / "answerability_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    scores = [0.9, 0.8, 0.2, 0.1, 0.85, 0.3]
    labels = [True, True, False, False, False, True]  # one unanswerable scores high, one answerable low
    cut, rates = probe.youden_threshold(scores, labels)
    assert 0.2 < cut < 0.3 and rates["dev_refusal_gap"] == round(2 / 3, 3)  # both low unanswerable, no answerable
    assert rates["dev_answerable_refused"] == 0.0
    assert probe.youden_threshold([0.5, 0.5], [True, False])[1]["dev_refusal_gap"] == 0.0  # no signal, no gap
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    y = x[:, 3] > 0  # answerability along one direction, noise elsewhere
    score = probe.fit_logistic(x, y, l2=1e-2)
    held = torch.randn(100, 8, generator=gen)
    agree = ((score(held) > 0) == (held[:, 3] > 0)).float().mean().item()
    assert agree > 0.9  # a linear rule on held-out points, not a memorised one (exact 1.0 not required)
    assert answerability_head_line(tmp_path) == ""
    side = {"hallucination_rate": {"value": 0.2}, "over_refusal_rate": {"value": 0.1},
            "grounded_accuracy": {"value": 0.05}}
    (tmp_path / "answerability_head.json").write_text(json.dumps({
        "command": "python experiments/answerability_probe.py --score-test",
        "dev_choice": {"layer": 7, "with_overlap": False, "dev_auc": 0.94},
        "test": {"base": {**side, "hallucination_rate": {"value": 0.9}}, "base_with_head": side,
                 "relative_hallucination_reduction": 7 / 9, "banana": {"aligned": {"passed": False}}}}))
    line = answerability_head_line(tmp_path)
    assert "layer-7" in line and "hallucination **20.0%** (cut 77.8%)" in line
    assert "over-refusal **10.0%**, refusal gap **+70.0 pts**" in line and "Banana test fails" in line


def test_the_head_stage_record_adds_its_sentence_to_the_head_line(tmp_path):
    """``results/answerability-head-stage/metrics.json`` (select --head-only, evaluate --base-only) is rendered
    beside the experiment's head, with its own rates; without the record nothing is added."""
    from tools.readme_results import HEAD_STAGE_DIR, head_stage_sentence

    assert head_stage_sentence(tmp_path) == ""
    folder = tmp_path / HEAD_STAGE_DIR
    folder.mkdir()
    gated = {"hallucination_rate": {"value": 0.375, "ci95": [0.28, 0.47]}, "over_refusal_rate": {"value": 0.06}}
    (folder / "metrics.json").write_text(json.dumps({"answerability_head": {
        "base_with_head": gated, "relative_hallucination_reduction": 0.6, "banana": {"passed": True},
        "head": {"layer": 7, "with_overlap": True, "dev": {"dev_auc": 0.952}}}}))
    sentence = head_stage_sentence(tmp_path)
    assert "layer 7 + overlap share" in sentence and "dev AUC 0.95" in sentence
    assert "hallucination **37.5%** [28.0%, 47.0%] (cut 60.0%)" in sentence
    assert "over-refusal **6.0%**, refusal gap **+56.5 pts**" in sentence  # (1 - 37.5%) - 6.0% and "Banana test passes" in sentence
    assert "written documents" not in sentence  # the record did not gate a second held-out set
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["heldout_2"] = {"base": {"hallucination_rate": {"value": 1.0}, "over_refusal_rate": {"value": 0.0}}}
    metrics["answerability_head"]["heldout_2"] = {"base_with_head": {"hallucination_rate": {"value": 0.25},
                                                                     "over_refusal_rate": {"value": 0.125}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert "hallucination 100.0% → 25.0%, over-refusal 0.0% → 12.5%" in head_stage_sentence(tmp_path)


def test_the_label_audit_line_adds_the_unanswerable_side_only_when_it_is_finished():
    from tools.readme_results import seed_targets

    summary = {"per_seed": {"42": {"hallucination_cut": 0.5, "banana_passed": True}}, "spread": {},
               "banana_passed": 1}
    audit = {"n": 30, "share_answerable": 0.8}
    other = {"n": 30, "share_unanswerable": 0.7,
             "by_kind": {"answer_removed": {"unanswerable": 9, "partly": 3, "answerable": 3},
                         "near_miss": {"unanswerable": 12, "partly": 2, "answerable": 1}}}
    line = next(x for x in seed_targets(summary, audit, [], 0.0, other) if "label audit" in x)
    assert line.startswith("- ❌") and "80.0%" in line  # the target is still the answerable side's
    assert "70.0% of 30 sampled unanswerable" in line and "answer removed 9 of 15, near miss 12 of 15" in line
    unfinished = {**other, "share_unanswerable": None}
    assert "other side" not in next(x for x in seed_targets(summary, audit, [], 0.0, unfinished) if "label audit" in x)


def test_the_clean_label_heads_sentence_reads_the_pooled_record_and_needs_both_files(tmp_path):
    """The clean-label heads' spread comes from ``label_holding_kinds.json`` (pooled counts) and the base's
    over-refusal from the first dev split's metrics; with either file missing nothing is rendered."""
    from tools.readme_results import CLEAN_HEADS_DIR, clean_heads_sentence

    def v(mean, lo, hi):
        return {"mean": mean, "min": lo, "max": hi}

    (tmp_path / "label_holding_kinds.json").write_text(json.dumps({
        "sides": {"base": {"hallucination_rate": 0.9}},
        "clean_label_heads_spread": {"runs": ["a", "b"], "hallucination_rate": v(0.1, 0.05, 0.15),
                                     "relative_cut": v(0.889, 0.833, 0.944), "over_refusal_rate": v(0.2, 0.1, 0.3),
                                     "all_kinds_hallucination_rate": v(0.3, 0.2, 0.4),
                                     "all_kinds_relative_cut": v(0.667, 0.5, 0.8), "banana_passed": 1}}))
    assert clean_heads_sentence(tmp_path) == ""  # no metrics of the first dev split yet
    folder = tmp_path / CLEAN_HEADS_DIR / "dev-seed-42"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"base": {"over_refusal_rate": {"value": 0.05}}}))
    sentence = clean_heads_sentence(tmp_path)
    assert "2 dev splits" in sentence and "Banana test 1 of 2" in sentence
    assert "**10.0%** [5.0%, 15.0%] on the kinds whose labels hold" in sentence and "base 90.0%" in sentence
    assert "over-refusal **20.0%** [10.0%, 30.0%] (base 5.0%)" in sentence


def test_the_surprisal_heads_sentence_names_the_budget_from_the_record(tmp_path):
    """The request-surprisal heads' sentence reads its spread from ``label_holding_kinds.json`` and the budget from
    the first dev split's recorded rule; nothing is rendered before both exist."""
    from tools.readme_results import SURPRISAL_HEADS_DIR, surprisal_heads_sentence

    def v(mean, lo, hi):
        return {"mean": mean, "min": lo, "max": hi}

    (tmp_path / "label_holding_kinds.json").write_text(json.dumps({
        "sides": {"base": {"hallucination_rate": 0.9}},
        "surprisal_heads_spread": {"runs": ["a", "b", "c"], "hallucination_rate": v(0.2, 0.1, 0.3),
                                   "relative_cut": v(0.78, 0.67, 0.89), "over_refusal_rate": v(0.09, 0.08, 0.1),
                                   "all_kinds_hallucination_rate": v(0.4, 0.3, 0.5),
                                   "all_kinds_relative_cut": v(0.55, 0.45, 0.65), "banana_passed": 0}}))
    assert surprisal_heads_sentence(tmp_path) == ""
    folder = tmp_path / SURPRISAL_HEADS_DIR / "dev-seed-42"
    folder.mkdir(parents=True)
    rule = "...; refuse below the highest cut that refuses at most 4% of the answerable prompts by their ..."
    (folder / "metrics.json").write_text(json.dumps({"base": {"over_refusal_rate": {"value": 0.05}},
                                                     "answerability_head": {"head": {"dev": {"rule": rule}}}}))
    sentence = surprisal_heads_sentence(tmp_path)
    assert "at most 4% of the answerable training prompts" in sentence and "Banana test 0 of 3" in sentence
    assert "over-refusal **9.0%** [8.0%, 10.0%] (base 5.0%)" in sentence and "cut **78.0%** [67.0%, 89.0%]" in sentence


def test_the_reviewed_heads_sentence_prefers_the_whole_split_and_reads_each_family(tmp_path):
    """The reviewed-labels sentence reads ``experiments/reviewed_labels.py``'s records: the 88-document split's whole
    split when it exists, else its evaluated prompts', and the 104-document split's before it; nothing without a
    record."""
    from tools.readme_results import reviewed_heads_sentence

    def v(mean, lo, hi):
        return {"mean": mean, "min": lo, "max": hi}

    def record(halluc, n_unanswerable):
        return {"base": {"reviewed": {"hallucination_rate": 0.97, "over_refusal_rate": 0.057},
                         "reviewed_n": {"answerable": 70, "unanswerable": n_unanswerable}},
                "families": {"clean": {"runs": {"a": {}, "b": {}, "c": {}}, "banana_passed": 2, "reviewed_spread": {
                    "hallucination_rate": v(halluc, 0.03, 0.11), "relative_cut": v(0.91, 0.88, 0.97),
                    "over_refusal_rate": v(0.15, 0.09, 0.19)}}}}

    assert reviewed_heads_sentence(tmp_path) == ""
    (tmp_path / "reviewed_labels.json").write_text(json.dumps(record(0.086, 62)))
    sentence = reviewed_heads_sentence(tmp_path)
    assert "the 179 evaluated prompts: 70 answerable + 62 unanswerable" in sentence
    assert "hallucination **8.6%** [3.0%, 11.0%] (cut **91.0%** [88.0%, 97.0%])" in sentence
    assert "Banana test 2 of 3" in sentence and "results/reviewed-labels/" in sentence
    (tmp_path / "reviewed_labels_whole_split.json").write_text(json.dumps(record(0.05, 200)))
    sentence = reviewed_heads_sentence(tmp_path)
    assert "the 88-document test split: 70 answerable + 200 unanswerable" in sentence and "**5.0%**" in sentence
    assert "results/reviewed-labels-whole-split/" in sentence and "179 evaluated" not in sentence
    # a split rebuilt with more test documents has its own record and review page, shown first, the other beside it
    (tmp_path / "reviewed_labels_104_test_docs.json").write_text(json.dumps(record(0.158, 234)))
    sentence = reviewed_heads_sentence(tmp_path)
    assert sentence.index("the 104-document test split") < sentence.index("the 88-document test split")
    assert "docs/label_review_104_test_docs.md" in sentence and "**15.8%**" in sentence and "**5.0%**" in sentence


def test_the_label_audit_line_names_the_review_of_every_prompt():
    """The bundled review's per-reader shares and the kept count reach the label audit's target line."""
    from tools.readme_results import seed_targets

    summary = {"per_seed": {"42": {"hallucination_cut": 0.5, "banana_passed": False}}, "spread": {},
               "banana_passed": 0}
    line = next(x for x in seed_targets(summary, {"share_answerable": 0.83, "n": 30}, []) if "label audit" in x)
    assert "two blind readers" in line and "docs/label_review.md" in line and "answerable prompts answerable" in line


def test_the_make_demo_target_reads_a_fresh_clones_run_when_nothing_was_cached():
    """A `make demo` record with the model conversion in it sets the time target's figure (the seeds' estimate is
    context); a record that reused a cached conversion does not."""
    from tools.readme_results import seed_targets

    summary = {"per_seed": {"42": {"hallucination_cut": 0.5, "banana_passed": False}}, "spread": {},
               "banana_passed": 0}
    fresh = {"total_seconds": 1750.0, "model_build_cached": False, "date": "2026-12-02T13:57:41+00:00",
             "code": {"commit": "a01f608607e8", "dirty": False},
             "stages": {"prepare_model": {"seconds": 42.0}, "train": {"seconds": 754.0}, "evaluate": {"seconds": 840.0}}}
    line = next(x for x in seed_targets(summary, None, [32.3], 11.4, None, fresh) if "make demo" in x)
    assert line.startswith("- ✅") and "**29.2 min** ≤ 30 min" in line and "train 12.6, evaluate 14.0" in line
    assert "`a01f608607`" in line and "~43.7 min" in line
    fresh["total_seconds"] = 1817.1
    assert next(x for x in seed_targets(summary, None, [32.3], 11.4, None, fresh) if "make demo" in x).startswith("- ❌")
    fresh["model_build_cached"] = True  # not a first run: the seeds' estimate stays the figure
    line = next(x for x in seed_targets(summary, None, [32.3], 11.4, None, fresh) if "make demo" in x)
    assert "fresh clone" not in line and "~43.7 min ≤ 30 min" in line


def test_the_reviewed_label_audit_is_a_line_of_its_own_with_its_interval():
    """The audit of the prompts the reviewed rates count is checked against the target on its own line, with the 95%
    interval its summary gives (30 readings leave it wide); an unfinished audit adds no line, and the as-built audit
    keeps its line."""
    from tools.readme_results import shared_target_checks

    as_built = {"n": 30, "share_answerable": 0.83}
    checks = shared_target_checks(as_built, [], reviewed_audit={"n": 30, "share_answerable": 1.0,
                                                                "ci95": [0.8865, 1.0]})
    reviewed = next(text for ok, text in checks if "reviewed rates count" in text)
    assert "100.0% of 30" in reviewed and "[95% CI 88.6%, 100.0%]" in reviewed
    assert [ok for ok, text in checks if "label audit" in text] == [True, False]
    low = shared_target_checks(as_built, [], reviewed_audit={"n": 30, "share_answerable": 26 / 30,
                                                             "ci95": [0.7, 0.95]})
    assert [ok for ok, text in low if "label audit" in text] == [False, False]
    unfinished = shared_target_checks(as_built, [], reviewed_audit={"n": 30, "share_answerable": None, "ci95": None})
    assert sum("label audit" in text for ok, text in unfinished) == 1


def test_a_cut_just_under_the_target_never_reads_as_the_target():
    """89.96% rounds to "90.0%": the check says missed, so the figure beside it shows the second decimal."""
    from tools.readme_results import pct_against, rate_target_checks

    assert pct_against(0.8996, 0.9) == "89.96%" and pct_against(0.9083, 0.9) == "90.8%"
    assert pct_against(0.894, 0.9) == "89.4%" and pct_against(None, 0.9) == "n/a"
    (met, text), _ = rate_target_checks("run", [0.8996, 0.95], "x", [True, True], None, None, None)
    assert not met
