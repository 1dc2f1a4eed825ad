"""The label audit: are the test split's "answerable" prompts answerable from the text they show?

``--draw`` picks ``--n`` answerable evaluation requests of a pairs folder's test split at random
(seeded, from the same items ``gemma-facts evaluate`` asks) and writes them, with their excerpts and
an empty verdict, to ``docs/label_audit.json``. A person then reads each request and its excerpt
and fills ``verdict`` ("answerable" / "partly" / "not answerable") and a one-line ``reason``.
``--render`` (no flag needed) writes ``docs/label_audit.md``: the share answerable, every id with its
verdict and reason. ``tests/test_label_audit.py`` fails when the two files disagree or a verdict is
missing.

A verdict of "partly" counts as not answerable: the target (>= 90% answerable) is about the label
the evaluation trusts, and a request the excerpt only half answers makes "refused" look like
over-refusal when it may be right.

``--side unanswerable`` audits the other label the same way (``docs/label_audit_unanswerable.json`` /
``.md``): unanswerable requests of the two kinds built from the request's own document (near misses
and answer-removed documents; another row's document is unanswerable by construction), drawn evenly
per kind. Verdicts: "unanswerable" (the text lacks what the request asks), "partly" (it answers part
of it), "answerable". Partly counts against the share here too: an answer to a request the text half
answers is a hallucination in the metrics, but not necessarily a wrong answer. A wrong label caps
the hallucination cut any model can show.

``--side training`` asks the same of the training pairs (``docs/label_audit_training.json`` / ``.md``): half
answer-removed excerpts (labelled unanswerable), half answerable requests of the over-refusal pairs (labelled
answerable), shuffled together so a reader cannot tell the two apart; the share whose label holds, per kind.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

AUDIT_JSON = Path("docs") / "label_audit.json"
AUDIT_MD = Path("docs") / "label_audit.md"
VERDICTS = ("answerable", "partly", "not answerable")

#: the unanswerable side's audit: its files, verdicts, and the kinds drawn (pair ``source``)
UNANSWERABLE_JSON = Path("docs") / "label_audit_unanswerable.json"
UNANSWERABLE_MD = Path("docs") / "label_audit_unanswerable.md"
UNANSWERABLE_VERDICTS = ("unanswerable", "partly", "answerable")
UNANSWERABLE_KINDS = ("near_miss", "answer_removed")

#: the training pairs' audit: its files, and the two kinds drawn (pair ``source`` -> the label it carries)
TRAINING_JSON = Path("docs") / "label_audit_training.json"
TRAINING_MD = Path("docs") / "label_audit_training.md"
TRAINING_KINDS = {"answer_removed": "unanswerable", "refusal": "answerable"}


def draw(pairs_dir: str, n: int, seed: int, max_examples: int | None) -> dict[str, Any]:
    """``n`` random answerable evaluation items of the test split, with empty verdicts."""
    from datasets import load_from_disk

    from helpers.evaluate.run import eval_items

    items = [it for it in eval_items(list(load_from_disk(pairs_dir)["test"]), max_examples, 42) if it["answerable"]]
    picked = sorted(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    return {"pairs_dir": pairs_dir, "seed": seed, "population": len(items),
            "items": [{"id": items[i]["id"], "doc_id": items[i]["doc_id"], "request": items[i]["request"],
                       "excerpt": items[i]["document"], "reference": items[i]["reference"], "verdict": None,
                       "reason": ""} for i in picked]}


def draw_unanswerable(pairs_dir: str, n: int, seed: int, max_examples: int | None) -> dict[str, Any]:
    """``n`` random unanswerable evaluation items of the test split, ``n // 2`` per kind of
    ``UNANSWERABLE_KINDS`` (the rest to the first), with the text shown and empty verdicts."""
    from datasets import load_from_disk

    from helpers.evaluate.run import eval_items

    items = [it for it in eval_items(list(load_from_disk(pairs_dir)["test"]), max_examples, 42) if not it["answerable"]]
    rng = random.Random(seed)
    picked: list[int] = []
    per_kind = {kind: n // len(UNANSWERABLE_KINDS) for kind in UNANSWERABLE_KINDS}
    per_kind[UNANSWERABLE_KINDS[0]] += n - sum(per_kind.values())
    for kind, k in per_kind.items():
        of_kind = [i for i, it in enumerate(items) if kind in it["source"]]
        picked += rng.sample(of_kind, min(k, len(of_kind)))
    population = {kind: sum(kind in it["source"] for it in items) for kind in sorted({s for it in items for s in it["source"]})}
    return {"side": "unanswerable", "pairs_dir": pairs_dir, "seed": seed, "population": population,
            "items": [{"id": items[i]["id"], "doc_id": items[i]["doc_id"],
                       "kind": next(k for k in UNANSWERABLE_KINDS if k in items[i]["source"]),
                       "request": items[i]["request"], "excerpt": items[i]["document"], "verdict": None,
                       "reason": ""} for i in sorted(picked)]}


def draw_training(pairs_dir: str, n: int, seed: int, max_examples: int | None = None) -> dict[str, Any]:
    """``n // 2`` random training pairs of each kind of ``TRAINING_KINDS`` (answerable ones only for the
    over-refusal pairs), in a seeded random order, with the text shown and empty verdicts."""
    from datasets import load_from_disk

    train = load_from_disk(pairs_dir)["train"]
    rng = random.Random(seed)
    picked: list[int] = []
    for kind, label in TRAINING_KINDS.items():
        of_kind = [i for i, (s, a) in enumerate(zip(train["source"], train["answerable"], strict=True))
                   if s == kind and bool(a) == (label == "answerable")]
        picked += sorted(rng.sample(of_kind, min(n // len(TRAINING_KINDS), len(of_kind))))
    rng.shuffle(picked)
    population = {kind: sum(s == kind for s in train["source"]) for kind in TRAINING_KINDS}
    return {"side": "training", "pairs_dir": pairs_dir, "seed": seed, "population": population,
            "items": [{"id": f"train-{i}", "doc_id": train[i]["doc_id"], "kind": train[i]["source"],
                       "label": TRAINING_KINDS[train[i]["source"]], "request": train[i]["request"],
                       "excerpt": train[i]["document"], "verdict": None, "reason": ""} for i in picked]}


def summary(audit: dict[str, Any]) -> dict[str, Any]:
    """Counts per verdict and the share the label holds for (None while a verdict is missing): answerable
    for the answerable side's audit, unanswerable for the other side's (``audit["side"]``)."""
    if audit.get("side") == "training":
        verdicts = [it["verdict"] for it in audit["items"]]
        done = all(v in UNANSWERABLE_VERDICTS for v in verdicts)
        by_kind = {}
        for kind in sorted({it["kind"] for it in audit["items"]}):
            of_kind = [it for it in audit["items"] if it["kind"] == kind]
            by_kind[kind] = {**{v: sum(it["verdict"] == v for it in of_kind) for v in UNANSWERABLE_VERDICTS},
                             "label": of_kind[0]["label"],
                             "share_label_holds": round(sum(it["verdict"] == it["label"] for it in of_kind)
                                                        / len(of_kind), 4) if done else None}
        return {"n": len(verdicts), "by_kind": by_kind}
    unanswerable = audit.get("side") == "unanswerable"
    allowed, holds = (UNANSWERABLE_VERDICTS, "unanswerable") if unanswerable else (VERDICTS, "answerable")
    verdicts = [it["verdict"] for it in audit["items"]]
    counts = {v: verdicts.count(v) for v in allowed}
    done = all(v in allowed for v in verdicts)
    share = round(counts[holds] / len(verdicts), 4) if done and verdicts else None
    out = {"n": len(verdicts), "counts": counts, f"share_{holds}": share}
    if unanswerable:
        out["by_kind"] = {kind: {v: sum(it["verdict"] == v for it in audit["items"] if it["kind"] == kind)
                                 for v in allowed} for kind in sorted({it["kind"] for it in audit["items"]})}
    return out


def item_rows(audit: dict[str, Any], with_kind: bool = False) -> list[str]:
    """One table row per audited item: id, (kind,) document, the request cut to 110 characters, verdict, reason."""
    rows = []
    for it in audit["items"]:
        request = " ".join(it["request"].split()).replace("|", "/")
        if len(request) > 110:
            request = request[:107] + "..."
        kind = f" {it['kind'].replace('_', ' ')} |" if with_kind else ""
        rows.append(f"| {it['id']} |{kind} {it['doc_id']} | {request} | {it['verdict'] or '-'} | "
                    f"{' '.join(it['reason'].split()).replace('|', '/')} |")
    return rows


def render_unanswerable(audit: dict[str, Any]) -> str:
    """docs/label_audit_unanswerable.md from its record."""
    s = summary(audit)
    share = "not finished" if s["share_unanswerable"] is None else f"**{s['share_unanswerable']:.0%}**"
    population = ", ".join(f"{kind.replace('_', ' ')} {k}" for kind, k in audit["population"].items())
    kinds = "; ".join(f"{kind.replace('_', ' ')}: {c['unanswerable']} of {sum(c.values())} unanswerable, "
                      f"{c['partly']} partly, {c['answerable']} answerable" for kind, c in s["by_kind"].items())
    lines = [
        "# Label audit, the other side: are the unanswerable test prompts unanswerable from the text the model sees?",
        "", "<!-- generated by `python -m tools.label_audit --side unanswerable --render` from "
        "docs/label_audit_unanswerable.json; do not edit -->", "",
        f"{s['n']} unanswerable test requests drawn at random (seed {audit['seed']}), evenly from the two kinds "
        f"built on the request's own document, of the test split's unanswerable evaluation requests ({population}; "
        f"a request shown with another row's document is unanswerable by construction and not drawn), each read in "
        f"full with the text the model sees. {audit.get('reviewers', 'Verdicts written by hand.')}",
        f"Unanswerable from that text: {share} ({s['counts']['unanswerable']} of {s['n']}; partly: "
        f"{s['counts']['partly']}, answerable: {s['counts']['answerable']}). By kind: {kinds}.", "",
        "Verdicts: *unanswerable* when the text does not hold what the request asks (a near miss names a subject "
        "the text lacks; an answer-removed document lost the passage that answered); *partly* when the text "
        "answers part of it; *answerable* when it holds the answer. Partly counts against the share.", "",
        "Why it matters: the hallucination rate counts every answer to these requests as a hallucination. Where "
        "the label is wrong, answering is right, so the share caps the hallucination cut a model can show on "
        "these kinds: a cut target of 90% is only measurable where far more than 90% of the labels hold.", "",
        "| id | kind | document | request | verdict | reason |", "|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + item_rows(audit, with_kind=True)) + "\n"


def render_training(audit: dict[str, Any]) -> str:
    """docs/label_audit_training.md from its record."""
    s = summary(audit)
    kinds = "; ".join(
        f"{kind.replace('_', ' ')} (labelled {c['label']}): the label holds for "
        + (f"**{c['share_label_holds']:.0%}**" if c["share_label_holds"] is not None else "not finished")
        + f" ({c['unanswerable']} unanswerable, {c['partly']} partly, {c['answerable']} answerable)"
        for kind, c in s["by_kind"].items())
    population = ", ".join(f"{kind.replace('_', ' ')} {k}" for kind, k in audit["population"].items())
    lines = [
        "# Label audit, the training pairs: does the excerpt the model trains on hold what the label says?", "",
        "<!-- generated by `python -m tools.label_audit --side training --render` from "
        "docs/label_audit_training.json; do not edit -->", "",
        f"{s['n']} training pairs drawn at random (seed {audit['seed']}) from `{audit['pairs_dir']}` (the headline "
        f"seeds' training split; of its pairs: {population}), half of each kind, shuffled together, each read "
        f"with the excerpt the pair shows. {audit.get('reviewers', 'Verdicts written by hand.')}",
        f"By kind: {kinds}.", "",
        "Why it matters: DPO learns from these labels. An answer-removed excerpt that still answers teaches the "
        "refusal of an answerable request; an \"answerable\" excerpt that does not hold the answer teaches "
        "answering without support.", "",
        "| id | kind | document | request | verdict | reason |", "|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + item_rows(audit, with_kind=True)) + "\n"


def render(audit: dict[str, Any]) -> str:
    """docs/label_audit.md from the audit record."""
    s = summary(audit)
    share = "not finished" if s["share_answerable"] is None else f"**{s['share_answerable']:.0%}**"
    lines = [
        "# Label audit: are the answerable test prompts answerable from the text the model sees?", "",
        "<!-- generated by `python -m tools.label_audit --render` from docs/label_audit.json; do not edit -->", "",
        f"{s['n']} answerable test requests drawn at random (seed {audit['seed']}) from the {audit['population']} "
        f"answerable evaluation requests of the test split, each read in full with the document text the model "
        f"sees ({audit.get('shown', 'its excerpt')}). {audit.get('reviewers', 'Verdicts written by hand.')}",
        f"Answerable from that text: {share} ({s['counts']['answerable']} of {s['n']}; partly: "
        f"{s['counts']['partly']}, not answerable: {s['counts']['not answerable']}). Target: >= 90%.", "",
        "Verdicts: *answerable* when the text holds everything a complete answer needs (every item of a "
        "\"list every\", every part of a multi-part request; analysis or advice counts when the facts it needs are "
        "there); *partly* when some of it is missing; *not answerable* when none is there. Partly counts as not "
        "answerable.", "",
        "Why it matters: a request labelled answerable whose excerpt does not hold the answer turns a *correct* "
        "refusal into over-refusal, and a fluent guess into \"grounded\" when the offline judge finds the "
        "guess's words in the excerpt. The offline judge checks lexical support (answer words and the reference's "
        "terms in the excerpt), not entailment: on long-form answers (lists, summaries) it can credit an answer "
        "that quotes the right passage but draws a wrong conclusion from it.", "",
        "| id | document | request | verdict | reason |", "|---|---|---|---|---|",
    ]
    return "\n".join(lines + item_rows(audit)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draw", metavar="PAIRS_DIR", help="draw a new audit from this pairs folder")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--max-examples", type=int, default=None, help="EvalConfig.max_examples of the run")
    parser.add_argument("--side", choices=("answerable", "unanswerable", "training"), default="answerable",
                        help="which label to audit (default: the test split's answerable prompts)")
    parser.add_argument("--render", action="store_true", help="only render the page (the default without --draw)")
    args = parser.parse_args(argv)
    from helpers.config import repo_root

    root = repo_root()
    record, page, draw_side, render_side = {
        "answerable": (AUDIT_JSON, AUDIT_MD, draw, render),
        "unanswerable": (UNANSWERABLE_JSON, UNANSWERABLE_MD, draw_unanswerable, render_unanswerable),
        "training": (TRAINING_JSON, TRAINING_MD, draw_training, render_training)}[args.side]
    if args.draw:
        drawn = draw_side(args.draw, args.n, args.seed, args.max_examples)
        (root / record).write_text(json.dumps(drawn, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    audit = json.loads((root / record).read_text(encoding="utf-8"))
    (root / page).write_text(render_side(audit), encoding="utf-8")
    print(json.dumps(summary(audit)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
