"""Stage 01 driver: rows → excerpts → teacher outputs → pairs → ``<out>`` + ``data_report.json``.

Resumable: every teacher output is appended (fsynced) to ``<out>_work/teacher_outputs.jsonl`` as
soon as it exists, and Gemini replies to ``<out>_work/gemini_cache.jsonl`` one by one; a killed
build rerun with the same config makes no repeated call for finished rows and produces the same
pairs. The pairs folder is written to a temporary folder and moved into place at the end.

With the Gemini teacher the quota plan (calls, limits, minutes today, days) is printed and the model
checked before the first call. A run the client stopped (the day's quota spent, a refused key, an
unknown model) raises ``GeminiRunStopped`` with the progress and what to do, and writes no pairs;
so does a build that would end with 0 pairs or an empty split (``EmptyBuildError``).

CLI::

    python -m helpers.data build --input PATH_OR_HF_ID --teacher offline|gemini --out DIR \\
        [--max-rows N] [--profile P] [--requests-per-day N]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers.config import DataConfig, config_for
from helpers.data.corpus import corpus_options
from helpers.data.excerpts import TokenCounter, document_budget, select_excerpt, token_counter
from helpers.data.pairs import (
    PAIR_COLUMNS,
    DocContext,
    build_answer_removed_pairs,
    build_row_pairs,
    build_unrelated_pairs,
    dedup_pairs,
    split_documents,
)
from helpers.data.rows import Row, load_rows
from helpers.gemini_client import GeminiRunStopped, JsonlCache
from helpers.prompts import render_prompt
from helpers.secrets import MissingSecretError, redact, require_secret

__all__ = [
    "EmptyBuildError",
    "build_preference_data",
    "format_report_summary",
    "main",
    "make_teacher",
    "pair_token_length",
    "percentile",
    "push_to_hub",
    "report_path_for",
    "row_excerpt",
    "work_dir_for",
]

#: Room for template paraphrases of a request ("According to the document, …").
PARAPHRASE_SLACK = "Using only the provided text: Please answer from the document."
TEACHER_CHUNK = 16


class EmptyBuildError(ValueError):
    """The build would save 0 pairs (or an empty split): nothing is written, the message says why."""


def work_dir_for(out_dir: str | Path) -> Path:
    """Where progress lives: ``<out>_work`` next to the pairs folder."""
    out = Path(out_dir)
    return out.with_name(out.name + "_work")


def report_path_for(out_dir: str | Path) -> Path:
    """``data_report.json`` sits next to the pairs folder (the output root in the default layout)."""
    return Path(out_dir).parent / "data_report.json"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0 for an empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return float(ordered[int(rank) - 1])


def make_teacher(cfg: DataConfig, work: Path) -> tuple[Any, str]:
    """The configured teacher; without a Gemini key, say so loudly and fall back to the offline teacher."""
    from helpers.data.teachers import GeminiTeacher, OfflineTeacher

    answer_words = max(12, int(cfg.answer_budget * 0.6))
    if cfg.teacher == "gemini":
        try:
            teacher = GeminiTeacher(cfg.gemini_model, cache_path=work / "gemini_cache.jsonl",
                                    concurrency=cfg.concurrency, requests_per_minute=cfg.requests_per_minute,
                                    requests_per_day=cfg.requests_per_day, answer_words=answer_words,
                                    mode=cfg.gemini_mode)
            return teacher, "gemini"
        except MissingSecretError as exc:
            bar = "*" * 78
            print(f"{bar}\n* NO GEMINI KEY: FALLING BACK TO THE OFFLINE TEACHER.\n* {exc}\n{bar}")
            return OfflineTeacher(seed=cfg.seed, answer_words=answer_words,
                                  near_miss_swaps=cfg.near_miss_swaps), "offline (fallback: no Gemini key)"
    return OfflineTeacher(seed=cfg.seed, answer_words=answer_words, near_miss_swaps=cfg.near_miss_swaps), "offline"


def _default_tokenizer(cfg: DataConfig) -> tuple[Any, str]:
    """The profile's tokenizer and prompt format (the only place data building touches model code)."""
    from helpers.config import ModelConfig
    from helpers.models import load_tokenizer

    model_cfg = config_for(ModelConfig, cfg.profile)
    return load_tokenizer(model_cfg), model_cfg.prompt_format


