"""The failure catalogue (docs/failure_catalogue.md) is backed by tests that exist; plus its own cases."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "failure_catalogue.md"


def _catalogue_tests() -> list[tuple[str, str]]:
    return re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", CATALOGUE.read_text(encoding="utf-8"))


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_catalogue_has_at_least_twenty_cases_each_with_an_existing_test():
    entries = _catalogue_tests()
    assert len(entries) >= 20
    missing = [f"{f}::{t}" for f, t in entries if t not in _defined_tests(ROOT / f)]
    assert not missing, f"catalogue names tests that do not exist: {missing}"


def test_a_100k_token_document_is_cut_to_the_relevant_passage(smoke_model):
    from helpers.data.excerpts import select_excerpt, token_counter

    _, tok = smoke_model
    count = token_counter(tok)
    filler = "The committee met again and discussed routine matters of the county budget. "
    needle = "The Orvell bridge reopened on 14 May 2021 after repairs costing 3.2 million euros."
    document = filler * 4000 + needle + " " + filler * 4000
    assert count(document) > 100_000  # 8000 filler sentences of ~13+ tokens each
    excerpt = select_excerpt(document, "When did the Orvell bridge reopen?", count_tokens=count,
                             budget_tokens=200, passage_words=60)
    assert needle in excerpt.text
    assert count(excerpt.text) <= 200
