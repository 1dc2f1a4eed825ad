"""The README's headline result and docs/RESULTS.md, generated from committed run records (never typed by hand).

``python -m tools.readme_results`` writes both from what ``results/`` holds: the README gets one
impact table (``results/local/``, the main command) with its target lines and the Banana test,
between ``<!-- results:start -->`` and ``<!-- results:end -->``; ``docs/RESULTS.md`` gets every
record in full (each run under ``results/``, the tuning record, the benchmarks). Superseded records
live in ``results/archive/`` and are not rendered (one exception, said where it is rendered: the
dev-split tuning record, whose runs the local preset's recipe cites). ``--collect PROFILE`` first
copies a finished run's reports and figures from the output root into ``results/PROFILE/``.
``tests/test_readme_results.py`` fails when the README or docs/RESULTS.md and ``results/`` disagree.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers.config import LABEL_REVIEW_FILE, output_root, repo_root
from helpers.evaluate.tables import banana_table, heldout_table, impact_table, probes_table

__all__ = ["collect_run", "collect_seeds", "pct_against", "render_headline", "render_results_doc", "seed_targets",
           "seeds_table", "update_readme", "write_results_doc"]

START, END = "<!-- results:start -->", "<!-- results:end -->"
REPORTS = ("metrics.json", "train_report.json", "data_report.json", "run_report.json", "rerun_report.json")
HEADLINE = "local-seeds"  # the DPO record the README shows after the heads: `make demo-seeds`, three seeds
SEEDS_SUMMARY = "seeds_summary.json"
SINGLE_RUN = "local"  # a `make demo` record (`make results`): the headline only while no seeds record exists
LABEL_AUDIT = Path("docs") / "label_audit.json"
LABEL_AUDIT_UNANSWERABLE = Path("docs") / "label_audit_unanswerable.json"
LABEL_AUDIT_REVIEWED = Path("docs") / "label_audit_reviewed.json"
ARCHIVE = "archive"  # superseded records: kept, not rendered
#: The one archived record still rendered (docs/RESULTS.md), read where it lies.
ARCHIVED_TUNING = Path(ARCHIVE) / "tuning.jsonl"
RESULTS_DOC = Path("docs") / "RESULTS.md"
#: Commit 2eee1b6 (issue 14, finding 4): bitsandbytes no longer repacks the frozen nf4 weights on
#: AVX512-BF16 CPUs. A record made before it gets a note that it has to be measured again (issue 16).
REPACK_FIX = datetime.fromisoformat("2026-11-30T20:11:02+00:00")

READING_NOTES = """\
How to read them:
- **Base vs aligned use the same prompt format and the same judge.** The local model is a *base*
  checkpoint: given Gemma chat turns it only echoes the instruction, so the local profile renders the
  report's plain `DOCUMENT: … USER REQUEST: … ANSWER:` layout for both sides, and the judge does not
  count an echoed instruction (which contains the refusal sentence) as a refusal.
- **Held-out means document-disjoint**: the test split (real FACTS rows) shares no document with
  training or dev. The second held-out set is the 48 written documents, never trained on in any form
  (`EvalConfig.heldout_path`; any FACTS-schema file can take its place).
- **Every rate has its n and a 95% Wilson interval**; the DPO recipe runs with three training seeds and
  each answerability head with three dev splits: read the spread, not one run.
- **Over-refusal is reported next to hallucination**, because a model that refuses everything has a
  hallucination rate of zero. The test prompts show whole documents (training ones 128-token
  excerpts), so an "answerable" label holds: the label audit ([label_audit.md](label_audit.md))
  found 25 of 30 sampled answerable requests fully answerable from the document shown (with the
  earlier 320-token test excerpts: 9 of 30); of those both readers of the two-reader review confirmed,
  the prompts the heads' rates count, a new reader found 30 of 30 ([label_audit_reviewed.md](label_audit_reviewed.md)).
- **Which weights are kept is chosen on dev, never on the test split.** 24 of the training documents are
  held out of training; after training the base and the later checkpoints answer those dev requests and
  a rule fixed in advance keeps the checkpoint with the fewest dev errors (both sides weighted alike)
  among those clearly better than the base whose refusals follow the document (one-sided Fisher exact
  p ≤ 0.05 against label-blind refusals), or the base itself (`gemma-facts select`). Its sensitivity to
  one flipped dev verdict is recorded; a seed chosen under an earlier rule also shows what the current
  one keeps from the same dev counts.
- On a CPU the 4-bit model is *larger* than its bf16 copy: bitsandbytes quantises only the linear
  layers, and Gemma 3 270M is mostly embedding (262k-token vocabulary), which the CPU path keeps in
  fp32. On a GPU, 4-bit is where the T4 saving comes from (`bench/gpu_memory.py`).
- Each seed's target lines say which of issue 6's targets it meets; the README checks issue 16's on the
  spread. [local_results.md](local_results.md) says what we tried, what we measured and what we think
  would close the rest.

How the records are made (besides `make demo` and `make test`):
- `make demo-seeds` / `make results-seeds`: the DPO recipe with seeds 42, 7 and 1234 over one build of
  the pairs, copied into `results/local-seeds/` with this page and the README's headline regenerated;
  `gemma-facts run --seeds 42 7 1234 --skip train select` re-evaluates trained seeds on a rebuilt test
  split (refused when the rebuild changed the training split);
- `make demo-long` / `make results-long`: the same pipeline for two epochs (`configs/local_long.json`),
  into `outputs/long/` and `results/local-long/` (not yet re-run on the real FACTS rows);
- `make curve`: hallucination and over-refusal of every kept checkpoint of the `make demo-long` run on
  the held-out sets, the measured curve (`experiments/curve_local.py`; `make results-long` then keeps it);
- `python experiments/tune_local.py --name NAME --train '{JSON}'`: try a recipe change on a dev split
  carved from the *training* documents (the test split is never read);
- `python experiments/dev_whole_documents.py --all-checkpoints`: the seeds' checkpoints on whole dev documents, next to
  their 128-token dev excerpts (`results/dev_whole_documents.json`; the test split is never read);
- `make bench`: the CPU benchmarks under `bench/` (`bench/run_all.py` writes `results/bench.json`);
- `make test-slow`: tests that load the 270M model;
- on a GPU, `python bench/gpu_memory.py`: the Gemma 2 2B architecture (random weights, no download)
  in nf4 vs fp16 and the peak of a 512-token QLoRA DPO step.
