"""``python -m helpers.data``: the same as ``gemma-facts data``."""

from helpers.cli import run_subcommand

raise SystemExit(run_subcommand("data"))
