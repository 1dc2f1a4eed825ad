"""The README's results section, generated from committed run records (never typed by hand).

``python -m helpers.readme_results --collect`` copies a finished run's reports and figures from
the output root into ``results/<profile>/`` (stamped with the command, date and machine that made
them); without ``--collect`` it only regenerates the README section from what ``results/`` holds.
``tests/test_readme_results.py`` fails when the README and ``results/`` disagree.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from helpers.config import output_root, repo_root
from helpers.report_tables import banana_table, heldout_table, impact_table, probes_table

__all__ = ["collect_run", "render_results", "update_readme"]

START, END = "<!-- results:start -->", "<!-- results:end -->"
REPORTS = ("metrics.json", "train_report.json", "data_report.json", "run_report.json")


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
    for extra in ("curve.json", "curve.png"):  # bench/curve_local.py, when it was run on this output root
        if (source / extra).exists():
            shutil.copy2(source / extra, dest / extra)
        elif (dest / extra).exists():  # measured on an earlier run: it must not sit beside this one's numbers
            (dest / extra).unlink()
    return dest


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _mib(n: int | None) -> str:
    return "?" if not n else f"{n / 2**20:.0f}"


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


def selection_line(sel: dict[str, Any]) -> str:
    """The checkpoint the main command kept, and the dev rates it was chosen from (helpers.dev_selection)."""
    rates = "; ".join(f"step {p['step']}: {_pct(p['aligned']['hallucination_rate'])} / "
                      f"{_pct(p['aligned']['over_refusal_rate'])}" for p in sel["curve"])
    return (f"- Checkpoint kept: **step {sel['chosen_step']} of {sel['final_step']}**, chosen on "
            f"{sel['dev_documents']} training documents held out as dev ({sel['dev_answerable']} answerable + "
            f"{sel['dev_unanswerable']} unanswerable requests), {sel['rule']}. Dev hallucination / over-refusal: "
            f"{rates} (dev scoring {sel['seconds'] / 60:.1f} min).")


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
    """Rates per kept checkpoint (step 0 = base model) from ``bench/curve_local.py``'s record."""
    lines = ["| step | hallucination | over-refusal | grounded accuracy |", "|---|---|---|---|"]
    for point in curve.get("points", []):
        rates = point["sets"].get(set_name)
        if rates:
            lines.append(f"| {point['step']} | " + " | ".join(_pct(rates[k]["value"]) for k in
                         ("hallucination_rate", "over_refusal_rate", "grounded_accuracy")) + " |")
    return "\n".join(lines)


def tuning_table(records: list[dict[str, Any]]) -> str:
    """One row per dev-split tuning run of ``bench/tune_local.py`` (test split never read)."""
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


def early_stopping_section(early: dict[str, Any]) -> str:
    """The checkpoint a dev rule chose, next to the run's last one and the base model, on the held-out sets."""
    chosen, last = early["chosen_step"], early["last_step"]
    lines = [f"Dev run `{early.get('tune_name')}` (trained without the dev documents); rule: {early.get('rule')} "
             f"→ checkpoint **{chosen}** (last: {last}). Then, and only then, the held-out sets (offline judge):\n",
             "| model | set | hallucination | over-refusal | grounded accuracy |", "|---|---|---|---|---|"]
    labels = {"base": "base", f"step{chosen}": f"chosen on dev (step {chosen})"}
    if last != chosen:
        labels[f"step{last}"] = f"last checkpoint (step {last})"
    for key, label in labels.items():
        for set_name, rates in (early.get("scores", {}).get(key) or {}).items():
            lines.append(f"| {label} | {set_name} | " + " | ".join(
                f"{_pct(rates[r]['value'])} (n={rates[r]['n']})" for r in
                ("hallucination_rate", "over_refusal_rate", "grounded_accuracy")) + " |")
    banana = [(label, next((p for p in early.get("probes", {}).get(key) or [] if p["name"] == "banana"), None))
              for key, label in labels.items()]
    if any(row for _, row in banana):
        lines.append("\nThe Banana test (`DOCUMENT: Apples are red. USER REQUEST: Are bananas blue?`): " + "; ".join(
            f"{label}: “{row['answer'].strip()}” ({'pass' if row['passed'] else 'fail'})" for label, row in banana if row)
            + ".")
    return "\n".join(lines)


