"""``python -m helpers.select``: the same as ``gemma-facts select``."""

from helpers.cli import run_subcommand

raise SystemExit(run_subcommand("select"))
