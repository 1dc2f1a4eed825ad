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

``--side reviewed`` audits the yardstick the headline counts (``docs/label_audit_reviewed.json`` / ``.md``): ``--n``
answerable evaluation requests drawn at random from those whose label the two-reader review (``--record``, default
the 104-document split's) confirmed, read by readers who took no part in that review. The verdicts and the share are
the answerable side's.

``--side review`` reads **every** evaluation prompt of the test split twice, blind
(``helpers.evaluate.label_review``): ``--draw PAIRS_DIR`` writes two waves of reading sheets (the prompts
shuffled, six sheets per wave, each holding only a key, the request and the text shown: no id, label or kind)
and the key map to ``--sheets`` (default ``outputs/audit``); each sheet goes to its own reader, who writes
``verdicts_<sheet>.json``; ``--merge PAIRS_DIR`` joins the verdicts to the prompts and writes the bundled
review (``helpers/resources/facts_grounding/test_label_review.json``) and ``docs/label_review.md``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers.evaluate.metrics import wilson_ci

AUDIT_JSON = Path("docs") / "label_audit.json"
AUDIT_MD = Path("docs") / "label_audit.md"
VERDICTS = ("answerable", "partly", "not answerable")

#: the unanswerable side's audit: its files, verdicts, and the kinds drawn (pair ``source``)
UNANSWERABLE_JSON = Path("docs") / "label_audit_unanswerable.json"
UNANSWERABLE_MD = Path("docs") / "label_audit_unanswerable.md"
UNANSWERABLE_VERDICTS = ("unanswerable", "partly", "answerable")
UNANSWERABLE_KINDS = ("near_miss", "answer_removed")

#: the audit of the reviewed answerable prompts (the headline's yardstick) and the review it draws from by default
REVIEWED_JSON = Path("docs") / "label_audit_reviewed.json"
REVIEWED_MD = Path("docs") / "label_audit_reviewed.md"
REVIEWED_FROM = Path("helpers") / "resources" / "facts_grounding" / "test_104_docs_label_review.json"

#: the training pairs' audit: its files, and the two kinds drawn (pair ``source`` -> the label it carries)
TRAINING_JSON = Path("docs") / "label_audit_training.json"
TRAINING_MD = Path("docs") / "label_audit_training.md"
TRAINING_KINDS = {"answer_removed": "unanswerable", "refusal": "answerable"}

#: the two-reader review of every test prompt: its page, waves (shuffle seeds), sheets per wave, kinds' names
REVIEW_MD = Path("docs") / "label_review.md"
REVIEW_WAVES = {"A": 1601, "B": 1602, "C": 1603, "D": 1604, "E": 1605, "F": 1606}
#: the training split's review (the head's fit and dev prompts): one round, sheets of about this many prompts
TRAIN_REVIEW_WAVES = ("E", "F")
TRAIN_REVIEW_MD = Path("docs") / "label_review_training.md"
REVIEW_SHEET_SIZE = 30
#: the rounds: the first read the evaluated prompts (``EvalConfig.max_examples`` 96 per side), the second the rest
REVIEW_ROUNDS = (("A", "B"), ("C", "D"))
REVIEW_SHEETS = 6
REVIEW_KINDS = {"refusal": "answerable (own document)", "paraphrase": "answerable (paraphrased request)",
                "near_miss": "near miss",
                "unrelated_doc": "another row's document", "answer_removed": "answer removed"}
REVIEW_RULE = ("a prompt keeps its label when both readers confirm it (answerable: both 'answerable'; "
               "unanswerable: both 'not answerable'); 'partly', a disagreement or a reversal leaves it out")


def _test_items(pairs_dir: str, max_examples: int | None) -> list[dict[str, Any]]:
    """The test split's evaluation items, as ``gemma-facts evaluate`` asks them."""
    from datasets import load_from_disk

    from helpers.evaluate.run import eval_items

    return eval_items(list(load_from_disk(pairs_dir)["test"]), max_examples, 42)


def _answerable_entry(item: dict[str, Any]) -> dict[str, Any]:
    """An audit entry: what the reader sees, and an empty verdict."""
    return {"id": item["id"], "doc_id": item["doc_id"], "request": item["request"], "excerpt": item["document"],
            "reference": item["reference"], "verdict": None, "reason": ""}


def draw(pairs_dir: str, n: int, seed: int, max_examples: int | None) -> dict[str, Any]:
    """``n`` random answerable evaluation items of the test split, with empty verdicts."""
    items = [it for it in _test_items(pairs_dir, max_examples) if it["answerable"]]
    picked = sorted(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    return {"pairs_dir": pairs_dir, "seed": seed, "population": len(items),
            "items": [_answerable_entry(items[i]) for i in picked]}


def draw_reviewed(pairs_dir: str, n: int, seed: int, max_examples: int | None,
                  review_path: Path = REVIEWED_FROM) -> dict[str, Any]:
    """``n`` random answerable evaluation items of the test split among those the review confirmed, empty verdicts.

    Why: the headline's rates count only the prompts both readers of the review confirmed, so the label audit
    of that yardstick is a draw from them, read afresh. The review must describe this very split (every
    evaluation item matched by its text and label), or the draw stops."""
    from helpers.config import repo_root
    from helpers.evaluate.label_review import confirmed_ids, load_review

    every = _test_items(pairs_dir, max_examples)
    kept, about = confirmed_ids(every, load_review(review_path if review_path.is_absolute()
                                                   else repo_root() / review_path))
    if kept is None:
        raise ValueError(f"{review_path} does not describe {pairs_dir}'s test split: {about['reason']}")
    answerable = [it for it in every if it["answerable"]]
    items = [it for it in answerable if it["id"] in kept]
    picked = sorted(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    return {"side": "reviewed", "pairs_dir": pairs_dir, "review": review_path.as_posix(), "seed": seed,
            "population": len(items), "answerable_built": len(answerable),
            "items": [_answerable_entry(items[i]) for i in picked]}


def draw_unanswerable(pairs_dir: str, n: int, seed: int, max_examples: int | None) -> dict[str, Any]:
    """``n`` random unanswerable evaluation items of the test split, ``n // 2`` per kind of
    ``UNANSWERABLE_KINDS`` (the rest to the first), with the text shown and empty verdicts."""
    items = [it for it in _test_items(pairs_dir, max_examples) if not it["answerable"]]
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


def review_items(pairs_dir: str, max_examples: int | None, split: str = "test") -> list[dict[str, Any]]:
    """Every evaluation item of a split, in evaluation order (``gemma-facts evaluate`` asks these of the test split;
    the select stage's head is fitted and chosen on the training split's, ids aside)."""
    from datasets import load_from_disk

    from helpers.evaluate.run import eval_items

    return eval_items(list(load_from_disk(pairs_dir)[split]), max_examples, 42, set_name=split)


def review_kind(sources: list[str]) -> str:
    """One kind per prompt: the unanswerable kind, a paraphrased request, or the row's own request ("refusal")."""
    for kind in ("near_miss", "unrelated_doc", "answer_removed"):
        if kind in sources:
            return kind
    return "paraphrase" if any(s.startswith("paraphrase") for s in sources) else "refusal"


def carried_readings(records: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Earlier review records' entries by their match key (``label_review.item_key``: the request and the text
    shown), so a rebuilt split's prompts that readers already read, word for word, keep those readings."""
    carried: dict[str, dict[str, Any]] = {}
    for record in records:
        for entry in json.loads(Path(record).read_text(encoding="utf-8"))["items"]:
            carried.setdefault(entry["key"], {**entry, "record": Path(record).name})
    return carried


def draw_review(pairs_dir: str, sheets: Path, max_examples: int | None, waves: tuple[str, ...] = ("A", "B"),
                skip_ids: frozenset[str] | set[str] = frozenset(), split: str = "test",
                n_sheets: int | None = REVIEW_SHEETS, skip_keys: frozenset[str] | set[str] = frozenset()
                ) -> dict[str, str]:
    """The blind reading sheets of two ``waves`` (each item once per wave, in another reader's sheet) over the
    evaluation items of ``split`` not in ``skip_ids`` (those an earlier round read) nor ``skip_keys`` (read word for
    word in an earlier record: ``carried_readings``), and the key map (sheet key -> item id), added to
    ``sheets/map.json``; returns the whole map. ``n_sheets`` None: sheets of about ``REVIEW_SHEET_SIZE`` prompts."""
    from helpers.evaluate.label_review import item_key

    items = [it for it in review_items(pairs_dir, max_examples, split)
             if it["id"] not in skip_ids and item_key(it["request"], it["document"]) not in skip_keys]
    if n_sheets is None:
        n_sheets = -(-len(items) // REVIEW_SHEET_SIZE)
    sheets.mkdir(parents=True, exist_ok=True)
    map_path = sheets / "map.json"
    mapping: dict[str, str] = json.loads(map_path.read_text(encoding="utf-8")) if map_path.exists() else {}
    for wave in waves:
        order = list(range(len(items)))
        random.Random(REVIEW_WAVES[wave]).shuffle(order)
        for c in range(n_sheets):
            name = f"{wave}{c + 1}"
            sheet = []
            for j, i in enumerate(order[c::n_sheets], 1):
                key = f"{name}-{j:02d}"
                mapping[key] = items[i]["id"]
                sheet.append({"key": key, "request": items[i]["request"], "text": items[i]["document"]})
            (sheets / f"sheet_{name}.json").write_text(json.dumps(sheet, indent=1, ensure_ascii=False),
                                                        encoding="utf-8")
    map_path.write_text(json.dumps(mapping, indent=1), encoding="utf-8")
    return mapping


def merge_review(pairs_dir: str, sheets: Path, split: str = "test",
                 carried: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The review record: every item of ``split`` that the drawn sheets gave to readers, with its two readings
    (reader = sheet name), from the sheets' verdicts, in evaluation order. With ``carried`` (``carried_readings``),
    an item no sheet held keeps the readings of the earlier entry with its key, each named ``record:id:sheet``."""
    from datasets import load_from_disk

    from helpers.evaluate.label_review import item_key
    from helpers.train.dpo import pairs_digest

    items = review_items(pairs_dir, None, split)
    mapping = json.loads((sheets / "map.json").read_text(encoding="utf-8"))
    readings: dict[str, list[dict[str, str]]] = {it["id"]: [] for it in items}
    for sheet_path in sorted(sheets.glob("sheet_*.json")):
        name = sheet_path.stem.removeprefix("sheet_")
        verdict_path = sheets / f"verdicts_{name}.json"
        verdicts = json.loads(verdict_path.read_text(encoding="utf-8")) if verdict_path.exists() else []
        keys = [s["key"] for s in json.loads(sheet_path.read_text(encoding="utf-8"))]
        if sorted(v["key"] for v in verdicts) != sorted(keys):
            raise ValueError(f"verdicts_{name}.json does not give exactly one verdict per key of sheet_{name}.json")
        for v in verdicts:
            if v["verdict"] not in VERDICTS:
                raise ValueError(f"{v['key']}: verdict {v['verdict']!r} is not one of {VERDICTS}")
            readings[mapping[v["key"]]].append({"reader": name, "verdict": v["verdict"],
                                                "reason": " ".join(v["reason"].split())})
    for it in items:
        earlier = (carried or {}).get(item_key(it["request"], it["document"]))
        if not readings[it["id"]] and earlier is not None:
            readings[it["id"]] = [{**r, "reader": f"{earlier['record']}:{earlier['id']}:{r['reader']}"}
                                  for r in earlier["readings"]]
    readers = ("round 1 the 179 prompts evaluation asks by default, round 2 the rest of the split" if split == "test"
               else "one round over the whole split")
    if carried is not None:
        readers = ("one round over the prompts no earlier review read word for word; the others keep the two "
                   "readings of the earlier entry with the same request and text (reader named record:id:sheet)")
    return {"about": f"every evaluation prompt of the bundled FACTS {split} split read by two blind readers "
                     "(tools/label_audit.py --side review; docs/label_review.md)",
            **({"carried_from": sorted({e["record"] for e in carried.values()})} if carried is not None else {}),
            f"{split}_fingerprint": pairs_digest(load_from_disk(pairs_dir)[split]), "rule": REVIEW_RULE,
            "readers": f"reading agents of the dev session, one per sheet of ~30 prompts ({readers}), each seeing "
                       "only the request and the text the model sees, shuffled, never the label or the kind; "
                       "told to be strict and to decide by reading, not by script",
            "items": [{"id": it["id"], "key": item_key(it["request"], it["document"]), "doc_id": it["doc_id"],
                       "kind": review_kind(list(it["source"])), "answerable": bool(it["answerable"]),
                       "request": " ".join(it["request"].split()), "readings": readings[it["id"]]}
                      for it in items if readings[it["id"]]]}


def review_summary(review: dict[str, Any]) -> dict[str, Any]:
    """Per kind: prompts, kept, each reader's share confirming the label, both, and the readers' agreement;
    and the earlier sampled audits' verdicts on the prompts the review keeps (a third reader)."""
    from helpers.evaluate.label_review import CONFIRMS, item_key, label_holds

    by_kind: dict[str, dict[str, Any]] = {}
    for kind in REVIEW_KINDS:
        entries = [e for e in review["items"] if e["kind"] == kind]
        if not entries:
            continue
        want = CONFIRMS[bool(entries[0]["answerable"])]
        first = [e["readings"][0]["verdict"] == want for e in entries]
        second = [e["readings"][1]["verdict"] == want for e in entries]
        by_kind[kind] = {"prompts": len(entries), "kept": sum(label_holds(e) for e in entries),
                         "first_reader_confirms": sum(first), "second_reader_confirms": sum(second),
                         "readers_agree": sum(e["readings"][0]["verdict"] == e["readings"][1]["verdict"]
                                              for e in entries)}
    # matched by request and text, not by id: a rebuilt split (a record with carried readings) reuses the bundled
    # split's ids for other prompts, and the sampled audits were drawn from the bundled split
    kept = {e["key"] for e in review["items"] if label_holds(e)}
    third: dict[str, Any] = {}
    root = Path(__file__).resolve().parents[1]
    for name, record, want in (("answerable", AUDIT_JSON, "answerable"),
                               ("unanswerable", UNANSWERABLE_JSON, "unanswerable")):
        path = root / record
        if path.exists():
            audited = [it for it in json.loads(path.read_text(encoding="utf-8"))["items"]
                       if item_key(it["request"], it["excerpt"]) in kept]
            third[name] = {"kept_and_sampled": len(audited), "confirmed": sum(it["verdict"] == want for it in audited)}
    return {"by_kind": by_kind, "kept": len(kept), "prompts": len(review["items"]), "third_reader": third}


def review_kind_table(summary: dict[str, Any]) -> list[str]:
    """The review pages' table: per kind, prompts, each reader's share confirming the label, agreement, kept."""
    rows = [f"| {REVIEW_KINDS[kind]} | {c['prompts']} | {c['first_reader_confirms'] / c['prompts']:.0%} | "
            f"{c['second_reader_confirms'] / c['prompts']:.0%} | {c['readers_agree'] / c['prompts']:.0%} | "
            f"**{c['kept']}** |" for kind, c in summary["by_kind"].items()]
    return ["| kind (label) | prompts | reader 1 confirms | reader 2 confirms | readers agree | kept |",
            "|---|---|---|---|---|---|", *rows]


def render_review(review: dict[str, Any]) -> str:
    """docs/label_review.md (the test split, every prompt listed) or docs/label_review_training.md (the training
    split: the counts; its prompts are in the record) from a review record."""
    from helpers.evaluate.label_review import label_holds

    if "train_fingerprint" in review:
        return render_training_review(review)
    s = review_summary(review)
    ans = s["by_kind"].get("refusal", {})
    per_reader = (f"{ans['first_reader_confirms'] / ans['prompts']:.0%} and "
                  f"{ans['second_reader_confirms'] / ans['prompts']:.0%}") if ans else "-"
    third = "; ".join(f"{name}: {t['confirmed']} of {t['kept_and_sampled']}" for name, t in s["third_reader"].items())
    lines = [
        "# The label review: every test prompt read by two blind readers", "",
        "<!-- generated by `python -m tools.label_audit --side review --render`; do not edit -->", "",
        f"Every evaluation prompt of the bundled FACTS test split ({s['prompts']} prompts, "
        f"{len({e['doc_id'] for e in review['items']})} documents; fingerprint "
        f"`{review['test_fingerprint'][:12]}…`) was read twice, by two different readers: {review['readers']}. "
        f"Rule, fixed before any verdict was read: {review['rule']}. The kept prompts are the ones "
        "`EvalConfig.label_review` scores (`reviewed_labels` in metrics.json; `helpers.evaluate.label_review`).", "",
        f"**{s['kept']} of {s['prompts']}** prompts keep their label. Each reader alone found "
        f"{per_reader} of the answerable-labelled prompts answerable from their text (the sampled audit, "
        "[label_audit.md](label_audit.md), found 83%).", "",
        *review_kind_table(s), "",
        f"A third reader, on the kept prompts: the earlier sampled audits ([label_audit.md](label_audit.md), "
        f"[label_audit_unanswerable.md](label_audit_unanswerable.md), other readers, drawn before this review) "
        f"confirm the label of {third or 'none of the'} kept prompts they happened to read (matched by request and "
        "text).", "",
        "Verdicts: *answerable* when the text holds everything a complete answer needs; *partly* when some of it "
        "is missing; *not answerable* when the text does not hold what the request asks (another subject, an "
        "entity it never mentions, the answering passage absent). The readers never saw which kind a prompt was.",
        "", "| id | kind | request | reader 1 | reader 2 | kept |", "|---|---|---|---|---|---|",
    ]
    for e in review["items"]:
        request = e["request"].replace("|", "/")
        request = request[:87] + "..." if len(request) > 90 else request
        r1, r2 = (f"{r['verdict']}: {r['reason'].replace('|', '/')}" for r in e["readings"][:2])
        lines.append(f"| {e['id']} | {REVIEW_KINDS[e['kind']]} | {request} | {r1} | {r2} | "
                     f"{'yes' if label_holds(e) else 'no'} |")
    return "\n".join(lines) + "\n"


def render_training_review(review: dict[str, Any]) -> str:
    """docs/label_review_training.md: per kind, how many of the head's training prompts keep their label."""
    from helpers.config import LABEL_REVIEW_TRAIN_FILE

    s = review_summary(review)
    return "\n".join([
        "# The label review of the training split: the head's fit and dev prompts read by two blind readers", "",
        "<!-- generated by `python -m tools.label_audit --side review --split train --render`; do not edit -->", "",
        f"Every prompt of the bundled FACTS training split ({s['prompts']}; fingerprint "
        f"`{review['train_fingerprint'][:12]}…`, the whole-document pairs of `configs/local_whole_clean_labels.json`) "
        f"was read twice, by two different readers: {review['readers']}. Rule, fixed before any verdict was read: "
        f"{review['rule']}. `TrainConfig.answerability_label_review` fits and chooses the answerability head on the "
        f"kept prompts only (`configs/local_head_reviewed.json`); the prompts, verdicts and reasons are in "
        f"`{LABEL_REVIEW_TRAIN_FILE.relative_to(LABEL_REVIEW_TRAIN_FILE.parents[3]).as_posix()}`.", "",
        f"**{s['kept']} of {s['prompts']}** prompts keep their label.", "", *review_kind_table(s)]) + "\n"


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
    # 30 readings cannot pin a share to a point: its 95% Wilson interval, as every rate's is given
    out = {"n": len(verdicts), "counts": counts, f"share_{holds}": share,
           "ci95": wilson_ci(counts[holds], len(verdicts)) if share is not None else None}
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
        f"Unanswerable from that text: {share}{f' [95% CI {ci[0]:.1%}, {ci[1]:.1%}]' if (ci := s['ci95']) else ''} ({s['counts']['unanswerable']} of {s['n']}; partly: "
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
    if audit.get("side") == "reviewed":
        title = "# Label audit of the headline's yardstick: are the reviewed answerable prompts answerable?"
        made_by, record = "--side reviewed --render", REVIEWED_JSON.as_posix()
        drawn = (f"the {audit['population']} answerable evaluation requests of the test split (`{audit['pairs_dir']}`) "
                 f"whose label both readers of the two-reader review (`{audit['review']}`) confirmed, the prompts the "
                 f"headline's rates count ({audit['answerable_built']} answerable as built)")
    else:
        title = "# Label audit: are the answerable test prompts answerable from the text the model sees?"
        made_by, record = "--render", AUDIT_JSON.as_posix()
        drawn = f"the {audit['population']} answerable evaluation requests of the test split"
    lines = [
        title, "",
        f"<!-- generated by `python -m tools.label_audit {made_by}` from {record}; do not edit -->", "",
        f"{s['n']} answerable test requests drawn at random (seed {audit['seed']}) from {drawn}, each read in full "
        f"with the document text the model sees ({audit.get('shown', 'its excerpt')}). "
        f"{audit.get('reviewers', 'Verdicts written by hand.')}",
        f"Answerable from that text: {share}{f' [95% CI {ci[0]:.1%}, {ci[1]:.1%}]' if (ci := s['ci95']) else ''} "
        f"({s['counts']['answerable']} of {s['n']}; partly: {s['counts']['partly']}, not answerable: "
        f"{s['counts']['not answerable']}). Target: >= 90%.", "",
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
    parser.add_argument("--side", choices=("answerable", "reviewed", "unanswerable", "training", "review"),
                        default="answerable",
                        help="which label to audit (default: the test split's answerable prompts)")
    parser.add_argument("--merge", metavar="PAIRS_DIR", help="review: join the readers' verdicts into the record")
    parser.add_argument("--sheets", default="outputs/audit", help="review: the folder of sheets and verdicts")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="review: which split's prompts")
    parser.add_argument("--round", type=int, choices=(1, 2), default=1,
                        help="review: 1 reads the evaluated prompts (--max-examples 96), 2 the rest of the split")
    parser.add_argument("--render", action="store_true", help="only render the page (the default without --draw)")
    parser.add_argument("--carry", nargs="+", default=None, metavar="RECORD",
                        help="review of a rebuilt split: prompts these records read word for word keep their readings, "
                             "only the others go on sheets (one round over the whole split)")
    parser.add_argument("--record", default=None, help="review: the record to write (default: the bundled one); "
                        f"reviewed: the review to draw from (default: {REVIEWED_FROM.as_posix()})")
    parser.add_argument("--page", default=None, help="review: the page to write (default: docs/label_review.md)")
    args = parser.parse_args(argv)
    from helpers.config import repo_root

    root = repo_root()
    if args.side == "review":
        from helpers.config import LABEL_REVIEW_FILE, LABEL_REVIEW_TRAIN_FILE

        record_path, page = (LABEL_REVIEW_FILE, REVIEW_MD) if args.split == "test" else (LABEL_REVIEW_TRAIN_FILE,
                                                                                    TRAIN_REVIEW_MD)
        record_path, page = Path(args.record or record_path), Path(args.page or page)
        carried = carried_readings([Path(r) for r in args.carry]) if args.carry else None
        if args.draw and carried is not None:
            mapping = draw_review(args.draw, Path(args.sheets), None, REVIEW_ROUNDS[0], split=args.split,
                                  n_sheets=None, skip_keys=frozenset(carried))
            print(f"{len(mapping)} sheet entries in {args.sheets}")
            return 0
        if args.draw and args.split == "train":
            mapping = draw_review(args.draw, Path(args.sheets), None, TRAIN_REVIEW_WAVES, split="train", n_sheets=None)
            print(f"{len(mapping)} sheet entries in {args.sheets}")
            return 0
        if args.draw:
            done = frozenset(e["id"] for e in json.loads(LABEL_REVIEW_FILE.read_text(encoding="utf-8"))["items"]
                             ) if args.round > 1 else frozenset()
            mapping = draw_review(args.draw, Path(args.sheets), args.max_examples, REVIEW_ROUNDS[args.round - 1], done)
            print(f"{len(mapping)} sheet entries in {args.sheets}")
            return 0
        if args.merge:
            merged = merge_review(args.merge, Path(args.sheets), args.split, carried)
            record_path.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        review = json.loads(record_path.read_text(encoding="utf-8"))
        (root / page).write_text(render_review(review), encoding="utf-8")
        print(json.dumps(review_summary(review)))
        return 0
    record, page, draw_side, render_side = {
        "answerable": (AUDIT_JSON, AUDIT_MD, draw, render),
        "reviewed": (REVIEWED_JSON, REVIEWED_MD, draw_reviewed, render),
        "unanswerable": (UNANSWERABLE_JSON, UNANSWERABLE_MD, draw_unanswerable, render_unanswerable),
        "training": (TRAINING_JSON, TRAINING_MD, draw_training, render_training)}[args.side]
    if args.draw:
        extra = {"review_path": Path(args.record)} if args.side == "reviewed" and args.record else {}
        drawn = draw_side(args.draw, args.n, args.seed, args.max_examples, **extra)
        (root / record).write_text(json.dumps(drawn, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    audit = json.loads((root / record).read_text(encoding="utf-8"))
    (root / page).write_text(render_side(audit), encoding="utf-8")
    print(json.dumps(summary(audit)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
