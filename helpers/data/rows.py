"""FACTS-schema rows in, validated rows out: every skipped row is counted with its reason.

Sources: ``"bundled"`` (the sample shipped in ``helpers/resources``), a ``.jsonl``/``.json`` or
``.csv`` file, or a Hugging Face dataset id (``google/FACTS-grounding-public``). The FACTS schema has
``system_instruction``, ``user_request`` and ``context_document`` (+ maybe ``id``); the bundled
sample adds reference answers and unanswerable requests that the offline teacher uses.

Bare documents (a folder of ``.txt``/``.md`` files, or a file/dataset with a ``text`` column and no
``user_request``) have no requests yet: ``helpers.data.corpus`` writes them first, and the rows it
returns (with the default system instruction) are validated like any other.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import BUNDLED_FACTS, BUNDLED_SAMPLE
from helpers.data.corpus import (
    CorpusOptions,
    CorpusReport,
    documents_from_records,
    is_bare_records,
    is_document_folder,
    read_folder,
    write_corpus_rows,
)

__all__ = [
    "REQUIRED_FIELDS",
    "BUNDLED_FACTS_PATHS",
    "BUNDLED_PATH",
    "DEFAULT_SYSTEM_INSTRUCTION",
    "Row",
    "RowReport",
    "clean_text",
    "load_rows",
    "read_raw_rows",
    "validate_rows",
]

REQUIRED_FIELDS = ("system_instruction", "user_request", "context_document")
#: Given to a row with no (or an empty) ``system_instruction``: people's own documents rarely carry one,
#: and the grounding rule itself comes from the prompt builder either way. Counted in the report.
DEFAULT_SYSTEM_INSTRUCTION = "Answer the user's request using only the information in the provided document."
BUNDLED_PATH = Path(__file__).resolve().parents[1] / "resources" / "facts_sample.jsonl"
#: The real FACTS Grounding rows (``"bundled-facts"``): 44 of 90-387 words, then 188 of 530-842 words.
BUNDLED_FACTS_PATHS = tuple(Path(__file__).resolve().parents[1] / "resources" / "facts_grounding" / name
                            for name in ("facts_grounding_short.jsonl", "facts_grounding_more.jsonl"))
#: Control characters except tab/newline/carriage return, plus lone surrogates and U+FFFD.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffd]")


@dataclass
class Row:
    """One validated seed row (FACTS fields + the optional references of the bundled sample)."""

    id: str
    system_instruction: str
    user_request: str
    context_document: str
    domain: str = ""
    answer: str = ""
    answer_sentence: str = ""
    unanswerable_requests: list[str] = field(default_factory=list)
    extra_qa: list[dict[str, str]] = field(default_factory=list)
    doc_id: str = ""  # same for every row that carries the same document text

    def fingerprint(self) -> str:
        """Stable hash of the row's content (keys the teacher cache, so an edited row is re-taught)."""
        payload = json.dumps([self.system_instruction, self.user_request, self.context_document, self.answer,
                              self.answer_sentence, self.unanswerable_requests, self.extra_qa], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]


@dataclass
class RowReport:
    """What validation did: rows read, kept, skipped by reason, texts cleaned by kind."""

    input_rows: int = 0
    valid_rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    cleaned: Counter = field(default_factory=Counter)
    defaulted: Counter = field(default_factory=Counter)  # field -> rows that got the default value
    corpus: dict[str, Any] = field(default_factory=dict)  # bare documents: CorpusReport.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        out = {"input_rows": self.input_rows, "valid_rows": self.valid_rows,
               "skipped": dict(sorted(self.skipped.items())), "cleaned": dict(sorted(self.cleaned.items())),
               "defaulted": dict(sorted(self.defaulted.items()))}
        return {**out, "corpus": self.corpus} if self.corpus else out


def clean_text(text: str) -> tuple[str, list[str]]:
    """Normalise newlines, drop control chars / replacement chars; return the text and what was cleaned."""
    notes = []
    if "\ufffd" in text:
        notes.append("non_utf8")
    if _CONTROL_RE.search(text.replace("\ufffd", "")):
        notes.append("control_chars")
    text = _CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return unicodedata.normalize("NFC", text).strip(), notes


def _read_jsonl(path: Path) -> list[Any]:
    rows = []
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", errors="replace")  # invalid bytes become U+FFFD, cleaned later
        try:
            rows.append(json.loads(text))
        except ValueError:
            rows.append({"__unparseable__": True})
    return rows