def render_results(results_dir: Path | None = None) -> str:
    """Markdown for the README's results section from ``results/``."""
    results_dir = results_dir or repo_root() / "results"
    parts: list[str] = ["Every number below is read from the JSON files in [`results/`](results/) by "
                        "`python -m helpers.readme_results`; rerun `make demo && make results` to "
                        "reproduce them on your machine."]
    for profile_dir in sorted(p for p in results_dir.glob("*") if p.is_dir()):
        metrics = _load(profile_dir / "metrics.json")
        if metrics is None:
            continue
        run = _load(profile_dir / "run_report.json") or {}
        train = _load(profile_dir / "train_report.json")
        parts.append(f"### Profile `{profile_dir.name}`: `{metrics.get('model')}`")
        parts += _run_section(run, train) if run else []
        if run and not run.get("code"):
            parts.append("- *Made before run records named their commit, so possibly with an earlier recipe "
                         "than today's preset (see [docs/local_results.md](docs/local_results.md)); rerun the "
                         "command above to refresh it.*")
        parts.append("")
        parts.append("**Impact** (held-out documents, disjoint from training):\n")
        parts.append(impact_table(metrics))
        parts.append("")
        parts.append(f"Relative hallucination reduction: **{_pct(metrics.get('relative_hallucination_reduction'))}**.")
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
                parts.append(f"\n![curve](results/{profile_dir.name}/curve.png)")
        figs = sorted(p.name for p in (profile_dir / "figures").glob("*.png"))
        if figs:
            parts.append("")
            parts += [f"![{f}](results/{profile_dir.name}/figures/{f})" for f in figs]
    tuning_path = results_dir / "tuning.jsonl"
    if tuning_path.exists():
        records = [json.loads(line) for line in tuning_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if records:
            parts.append("\n### Recipe tuning on a dev split (`python bench/tune_local.py`)\n")
            parts.append(f"{records[0]['dev_docs']} of the training documents held out as dev "
                         f"({records[0]['dev_answerable']} answerable + {records[0]['dev_unanswerable']} unanswerable "
                         "requests); the test split is never read. Base model on dev: "
                         + ", ".join(f"{k.replace('_', ' ')} {_pct(v)}" for k, v in
                                     next((r["base"] for r in records if "base" in r), {}).items()) + ".\n")
            parts.append(tuning_table(records))
    early = _load(results_dir / "dev_early_stopping.json")
    if early:
        parts.append(f"\n### Early stopping on dev (`{early.get('command')}`)\n")
        parts.append(early_stopping_section(early))
        tuned = [r for r in (records if tuning_path.exists() else []) if r.get("name") == early.get("tune_name")]
        if tuned:
            dev = tuned[-1]
            spent = (f"{dev['total_seconds'] / 60:.1f} min for the dev run with its checkpoint scoring"
                     if dev.get("total_seconds") else
                     f"{dev['train_seconds'] / 60:.1f} min for the dev run's training (its checkpoint scoring "
                     "was not timed in this record)")
            parts.append(f"\nWall time: {spent}, then {early.get('seconds', 0) / 60:.1f} min for the choice and "
                         f"the held-out scoring (`{dev['command']}`).")
    bench = _load(results_dir / "bench.json")
    if bench:
        parts.append(f"\n### Benchmarks (`{bench.get('command', 'make bench')}`, one run each)\n")
        parts.append("| benchmark | figure | target |")
        parts.append("|---|---|---|")
        for row in bench.get("rows", []):
            parts.append(f"| {row['name']} | {row['figure']} | {row.get('target', '')} |")
        parts.append(f"\n*{bench.get('machine', '')}, {bench.get('date', '')}*")
    return "\n".join(parts).strip() + "\n"


def update_readme(readme: Path | None = None, results_dir: Path | None = None) -> bool:
    """Rewrite the README between the results markers; True when the text changed."""
    readme = readme or repo_root() / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render_results(results_dir)}{END}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", metavar="PROFILE", help="copy the output root's run into results/PROFILE")
    args = parser.parse_args(argv)
    if args.collect:
        print(f"collected into {collect_run(args.collect)}")
    changed = update_readme()
    print("README results section", "updated" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
