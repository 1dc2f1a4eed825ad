"""The report's tables regenerated as markdown from metrics.json (never typed by hand).

``impact_table`` is the "Impact" table (Metric | Base | Aligned (Gemma-Facts) | Change);
``banana_table`` is the Banana test; ``probes_table`` and ``breakdown_table`` add the details.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.evaluate.answerability_head import describe_head

__all__ = [
    "IMPACT_ROWS",
    "banana_table",
    "breakdown_table",
    "examples_table",
    "format_rate",
    "head_table",
    "heldout_table",
    "impact_table",
    "latency_table",
    "load_metrics",
    "probes_table",
]

#: (metrics key, row label, True when lower is better).
IMPACT_ROWS: tuple[tuple[str, str, bool], ...] = (
    ("hallucination_rate", "Hallucination rate (unanswerable requests)", True),
    ("over_refusal_rate", "Over-refusal rate (answerable requests)", True),
    ("grounded_accuracy", "Grounded accuracy (answerable requests)", False),
    ("refusal_f1", "Refusal F1", False),
)


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read metrics.json."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def format_rate(entry: dict[str, Any] | None) -> str:
    """'25.0% [8.9–53.2] (n=12)'; 'n/a' when there are no items."""
    if not entry or entry.get("value") is None:
        return f"n/a (n={entry.get('n', 0) if entry else 0})"
    text = f"{100 * entry['value']:.1f}%"
    if entry.get("ci95"):
        lo, hi = entry["ci95"]
        text += f" [{100 * lo:.1f}–{100 * hi:.1f}]"
    return f"{text} (n={entry['n']})"


def _change(base: dict[str, Any], aligned: dict[str, Any], relative: float | None = None) -> str:
    if base.get("value") is None or aligned.get("value") is None:
        return "n/a"
    delta = 100 * (aligned["value"] - base["value"])
    text = f"{delta:+.1f} pp"
    if relative is not None:
        text += f" ({(-100 * relative) + 0.0:+.0f}% relative)"
    return text


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _impact_rows(base_side: dict[str, Any], aligned_side: dict[str, Any], reduction: float | None) -> list[str]:
    """The impact table's header and one row per headline rate (``reduction``: the relative hallucination cut)."""
    lines = ["| Metric | Base | Aligned (Gemma-Facts) | Change |", "|---|---|---|---|"]
    for key, label, _lower in IMPACT_ROWS:
        base, aligned = base_side.get(key, {}), aligned_side.get(key, {})
        rel = reduction if key == "hallucination_rate" else None
        lines.append(f"| {label} | {format_rate(base)} | {format_rate(aligned)} | {_change(base, aligned, rel)} |")
    return lines


def impact_table(metrics: dict[str, Any]) -> str:
    """Metric | Base | Aligned (Gemma-Facts) | Change, with 95% Wilson intervals, as markdown; below it the same
    on the reviewed labels when evaluation applied a label review."""
    lines = _impact_rows(metrics["base"], metrics["aligned"], metrics.get("relative_hallucination_reduction"))
    lines.append("")
    lines.append(f"*{metrics.get('n_answerable', 0)} answerable + {metrics.get('n_unanswerable', 0)} unanswerable "
                 f"test prompts; model `{metrics.get('model', '?')}`, profile `{metrics.get('profile', '?')}`, "
                 f"judge `{metrics.get('judge', '?')}`; brackets: 95% Wilson interval.*")
    reviewed = metrics.get("reviewed_labels") or {}
    if reviewed.get("applied"):
        lines += ["", "On the prompts whose label two blind readers confirmed (`reviewed_labels`):", ""]
        lines += _impact_rows(reviewed["base"], reviewed["aligned"], reviewed["relative_hallucination_reduction"]["aligned"])
        lines += ["", f"*{reviewed['n_answerable']} answerable + {reviewed['n_unanswerable']} unanswerable of "
                      f"{reviewed['items']} prompts keep their label (docs/label_review.md).*"]
    return "\n".join(lines)


def banana_table(metrics: dict[str, Any]) -> str:
    """The Banana test: the same document and request, base vs aligned answer and whether it refused."""
    banana = metrics["banana"]
    lines = [f"**Document:** \"{banana['document']}\" — **Request:** \"{banana['request']}\"", "",
             "| Model | Answer | Verdict |", "|---|---|---|"]
    for side, label in (("base", "Base"), ("aligned", "Aligned (Gemma-Facts)")):
        row = banana[side]
        verdict = "pass (refused)" if row["passed"] else "fail (did not refuse)"
        lines.append(f"| {label} | {_cell(row['answer']) or '*(empty)*'} | {verdict} |")
    return "\n".join(lines)