def _read_csv(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    rows = []
    for record in csv.DictReader(text.splitlines(keepends=True)):
        for key in ("unanswerable_requests", "extra_qa"):  # lists travel as JSON strings in CSV
            value = record.get(key)
            if isinstance(value, str) and value.strip().startswith("["):
                try:
                    record[key] = json.loads(value)
                except ValueError:
                    record[key] = []
        rows.append(record)
    return rows


def _read_hub(dataset_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        data = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - offline machines and typos both land here
        raise ValueError(f"input: could not load Hugging Face dataset {dataset_id!r} (config={config!r}, "
                         f"split={split!r}): {type(exc).__name__}: {exc}. Offline, use input='bundled' or "
                         f"a local .jsonl/.csv file.") from exc
    return [dict(r) for r in data]


def _read_stored_rows(source: str, *, hf_config: str | None = None, hf_split: str = "public") -> list[Any]:
    """Read rows as they are stored (no validation); unreadable lines become markers counted later."""
    if source == BUNDLED_FACTS:
        missing = [p for p in BUNDLED_FACTS_PATHS if not p.exists()]
        if missing:
            raise FileNotFoundError(f"the bundled FACTS rows {missing[0]} are missing from this install")
        return [row for p in BUNDLED_FACTS_PATHS for row in _read_jsonl(p)]
    path = BUNDLED_PATH if source == BUNDLED_SAMPLE else Path(source)
    suffix = path.suffix.lower()
    if path.exists() and suffix in (".jsonl", ".json"):
        if suffix == ".json" and path.read_bytes().lstrip().startswith(b"["):
            return list(json.loads(path.read_bytes().decode("utf-8", errors="replace")))
        return _read_jsonl(path)
    if path.exists() and suffix == ".csv":
        return _read_csv(path)
    if source == BUNDLED_SAMPLE:
        raise FileNotFoundError(f"the bundled sample {BUNDLED_PATH} is missing from this install")
    if path.suffix.lower() in (".jsonl", ".json", ".csv") or path.exists():
        raise FileNotFoundError(f"input: {source} does not exist or is not a .jsonl/.json/.csv file "
                                f"or a folder of .txt/.md documents")
    return _read_hub(source, hf_config, hf_split)


def read_raw_rows(source: str, *, hf_config: str | None = None, hf_split: str = "public",
                  corpus: CorpusOptions | None = None) -> list[Any]:
    """Read rows as they are stored (no validation); unreadable lines become markers counted later.

    Bare documents (a folder, or records with ``corpus.text_column`` and no ``user_request``) come back
    as the FACTS rows ``helpers.data.corpus`` wrote for them (``corpus``: writer and reading options)."""
    return _rows_or_corpus(source, hf_config, hf_split, corpus, None)[0]


# -- bare documents: the requests are written first (helpers.data.corpus) -------------------------
def _rows_or_corpus(source: str, hf_config: str | None, hf_split: str, corpus: CorpusOptions | None,
                    max_rows: int | None) -> tuple[list[Any], CorpusReport | None]:
    """(stored rows, None), or (rows written for bare documents, what reading and writing did)."""
    options = corpus or CorpusOptions()
    if source not in (BUNDLED_SAMPLE, BUNDLED_FACTS) and is_document_folder(source):
        documents, report = read_folder(source, clean=clean_text, max_words=options.max_document_words)
    else:
        raw = _read_stored_rows(source, hf_config=hf_config, hf_split=hf_split)
        if not is_bare_records(raw, options.text_column):
            return raw, None
        documents, report = documents_from_records(raw, clean=clean_text, text_column=options.text_column,
                                                   id_column=options.id_column,
                                                   max_words=options.max_document_words,
                                                   report=CorpusReport(source=str(source)))
    rows, _ = write_corpus_rows(documents, options, report, limit=max_rows)
    for row in rows:
        row["system_instruction"] = DEFAULT_SYSTEM_INSTRUCTION
    return rows, report


def _add_corpus_report(report: RowReport, corpus: CorpusReport) -> None:
    """Documents count as the input; each skipped document is counted with its reason."""
    report.input_rows = corpus.documents_read
    report.skipped.update(corpus.skipped)
    report.cleaned.update(corpus.cleaned)
    report.corpus = corpus.to_dict()


def _text_field(raw: dict[str, Any], name: str, report: RowReport) -> tuple[str | None, str | None]:
    """(cleaned text, None) or (None, skip reason)."""
    if name not in raw or raw[name] is None:
        return None, "missing_field"
    value = raw[name]
    if not isinstance(value, str):
        return None, "non_text"
    text, notes = clean_text(value)
    for note in notes:
        report.cleaned[note] += 1
    return (text, None) if text else (None, "empty")


def _optional_list(raw: dict[str, Any], name: str) -> list[Any]:
    value = raw.get(name)
    return list(value) if isinstance(value, (list, tuple)) else []


def _validate_one(raw: Any, index: int, report: RowReport) -> Row | str:
    if not isinstance(raw, dict) or raw.get("__unparseable__"):
        return "unparseable"
    values: dict[str, str] = {}
    for name in REQUIRED_FIELDS:
        text, reason = _text_field(raw, name, report)
        if reason in ("missing_field", "empty") and name == "system_instruction":
            text, reason = DEFAULT_SYSTEM_INSTRUCTION, None
            report.defaulted[name] += 1
        if reason:
            return reason
        values[name] = text  # type: ignore[assignment]
    optional = {name: clean_text(raw[name])[0] for name in ("domain", "answer", "answer_sentence")
                if isinstance(raw.get(name), str)}
    unanswerable = [clean_text(q)[0] for q in _optional_list(raw, "unanswerable_requests") if isinstance(q, str)]
    extra = [{k: clean_text(str(qa.get(k, "")))[0] for k in ("request", "answer", "answer_sentence")}
             for qa in _optional_list(raw, "extra_qa") if isinstance(qa, dict)]
    row_id = str(raw.get("id")) if raw.get("id") not in (None, "") else f"row-{index}"
    return Row(id=row_id, **values, **optional, unanswerable_requests=[q for q in unanswerable if q],
               extra_qa=[qa for qa in extra if qa["request"] and qa["answer"]])


def validate_rows(raw_rows: list[Any], report: RowReport | None = None) -> tuple[list[Row], RowReport]:
    """Keep rows with the three FACTS text fields; count skips (missing, empty, non-text, duplicate)."""
    report = report if report is not None else RowReport()
    report.input_rows += len(raw_rows)
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    seen_ids: set[str] = set()
    doc_ids: dict[str, str] = {}
    for index, raw in enumerate(raw_rows):
        result = _validate_one(raw, index, report)
        if isinstance(result, str):
            report.skipped[result] += 1
            continue
        key = (" ".join(result.context_document.split()).lower(), " ".join(result.user_request.split()).lower())
        if key in seen:
            report.skipped["duplicate"] += 1
            continue
        seen.add(key)
        if result.id in seen_ids:  # same id, different content: keep both, ids stay unique
            result.id = f"{result.id}-{index}"
        seen_ids.add(result.id)
        result.doc_id = doc_ids.setdefault(key[0], result.id)
        rows.append(result)
    report.valid_rows = len(rows)
    return rows, report


def load_rows(source: str = BUNDLED_SAMPLE, *, max_rows: int | None = None, hf_config: str | None = None,
              hf_split: str = "public", corpus: CorpusOptions | None = None) -> tuple[list[Row], RowReport]:
    """Read and validate rows; keep the first ``max_rows`` valid ones.

    ``corpus``: how bare documents are read and their requests written (default: the offline writer);
    only the first ``max_rows`` usable documents get requests written.

    Raises:
        ValueError: when no valid row remains (the message lists the skip reasons).
    """
    raw, corpus_report = _rows_or_corpus(source, hf_config, hf_split, corpus, max_rows)
    rows, report = validate_rows(raw)
    if corpus_report is not None:
        _add_corpus_report(report, corpus_report)
    if not rows and corpus_report is not None:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.skipped.items())) or "no documents"
        raise ValueError(f"input {source!r}: 0 rows from {report.input_rows} bare documents ({reasons}). A document "
                         f"needs a .txt/.md file (or a {(corpus or CorpusOptions()).text_column!r} column) with a "
                         f"sentence the request writer can turn into a question.")
    if not rows:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.skipped.items())) or "the input is empty"
        raise ValueError(f"input {source!r}: 0 valid rows out of {report.input_rows} ({reasons}). Each row needs "
                         f"non-empty text fields {', '.join(REQUIRED_FIELDS)}.")
    if max_rows is not None:
        rows = rows[:max_rows]
    return rows, report
