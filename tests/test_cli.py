"""``gemma-facts``: the installed command, one verb per stage, and a user's mistake as one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "helpers.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_installed_console_script_shows_every_verb():
    script = Path(sys.executable).with_name("gemma-facts")
    assert script.exists(), "pip install -e . installs the gemma-facts command"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for verb in ("data", "train", "select", "evaluate", "figures", "run"):
        assert verb in proc.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["data", "--input", "missing.jsonl"], "missing.jsonl does not exist"),
    (["data", "--set", "data.max_rowz=3"], "unknown field(s) ['max_rowz']"),
    (["data", "--set", "trian.max_steps=3"], "unknown section 'trian'"),
    (["train", "--config", "no/such.json"], "--config no/such.json: no such file"),
])
def test_a_users_mistake_is_one_line_and_exit_code_2(args, expected):
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"gemma-facts {args[0]}: error:")


def test_a_jsonl_with_no_valid_row_is_one_line_and_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text(json.dumps({"id": 1, "user_request": ""}) + "\n{broken\n")
    proc = _run("data", "--input", str(bad), "--out", str(tmp_path / "pairs"))
    assert proc.returncode == 2 and "0 valid rows out of 2" in proc.stderr and "Traceback" not in proc.stderr
    debug = _run("data", "--debug", "--input", str(bad), "--out", str(tmp_path / "pairs"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ValueError" in debug.stderr


def test_set_values_reach_the_stage_config_as_json_types(tmp_path, monkeypatch):
    from helpers.cli import merged_config_file
    from helpers.config import DataConfig, TrainConfig, config_for

    base = tmp_path / "base.json"
    base.write_text(json.dumps({"train": {"beta": 0.3}}))
    merged = merged_config_file(str(base), ["train.max_steps=7", "data.teacher=offline", "train.max_train_pairs=null"])
    monkeypatch.setenv("GEMMA_FACTS_CONFIG", merged)
    train = config_for(TrainConfig, "smoke")
    assert (train.beta, train.max_steps, train.max_train_pairs) == (0.3, 7, None)
    assert config_for(DataConfig, "smoke").teacher == "offline"
    with pytest.raises(ValueError, match="expected SECTION.FIELD=VALUE"):
        merged_config_file(None, ["max_steps=3"])


def test_a_verb_called_in_process_leaves_the_environment_as_it_found_it(tmp_path, monkeypatch):
    """`--set` reaches the stages through GEMMA_FACTS_CONFIG; called from Python (a notebook, a test), the
    variable must not outlive the call, or every later stage would read that run's settings."""
    import os

    from helpers.cli import main
    from helpers.config import CONFIG_ENV

    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert main(["data", "--set", "data.max_rows=0"]) == 2  # a user error, after the config file was made
    assert CONFIG_ENV not in os.environ
    monkeypatch.setenv(CONFIG_ENV, "mine.json")
    main(["data", "--set", "data.max_rows=0"])
    assert os.environ[CONFIG_ENV] == "mine.json"