def probes_table(metrics: dict[str, Any]) -> str:
    """All built-in probes: request, expected behaviour, base and aligned answers with pass/fail."""
    probes = metrics.get("probes", {})
    lines = ["| Probe | Request | Expected | Base | Aligned |", "|---|---|---|---|---|"]
    for base, aligned in zip(probes.get("base", []), probes.get("aligned", []), strict=True):
        expected = "answer" if base["answerable"] else "refuse"
        cells = [f"{'✅' if r['passed'] else '❌'} {_cell(r['answer'])[:80]}" for r in (base, aligned)]
        lines.append(f"| {base['name']} | {_cell(base['request'])} | {expected} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def breakdown_table(metrics: dict[str, Any], key: str = "pair_type") -> str:
    """Hallucination and over-refusal per ``pair_type`` / ``source`` / ``domain``, base → aligned."""
    groups = metrics.get("breakdowns", {})
    base, aligned = groups.get("base", {}).get(key, {}), groups.get("aligned", {}).get(key, {})
    lines = [f"| {key} | Hallucination base → aligned | Over-refusal base → aligned |", "|---|---|---|"]
    for name in sorted(base):
        cells = [f"{format_rate(base[name][m])} → {format_rate(aligned.get(name, {}).get(m))}"
                 for m in ("hallucination_rate", "over_refusal_rate")]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def examples_table(metrics: dict[str, Any], width: int = 160) -> str:
    """A few example generations with their offline verdicts."""
    lines = ["| Request | Answerable | Base | Aligned |", "|---|---|---|---|"]
    for ex in metrics.get("examples", []):
        cells = [f"{'✅' if ex[s]['correct'] else '❌'} {_cell(ex[s]['answer'])[:width] or '*(empty)*'}"
                 for s in ("base", "aligned")]
        lines.append(f"| {_cell(ex['request'])[:width]} | {'yes' if ex['answerable'] else 'no'} | "
                     f"{cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def head_table(metrics: dict[str, Any]) -> str:
    """Base | Base + answerability head | Aligned on the test prompts, with the head's Banana test and probes;
    a note on how to fit one when the run has no head."""
    result = metrics.get("answerability_head")
    if not result:
        return ("*No answerability head in this run: set `TrainConfig.answerability_head=True` (notebook 02, or "
                "`gemma-facts select --set train.answerability_head=true`; `--head-only` needs no adapter), then "
                "evaluate again.*")
    gated, head = result["base_with_head"], result["head"]
    lines = ["| Metric | Base | Base + head | Aligned (Gemma-Facts) |", "|---|---|---|---|"]
    for key, label, _lower in IMPACT_ROWS:
        lines.append(f"| {label} | {format_rate(metrics['base'].get(key))} | {format_rate(gated.get(key))} | "
                     f"{format_rate(metrics['aligned'].get(key))} |")
    cut = result.get("relative_hallucination_reduction")
    banana = result["banana"]
    lines += ["", f"*The base's own answers, replaced by the refusal where the head ({describe_head(head)}, dev AUC "
                  f"{head['dev'].get('dev_auc')}) "
                  f"says the document lacks the answer: {result['refused_by_head']} of "
                  f"{metrics.get('n_answerable', 0) + metrics.get('n_unanswerable', 0)} refused"
                  + (f", hallucination cut {100 * cut:.0f}% relative to the base" if cut is not None else "")
                  + f". Banana test with the head: {'pass' if banana['passed'] else 'fail'}; probes passed: "
                  f"{result['probes_passed']} of {result['probes']}. Judge: offline.*"]
    held, held_metrics = result.get("heldout_2"), metrics.get("heldout_2")
    if held and held_metrics:
        gated = held["base_with_head"]
        lines += ["", f"*Second held-out set `{held_metrics.get('path', '')}`, gated the same way: hallucination "
                      f"{format_rate(held_metrics['base'].get('hallucination_rate'))} → "
                      f"{format_rate(gated.get('hallucination_rate'))}, over-refusal "
                      f"{format_rate(held_metrics['base'].get('over_refusal_rate'))} → "
                      f"{format_rate(gated.get('over_refusal_rate'))} (base → base + head).*"]
    return "\n".join(lines)


def heldout_table(metrics: dict[str, Any]) -> str:
    """The Impact table of the optional second held-out set, or a note on how to add one."""
    held = metrics.get("heldout_2")
    if not held:
        return ("*No second held-out set: set `EvalConfig.heldout_path` (or `--heldout FILE`) to a FACTS-schema "
                ".jsonl to add one.*")
    context = {k: metrics.get(k) for k in ("model", "profile", "judge")}
    return f"**Held-out set `{held.get('path', '')}`**\n\n" + impact_table({**held, **context})


def latency_table(metrics: dict[str, Any]) -> str:
    """ms per generated token and memory, 4-bit vs unquantised, from the latency measurement."""
    latency = metrics.get("latency")
    if not latency:
        return "*Latency not measured (`EvalConfig.latency_prompts = 0`).*"
    lines = ["| Weights | ms / token | Weights (MB) | Peak memory (MB) |", "|---|---|---|---|"]
    for name, row in latency.items():
        if isinstance(row, dict):
            lines.append(f"| {name} | {row['ms_per_token']:.1f} | {row['weights_bytes'] / 2**20:.1f} | "
                         f"{row['peak_bytes'] / 2**20:.0f} ({row['peak_kind']}) |")
    lines.append("")
    lines.append(f"*{latency['prompts']} prompt(s), one at a time, up to {latency['max_new_tokens']} new tokens.*")
    return "\n".join(lines)
