"""The adapter's ``README.md``: what it is, what it was trained on, how well, how to use it, its limits.

Rendered from the train report alone (no model needed), so the card always states the numbers of
the run that wrote the adapter. The usage block is real code: the tests execute it on the smoke
adapter. The whole text goes through ``redact`` so a key can never end up on the Hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.config import EMBEDDED_GEMMA3, REFUSAL, TINY_GEMMA2

__all__ = ["render_model_card", "usage_snippet", "write_model_card"]

OFFLINE_BASES = {EMBEDDED_GEMMA3: "Gemma 3 270M (GGUF shipped on PyPI, dequantised offline)",
                 TINY_GEMMA2: "a tiny random Gemma 2 (smoke tests only: its outputs are noise)"}


def usage_snippet(model_id: str, prompt_format: str, adapter: str) -> str:
    """Python that loads base + adapter and answers from a document with ``pipeline()``."""
    special = ", add_special_tokens=False" if prompt_format == "chat" else ""  # the chat template writes BOS
    return f'''from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from helpers.models import resolve_model_path  # hub ids pass through; offline ids map to the local build
from helpers.prompts import build_messages, render_prompt

ADAPTER = "{adapter}"  # this folder, or the Hub repo it was pushed to
base = AutoModelForCausalLM.from_pretrained(resolve_model_path("{model_id}"), dtype="auto",
                                            attn_implementation="eager")
model = PeftModel.from_pretrained(base, ADAPTER).eval()
tokenizer = AutoTokenizer.from_pretrained(ADAPTER)
generate = pipeline("text-generation", model=model, tokenizer=tokenizer)

document = "The Eiffel Tower is 330 metres tall. It was completed in 1889."
prompt = render_prompt(build_messages(document, "When was the tower completed?"), "{prompt_format}", tokenizer)
answer = generate(prompt, max_new_tokens=48, do_sample=False, return_full_text=False{special})
print(answer[0]["generated_text"])'''


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _metrics_table(report: dict[str, Any]) -> str:
    train, evals = report.get("final_train", {}), report.get("final_eval", {})
    rows = ["| metric | train (last log) | eval (dev split) |", "|---|---|---|"]
    for key in ("loss", "rewards/margins", "rewards/accuracies"):
        rows.append(f"| {key} | {_fmt(train.get(key))} | {_fmt(evals.get(key))} |")
    return "\n".join(rows)


def _config_table(report: dict[str, Any]) -> str:
    model, train = report["config"]["model"], report["config"]["train"]
    picked = {"quantisation": "nf4 4-bit, double quant" if model["load_in_4bit"] else "none (16/32-bit)",
              "LoRA": f"r={model['lora_r']}, alpha={model['lora_alpha']}, dropout={model['lora_dropout']}, "
                      f"modules={', '.join(model['lora_target_modules'])}",
              "loss": " + ".join(f"{w}×{t}" for t, w in zip(train["loss_type"], train["loss_weights"], strict=True)),
              "beta": train["beta"], "learning rate": f"{train['learning_rate']} ({train['lr_scheduler_type']})",
              "batch": f"{train['per_device_train_batch_size']} × {train['gradient_accumulation_steps']} accumulation",
              "max length": model["max_length"], "prompt format": model["prompt_format"],
              "precision": ", ".join(k for k, v in report.get("precision", {}).items() if v) or "fp32",
              "steps": report.get("steps")}
    selection = report.get("checkpoint_selection")
    if selection:  # the adapter is an earlier checkpoint, chosen on dev (helpers.select.dev_choice)
        kept = (f"step {selection['chosen_step']} of {selection['final_step']}"
                if selection.get("beats_base", True) else
                f"the base (LoRA B = 0): none of the steps up to {selection['final_step']} beat it on dev")
        picked["weights kept"] = (f"{kept}, chosen on {selection['dev_documents']} held-out training documents "
                                  f"({selection['rule']})")
    return "\n".join(["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in picked.items()])


def _data_section(report: dict[str, Any]) -> str:
    data = report.get("data", {})
    lines = []
    for split in ("train", "dev"):  # the test split is never read during training
        if not data.get(split, {}).get("pairs"):
            continue
        info = data.get(split, {})
        kinds = ", ".join(f"{k} {v}" for k, v in info.get("pair_types", {}).items())
        lines.append(f"- **{split}**: {info.get('pairs', 0)} pairs from {info.get('documents', 0)} documents"
                     f"{' (' + kinds + ')' if kinds else ''}")
    return "\n".join(lines)


def _footprint_line(report: dict[str, Any]) -> str:
    fp, peak = report.get("weight_footprint", {}), report.get("peak_memory", {})

    def size(v: Any) -> str:
        if not v:
            return "n/a"
        return f"{v / 1024**3:.2f} GiB" if v >= 1024**3 else f"{v / 1024**2:.1f} MiB"

    return (f"Base weights: {size(fp.get('4bit_bytes'))} in 4-bit nf4 vs {size(fp.get('16bit_bytes'))} in "
            f"{fp.get('16bit_dtype', '16-bit')}; peak training memory {size(peak.get('bytes'))} ({peak.get('kind')}); "
            f"{_fmt(report.get('seconds_per_step'))} s/step on {report.get('machine', {}).get('gpu') or 'CPU'}.")


def render_model_card(report: dict[str, Any], adapter_ref: str = ".") -> str:
    """Markdown (with Hub front matter) for the adapter trained in ``report``."""
    from helpers.secrets import redact

    model = report["config"]["model"]
    model_id = report["model_id"]
    base_line = OFFLINE_BASES.get(model_id, f"[{model_id}](https://huggingface.co/{model_id})")
    front = ["---", "library_name: peft", "pipeline_tag: text-generation", "license: gemma",
             "tags: [dpo, qlora, trl, gemma, grounding, gemma-facts]"]
    if model_id not in OFFLINE_BASES:
        front.append(f"base_model: {model_id}")
    text = "\n".join(front + ["---", "", f"# gemma-facts DPO adapter for {model_id}", "",
        "A LoRA adapter trained with DPO (QLoRA) to answer strictly from the document in the prompt and, when "
        f'the document lacks the answer, to reply exactly: "{REFUSAL}"', "",
        f"- Base model: {base_line}", f"- Profile: `{report['profile']}`; trained {report['date']}",
        f"- Prompt format: `{model['prompt_format']}` (build prompts with `helpers.prompts`; both base and "
        "adapter must see the same format)", "", "## Data", "",
        "Preference pairs from FACTS-style rows (document, request), split by document so no test document is "
        "seen in training:", "", _data_section(report), "", "## Training", "", _config_table(report), "",
        _footprint_line(report), "", "## Metrics", "", _metrics_table(report), "",
        "`rewards/accuracies` is the share of pairs whose chosen answer gains more likelihood over the base model "
        "than the rejected one; these are preference metrics, not answer quality. See `metrics.json` (notebook 03) for "
        "grounded-answer and refusal rates judged on the test split.", "", "## Usage", "", "```python",
        usage_snippet(model_id, model["prompt_format"], adapter_ref), "```", "", "## Limits", "",
        "- Trained on few documents and synthetic/teacher pairs; refusal behaviour may not transfer to other "
        "domains or to documents much longer than the training budget "
        f"({model['max_length']} tokens for prompt + answer).",
        "- DPO teaches a preference, not facts: the adapter can still misread a document or refuse when the "
        "answer is present (over-refusal). Check `metrics.json` before relying on it.",
        "- Only the adapter is released; the base model's license and use policy apply.",
        "- Load it only on the base listed above (helpers.adapters.load_adapter checks this).", ""])
    return redact(text)


def write_model_card(adapter_dir: str | Path, report: dict[str, Any]) -> Path:
    """Write ``README.md`` into the adapter folder (replacing PEFT's template card)."""
    path = Path(adapter_dir) / "README.md"
    path.write_text(render_model_card(report), encoding="utf-8")
    return path