def split_max_length(cfg: DataConfig, split: str) -> int:
    """Prompt + answer budget of a split's pairs: ``test_max_length`` for the test split when set."""
    return cfg.test_max_length if split == "test" and cfg.test_max_length else cfg.max_length


def split_document_cap(cfg: DataConfig, split: str) -> int | None:
    """Cap on a split's excerpt tokens: ``test_document_tokens`` for the test split when set, else
    ``document_tokens`` (None: whatever the split's max length leaves)."""
    return cfg.test_document_tokens if split == "test" and cfg.test_document_tokens else cfg.document_tokens


def row_excerpt(row: Row, cfg: DataConfig, count: TokenCounter, split: str = "train") -> Any:
    """The excerpt for all of a row's prompts: budgeted for its longest request, keeping reference answers.

    ``split`` "test" uses ``DataConfig.test_document_tokens`` and ``test_max_length`` when set (see their
    comments)."""
    requests = [row.user_request, *(qa["request"] for qa in row.extra_qa), *row.unanswerable_requests]
    longest = max(requests, key=count) + " " + PARAPHRASE_SLACK
    budget = document_budget(count, longest, row.system_instruction, split_max_length(cfg, split), cfg.answer_budget)
    cap = split_document_cap(cfg, split)
    if cap is not None:  # shorter excerpts: CPU training cost grows with every token
        budget = min(budget, cap)
    must = [row.answer_sentence, *(qa.get("answer_sentence", "") for qa in row.extra_qa)]
    return select_excerpt(row.context_document, row.user_request, count_tokens=count, budget_tokens=budget,
                          passage_words=cfg.passage_words, must_include=must)


def _teacher_key(teacher_id: str, item: Any, seed: int) -> str:
    """Teacher (+ its settings), seed, row content, excerpt and near-miss material: any change re-teaches that row."""
    extra = "" if not (item.subjects or item.neighbour_request) else \
        f"|{hashlib.sha256(json.dumps([item.subjects, item.neighbour_request]).encode()).hexdigest()}"
    payload = f"{teacher_id}|{seed}|{item.row.fingerprint()}|{item.excerpt}{extra}"
    return hashlib.sha256(payload.encode()).hexdigest()


def _run_teacher(teacher: Any, items: list[Any], keys: list[str], cache: JsonlCache) -> tuple[list[Any], int]:
    """Teach rows not in the cache, chunk by chunk, appending each output as soon as its chunk returns."""
    from tqdm.auto import tqdm

    from helpers.data.teachers import TeacherOutput

    outputs: list[Any] = [None] * len(items)
    pending = []
    for i, key in enumerate(keys):
        if key in cache:
            outputs[i] = TeacherOutput.model_validate(cache.get(key))
        else:
            pending.append(i)
    preflight = getattr(teacher, "preflight", None)  # the Gemini teacher: quota plan + model check
    if pending and preflight is not None:
        preflight([items[i] for i in pending], done=len(items) - len(pending))
    failed = 0
    with tqdm(total=len(items), initial=len(items) - len(pending), desc=f"teacher ({teacher.name})") as bar:
        for start in range(0, len(pending), TEACHER_CHUNK):
            chunk = pending[start:start + TEACHER_CHUNK]
            for i, out in zip(chunk, teacher.teach([items[i] for i in chunk]), strict=True):
                if out is None:
                    failed += 1
                    continue
                cache.put(keys[i], out.model_dump(mode="json"))
                outputs[i] = out
            bar.update(len(chunk))
            if _stop_reason(teacher):  # every later chunk would be not_attempted: stop here
                break
    return outputs, failed


def _stop_reason(teacher: Any) -> str:
    return str(teacher.stats().get("stop_reason") or "")


def _raise_if_stopped(teacher: Any, outputs: list[Any], work: Path) -> None:
    """A stopped teacher run writes no pairs: a partial dataset must not reach notebook 02 unnoticed."""
    reason = _stop_reason(teacher)
    if not reason:
        return
    done = sum(o is not None for o in outputs)
    stats = teacher.stats()
    raise GeminiRunStopped(reason, f"{stats['stopped']}\nProgress: {done} of {len(outputs)} rows taught, kept in "
                                   f"{work} (0 repeated calls when you rerun). No pairs were written. To build "
                                   f"from what is taught so far instead, set DataConfig.max_rows={done} (rows "
                                   f"are sent in order, so the first ones are the taught ones).")


