"""Simulated Colab secrets: ``get`` answers from ``$COLAB_SIM_SECRETS`` and fails the way Colab does.

Real Colab asks the browser for the secret; a name that does not exist raises ``SecretNotFoundError``
and a secret whose "Notebook access" toggle is off raises ``NotebookAccessError`` (same classes and
messages as ``google.colab.userdata``).
"""

import json
import os

from google.colab import errors


class NotebookAccessError(Exception):
    """Exception thrown when the current notebook doesn't have access to the requested secret."""

    def __init__(self, key):
        super().__init__(f"Notebook does not have access to secret {key}")


class SecretNotFoundError(errors.Error):
    """Exception thrown when the requested secret is not found."""

    def __init__(self, key):
        super().__init__(f"Secret {key} does not exist.")


class TimeoutException(errors.Error):
    """Exception thrown when requesting a secret times out."""

    def __init__(self, key):
        super().__init__(f"Requesting secret {key} timed out. Secrets can only be fetched when running from the Colab UI.")


#: How many times each secret was asked for (the tests check that lookups are cached).
CALLS = {}


def get(key):
    """The value of secret ``key``."""
    CALLS[key] = CALLS.get(key, 0) + 1
    path = os.environ.get("COLAB_SIM_SECRETS", "")
    secrets = json.loads(open(path, encoding="utf-8").read()) if path and os.path.exists(path) else {}
    if key not in secrets:
        raise SecretNotFoundError(key)
    if not secrets[key].get("access", False):
        raise NotebookAccessError(key)
    return secrets[key].get("value", "")
