"""Browse preference pairs in a notebook: pick a pair type, slide through examples, read all three parts.

``render_pair_text`` is the plain-text view (used for printed examples and headless runs);
``pair_browser`` wraps it in ipywidgets (a type dropdown, an index slider and an HTML view).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from helpers.prompts import completion_text, render_prompt

__all__ = ["filter_pairs", "pair_browser", "render_pair_html", "render_pair_text"]

ALL_TYPES = "all"


def filter_pairs(pairs: Sequence[dict[str, Any]], pair_type: str = ALL_TYPES) -> list[dict[str, Any]]:
    """Pairs of one type (or all)."""
    return [p for p in pairs if pair_type == ALL_TYPES or p["pair_type"] == pair_type]


def render_pair_text(pair: dict[str, Any], prompt_format: str = "plain", tokenizer: Any = None) -> str:
    """The prompt exactly as the model sees it, then the chosen and rejected answers."""
    fmt = prompt_format if (prompt_format == "plain" or tokenizer is not None) else "plain"
    prompt = render_prompt(pair["prompt"], fmt, tokenizer)
    return (f"[{pair['pair_type']} / {pair['source']} / doc {pair['doc_id']}]\n"
            f"--- PROMPT ({fmt}) ---\n{prompt}\n"
            f"--- CHOSEN ---\n{completion_text(pair['chosen'])}\n"
            f"--- REJECTED ---\n{completion_text(pair['rejected'])}")


def render_pair_html(pair: dict[str, Any], prompt_format: str = "plain", tokenizer: Any = None) -> str:
    """The same three parts as HTML blocks (chosen in green, rejected in red)."""
    fmt = prompt_format if (prompt_format == "plain" or tokenizer is not None) else "plain"
    prompt = html.escape(render_prompt(pair["prompt"], fmt, tokenizer))
    block = "white-space:pre-wrap;font-family:monospace;font-size:12px;padding:6px;border-radius:4px;"
    return (f"<b>{html.escape(pair['pair_type'])}</b> / {html.escape(pair['source'])} / doc "
            f"{html.escape(str(pair['doc_id']))}"
            f"<div style='{block}background:#f4f4f4'>{prompt}</div>"
            f"<div style='{block}background:#e6f4ea'><b>chosen:</b> "
            f"{html.escape(completion_text(pair['chosen']))}</div>"
            f"<div style='{block}background:#fce8e6'><b>rejected:</b> "
            f"{html.escape(completion_text(pair['rejected']))}</div>")


def pair_browser(pairs: Sequence[dict[str, Any]], prompt_format: str = "plain", tokenizer: Any = None) -> Any:
    """An ipywidgets box: type dropdown + index slider + HTML view. Returns the widget (display it)."""
    import ipywidgets as widgets

    pairs = list(pairs)
    types = [ALL_TYPES, *sorted({p["pair_type"] for p in pairs})]
    kind = widgets.Dropdown(options=types, value=ALL_TYPES, description="pair type")
    index = widgets.IntSlider(min=0, max=max(0, len(pairs) - 1), value=0, description="example")
    view = widgets.HTML()

    def refresh(*_: Any) -> None:
        shown = filter_pairs(pairs, kind.value)
        index.max = max(0, len(shown) - 1)
        view.value = render_pair_html(shown[min(index.value, index.max)], prompt_format, tokenizer) if shown \
            else "<i>no pairs</i>"

    kind.observe(refresh, names="value")
    index.observe(refresh, names="value")
    refresh()
    return widgets.VBox([widgets.HBox([kind, index]), view])
