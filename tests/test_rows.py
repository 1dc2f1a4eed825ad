"""Row loading and validation: every skipped row is counted with its reason."""

from __future__ import annotations

import csv
import json

import pytest

from helpers.data.rows import BUNDLED_PATH, clean_text, load_rows, validate_rows

GOOD = {"id": "a", "system_instruction": "Be brief.", "user_request": "What colour is the door?",
        "context_document": "The door is green. The roof is red."}


def write_jsonl(path, records, extra_lines=()):
    lines = [json.dumps(r).encode() for r in records] + list(extra_lines)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bundled_sample_loads_with_its_references():
    rows, report = load_rows("bundled")
    assert report.valid_rows == report.input_rows == len(rows) > 0
    assert report.skipped == {}
    assert BUNDLED_PATH.exists()
    with_refs = [r for r in rows if r.answer and r.unanswerable_requests]
    assert with_refs, "the bundled sample carries reference answers and unanswerable requests"


def test_each_bad_row_is_skipped_and_counted_by_reason(tmp_path):
    records = [
        GOOD,
        {**GOOD, "id": "b"},  # same document + request → duplicate
        {k: v for k, v in GOOD.items() if k != "user_request"},  # missing_field
        {**GOOD, "id": "c", "user_request": "   "},  # empty
        {**GOOD, "id": "d", "context_document": 42},  # non_text
        {**GOOD, "id": "e", "user_request": None},  # missing_field (null)
        ["not", "an", "object"],  # unparseable
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", records, extra_lines=[b"{broken json"])
    rows, report = load_rows(str(path))
    assert [r.id for r in rows] == ["a"]
    # 8 lines: 1 kept, 2 missing_field, 1 empty, 1 non_text, 1 duplicate, 2 unparseable
    assert report.input_rows == 8 and report.valid_rows == 1
    assert report.skipped == {"missing_field": 2, "empty": 1, "non_text": 1, "duplicate": 1, "unparseable": 2}


def test_a_row_without_a_system_instruction_gets_the_default_and_is_counted(tmp_path):
    from helpers.data.rows import DEFAULT_SYSTEM_INSTRUCTION

    records = [{k: v for k, v in GOOD.items() if k != "system_instruction"},
               {**GOOD, "id": "b", "user_request": "Is the roof red?", "system_instruction": "  "},
               {**GOOD, "id": "c", "user_request": "Is it old?", "system_instruction": 7}]  # not text: skipped
    rows, report = load_rows(str(write_jsonl(tmp_path / "rows.jsonl", records)))
    assert [r.system_instruction for r in rows] == [DEFAULT_SYSTEM_INSTRUCTION] * 2
    assert report.defaulted == {"system_instruction": 2} and report.skipped == {"non_text": 1}
    assert report.to_dict()["defaulted"] == {"system_instruction": 2}


def test_control_characters_and_invalid_utf8_are_cleaned_not_fatal(tmp_path):
    dirty = json.dumps({**GOOD, "user_request": "What colour\x07 is the door?"}).encode()
    broken_bytes = json.dumps({**GOOD, "id": "z", "user_request": "Is the roof red?"}).encode().replace(
        b"roof red", b"roof \xff\xfered")
    path = tmp_path / "dirty.jsonl"
    path.write_bytes(dirty + b"\n" + broken_bytes + b"\n")
    rows, report = load_rows(str(path))
    assert [r.user_request for r in rows] == ["What colour is the door?", "Is the roof red?"]
    assert report.cleaned == {"control_chars": 1, "non_utf8": 1}


def test_clean_text_normalises_newlines_and_strips():
    assert clean_text("  a\r\nb\rc\x00 ") == ("a\nb\nc", ["control_chars"])


def test_zero_valid_rows_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"user_request": "q"}, {**GOOD, "context_document": ""}])
    with pytest.raises(ValueError, match=r"0 valid rows out of 2 \(empty: 1, missing_field: 1\)"):
        load_rows(str(path))


def test_csv_input_with_list_columns_as_json(tmp_path):
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*GOOD, "unanswerable_requests"])
        writer.writeheader()
        writer.writerow({**GOOD, "unanswerable_requests": json.dumps(["Who built it?"])})
    rows, _ = load_rows(str(path))
    assert rows[0].unanswerable_requests == ["Who built it?"]


def test_rows_sharing_a_document_share_a_doc_id_and_ids_stay_unique():
    rows, _ = validate_rows([GOOD, {**GOOD, "user_request": "What colour is the roof?"},
                             {**GOOD, "context_document": "Another text entirely."}])
    assert [r.doc_id for r in rows] == ["a", "a", "a-2"]
    assert [r.id for r in rows] == ["a", "a-1", "a-2"]


def test_max_rows_keeps_the_first_valid_rows(tmp_path):
    records = [{**GOOD, "id": str(i), "user_request": f"Question {i}?"} for i in range(5)]
    rows, report = load_rows(str(write_jsonl(tmp_path / "r.jsonl", records)), max_rows=2)
    assert [r.id for r in rows] == ["0", "1"] and report.valid_rows == 5


def test_missing_local_file_and_unreachable_hub_id_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rows(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="could not load Hugging Face dataset 'no-such-org/no-such-set'"):
        load_rows("no-such-org/no-such-set")
