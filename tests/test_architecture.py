"""The layout is a rule, not a hope: import contracts, no private imports across modules, the README tree.

``pyproject.toml`` ``[tool.importlinter]`` holds the contracts: core < data < train | evaluate <
select < cli | pipeline | figures, core imports no stage, config and prompts are leaves, judges and
metrics load no model, and no import cycles.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("helpers", "tools")):
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                      for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names():
    files = [p for folder in ("helpers", "tools", "bench", "tests", "experiments") if (ROOT / folder).is_dir()
             for p in (ROOT / folder).rglob("*.py")]
    offenders = [hit for path in files for hit in _private_imports(path)]
    assert offenders == [], "make these names public or go through a public function:\n" + "\n".join(offenders)


def test_one_subpackage_per_stage_each_exposing_what_its_notebook_calls():
    import json

    exposed = {}
    for stage in ("data", "train", "evaluate", "select"):
        module = __import__(f"helpers.{stage}", fromlist=["__all__"])
        exposed[stage] = set(module.__all__)
        for name in module.__all__:
            assert getattr(module, name) is not None
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            for stage, names in re.findall(r"from helpers\.(data|train|evaluate|select) import ([\w, ]+)",
                                           "".join(cell["source"])):
                missing = {n.strip() for n in names.split(",")} - exposed[stage]
                assert not missing, f"{nb.name}: helpers.{stage} does not expose {missing}"


def test_the_readme_layout_tree_matches_the_folders():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = readme.split("<!-- layout:start -->", 1)[1].split("<!-- layout:end -->", 1)[0]
    named = set(re.findall(r"(helpers/[\w/]*\w(?:\.py)?)", tree))
    for entry in named:
        assert (ROOT / entry).exists(), f"README layout names {entry}, which does not exist"
    packages = {f"helpers/{p.parent.relative_to(ROOT / 'helpers')}" for p in (ROOT / "helpers").rglob("__init__.py")
                if p.parent != ROOT / "helpers"}
    assert packages <= named, f"README layout lacks {sorted(packages - named)}"


def test_tests_share_fixtures_through_conftest_not_by_importing_each_other():
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0].startswith(("test_", "conftest"))]
    assert offenders == []


def test_no_stage_export_is_shadowed_by_a_submodule_of_the_same_name():
    """``from helpers.evaluate import playground`` must give the function even after the module was imported."""
    for stage in ("data", "train", "evaluate", "select"):
        modules = {p.stem for p in (ROOT / "helpers" / stage).glob("*.py")}
        module = __import__(f"helpers.{stage}", fromlist=["__all__"])
        assert not set(module.__all__) & modules, f"helpers.{stage}: {set(module.__all__) & modules}"
