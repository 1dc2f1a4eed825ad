"""API keys and tokens: read from the environment or Colab ``userdata``; never printed or stored.

Keys live only in process memory. ``redact`` scrubs any known secret value from text before it is
logged, written to a cache, a report or a model card.
"""

from __future__ import annotations

import os
import re
import sys

__all__ = ["MissingSecretError", "colab_secret_problems", "forget_colab_secrets", "get_secret", "known_secret_values",
           "redact", "require_secret"]

#: Environment names searched for each logical secret, in order.
SECRET_NAMES: dict[str, tuple[str, ...]] = {
    "gemini": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    "hf": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
}

_KEY_PATTERNS = [re.compile(r"AIza[0-9A-Za-z_\-]{20,}"), re.compile(r"hf_[A-Za-z0-9]{20,}")]


class MissingSecretError(RuntimeError):
    """Raised when a key is needed and none is configured; the message names the fix."""


#: Colab ``userdata`` answers, asked once per name: ``redact`` runs on every log line and cache write,
#: and each ``userdata.get`` is a round trip to the browser. ``forget_colab_secrets`` empties it.
_COLAB_VALUES: dict[str, str | None] = {}
#: Why a Colab secret could not be read ("missing", "no notebook access", ...), for the error message.
_COLAB_PROBLEMS: dict[str, str] = {}


def forget_colab_secrets() -> None:
    """Ask Colab again on the next lookup (the setup cell calls this, so a secret added since is seen)."""
    _COLAB_VALUES.clear()
    _COLAB_PROBLEMS.clear()


def _from_colab(name: str) -> str | None:
    if "google.colab" not in sys.modules:
        return None
    if name in _COLAB_VALUES:
        return _COLAB_VALUES[name]
    value = None
    try:
        from google.colab import userdata

        value = userdata.get(name)
    except Exception as exc:  # noqa: BLE001 - a missing/denied Colab secret is "not set", with the reason kept
        kind = type(exc).__name__
        _COLAB_PROBLEMS[name] = {"SecretNotFoundError": "no Colab secret of that name",
                                 "NotebookAccessError": "the Colab secret exists but 'Notebook access' is off "
                                                        "for this notebook"}.get(kind, f"Colab said {kind}")
    _COLAB_VALUES[name] = value
    return value


def colab_secret_problems(kind: str) -> list[str]:
    """Why each Colab secret name for ``kind`` gave nothing (empty outside Colab or when one was found)."""
    return [f"{name}: {_COLAB_PROBLEMS[name]}" for name in SECRET_NAMES[kind] if name in _COLAB_PROBLEMS]


def get_secret(kind: str) -> str | None:
    """The secret for ``kind`` ("gemini" or "hf") from the environment, then Colab ``userdata``."""
    if kind not in SECRET_NAMES:
        raise ValueError(f"unknown secret kind {kind!r}; expected one of {sorted(SECRET_NAMES)}")
    for name in SECRET_NAMES[kind]:
        value = os.environ.get(name) or _from_colab(name)
        if value and value.strip():
            return value.strip()
    return None


def require_secret(kind: str) -> str:
    """Like ``get_secret`` but raises a message that says how to provide the key."""
    value = get_secret(kind)
    if value:
        return value
    names = " or ".join(SECRET_NAMES[kind])
    problems = colab_secret_problems(kind)
    names += f"; {'; '.join(problems)}" if problems else ""
    if kind == "gemini":
        hint = ("Set it with `export GOOGLE_API_KEY=...` (terminal) or add it as a Colab secret named "
                "GOOGLE_API_KEY (key icon in the left bar), or use the offline teacher/judge "
                "(teacher='offline' / judge='offline'), which needs no key.")
    else:
        hint = ("Set it with `export HF_TOKEN=...` or add a Colab secret named HF_TOKEN (key icon in the left bar, "
                "'Notebook access' on); a read token from https://huggingface.co/settings/tokens is enough.")
    raise MissingSecretError(f"No {kind} key found ({names}). {hint}")


def known_secret_values() -> list[str]:
    """Every configured secret value (used only to scrub text)."""
    values = []
    for kind in SECRET_NAMES:
        value = get_secret(kind)
        if value and len(value) >= 6:
            values.append(value)
    return values


def redact(text: str) -> str:
    """Replace configured secret values and anything shaped like a Google key / HF token."""
    for value in known_secret_values():
        text = text.replace(value, "***")
    for pattern in _KEY_PATTERNS:
        text = pattern.sub("***", text)
    return text
