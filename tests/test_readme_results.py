"""The README's results section is exactly what the committed run records generate.

Numbers reach the README only through ``python -m helpers.readme_results`` reading ``results/``;
hand-editing a number there (or committing new results without regenerating) fails this test.
"""

from __future__ import annotations

import json

from helpers.config import repo_root
from helpers.readme_results import END, START, render_results, update_readme


def test_readme_results_section_matches_the_committed_records():
    text = (repo_root() / "README.md").read_text(encoding="utf-8")
    section = text.split(START, 1)[1].split(END, 1)[0]
    assert section == "\n" + render_results()


def test_render_reads_numbers_from_the_records(tmp_path):
    metrics = {
        "base": {"hallucination_rate": {"value": 0.9, "n": 10, "ci95": [0.6, 0.98]}},
        "aligned": {"hallucination_rate": {"value": 0.1, "n": 10, "ci95": [0.02, 0.4]}},
        "relative_hallucination_reduction": 0.8889, "banana": {}, "n_answerable": 10, "n_unanswerable": 10,
        "judge": "offline", "model": "m", "profile": "local",
    }
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "metrics.json").write_text(json.dumps(metrics))
    out = render_results(tmp_path)
    # 0.9 -> "90.0%", 0.1 -> "10.0%"; relative 0.8889 -> "88.9%"
    assert "90.0% [60.0–98.0] (n=10)" in out and "10.0% [2.0–40.0] (n=10)" in out
    assert "**88.9%**" in out
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold 12%\n{END}\ntail\n")
    assert update_readme(readme, tmp_path) is True
    assert "old 12%" not in readme.read_text() and readme.read_text().endswith(f"{END}\ntail\n")