"""


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def collect_run(profile: str = "local", source: Path | None = None, dest: Path | None = None) -> Path:
    """Copy reports and figures of a finished run into ``results/<profile>/`` (log history trimmed)."""
    source = source or output_root()
    dest = dest or repo_root() / "results" / profile
    (dest / "figures").mkdir(parents=True, exist_ok=True)
    for name in REPORTS:
        data = _load(source / name)
        if data is None:
            continue
        data.pop("log_history", None)  # the curves figure keeps it; the JSON stays reviewable
        if isinstance(data.get("tokens"), dict):
            data["tokens"].pop("lengths", None)
        (dest / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    figures = {fig.name for fig in (source / "figures").glob("*.png")}
    for stale in (dest / "figures").glob("*.png"):  # a figure this run did not make belongs to an older one
        if stale.name not in figures:
            stale.unlink()
    for name in figures:
        shutil.copy2(source / "figures" / name, dest / "figures" / name)
    for extra in ("curve.json", "curve.png"):  # experiments/curve_local.py, when it was run on this output root
        if (source / extra).exists():
            shutil.copy2(source / extra, dest / extra)
        elif (dest / extra).exists():  # measured on an earlier run: it must not sit beside this one's numbers
            (dest / extra).unlink()
    return dest


def collect_seeds(profile: str = HEADLINE, source: Path | None = None, dest: Path | None = None) -> Path:
    """Copy a finished ``gemma-facts run --seeds`` (``make demo-seeds``) into ``results/<profile>/``:
    the summary, the shared data report, and each seed's reports and figures in ``seed-<N>/``."""
    source = source or output_root()
    dest = dest or repo_root() / "results" / profile
    summary = _load(source / SEEDS_SUMMARY)
    if summary is None:
        raise FileNotFoundError(f"{source / SEEDS_SUMMARY} is missing: run `make demo-seeds` to the end first")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / SEEDS_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for name in ("data_report.json", "data_run_report.json"):
        data = _load(source / name)
        if data is not None:
            if isinstance(data.get("tokens"), dict):
                data["tokens"].pop("lengths", None)
            (dest / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    for seed in summary["finished"]:
        collect_run(profile, source / f"seed-{seed}", dest / f"seed-{seed}")
    return dest


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


#: issue 16's per-run target: each run's relative hallucination cut at least this (the check and its figures)
EVERY_RUN_CUT = 0.9


def pct_against(x: float | None, bound: float) -> str:
    """``_pct``, with a second decimal where one would round across ``bound``: a miss never reads as "90.0%"."""
    if x is None or (x >= bound) == (round(100 * x, 1) >= round(100 * bound, 1)):
        return _pct(x)
    return f"{100 * x:.2f}%"


def _mib(n: int | None) -> str:
    return "?" if not n else f"{n / 2**20:.0f}"


def before_repack_fix(date: str | None) -> bool:
    """True for a record made before issue 14's finding 4 was fixed (or one without a readable date)."""
    try:
        return datetime.fromisoformat(str(date)) < REPACK_FIX
    except ValueError:
        return True


def repack_note(up: str, timings: bool = False) -> str:
    """The warning a record made before the bitsandbytes fix carries (``up``: path from the page to the root)."""
    effect = ("the CPU timings of 4-bit generation and training on such CPUs change with the fix" if timings else
              "that changed the base and the LoRA gradients after the first in-training evaluation")
    return (f"⚠️ *Made before the fix of issue 14's finding 4 (on CPUs with AVX512-BF16, bitsandbytes repacked "
            f"the frozen nf4 weights): {effect}, and the record does not say whether its CPU had AVX512-BF16. "
            f"To be measured again (issue 16); see [docs/colab.md]({up}docs/colab.md#the-findings-and-their-fixes).*")


def _run_section(run: dict[str, Any], train: dict[str, Any] | None) -> list[str]:
    code = run.get("code") or {}
    at = (f" at commit `{code['commit'][:10]}`" + (" (with local changes)" if code.get("dirty") else "")
          if code.get("commit") else "")
    lines = [f"- Main command `{run.get('command')}` on `{run.get('machine')}`, {run.get('date')}{at}: "
             f"**{run.get('total_seconds', 0) / 60:.1f} min** wall time in all, peak RSS "
             f"**{run.get('peak_rss_mb', 0) / 1024:.2f} GiB**."]
    stages = ", ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in run.get("stages", {}).items())
    lines.append(f"- Stages: {stages}.")
    if train:
        fp = train.get("weight_footprint") or {}
        lines.append(f"- Training: {train.get('steps')} DPO steps, {train.get('seconds_per_step')} s/step, "
                     f"{train.get('tokens_per_second')} tokens/s; weights {_mib(fp.get('4bit_bytes'))} MiB in "
                     f"4-bit vs {_mib(fp.get('16bit_bytes'))} MiB in {fp.get('16bit_dtype', '16-bit')}.")
        if train.get("checkpoint_selection"):
            lines.append(selection_line(train["checkpoint_selection"]))
    return lines


def _errors_text(point: dict[str, Any]) -> str:
    """A dev point's errors as its rule counted them: raw before the balanced rule, balanced (+ Fisher p) since."""
    errors = point.get("errors")
    if not errors:
        return ""
    if "balanced_errors" not in errors:
        return f" ({errors['errors']} errors)"
    p = point.get("refusal_independence_p")
    return f" ({errors['balanced_errors']:.1f} balanced errors" + (f", p = {p:.3f})" if p is not None else ")")


def selection_line(sel: dict[str, Any]) -> str:
    """The checkpoint the run kept, and the dev numbers it was chosen from (helpers.select.dev_choice)."""
    rates = "; ".join(f"step {p['step']}: {_pct(p['aligned']['hallucination_rate'])} / "
                      f"{_pct(p['aligned']['over_refusal_rate'])}" + _errors_text(p) for p in sel["curve"])
    kept = (f"step {sel['chosen_step']} of {sel['final_step']}" if sel.get("beats_base", True)
            else f"the base: none of the steps up to {sel['final_step']} beat it on dev")
    line = (f"- Checkpoint kept: **{kept}**, chosen on {sel['dev_documents']} training documents held out as dev "
            f"({sel['dev_answerable']} answerable + {sel['dev_unanswerable']} unanswerable requests), {sel['rule']}. "
            f"Dev hallucination / over-refusal: {rates}")
    if "base" in sel:
        b = sel["base"]
        line += (f"; base {_pct(b['aligned']['hallucination_rate'])} / {_pct(b['aligned']['over_refusal_rate'])}"
                 + _errors_text(b))
    sens = sel.get("sensitivity")
    if sens:
        line += (f". Sensitivity: {sens['single_flips_changing_choice']} of {sens['single_flips']} single dev "
                 f"verdict flips change the choice")
    return line + f" (dev scoring {sel['seconds'] / 60:.1f} min)."


def target_checks(metrics: dict[str, Any], run: dict[str, Any] | None) -> list[str]:
    """Issue 6's targets, each checked against the record (a line with ✅ or ❌)."""
    base, aligned = metrics["base"], metrics["aligned"]
    def value(side: dict[str, Any], key: str) -> float | None:
        return (side.get(key) or {}).get("value")

    hb, ha = value(base, "hallucination_rate"), value(aligned, "hallucination_rate")
    ob, oa = value(base, "over_refusal_rate"), value(aligned, "over_refusal_rate")
    banana = metrics.get("banana") or {}
    checks = []
    if hb is not None and ha is not None:
        checks.append((ha <= 0.05 * hb, f"hallucination: aligned {_pct(ha)} vs ≤ 5% of base's {_pct(hb)} "
                                         f"(≥ 95% relative reduction)"))
    if ob is not None and oa is not None:
        checks.append((oa <= ob + 0.05, f"over-refusal: aligned {_pct(oa)} vs ≤ base {_pct(ob)} + 5 points"))
    if banana:
        checks.append((not banana["base"]["passed"] and banana["aligned"]["passed"],
                       "Banana test: base fails and aligned passes"))
    if run and run.get("total_seconds"):
        warm = run.get("model_build_cached")
        if warm is None:  # records older than that field: a conversion takes about a minute, a cache hit ~0 s
            prepare = run.get("stages", {}).get("prepare_model")
            warm = prepare is not None and prepare.get("seconds", 0) < 10
        cached = " (the one-time model conversion was already cached, so it is not in this figure)" if warm else ""
        checks.append((run["total_seconds"] <= 1800,
                       f"wall time {run['total_seconds'] / 60:.1f} min ≤ 30 min{cached}"))
    return [f"- {'✅' if ok else '❌'} {text}" for ok, text in checks]


def curve_table(curve: dict[str, Any], set_name: str = "test") -> str:
    """Rates per kept checkpoint (step 0 = base model) from ``experiments/curve_local.py``'s record."""
    lines = ["| step | hallucination | over-refusal | grounded accuracy |", "|---|---|---|---|"]
    for point in curve.get("points", []):
        rates = point["sets"].get(set_name)
        if rates:
            lines.append(f"| {point['step']} | " + " | ".join(_pct(rates[k]["value"]) for k in
                         ("hallucination_rate", "over_refusal_rate", "grounded_accuracy")) + " |")
    return "\n".join(lines)


def tuning_table(records: list[dict[str, Any]]) -> str:
    """One row per dev-split tuning run (``experiments/tune_local.py``; the test split is never read)."""
    lines = ["| run | overrides | pairs | steps | dev hallucination | dev over-refusal | dev grounded acc. |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        a = r["aligned"]
        mix = f" + data `{json.dumps(r['data_overrides'])}`" if r.get("data_overrides") else ""
        lines.append(f"| {r['name']} | `{json.dumps(r['train_overrides'])}`{mix} | {r['train_pairs']} | {r['steps']} | "
                     f"{_pct(a['hallucination_rate'])} | {_pct(a['over_refusal_rate'])} | "
                     f"{_pct(a['grounded_accuracy'])} |")
        # the same run's kept checkpoints and checkpoint averages (tune_local --curve / --average-from)
        extra = [(f"checkpoint {c['step']}", c["aligned"]) for c in r.get("curve") or []]
        extra += [(f"mean of checkpoints {', '.join(map(str, m['steps']))}", m["aligned"]) for m in r.get("averaged") or []]
        for label, m in extra:
            lines.append(f"| {r['name']}, {label} | same run | | | {_pct(m['hallucination_rate'])} | "
                         f"{_pct(m['over_refusal_rate'])} | {_pct(m['grounded_accuracy'])} |")
    return "\n".join(lines)


def _profile_dirs(results_dir: Path) -> list[Path]:
    """Run records directly under ``results/`` (one folder each); ``results/archive/`` is never one, nor the
    answerability head's stage record, whose aligned side is the base (it has its own section)."""
    return sorted(p for p in results_dir.glob("*") if p.is_dir() and p.name not in (ARCHIVE, HEAD_STAGE_DIR)
                  and (p / "metrics.json").exists())


def _profile_section(profile_dir: Path, up: str, name: str | None = None) -> list[str]:
    """Everything one run record holds, for docs/RESULTS.md (``up``: path from the page to the root)."""
    metrics = _load(profile_dir / "metrics.json") or {}
    run = _load(profile_dir / "run_report.json") or {}
    train = _load(profile_dir / "train_report.json")
    name = name or profile_dir.name
    rel = f"{up}results/{name}"
    parts = [f"## Profile `{name}`: `{metrics.get('model')}`", ""]
    parts += _run_section(run, train) if run else []
    if run and not run.get("code"):
        parts.append(f"- *Made before run records named their commit, so possibly with an earlier recipe than "
                     f"today's preset (see [docs/local_results.md]({up}docs/local_results.md)); rerun the command "
                     "above to refresh it.*")
    if before_repack_fix(run.get("date") or (train or {}).get("date")):
        parts.append(f"- {repack_note(up)}")
    parts.append("\n**Impact** (held-out documents, disjoint from training):\n")
    parts.append(impact_table(metrics))
    parts.append(f"\nRelative hallucination reduction: **{_pct(metrics.get('relative_hallucination_reduction'))}**.")
    parts.append("\nTargets (issue 6), checked against this record:\n")
    parts += target_checks(metrics, run)
    if metrics.get("heldout_2"):
        parts.append("\n**Second held-out set** (never seen in training in any form):\n")
        parts.append(heldout_table(metrics))
    if metrics.get("banana"):
        parts.append("\n**The Banana test** (`DOCUMENT: Apples are red. USER REQUEST: Are bananas blue?`):\n")
        parts.append(banana_table(metrics))
    if metrics.get("probes"):
        parts.append("\n**Built-in probes:**\n")
        parts.append(probes_table(metrics))
    curve = _load(profile_dir / "curve.json")
    if curve:
        parts.append(f"\n**Measured curve** (`{curve.get('command')}`; test split, offline judge):\n")
        parts.append(curve_table(curve))
        if (profile_dir / "curve.png").exists():
            parts.append(f"\n![curve]({rel}/curve.png)")
    figs = sorted(p.name for p in (profile_dir / "figures").glob("*.png"))
    if figs:
        parts.append("")
        parts += [f"![{f}]({rel}/figures/{f})" for f in figs]
    parts.append("")
    return parts


def _tuning_section(path: Path, shown_as: str) -> list[str]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        return []
    base = next((r["base"] for r in records if "base" in r), {})
    return ["## Recipe tuning on a dev split (archived)", "",
            f"Read from `{shown_as}` (superseded: the runs behind the local preset's recipe, made with "
            "`bench/tune_local.py`, now `experiments/tune_local.py`, before the dev choice was a pipeline stage "
            "and before the fix noted above). "
            f"{records[0]['dev_docs']} of the training documents held out as dev ({records[0]['dev_answerable']} "
            f"answerable + {records[0]['dev_unanswerable']} unanswerable requests); the test split is never read. "
            "Base model on dev: " + ", ".join(f"{k.replace('_', ' ')} {_pct(v)}" for k, v in base.items()) + ".",
            "", tuning_table(records), ""]


def _bench_section(bench: dict[str, Any], up: str) -> list[str]:
    parts = [f"## Benchmarks (`{bench.get('command', 'make bench')}`, one run each)", ""]
    if before_repack_fix(bench.get("date")):
        parts += [repack_note(up, timings=True), ""]
    parts += ["| benchmark | figure | target |", "|---|---|---|"]
    parts += [f"| {row['name']} | {row['figure']} | {row.get('target', '')} |" for row in bench.get("rows", [])]
    parts.append(f"\n*{bench.get('machine', '')}, {bench.get('date', '')}*")
    return parts


def render_results_doc(results_dir: Path | None = None) -> str:
    """docs/RESULTS.md: every record under ``results/`` in full (``results/archive/`` left out but its tuning record)."""
    results_dir = results_dir or repo_root() / "results"
    up = "../"
    parts = ["# Results", "",
             "<!-- Generated by `python -m tools.readme_results` from results/; do not edit by hand "
             "(tests/test_readme_results.py checks it). -->", "",
             f"Every number on this page is read from the JSON files in [`results/`]({up}results/) by "
             "`python -m tools.readme_results`; rerun `make demo-seeds && make results-seeds` to reproduce "
             "them on your machine. The README shows the answerability heads on reviewed labels (the records "
             f"of `experiments/reviewed_labels.py`, in full below) and the DPO recipe's seed spread of `results/{HEADLINE}/`. "
             "Superseded records are kept, unrendered, in "
             f"[`results/archive/`]({up}results/archive/).", "", READING_NOTES]
    if (results_dir / HEADLINE / SEEDS_SUMMARY).exists():
        parts += _seeds_section(results_dir / HEADLINE, up)
    for profile_dir in _profile_dirs(results_dir):
        parts += _profile_section(profile_dir, up)
    if head_stage_sentence(results_dir):
        parts += ["## The answerability head as a pipeline stage (base model, no DPO)", "",
                  head_stage_sentence(results_dir).strip().replace("](results/", f"]({up}results/"), ""]
    for sentence in (clean_heads_sentence(results_dir), surprisal_heads_sentence(results_dir),
                     reviewed_heads_sentence(results_dir)):
        if sentence:
            parts += [sentence.strip().replace("](results/", f"]({up}results/").replace("](docs/", "]("), ""]
    if (results_dir / ARCHIVED_TUNING).exists():
        parts += _tuning_section(results_dir / ARCHIVED_TUNING, f"results/{ARCHIVED_TUNING.as_posix()}")
    bench = _load(results_dir / "bench.json")
    if bench:
        parts += _bench_section(bench, up)
    return "\n".join(parts).strip() + "\n"


def _spread(summary: dict[str, Any], name: str) -> str:
    sp = summary["spread"].get(name)
    return "n/a" if not sp else f"**{_pct(sp['mean'])}** [{_pct(sp['min'])}, {_pct(sp['max'])}]"


def refusal_gap(hallucination: float | None, over_refusal: float | None) -> float | None:
    """How much more often unanswerable requests are refused than answerable ones (Youden's J of "refuse").

    0 means refusals do not depend on whether the document holds the answer (a refusal-rate dial); 1 is
    perfect grounding. Hallucination and over-refusal each move with how often a model refuses at all,
    this moves only with telling the two kinds apart."""
    if hallucination is None or over_refusal is None:
        return None
    return (1 - hallucination) - over_refusal


def _gap(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} pts"


def current_rule_keeps(record: Path | None, seed: str) -> str | None:
    """What today's dev rule keeps from a seed's recorded dev verdicts, when the record was chosen by another rule:
    "the same", "step N" or "the base"; None when the record's own rule is today's (or there is no record)."""
    from helpers.config import TrainConfig, config_for
    from helpers.select.dev_choice import rechoose, rule_text

    report = (_load(record / f"seed-{seed}" / "train_report.json") if record else None) or {}
    selection = report.get("checkpoint_selection")
    if not selection:
        return None
    cfg = config_for(TrainConfig, report.get("profile", "local"))
    if selection.get("rule") == rule_text(cfg.select_min_gain, cfg.select_max_p):
        return None
    step = rechoose(selection, cfg.select_min_gain, cfg.select_max_p)
    return "the same" if step == selection.get("chosen_step") else f"step {step}" if step is not None else "the base"


def seeds_table(summary: dict[str, Any], record: Path | None = None) -> str:
    """One row per seed: the dev choice, the test rates (with the 95% interval of the aligned ones), Banana.

    With ``record`` (the seeds folder), a choice made under an earlier dev rule also says what the
    current rule keeps from the same dev verdicts."""
    lines = ["| seed | kept (dev) | hallucination base → aligned | cut | over-refusal base → aligned | "
             "refusal gap base → aligned | grounded acc. base → aligned | Banana |",
             "|---|---|---|---|---|---|---|---|"]
    for seed, e in summary["per_seed"].items():
        kept = f"step {e['chosen_step']}" if e.get("beats_base_on_dev") else "the base (no step beat it on dev)"
        now = current_rule_keeps(record, seed)
        if now:
            kept += f" (current rule: {now})"
        ci = e.get("aligned_hallucination_ci95") or [None, None]
        oci = e.get("aligned_over_refusal_ci95") or [None, None]
        lines.append(f"| {seed} | {kept} | {_pct(e['base_hallucination'])} → {_pct(e['aligned_hallucination'])} "
                     f"[{_pct(ci[0])}, {_pct(ci[1])}] | {_pct(e['hallucination_cut'])} | "
                     f"{_pct(e['base_over_refusal'])} → {_pct(e['aligned_over_refusal'])} [{_pct(oci[0])}, "
                     f"{_pct(oci[1])}] | {_gap(refusal_gap(e['base_hallucination'], e['base_over_refusal']))} → "
                     f"{_gap(refusal_gap(e['aligned_hallucination'], e['aligned_over_refusal']))} | "
                     f"{_pct(e['base_grounded_accuracy'])} → "
                     f"{_pct(e['aligned_grounded_accuracy'])} | {'pass' if e['banana_passed'] else 'fail'} |")
    return "\n".join(lines)


def seed_targets(summary: dict[str, Any], audit: dict[str, Any] | None, demo_minutes: list[float],
                 base_minutes: float = 0.0, other_audit: dict[str, Any] | None = None,
                 fresh_demo: dict[str, Any] | None = None) -> list[str]:
    """Issue 16's targets, each checked against the seeds record (a line with ✅ or ❌); ``other_audit``, the
    unanswerable side's label audit, is context on the label audit's line (it has no target of its own).
    ``fresh_demo``: the run report of a `make demo` recorded in ``results/local/``; when it ran with nothing
    cached, its time is the `make demo` target's figure (the seeds' times are then the context)."""
    per = list(summary["per_seed"].values())
    sp = summary["spread"]
    cuts = [e["hallucination_cut"] for e in per]

    def mean_and_base(aligned: str, base: str) -> tuple[float, float] | None:
        return (sp[aligned]["mean"], sp[base]["mean"]) if aligned in sp and base in sp else None

    checks = rate_target_checks("seed", cuts, f"cuts: {', '.join(pct_against(c, EVERY_RUN_CUT) for c in cuts)}",
                                [e["banana_passed"] for e in per], sp.get("hallucination_cut", {}).get("mean"),
                                mean_and_base("aligned_over_refusal", "base_over_refusal"),
                                mean_and_base("aligned_grounded_accuracy", "base_grounded_accuracy"))
    return [f"- {'✅' if ok else '❌'} {text}" for ok, text in
            checks + shared_target_checks(audit, demo_minutes, base_minutes, other_audit, fresh_demo)]


def rate_target_checks(unit: str, cuts: Sequence[float | None], cuts_text: str, banana: Sequence[bool],
                       mean_cut: float | None, over_refusal: tuple[float, float] | None,
                       grounded: tuple[float, float] | None) -> list[tuple[bool, str]]:
    """Issue 16's rate targets over the runs of one recipe (``unit``: "seed" for the DPO seeds, "run" for a head's
    dev splits), (met, text) each: every run's cut ≥ 90% and Banana test, the mean cut ≥ 95%, over-refusal ≤ base
    + 5 points and grounded accuracy not below base's (each (mean, base); None: not recorded, no line)."""
    checks = [(all(c is not None and c >= EVERY_RUN_CUT for c in cuts),
               f"every {unit}: hallucination cut ≥ {100 * EVERY_RUN_CUT:.0f}% ({cuts_text})"),
              (all(banana), f"every {unit} passes the Banana test ({sum(banana)} of {len(banana)})")]
    if mean_cut is not None:
        checks.append((mean_cut >= 0.95, f"mean relative cut ≥ 95%: {_pct(mean_cut)}"))
    if over_refusal is not None:
        checks.append((over_refusal[0] <= over_refusal[1] + 0.05, f"over-refusal ≤ base + 5 points (mean): "
                                                                 f"{_pct(over_refusal[0])} vs base {_pct(over_refusal[1])}"))
    if grounded is not None:
        checks.append((grounded[0] >= grounded[1], f"grounded accuracy not below base's (mean): {_pct(grounded[0])} "
                                                   f"vs {_pct(grounded[1])}"))
    return checks


def shared_target_checks(audit: dict[str, Any] | None, demo_minutes: list[float], base_minutes: float = 0.0,
                         other_audit: dict[str, Any] | None = None, fresh_demo: dict[str, Any] | None = None,
                         review_page: str = "docs/label_review.md", reviewed_audit: dict[str, Any] | None = None
                         ) -> list[tuple[bool, str]]:
    """The targets that hold whatever recipe is checked: the label audit on the labels as built (with the review of
    the split checked, its page ``review_page``), the label audit of the reviewed prompts the rates count (when
    finished), and the `make demo` time, (met, text) each."""
    checks: list[tuple[bool, str]] = []
    if reviewed_audit is not None and reviewed_audit.get("share_answerable") is not None:
        share, (lo, hi) = reviewed_audit["share_answerable"], reviewed_audit["ci95"]
        checks.append((share >= 0.9,
                       f"label audit of the prompts the reviewed rates count: {_pct(share)} of {reviewed_audit['n']} "
                       f"sampled confirmed answerable prompts answerable from the text the model sees "
                       f"[95% CI {_pct(lo)}, {_pct(hi)}], read by readers outside the review, target ≥ 90% "
                       f"([docs/label_audit_reviewed.md](docs/label_audit_reviewed.md))"))
    if audit is not None:
        share = audit.get("share_answerable")
        checks.append((share is not None and share >= 0.9,
                       f"label audit on the labels as built: {_pct(share)} of {audit['n']} sampled answerable test "
                       f"prompts answerable from the text the model sees, target ≥ 90% "
                       f"([docs/label_audit.md](docs/label_audit.md))"
                       + _other_side(other_audit) + _review_clause(review_page)))
    if fresh_demo and not fresh_demo.get("model_build_cached", True):
        minutes = fresh_demo["total_seconds"] / 60
        stages = ", ".join(f"{name} {v['seconds'] / 60:.1f}" for name, v in fresh_demo["stages"].items()
                           if v["seconds"] >= 60)
        code = fresh_demo.get("code") or {}
        checks.append((minutes <= 30,
                       f"`make demo` from a fresh clone{' at ' + _commit_text(code) if code else ''}, nothing cached "
                       f"(the model conversion included), 2 cores, {str(fresh_demo.get('date', '?'))[:10]}: "
                       f"**{minutes:.1f} min** ≤ 30 min (minutes per stage: {stages}; "
                       f"[`results/local/`](results/local/))"
                       + (f"; the seeds record's estimate was ~{min(demo_minutes) + base_minutes:.1f} min, measured "
                          f"while other jobs shared the cores" if demo_minutes else "")))
    elif demo_minutes:
        each = ", ".join(f"{m:.1f}" for m in demo_minutes)
        cold = min(demo_minutes) + base_minutes
        checks.append((cold <= 30,
                       f"one seed of the recipe (= `make demo`) on a first run: ~{cold:.1f} min ≤ 30 min (fastest seed "
                       f"{min(demo_minutes):.1f} min, data stage included, every stage as measured; the later seeds "
                       f"reuse the base model's answers, which the first seed's evaluation spent ~{base_minutes:.1f} "
                       f"min generating; each seed: {each} min, a slower one shared the 2 cores with other jobs; the "
                       f"one-time model conversion, ~1.3 min, was cached)"))
    return checks


def _seed_minutes(record: Path, seed: str) -> float | None:
    """The data stage (run once) + this seed's stages: what `make demo` runs for one seed.

    A re-evaluated seed (``rerun_report.json``: ``run --seeds ... --skip train select``) counts its training
    and selection from the training run and its evaluation from the rerun: each stage once, as measured."""
    data, run = _load(record / "data_run_report.json"), _load(record / f"seed-{seed}" / "run_report.json")
    if not data or not run:
        return None
    if not (record / f"seed-{seed}" / "rerun_report.json").exists():
        return (data.get("total_seconds", 0) + run.get("total_seconds", 0)) / 60
    stages = _seed_stages(record, seed)
    return (data.get("total_seconds", 0) + sum(st.get("seconds", 0) for st in stages.values())) / 60


def _seed_stages(record: Path, seed: str) -> dict[str, Any]:
    """A seed's stages as last measured: the training run's, with a re-evaluation's (rerun_report.json) on top."""
    folder = record / f"seed-{seed}"
    return {**(_load(folder / "run_report.json") or {}).get("stages", {}),
            **(_load(folder / "rerun_report.json") or {}).get("stages", {})}


def no_model_baseline(results_dir: Path) -> str:
    """The word-overlap rule beside the model (``experiments/word_overlap_baseline.py --out``), when recorded."""
    record = _load(results_dir / "word_overlap_baseline.json")
    if not record:
        return ""
    name, entry = next(iter(record.items()))
    rule = entry["rule_fitted_on_train"]["test_items"]
    return (f"A no-model rule on the same test items, \"refuse when the document holds less than "
            f"{rule['threshold']:.0%} of the request's words\" (threshold fitted on the training pairs): hallucination "
            f"**{_pct(rule['hallucination_rate'])}**, over-refusal **{_pct(rule['over_refusal_rate'])}**, refusal gap "
            f"**{_gap(rule['refusal_gap'])}** ([`results/word_overlap_baseline.json`](results/word_overlap_baseline.json), "
            f"`python experiments/word_overlap_baseline.py {name} --out results/word_overlap_baseline.json`).")


def answerability_head_line(results_dir: Path) -> str:
    """The base model with a linear answerability head (``experiments/answerability_probe.py --score-test``),
    when recorded: the same test items, the same offline judge."""
    record = _load(results_dir / "answerability_head.json")
    if not record or "test" not in record:
        return ""
    choice, test = record["dev_choice"], record["test"]
    head = test["base_with_head"]
    halluc, over = head["hallucination_rate"]["value"], head["over_refusal_rate"]["value"]
    banana = "passes" if test["banana"]["aligned"]["passed"] else "fails"
    return (f"The base model with a **linear answerability head** (a logistic regression on its layer-"
            f"{choice['layer']} hidden state{', the word-overlap share and the refusal sentence log-probability' if choice['with_overlap'] else ''}, "
            f"fitted on the training documents, threshold and layer chosen on dev, dev AUC {choice['dev_auc']:.2f}; "
            f"no DPO), on the same test items, read once, refusing where the head says the document lacks the answer: hallucination "
            f"**{_pct(halluc)}** (cut {_pct(test['relative_hallucination_reduction'])}), over-refusal "
            f"**{_pct(over)}**, refusal gap **{_gap(refusal_gap(halluc, over))}**, grounded accuracy "
            f"{_pct(head['grounded_accuracy']['value'])}; Banana test {banana} "
            f"([`results/answerability_head.json`](results/answerability_head.json), `{record['command']}`).")


HEAD_STAGE_DIR = "answerability-head-stage"


def head_stage_sentence(results_dir: Path) -> str:
    """The same kind of head made by the pipeline's own stages (``gemma-facts select --head-only``, then
    ``gemma-facts evaluate --base-only``), when its record is in ``results/answerability-head-stage/``."""
    metrics = _load(results_dir / HEAD_STAGE_DIR / "metrics.json")
    if not metrics or "answerability_head" not in metrics:
        return ""
    result = metrics["answerability_head"]
    gated, head = result["base_with_head"], result["head"]
    halluc, over = gated["hallucination_rate"]["value"], gated["over_refusal_rate"]["value"]
    lo, hi = gated["hallucination_rate"]["ci95"]
    return (f" The pipeline's own stage, a second test read (`gemma-facts select --head-only` then `gemma-facts "
            f"evaluate --base-only`, `--config configs/local_whole_documents.json`; layer {head['layer']}"
            f"{' + overlap share' if head['with_overlap'] else ''}, no refusal log-probability, dev AUC "
            f"{head['dev']['dev_auc']:.2f}): hallucination **{_pct(halluc)}** [{_pct(lo)}, {_pct(hi)}] (cut "
            f"{_pct(result['relative_hallucination_reduction'])}), over-refusal **{_pct(over)}**, refusal gap "
            f"**{_gap(refusal_gap(halluc, over))}**, Banana test {'passes' if result['banana']['passed'] else 'fails'}"
            f"{_held_clause(metrics)} ([`results/{HEAD_STAGE_DIR}/`](results/{HEAD_STAGE_DIR}/)).")


CLEAN_HEADS_DIR = "answerability-head-clean-labels"
SURPRISAL_HEADS_DIR = "answerability-head-surprisal"


def _heads_spread(results_dir: Path, key: str, folder: str) -> tuple[dict[str, Any], dict[str, Any], Any] | None:
    """A recorded spread of heads over dev splits (``experiments/label_holding_kinds.py``'s ``key``), the pooled
    record and a formatter of its fields; None until the record and the first dev split's metrics exist."""
    kinds = _load(results_dir / "label_holding_kinds.json")
    spread = (kinds or {}).get(key)
    first = _load(results_dir / folder / "dev-seed-42" / "metrics.json")
    if not spread or not first:
        return None

    def sp(field: str) -> str:
        v = spread[field]
        return f"**{_pct(v['mean'])}** [{_pct(v['min'])}, {_pct(v['max'])}]"

    rates = (f"hallucination {sp('all_kinds_hallucination_rate')} on all kinds (cut "
             f"{_pct(spread['all_kinds_relative_cut']['mean'])}) and {sp('hallucination_rate')} on the kinds whose "
             f"labels hold (near miss + another document; base {_pct(kinds['sides']['base']['hallucination_rate'])}, "
             f"cut {sp('relative_cut')}), over-refusal {sp('over_refusal_rate')} (base "
             f"{_pct(first['base']['over_refusal_rate']['value'])}), Banana test {spread['banana_passed']} of "
             f"{len(spread['runs'])} ([`results/{folder}/`](results/{folder}/)")
    return spread, kinds, rates


def clean_heads_sentence(results_dir: Path) -> str:
    """The head fitted and chosen without the answer-removed kind, on three dev splits, each read once
    (``results/answerability-head-clean-labels/``), as pooled by ``experiments/label_holding_kinds.py``."""
    found = _heads_spread(results_dir, "clean_label_heads_spread", CLEAN_HEADS_DIR)
    if not found:
        return ""
    spread, _, rates = found
    return (f" Fitted and chosen **without the mislabelled answer-removed kind** (`configs/local_whole_clean_labels.json`, "
            f"the same two commands; {len(spread['runs'])} dev splits, `--set train.dev_seed=42|7|1234`, each read once), "
            f"the head gives {rates}, "
            f"`python experiments/label_holding_kinds.py --out results/label_holding_kinds.json`).")


def surprisal_heads_sentence(results_dir: Path) -> str:
    """The same head reading the request surprisal too, thresholded on out-of-fold scores
    (``configs/local_head_surprisal.json``, ``results/answerability-head-surprisal/``), three dev splits."""
    found = _heads_spread(results_dir, "surprisal_heads_spread", SURPRISAL_HEADS_DIR)
    if not found:
        return ""
    spread, _, rates = found
    import re

    head = (_load(results_dir / SURPRISAL_HEADS_DIR / "dev-seed-42" / "metrics.json") or {}).get(
        "answerability_head", {}).get("head", {})
    budget = re.search(r"at most (\d+%)", head.get("dev", {}).get("rule", ""))
    cut = (f"cut where at most {budget.group(1)} of the answerable training prompts are refused out of fold"
           if budget else f"cut by `{head.get('dev', {}).get('threshold_rule', '?')}`")
    return (f" Reading also **how surprising the request is given the document**, {cut} "
            f"(`configs/local_head_surprisal.json`, decided on a pseudo-test of training documents after the reads "
            f"above; {len(spread['runs'])} dev splits, each read once), it gives {rates}).")


#: the heads re-read on the reviewed labels: the records of experiments/reviewed_labels.py (record, run folder, what
#: it scores, its review page), in groups; the README shows the first recorded one of each group
REVIEWED_RECORDS = (
    (("reviewed_labels_104_test_docs.json", "reviewed-labels-104-test-docs",
      "the 104-document test split (16 documents moved from training to test, so that at least 80 reviewed "
      "answerable prompts are scored)", "docs/label_review_104_test_docs.md", "104 documents"),),
    (("reviewed_labels_whole_split.json", "reviewed-labels-whole-split", "the 88-document test split",
      "docs/label_review.md", "88 documents"),
     ("reviewed_labels.json", "reviewed-labels", "the 179 evaluated prompts", "docs/label_review.md",
      "88 documents, 179 prompts")))
#: (each head family's row label and description are in its record, "label" and "about", from the FAMILIES of
#: experiments/reviewed_labels.py, so a new family needs no edit here)
#: each review page's record (``tools.label_audit --side review --record … --page …``)
REVIEW_OF_PAGE = {"docs/label_review.md": LABEL_REVIEW_FILE,
                  "docs/label_review_104_test_docs.md": LABEL_REVIEW_FILE.parent / "test_104_docs_label_review.json"}
def _shown_reviewed_records(results_dir: Path) -> list[tuple[str, str, str, str, str, dict[str, Any]]]:
    """The first recorded entry of each group of ``REVIEWED_RECORDS``: (record, run folder, scope, page, split, record)."""
    return [found for group in REVIEWED_RECORDS
            if (found := next(((name, folder, scope, page, split, record) for name, folder, scope, page, split in group
                               if (record := _load(results_dir / name)) and record.get("families")
                               and record.get("base")), None))]


def reviewed_heads_sentence(results_dir: Path) -> str:
    """The recorded heads on the prompts whose label two blind readers confirmed (``experiments/reviewed_labels.py``):
    one sentence per group of ``REVIEWED_RECORDS``, the 104-document split's first, then the 88-document split's
    whole split when recorded, else its evaluated prompts."""
    return "".join(_reviewed_record_sentence(*found) for found in _shown_reviewed_records(results_dir))


#: recipes per split in the README's table: the last ones recorded (the earlier ones are in docs/RESULTS.md)
TABLE_RECIPES = 2


def reviewed_heads_table(results_dir: Path) -> str:
    """The README's headline table: each split's last ``TABLE_RECIPES`` head families on the reviewed labels, one row
    each, under a row for the base model of its split; the split shown first (``REVIEWED_RECORDS``) comes first. ""
    without a record."""
    rows = ["| test split (reviewed prompts kept) | recipe: base model + answerability head | hallucination | cut | "
            "over-refusal | Banana |", "|---|---|---|---|---|---|"]
    shown = _shown_reviewed_records(results_dir)

    def sp(v: dict[str, Any]) -> str:
        return f"**{_pct(v['mean'])}** [{_pct(v['min'])}, {_pct(v['max'])}]"

    for _name, folder, _scope, page, split, record in shown:
        base, n = record["base"]["reviewed"], record["base"]["reviewed_n"]
        rows.append(f"| [{split}]({page}): {n['answerable']} answerable + {n['unanswerable']} unanswerable "
                    f"([runs](results/{folder}/)) | base model alone | {_pct(base['hallucination_rate'])} | | "
                    f"{_pct(base['over_refusal_rate'])} | |")
        for key, f in list(record["families"].items())[-TABLE_RECIPES:]:
            spread = f["reviewed_spread"]
            rows.append(f"| | {f.get('label', key)} | {sp(spread['hallucination_rate'])} | "
                        f"{sp(spread['relative_cut'])} | {sp(spread['over_refusal_rate'])} | "
                        f"{f['banana_passed']} of {len(f['runs'])} |")
    return "\n".join(rows) if shown else ""


def headline_heads(results_dir: Path) -> tuple[str, str, dict[str, Any], dict[str, Any]] | None:
    """The recipe the README's targets are checked against: the last family recorded on the split shown first,
    i.e. the most recently registered recipe (each was registered before its test read, never chosen on it).
    (split, family key, family, record) or None."""
    shown = _shown_reviewed_records(results_dir)
    if not shown:
        return None
    *_, split, record = shown[0]
    key = list(record["families"])[-1]
    return split, key, record["families"][key], record


def _dev_split(run_name: str) -> str:
    """``bagged-104-test-docs-dev-seed-42`` → ``42``: the dev split a recorded head run was chosen on."""
    return run_name.rsplit("-", 1)[-1]


def _bench_passes(bench: dict[str, Any]) -> str:
    """The spread of a bench timed in several alternating passes: each pass's ratio, lowest to highest.

    One pass of the same code moved by up to a fifth between hours on the shared 2-core machine, so a
    ratio near its target is shown with the passes it is the median of."""
    batched, single = bench.get("batched_passes_s"), bench.get("per_example_passes_s")
    if not batched or not single or len(batched) != len(single):
        return ""
    ratios = sorted(s / b for s, b in zip(single, batched, strict=True))
    return f"; ratio of the medians of {len(ratios)} alternating passes, each pass {ratios[0]:.2f}-{ratios[-1]:.2f}×"


def head_targets(results_dir: Path, shared: list[tuple[bool, str]]) -> list[str]:
    """Issue 16's targets checked against ``headline_heads`` (its three dev splits read as the seeds of the target),
    then the checks that do not depend on the recipe (``shared``: label audit, `make demo`) and the generation
    bench (``results/bench.json``)."""
    split, key, family, record = headline_heads(results_dir)
    runs = sorted(family["runs"].items(), key=lambda kv: kv[0])
    spread, base, n = family["reviewed_spread"], record["base"]["reviewed"], record["base"]["reviewed_n"]
    cuts = ", ".join(f"{pct_against(r['reviewed']['relative_cut'], EVERY_RUN_CUT)} (dev split {_dev_split(name)})" for name, r in runs)
    kinds = n.get("by_kind", {})
    near = (kinds.get("near_miss") or {}).get("kept", 0)
    checks = [
        *rate_target_checks("run", [r["reviewed"]["relative_cut"] for _, r in runs], cuts,
                            [r["banana_passed"] for _, r in runs], spread["relative_cut"]["mean"],
                            (spread["over_refusal_rate"]["mean"], base["over_refusal_rate"]),
                            (spread["grounded_accuracy"]["mean"], base["grounded_accuracy"])),
        (n["answerable"] >= 80 and n["unanswerable"] >= 80 and 2 * near >= n["unanswerable"],
         f"≥ 80 answerable and ≥ 80 unanswerable test prompts, at least half of these near misses: {n['answerable']} "
         f"+ {n['unanswerable']} ({near} near misses) kept by the review"),
        *shared]
    bench = ((_load(results_dir / "bench.json") or {}).get("raw", {}).get("generation") or {}).get("output")
    if bench:
        checks.append((bench["speedup"] >= 4, f"batched generation ≥ 4× the per-example loop: **{bench['speedup']}×** "
                                              f"(`python bench/run_all.py --profile local --only generation`, "
                                              f"{bench['prompts']} prompts{_bench_passes(bench)}, "
                                              f"[`results/bench.json`](results/bench.json))"))
    head = (f"Targets (issue 16), checked against the last recipe recorded on the first split ({split}: "
            f"{family.get('label', key)}), its three dev splits as three runs:")
    return [head] + [f"- {'✅' if ok else '❌'} {text}" for ok, text in checks]


def _reviewed_record_sentence(name: str, folder: str, scope: str, page: str, split: str,
                              record: dict[str, Any]) -> str:
    """One record of ``experiments/reviewed_labels.py`` as a README sentence: base, then each family's spread."""
    base, n = record["base"]["reviewed"], record["base"]["reviewed_n"]

    def sp(v: dict[str, Any]) -> str:
        return f"**{_pct(v['mean'])}** [{_pct(v['min'])}, {_pct(v['max'])}]"

    families = "; ".join(
        f"{f.get('about', key)}"
        f"{', re-read with no refit' if str(f.get('heads_from', '')).startswith('results/') else ''}: "
        f"hallucination {sp(f['reviewed_spread']['hallucination_rate'])} (cut "
        f"{sp(f['reviewed_spread']['relative_cut'])}), over-refusal {sp(f['reviewed_spread']['over_refusal_rate'])}, "
        f"Banana test {f['banana_passed']} of {len(f['runs'])}" for key, f in record["families"].items())
    return (f" **On reviewed labels** (every test prompt read by two blind readers, counted only where both confirm "
            f"its label, [{page}]({page}); {scope}: {n['answerable']} answerable + "
            f"{n['unanswerable']} unanswerable prompts kept; base: hallucination {_pct(base['hallucination_rate'])}, "
            f"over-refusal {_pct(base['over_refusal_rate'])}), mean [min, max] over the three dev splits: {families} ([`results/{folder}/`](results/{folder}/), "
            f"`python experiments/reviewed_labels.py --runs results/{folder} --out results/{name}`).")


def _audit_summary(record: Path) -> dict[str, Any] | None:
    """A label audit's summary (``tools.label_audit.summary``) from its record under the repository, None without it.

    The audit of the reviewed answerable prompts (``LABEL_AUDIT_REVIEWED``) is a target line beside the records
    scored on reviewed labels (the heads), not beside the DPO seeds' record, which is scored on labels as built."""
    from tools.label_audit import summary

    path = repo_root() / record
    return summary(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None


def _review_clause(page: str = "docs/label_review.md") -> str:
    """The two-reader review of every test prompt of a split (its record ``REVIEW_OF_PAGE[page]``), as a clause for
    the label audit's line."""
    from tools.label_audit import review_summary

    record = REVIEW_OF_PAGE.get(page)
    if record is None or not record.exists():
        return ""
    s = review_summary(json.loads(record.read_text(encoding="utf-8")))
    ans, third = s["by_kind"].get("refusal"), s["third_reader"].get("answerable")
    if not ans:
        return ""
    text = (f"; the review of every test prompt by two blind readers ([{page}]({page})): "
            f"each found {_pct(ans['first_reader_confirms'] / ans['prompts'])} and "
            f"{_pct(ans['second_reader_confirms'] / ans['prompts'])} of the {ans['prompts']} answerable prompts answerable; "
            f"the reviewed rates count the {ans['kept']} both confirmed")
    if third and third["kept_and_sampled"]:
        text += (f", of which the sampled audit's reader had found {third['confirmed']} of "
                 f"{third['kept_and_sampled']} answerable ({_pct(third['confirmed'] / third['kept_and_sampled'])})")
    return text


def _held_clause(metrics: dict[str, Any]) -> str:
    """The head on the second held-out set (the written documents), when the record gated it."""
    held, base = metrics["answerability_head"].get("heldout_2"), (metrics.get("heldout_2") or {}).get("base")
    if not held or not base:
        return ""
    gated = held["base_with_head"]
    return (f"; on the written documents (another document's request as the unanswerable kind): hallucination "
            f"{_pct(base['hallucination_rate']['value'])} → {_pct(gated['hallucination_rate']['value'])}, "
            f"over-refusal {_pct(base['over_refusal_rate']['value'])} → {_pct(gated['over_refusal_rate']['value'])}")


def _evaluate_seconds(record: Path, seed: str) -> float | None:
    """The evaluate stage of a seed (its rerun's when re-evaluated): the first seed's includes generating the
    base model's answers, which ``run --seeds`` then reuses."""
    return (_seed_stages(record, seed).get("evaluate") or {}).get("seconds")


def _rerun_note(record: Path, summary: dict[str, Any]) -> str:
    """How the record was made when its seeds were re-evaluated rather than trained by this commit."""
    reruns = [_load(record / f"seed-{seed}" / "rerun_report.json") for seed in summary["per_seed"]]
    runs = [_load(record / f"seed-{seed}" / "run_report.json") or {} for seed in summary["per_seed"]]
    if not all(reruns):
        return ""
    trained = sorted({_commit_text(r.get("code")) for r in runs})
    return (f" The adapters were trained and chosen on dev by `make demo-seeds` at commit {', '.join(trained)}; "
            f"the re-evaluation (`gemma-facts run --seeds {' '.join(summary['per_seed'])} --skip train "
            f"select`) scored them on the rebuilt test split, whose training split is the one they were trained on "
            f"(same fingerprint). `make demo-seeds` from a clean tree trains and evaluates in one go.")


def _other_side(audit: dict[str, Any] | None) -> str:
    """The unanswerable side's audit, when finished, as a clause for the label audit's line."""
    if not audit or audit.get("share_unanswerable") is None:
        return ""
    kinds = ", ".join(f"{kind.replace('_', ' ')} {c['unanswerable']} of {sum(c.values())}"
                      for kind, c in audit["by_kind"].items())
    return (f"; the other side: {_pct(audit['share_unanswerable'])} of {audit['n']} sampled unanswerable test prompts "
            f"(near misses and answer-removed documents) unanswerable from their text ({kinds}; "
            f"[docs/label_audit_unanswerable.md](docs/label_audit_unanswerable.md)), which caps the cut a model "
            f"can show on those kinds")


def _commit_text(code: dict[str, Any] | None) -> str:
    """`abc1234567`, or `abc1234567` + uncommitted changes: a record made from a dirty tree says so."""
    commit = (code or {}).get("commit")
    if not commit:
        return "(unknown)"
    return f"`{commit[:10]}`" + (" + uncommitted changes" if (code or {}).get("dirty") else "")


#: the first lines of the README's results when the reviewed-label records exist
HEADS_LEAD = (
    "The base model (Gemma 3 270M, local profile, 2 CPU cores, no DPO) with a linear **answerability head** that "
    "refuses where it reads that the document lacks the answer: fitted on the training documents, chosen on dev, on "
    "the **real FACTS test split**, scored on **reviewed labels** (every test prompt read by two blind readers and "
    "counted only where both confirm its label; each split's link is its review). Mean [min, max] over three dev "
    "splits (42, 7, 1234); each recipe's config was registered in a commit before its one test read. What each "
    "recipe reads and how it was chosen: [docs/local_results.md](docs/local_results.md); every record in full: "
    "[docs/RESULTS.md](docs/RESULTS.md); `python experiments/reviewed_labels.py --runs results/FOLDER --out "
    "results/RECORD.json` rebuilds a record from its runs, `python -m tools.readme_results` this block.")


def _target_context(results_dir: Path, record: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """What the target lines read beside a record: the two label audits, the seeds' and a fresh `make demo`'s times."""
    demo = [m for m in (_seed_minutes(record, seed) for seed in summary["per_seed"]) if m is not None]
    evals = [e for e in (_evaluate_seconds(record, seed) for seed in summary["per_seed"]) if e is not None]
    fresh = _load(results_dir / "local" / "run_report.json")
    return {"audit": _audit_summary(LABEL_AUDIT),
            "demo_minutes": demo,
            "base_minutes": max(0.0, evals[0] - min(evals[1:])) / 60 if len(evals) > 1 else 0.0,
            "other_audit": _audit_summary(LABEL_AUDIT_UNANSWERABLE),
            "fresh_demo": fresh if fresh and fresh.get("command") == "gemma-facts run" else None}


def render_headline(results_dir: Path | None = None) -> str:
    """The README block. With reviewed-label records: the answerability heads' table on the real-FACTS test split and
    the targets checked against the latest registered recipe, then the DPO recipe's seed spread
    (``results/local-seeds/``); without them, the seed spread with its targets, as before."""
    results_dir = results_dir or repo_root() / "results"
    record = results_dir / HEADLINE
    summary = _load(record / SEEDS_SUMMARY)
    if summary is None or not summary.get("per_seed"):
        return single_run_headline(results_dir)
    data = _load(record / "data_report.json") or {}
    first = next(iter(summary["per_seed"].values()))
    code = summary.get("code")
    seeds = ", ".join(summary["per_seed"])
    rerun = _rerun_note(record, summary)
    made = (("Re-evaluation of the `make demo-seeds` adapters" if rerun else "`make demo-seeds`") + f" (seeds {seeds}) on 2 CPU cores, "
            f"{str(summary.get('date', '?'))[:10]}"
            + (f" at commit {_commit_text(code)}" if code else "") + f": the local recipe on the **real FACTS test split** "
            f"({data.get('split', {}).get('test_docs', '?')} documents, {first['n_answerable']} answerable + "
            f"{first['n_unanswerable']} unanswerable requests), offline judge, checkpoints chosen on dev "
            f"([`results/{HEADLINE}/`](results/{HEADLINE}/); generated by `python -m tools.readme_results`)."
            + rerun)
    context = _target_context(results_dir, record, summary)
    rows = [("hallucination (unanswerable answered)", "base_hallucination", "aligned_hallucination"),
            ("over-refusal (answerable refused)", "base_over_refusal", "aligned_over_refusal"),
            ("grounded accuracy (answerable)", "base_grounded_accuracy", "aligned_grounded_accuracy")]
    table = ["| rate | base | aligned: mean [min, max] over seeds |", "|---|---|---|"]
    table += [f"| {label} | {_pct(summary['spread'].get(b, {}).get('mean'))} | {_spread(summary, a)} |"
              for label, b, a in rows]
    table.append(f"| relative hallucination cut | | {_spread(summary, 'hallucination_cut')} |")
    gaps = [refusal_gap(e["aligned_hallucination"], e["aligned_over_refusal"]) for e in summary["per_seed"].values()]
    gaps = [g for g in gaps if g is not None]
    base_gap = refusal_gap(summary["spread"].get("base_hallucination", {}).get("mean"),
                           summary["spread"].get("base_over_refusal", {}).get("mean"))
    if gaps:
        table.append(f"| refusal gap: unanswerable refused − answerable refused (0 = refusals blind to the "
                     f"document) | {_gap(base_gap)} | **{_gap(sum(gaps) / len(gaps))}** [{_gap(min(gaps))}, "
                     f"{_gap(max(gaps))}] |")
    written = summary["spread"].get("written_aligned_hallucination")
    written_line = (f"The 48 written documents, reported beside it (never trained on): hallucination "
                    f"{_pct(summary['spread']['written_base_hallucination']['mean'])} → "
                    f"{_spread(summary, 'written_aligned_hallucination')}, over-refusal "
                    f"{_pct(summary['spread']['written_base_over_refusal']['mean'])} → "
                    f"{_spread(summary, 'written_aligned_over_refusal')}. " if written else "")
    heads = reviewed_heads_table(results_dir)
    if heads:
        sp = summary["spread"]
        dpo = (f" Base → aligned, mean [min, max] over seeds: hallucination {_pct(sp['base_hallucination']['mean'])} → "
               f"{_spread(summary, 'aligned_hallucination')} (cut {_spread(summary, 'hallucination_cut')}), "
               f"over-refusal {_pct(sp['base_over_refusal']['mean'])} → {_spread(summary, 'aligned_over_refusal')}, "
               f"grounded accuracy {_pct(sp['base_grounded_accuracy']['mean'])} → "
               f"{_spread(summary, 'aligned_grounded_accuracy')}; Banana test {summary['banana_passed']} of "
               f"{len(summary['per_seed'])}.")
        review_page = _shown_reviewed_records(results_dir)[0][3]
        parts = [HEADS_LEAD, "", heads, "",
                 *head_targets(results_dir, shared_target_checks(**context, review_page=review_page,
                                                                 reviewed_audit=_audit_summary(LABEL_AUDIT_REVIEWED))), "",
                 "**The DPO recipe** (QLoRA adapters on the same base; the notebooks' recipe), " + made[0].lower()
                 + made[1:] + dpo, "",
                 written_line + "Each seed's record and its target checks, the refusal gap, a no-model word-overlap "
                 "rule and the first answerability heads: [docs/RESULTS.md](docs/RESULTS.md)."]
        return "\n".join(parts).strip() + "\n"
    parts = [made, "", "\n".join(table)]
    first_head = answerability_head_line(results_dir)
    for line in (no_model_baseline(results_dir), first_head + head_stage_sentence(results_dir) if first_head else ""):
        if line:
            parts += ["", line]
    parts += ["", seeds_table(summary, record), "", "Targets (issue 16), checked against this record:"]
    parts += seed_targets(summary, **context)
    if written:
        parts += ["", written_line + "Every seed's full record, the failure breakdowns and the figures: "
                      "[docs/RESULTS.md](docs/RESULTS.md)."]
    return "\n".join(parts).strip() + "\n"


def single_run_headline(results_dir: Path) -> str:
    """One impact table of ``results/local/`` (a `make demo` record) with its target lines and the Banana test:
    the headline while no seeds record exists."""
    record = results_dir / SINGLE_RUN
    metrics = _load(record / "metrics.json")
    if metrics is None:
        return f"No `results/{HEADLINE}/` or `results/{SINGLE_RUN}/` record yet: run `make demo-seeds && make results-seeds`.\n"
    run = _load(record / "run_report.json") or {}
    train = _load(record / "train_report.json") or {}
    code = (run.get("code") or {}).get("commit")
    made = (f"`make demo` (`{run.get('command')}`) on `{' '.join(str(run.get('machine', '?')).split())}`, "
            f"{str(run.get('date', '?'))[:10]}" + (f" at commit `{code[:10]}`" if code else "")
            + f": **{run.get('total_seconds', 0) / 60:.1f} min** wall time")
    sel = train.get("checkpoint_selection")
    if sel:
        made += (f"; checkpoint kept: **step {sel['chosen_step']} of {sel['final_step']}**, chosen on "
                 f"{sel['dev_documents']} training documents held out as dev, never on the test split")
    parts = [made + f" ([`results/{SINGLE_RUN}/`](results/{SINGLE_RUN}/)). Generated by `python -m tools.readme_results`, "
             "like [docs/RESULTS.md](docs/RESULTS.md), which holds the rest: the longer run, the second held-out "
             "set, the probes, the figures and the benchmarks.", ""]
    if before_repack_fix(run.get("date")):
        parts += [repack_note(""), ""]
    parts += [impact_table(metrics), "", "Targets (issue 6), checked against this record:"]
    parts += target_checks(metrics, run)
    banana = metrics.get("banana")
    if banana:
        parts += ["", f"**The Banana test** (`DOCUMENT: {banana['document']} USER REQUEST: {banana['request']}`): "
                  + "; ".join(f"{label} “{' '.join(banana[side]['answer'].split())}” "
                              f"({'pass' if banana[side]['passed'] else 'fail'})"
                              for side, label in (("base", "base"), ("aligned", "aligned"))) + "."]
    return "\n".join(parts).strip() + "\n"


def _seeds_section(record: Path, up: str) -> list[str]:
    """docs/RESULTS.md: the seed spread, then every seed's record in full."""
    summary = _load(record / SEEDS_SUMMARY)
    if not summary:
        return []
    parts = [f"## The DPO recipe with {len(summary['per_seed'])} seeds (`results/{record.name}/`)", "",
             seeds_table(summary, record), "", "Targets (issue 16), checked against this record:"]
    lines = seed_targets(summary, **_target_context(record.parent, record, summary)) + [""]
    for line in (no_model_baseline(record.parent), answerability_head_line(record.parent)):
        lines += [line, ""] if line else []
    # the README's links, from docs/
    parts += [line.replace("](results/", f"]({up}results/").replace("](docs/", "](") for line in lines]
    for seed in summary["per_seed"]:
        section = _profile_section(record / f"seed-{seed}", up, name=f"{record.name}/seed-{seed}")
        parts += ["#" + line if line.startswith("## ") else line for line in section]
    return parts


def update_readme(readme: Path | None = None, results_dir: Path | None = None) -> bool:
    """Rewrite the README between the results markers; True when the text changed."""
    readme = readme or repo_root() / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render_headline(results_dir)}{END}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def write_results_doc(doc: Path | None = None, results_dir: Path | None = None) -> bool:
    """Write docs/RESULTS.md; True when the text changed."""
    doc = doc or repo_root() / RESULTS_DOC
    new = render_results_doc(results_dir)
    if doc.exists() and doc.read_text(encoding="utf-8") == new:
        return False
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(new, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", metavar="PROFILE", help="copy the output root's run into results/PROFILE")
    parser.add_argument("--collect-seeds", metavar="PROFILE", help="copy a `run --seeds` output root into results/PROFILE")
    args = parser.parse_args(argv)
    if args.collect:
        print(f"collected into {collect_run(args.collect)}")
    if args.collect_seeds:
        print(f"collected into {collect_seeds(args.collect_seeds)}")
    print("README results section", "updated" if update_readme() else "unchanged")
    print(RESULTS_DOC.as_posix(), "updated" if write_results_doc() else "unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
