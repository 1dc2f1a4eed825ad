"""Playground: paste a document and a question, compare base and aligned answers with the judge's verdict.

``ask`` is the plain function (used by tests and headless runs); ``playground`` wraps it in
ipywidgets. Without a widget frontend (CI, a terminal) the widgets are simply not rendered, and
without ipywidgets at all ``playground`` prints how to use ``ask`` instead of raising.
"""

from __future__ import annotations

import html
from typing import Any

from helpers.config import EvalConfig, ModelConfig
from helpers.evaluate.judges import analyse_refusal, support_check
from helpers.evaluate.probes import BANANA
from helpers.prompts import build_messages, build_user_turn

__all__ = ["ask", "format_comparison", "playground"]


def _verdict(answer: str, document: str, request: str) -> dict[str, Any]:
    """Refused, or answered with the share of its terms found in the document (answerability unknown here)."""
    analysis = analyse_refusal(answer, build_user_turn(document, request), document)
    if analysis.is_refusal:
        return {"refused": True, "summary": "refused (says the document lacks the answer)"}
    if not answer.strip():
        return {"refused": False, "summary": "empty answer"}
    support = support_check(" ".join(analysis.claim_clauses), document)
    summary = "answered, supported by the document" if support.supported else \
        f"answered, NOT supported: {', '.join(support.unsupported_terms[:8]) or 'low overlap'}"
    return {"refused": False, "supported": support.supported, "support_score": support.score, "summary": summary}


def ask(model: Any, tokenizer: Any, document: str, question: str, model_cfg: ModelConfig,
        eval_cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """Base and aligned answers to one document + question, each with an offline verdict."""
    from helpers.evaluate.run import SIDES, generate_side

    messages = [build_messages(document, question)]
    out = {}
    for side in SIDES:
        [answer] = generate_side(model, tokenizer, messages, side, model_cfg, eval_cfg, desc=side)
        out[side] = {"answer": answer, **_verdict(answer, document, question)}
    return out


def format_comparison(result: dict[str, dict[str, Any]]) -> str:
    """Side-by-side HTML of an ``ask`` result."""
    cells = []
    for side, label in (("base", "Base"), ("aligned", "Aligned (Gemma-Facts)")):
        row = result[side]
        colour = "#1e8e3e" if row.get("refused") or row.get("supported") else "#d93025"
        cells.append(f"<td style='vertical-align:top;padding:6px;width:50%'><b>{label}</b><br>"
                     f"<pre style='white-space:pre-wrap'>{html.escape(row['answer']) or '(empty)'}</pre>"
                     f"<span style='color:{colour}'>{html.escape(row['summary'])}</span></td>")
    return f"<table style='width:100%'><tr>{''.join(cells)}</tr></table>"


def playground(model: Any, tokenizer: Any, model_cfg: ModelConfig, eval_cfg: EvalConfig,
               document: str = BANANA.document, question: str = BANANA.request) -> Any:
    """An ipywidgets form (document, question, Compare button, side-by-side answers); None without ipywidgets."""
    try:
        import ipywidgets as widgets
        from IPython.display import HTML, display
    except ImportError:
        print("ipywidgets is not installed: call helpers.evaluate.playground_form.ask(model, tokenizer, document, question, "
              "model_cfg, eval_cfg) instead.")
        return None
    doc_box = widgets.Textarea(value=document, description="Document", layout=widgets.Layout(width="95%", height="120px"))
    question_box = widgets.Text(value=question, description="Question", layout=widgets.Layout(width="95%"))
    button = widgets.Button(description="Compare base vs aligned", button_style="primary")
    output = widgets.Output()

    def on_click(_button: Any = None) -> None:
        output.clear_output()
        with output:
            result = ask(model, tokenizer, doc_box.value, question_box.value, model_cfg, eval_cfg)
            display(HTML(format_comparison(result)))

    button.on_click(on_click)
    box = widgets.VBox([doc_box, question_box, button, output])
    display(box)
    on_click()
    return box
