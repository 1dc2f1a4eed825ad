"""Simulated ``google.colab`` (tests only): ``userdata`` and ``drive`` as the notebooks use them."""

from google.colab import drive, errors, userdata  # noqa: F401

__all__ = ["drive", "errors", "userdata"]
