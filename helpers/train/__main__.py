"""``python -m helpers.train``: the same as ``gemma-facts train``."""

from helpers.cli import run_subcommand

raise SystemExit(run_subcommand("train"))