def _check_not_empty(splits: dict[str, list[dict[str, Any]]], cfg: DataConfig, rows: int, failed: int,
                     teacher: Any, built: int) -> None:
    """0 pairs, or an empty train/test split, is an error with its likely cause, never a saved dataset."""
    wants_test = cfg.test_fraction > 0 or bool(cfg.test_documents)
    empty = [name for name in ("train", "test") if not splits[name] and (name == "train" or wants_test)]
    if not empty:
        return
    stats = teacher.stats()
    total = sum(len(v) for v in splits.values())
    cause = (f"the teacher failed on {failed} of {rows} rows (failures by reason: {stats.get('failures')})"
             if failed else f"{built} pairs were built, {total} fit max_length={cfg.max_length}")
    raise EmptyBuildError(f"The build would save {total} pairs with an empty {' and '.join(empty)} split from "
                          f"{rows} rows: {cause}. Nothing was written to {cfg.pairs_dir}. Fix the cause (the "
                          f"teacher's failures above, more rows via DataConfig.max_rows, a larger "
                          f"DataConfig.max_length) and rerun: finished rows are cached.")


def pair_token_length(pair: dict[str, Any], prompt_format: str, tokenizer: Any) -> tuple[int, int]:
    """(prompt + chosen, prompt + longer answer) in tokens, as the trainer will see them (BOS/EOS included)."""
    if not hasattr(tokenizer, "encode"):  # a bare counting callable: count the plain rendering
        prompt = tokenizer(render_prompt(pair["prompt"], "plain")) + 1
        answers = [tokenizer(" " + m[0]["content"]) + 1 for m in (pair["chosen"], pair["rejected"])]
        return prompt + answers[0], prompt + max(answers)
    text = render_prompt(pair["prompt"], prompt_format, tokenizer)
    prompt = len(tokenizer.encode(text, add_special_tokens=prompt_format == "plain"))
    lead, tail = ("", 2) if prompt_format == "chat" else (" ", 1)  # <end_of_turn>\n vs EOS
    answers = [len(tokenizer.encode(lead + m[0]["content"], add_special_tokens=False)) + tail
               for m in (pair["chosen"], pair["rejected"])]
    return prompt + answers[0], prompt + max(answers)


def _features() -> Any:
    from datasets import Features, List, Value

    message = List({"role": Value("string"), "content": Value("string")})
    types = {"prompt": message, "chosen": message, "rejected": message, "answerable": Value("bool")}
    return Features({c: types.get(c, Value("string")) for c in PAIR_COLUMNS})


