"""API drift: every keyword our code passes to TRL / PEFT / transformers / bitsandbytes exists.

TRL renames and removes arguments between minor versions (``rpo_alpha``, ``max_prompt_length`` and
``use_logits_to_keep`` are gone in 1.x). This test reads the source of ``helpers/`` and the notebook
code cells, finds calls to the library entry points below, and checks each keyword against the
signature of the *installed, pinned* version, so an upgrade that breaks a call fails here, in
milliseconds, instead of half-way through a Colab run.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _targets() -> dict[str, object]:
    import peft
    import transformers
    import trl

    return {
        "DPOConfig": trl.DPOConfig,
        "DPOTrainer": trl.DPOTrainer.__init__,
        "LoraConfig": peft.LoraConfig,
        "BitsAndBytesConfig": transformers.BitsAndBytesConfig.__init__,
        "prepare_model_for_kbit_training": peft.prepare_model_for_kbit_training,
        "get_peft_model": peft.get_peft_model,
        "TrainingArguments": transformers.TrainingArguments,
    }


def _accepted(target: object) -> tuple[set[str], bool]:
    """Names a callable/dataclass accepts, and whether it takes **kwargs."""
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target)}, False
    params = inspect.signature(target).parameters.values()
    names = {p.name for p in params}
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _sources() -> list[tuple[str, str]]:
    out = [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "helpers").rglob("*.py"))]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        out.append((str(nb.relative_to(ROOT)), code))
    for p in sorted((ROOT / "bench").glob("*.py")):
        out.append((str(p.relative_to(ROOT)), p.read_text()))
    return out


def _calls(tree: ast.AST, names: set[str]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
            if name in names:
                yield name, node


def test_every_library_keyword_we_pass_exists_in_the_pinned_versions():
    targets = _targets()
    checked, problems = 0, []
    for path, source in _sources():
        for name, call in _calls(ast.parse(source), set(targets)):
            accepted, var_kw = _accepted(targets[name])
            for kw in call.keywords:
                if kw.arg is None:  # **kwargs splat: checked where the dict is built
                    continue
                checked += 1
                if kw.arg not in accepted and not var_kw:
                    problems.append(f"{path}:{call.lineno} {name}({kw.arg}=...) is not accepted")
    assert not problems, "\n".join(problems)
    # The package must really call these APIs (guards against the scan silently finding nothing).
    assert checked >= 5, f"only {checked} keyword uses found"


@pytest.mark.parametrize("removed", ["rpo_alpha", "max_prompt_length", "use_logits_to_keep"])
def test_removed_trl_arguments_are_not_used(removed):
    import trl

    # These were removed from DPOConfig in TRL 1.x; passing them would raise TypeError.
    assert removed not in {f.name for f in dataclasses.fields(trl.DPOConfig)}
    for path, source in _sources():
        for _name, call in _calls(ast.parse(source), {"DPOConfig"}):
            assert removed not in {kw.arg for kw in call.keywords}, path


def test_real_configs_build_with_the_pinned_libraries():
    """Our config builders produce real library objects (not just matching names)."""
    from helpers.config import ModelConfig, config_for
    from helpers.models import lora_config, quantization_config

    cfg = config_for(ModelConfig, "colab")
    lora = lora_config(cfg)
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    quant = quantization_config(cfg)
    assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4" and quant.bnb_4bit_use_double_quant
