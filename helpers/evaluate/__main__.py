"""``python -m helpers.evaluate``: the same as ``gemma-facts evaluate``."""

from helpers.cli import run_subcommand

raise SystemExit(run_subcommand("evaluate"))