def _save_pairs(splits: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """Write the DatasetDict to a temporary folder, then move it into place (never a half-written ``out``).
    An empty split is left out (a training-only build, ``test_fraction=0``): ``datasets`` saves a split of no rows
    as a folder it cannot load back, and stage 03 names the missing test split clearly."""
    from datasets import Dataset, DatasetDict

    features = _features()
    splits = {name: [json.loads(redact(json.dumps(p))) for p in rows] for name, rows in splits.items() if rows}
    data = DatasetDict({name: Dataset.from_dict({c: [p[c] for p in rows] for c in PAIR_COLUMNS}, features=features)
                        for name, rows in splits.items()})
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    data.save_to_disk(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def near_miss_material(rows: list[Row], split_of: dict[str, str]) -> list[tuple[tuple[str, ...], str]]:
    """Per row: (named subjects of the other documents of its split, its topic neighbour's request).

    Only rows without written near misses or references (real FACTS rows) get material: the written
    sample brings its own. Neighbours and subjects never cross the train/test line."""
    from helpers.data.requests import named_subjects, topic_neighbours

    out: list[tuple[tuple[str, ...], str]] = [((), "")] * len(rows)
    for split in sorted(set(split_of.values())):
        idx = [i for i, r in enumerate(rows) if split_of[r.doc_id] == split and not r.answer]
        if len(idx) < 2:
            continue
        docs = [rows[i].context_document for i in idx]
        neighbours = topic_neighbours(docs, [rows[i].user_request for i in idx])
        subjects = {i: [s for s in named_subjects(rows[i].user_request)
                        if s.lower() in rows[i].context_document.lower()] for i in idx}
        for k, i in enumerate(idx):
            others = tuple(s for j in idx if rows[j].doc_id != rows[i].doc_id for s in subjects[j])
            j = neighbours[k]
            out[i] = (others, rows[idx[j]].user_request if j is not None else "")
    return out


def _build_pairs(rows: list[Row], docs: list[DocContext], outputs: list[Any], cfg: DataConfig,
                 split_of: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    """All pairs of the configured mix (the test split: ``test_pairs_per_kind``), and how many
    counterfactual (answer-removed) pairs were skipped."""
    by_split: dict[str, list[DocContext]] = {}
    for doc in {d.doc_id: d for d in docs}.values():
        by_split.setdefault(split_of[doc.doc_id], []).append(doc)
    pairs: list[dict[str, Any]] = []
    not_cut = 0
    for row, doc, taught in zip(rows, docs, outputs, strict=True):
        if taught is None:
            continue
        rng = random.Random(f"{cfg.seed}:pairs:{row.id}")
        mix = cfg.test_pairs_per_kind if split_of[doc.doc_id] == "test" and cfg.test_pairs_per_kind is not None \
            else cfg.pairs_per_kind
        pairs += build_row_pairs(row, doc, taught, mix, rng)
        pairs += build_unrelated_pairs(row, taught, doc.doc_id, by_split[split_of[doc.doc_id]],
                                       mix.get("unrelated", 0), rng)
        removed, skipped = build_answer_removed_pairs(row, doc, taught, mix.get("answer_removed", 0))
        pairs += removed
        not_cut += skipped
    return pairs, not_cut


def build_preference_data(cfg: DataConfig, tokenizer: Any = None, *, prompt_format: str | None = None,
                          teacher: Any = None) -> dict[str, Any]:
    """Build (or resume) the pairs dataset and its report.

    Args:
        cfg: stage config (input, teacher, token budget, pair counts, split, output folder).
        tokenizer: counts tokens (a Hugging Face tokenizer or a ``text -> int`` callable); default: the
            profile's tokenizer, loaded here and only here.
        prompt_format: "chat" or "plain" for the length check; default: the profile's model config.
        teacher: an object with ``name``, ``teach`` and ``stats`` (and optionally ``cache_id``);
            default: from ``cfg.teacher``.
    Returns:
        The report dict, also written to ``data_report.json`` next to the pairs folder.
    """
    started = time.time()
    if tokenizer is None:
        tokenizer, default_format = _default_tokenizer(cfg)
        prompt_format = prompt_format or default_format
    prompt_format = prompt_format or "plain"
    out = Path(cfg.pairs_dir)
    work = work_dir_for(out)
    work.mkdir(parents=True, exist_ok=True)
    rows, row_report = load_rows(cfg.input, max_rows=cfg.max_rows, hf_config=cfg.hf_config, hf_split=cfg.hf_split,
                                 corpus=corpus_options(cfg, work, split_documents))  # bare documents: requests first
    if cfg.rows_as_real:  # written rows built from their request alone, as real rows are (DataConfig)
        rows = [dataclasses.replace(r, answer="", answer_sentence="", extra_qa=[], unanswerable_requests=[])
                for r in rows]
    count = token_counter(tokenizer)
    split_of = split_documents([r.doc_id for r in rows], cfg.test_fraction, cfg.seed, n_test=cfg.test_documents)
    excerpts = [row_excerpt(row, cfg, count, split_of[row.doc_id]) for row in rows]
    docs = [DocContext(row.doc_id, row.domain, ex.text) for row, ex in zip(rows, excerpts, strict=True)]
    teacher, teacher_used = (teacher, teacher.name) if teacher is not None else make_teacher(cfg, work)
    from helpers.data.teachers import TeachItem

    material = near_miss_material(rows, split_of)
    items = [TeachItem(row, doc.excerpt, subjects, neighbour, row.context_document)
             for row, doc, (subjects, neighbour) in zip(rows, docs, material, strict=True)]
    teacher_id = getattr(teacher, "cache_id", teacher.name)
    keys = [_teacher_key(teacher_id, item, cfg.seed) for item in items]
    outputs, failed = _run_teacher(teacher, items, keys, JsonlCache(work / "teacher_outputs.jsonl"))
    _raise_if_stopped(teacher, outputs, work)
    built, not_cut = _build_pairs(rows, docs, outputs, cfg, split_of)
    pairs, duplicates = dedup_pairs(built)
    lengths = [pair_token_length(p, prompt_format, tokenizer) for p in pairs]
    fitting = [p for p, (_, longest) in zip(pairs, lengths, strict=True)
               if longest <= split_max_length(cfg, split_of[p["doc_id"]])]
    splits = {name: [p for p in fitting if split_of[p["doc_id"]] == name] for name in ("train", "test")}
    _check_not_empty(splits, cfg, len(rows), failed, teacher, len(built))
    _save_pairs(splits, out)
    # the teacher's own counters cover only the rows it taught in this run; each output keeps its flags
    flags: Counter = Counter()
    for taught in outputs:
        if taught is not None:
            flags.update(taught.flags)
    report = _report(cfg, row_report, rows, excerpts, teacher, teacher_used, failed, built, fitting, splits,
                     duplicates, [chosen for p, (chosen, _) in zip(pairs, lengths, strict=True)
                                  if split_of[p["doc_id"]] != "test"],
                     [chosen for p, (chosen, _) in zip(pairs, lengths, strict=True) if split_of[p["doc_id"]] == "test"],
                     prompt_format, started)
    report["teacher"]["flags"] = dict(sorted(flags.items()))  # every row of the build, cached ones included
    if cfg.pairs_per_kind.get("answer_removed", 0):
        report["pairs"]["answer_removed_skipped"] = not_cut  # answer could not be cut out cleanly
    if row_report.corpus:  # bare documents: files read and skipped, requests written and rejected
        report["corpus"] = row_report.corpus
    path = report_path_for(out)
    path.write_text(redact(json.dumps(report, indent=2)))
    return report


def _report(cfg: DataConfig, row_report: Any, rows: list[Row], excerpts: list[Any], teacher: Any, teacher_used: str,
            failed: int, built: list[dict[str, Any]], pairs: list[dict[str, Any]],
            splits: dict[str, list[dict[str, Any]]], duplicates: int, lengths: list[int], test_lengths: list[int],
            prompt_format: str, started: float) -> dict[str, Any]:
    """The build's record. ``lengths``: prompt + chosen tokens of the training pairs (the budget that costs
    CPU time); ``test_lengths`` the test split's, summarised beside them (its own budget, test_max_length)."""
    docs = {name: {p["doc_id"] for p in rows_} for name, rows_ in splits.items()}
    return {
        "profile": cfg.profile, "input": cfg.input, "seed": cfg.seed,
        "input_rows": row_report.input_rows, "valid_rows": row_report.valid_rows, "seed_rows": len(rows),
        "skipped": dict(sorted(row_report.skipped.items())), "cleaned": dict(sorted(row_report.cleaned.items())),
        "excerpts": {"whole_document": sum(e.whole for e in excerpts),
                     "passages_selected": sum(not e.whole and not e.truncated for e in excerpts),
                     "truncated": sum(e.truncated for e in excerpts)},
        "teacher": {"requested": cfg.teacher, "used": teacher_used, "failed_rows": failed, **teacher.stats()},
        "pairs": {"total": len(pairs), "built": len(built), "duplicates_dropped": duplicates,
                  "too_long_dropped": len(built) - duplicates - len(pairs),
                  "by_type": dict(sorted(Counter(p["pair_type"] for p in pairs).items())),
                  "by_source": dict(sorted(Counter(p["source"] for p in pairs).items()))},
        "expansion": round(len(pairs) / max(1, len(rows)), 2),
        "split": {"train": len(splits["train"]), "test": len(splits["test"]), "train_docs": len(docs["train"]),
                  "test_docs": len(docs["test"]), "doc_overlap": len(docs["train"] & docs["test"])},
        "tokens": {"prompt_format": prompt_format, "max_length": cfg.max_length,
                   "test_max_length": split_max_length(cfg, "test"),
                   "p50": percentile(lengths, 50), "p95": percentile(lengths, 95), "max": max(lengths, default=0),
                   "share_within_max_length": round(sum(n <= cfg.max_length for n in lengths) / max(1, len(lengths)), 4),
                   "lengths": lengths,
                   "test": {"p50": percentile(test_lengths, 50), "p95": percentile(test_lengths, 95),
                            "max": max(test_lengths, default=0)}},
        "elapsed_s": round(time.time() - started, 1),
    }


def format_report_summary(report: dict[str, Any]) -> str:
    """A few readable lines from ``data_report.json`` (for notebooks and logs)."""
    pairs, split, tokens, teacher = report["pairs"], report["split"], report["tokens"], report["teacher"]
    skipped = ", ".join(f"{k} {v}" for k, v in report["skipped"].items()) or "none"
    lines = [
        f"rows: {report['input_rows']} read, {report['valid_rows']} valid, {report['seed_rows']} used "
        f"(skipped: {skipped})",
        f"teacher: {teacher['used']} | API calls {teacher['api_calls']}, cache hits {teacher['cache_hits']}, "
        f"retries {teacher['retries']}, failed rows {teacher['failed_rows']}",
        f"pairs: {pairs['total']} ({report['expansion']}x per seed row) | " +
        ", ".join(f"{k} {v}" for k, v in pairs["by_type"].items()),
        f"dropped: {pairs['duplicates_dropped']} duplicates, {pairs['too_long_dropped']} longer than "
        f"{tokens['max_length']} tokens"
        + (f", {pairs['answer_removed_skipped']} answer-removed requests skipped (answer not cleanly cut out)"
           if pairs.get("answer_removed_skipped") else ""),
        f"split: train {split['train']} pairs / {split['train_docs']} docs, test {split['test']} pairs / "
        f"{split['test_docs']} docs, shared docs {split['doc_overlap']}",
        f"tokens (prompt + chosen, {tokens['prompt_format']}): p50 {tokens['p50']:.0f}, p95 {tokens['p95']:.0f}, "
        f"{tokens['share_within_max_length']:.1%} within {tokens['max_length']}"
        + (f"; test split (whole documents up to {tokens['test_max_length']}): p50 {tokens['test']['p50']:.0f}, "
           f"max {tokens['test']['max']}" if tokens.get("test_max_length", tokens["max_length"]) != tokens["max_length"]
           else ""),
    ]
    if teacher.get("stopped"):
        lines.append(f"TEACHER STOPPED: {teacher['stopped']}")
    if teacher["failed_rows"]:
        lines.append(f"{teacher['failed_rows']} rows got no teacher output (failures: {teacher.get('failures')}); "
                     f"rerun the build to retry only those rows")
    return "\n".join(lines)


def push_to_hub(pairs_dir: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload the pairs DatasetDict to the Hub (needs ``HF_TOKEN``); returns the dataset URL."""
    from datasets import load_from_disk

    token = require_secret("hf")  # raises a clear MissingSecretError offline / without a token
    load_from_disk(str(pairs_dir)).push_to_hub(repo_id, token=token, private=private)
    return f"https://huggingface.co/datasets/{repo_id}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or resume) the preference pairs")
    build.add_argument("--input", help="'bundled', a .jsonl/.csv path, a Hugging Face dataset id, or a "
                                           "folder of .txt/.md documents (requests are written for them)")
    build.add_argument("--teacher", choices=("offline", "gemini"))
    build.add_argument("--out", help="pairs folder (default: <output root>/pairs)")
    build.add_argument("--max-rows", type=int)
    build.add_argument("--profile", choices=("colab", "local", "smoke"))
    build.add_argument("--requests-per-day", type=int, help="Gemini daily budget (default: the assumed free tier)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the report summary as JSON."""
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in (("input", args.input), ("teacher", args.teacher), ("pairs_dir", args.out),
                                   ("max_rows", args.max_rows), ("requests_per_day", args.requests_per_day))
                 if v is not None}
    cfg = config_for(DataConfig, args.profile, **overrides)
    report = build_preference_data(cfg)
    summary = {k: v for k, v in report.items() if k != "tokens"}
    summary["tokens"] = {k: v for k, v in report["tokens"].items() if k != "lengths"}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
