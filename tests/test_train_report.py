"""Records name the code that produced them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers.train.report import code_revision


def test_code_revision_names_this_checkout_or_none_outside_git(tmp_path, monkeypatch):
    rev = code_revision()
    if rev is not None:  # a git checkout: the commit git itself reports
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip()
        assert rev["commit"] == head and isinstance(rev["dirty"], bool)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable: no revision, no exception
    assert code_revision() is None
