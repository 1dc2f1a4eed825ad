"""``gemma-facts``: one command for every stage, the same config options on each.

    gemma-facts data      [--config FILE] [--set SECTION.FIELD=VALUE ...] [--input ... --teacher ...]
    gemma-facts train     [--config FILE] [--set ...] [--max-steps N ...]
    gemma-facts select    [--config FILE] [--set ...]        the checkpoint chosen on dev
                          [--head-only]                      ... or only the answerability head (base model)
    gemma-facts evaluate  [--config FILE] [--set ...]
    gemma-facts figures                                      redraw the figures from the records
    gemma-facts run       [--config FILE] [--set ...]        every stage in order (``make demo``)

``--config`` names a JSON file with sections ``model``, ``data``, ``train``, ``eval`` layered over the
profile's preset (``configs/``); ``--set train.max_steps=4`` overrides one field on top. Both reach
every stage through ``GEMMA_FACTS_CONFIG``, so ``run`` hands them to each stage it starts. A user's
mistake (a missing file, no valid row, an unknown field) ends in one line and exit code 2;
``--debug`` shows the traceback. ``python -m helpers.<stage>`` is the same as ``gemma-facts <stage>``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

from helpers.config import CONFIG_ENV, CONFIG_SECTIONS, config_sections

__all__ = ["VERBS", "main", "merged_config_file", "run_subcommand"]

#: verb → (module whose ``main(argv)`` runs it, arguments put first, one line of help)
VERBS: dict[str, tuple[str, list[str], str]] = {
    "data": ("helpers.data.build", ["build"], "stage 01: FACTS rows → DPO preference pairs"),
    "train": ("helpers.train.dpo", [], "stage 02: DPO + QLoRA → adapter"),
    "select": ("helpers.select.dev_choice", [], "keep the checkpoint a fixed rule picks on dev"),
    "evaluate": ("helpers.evaluate.run", [], "stage 03: base vs aligned, metrics with CIs"),
    "figures": ("helpers.figures", [], "redraw every figure from the records on disk"),
    "run": ("helpers.pipeline", [], "every stage in order, timed (make demo)"),
}
#: Errors whose message already says what to do: one line, no traceback (``--debug`` shows it).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError, KeyError)


def _value(text: str) -> object:
    """``--set`` values are JSON when they parse (``4``, ``0.5``, ``true``, ``null``, ``[1, 2]``), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def merged_config_file(config: str | None, sets: list[str]) -> str | None:
    """The config file every stage reads: ``config`` with ``sets`` applied (a temporary file if any)."""
    if not sets:
        return config
    sections: dict[str, dict[str, object]] = config_sections(config) if config else {}
    for item in sets:
        key, eq, raw = item.partition("=")
        section, dot, field = key.partition(".")
        if not eq or not dot or not field:
            raise ValueError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. train.max_steps=4")
        if section not in CONFIG_SECTIONS.values():
            raise ValueError(f"--set {item!r}: unknown section {section!r}; use {sorted(CONFIG_SECTIONS.values())}")
        sections.setdefault(section, {})[field] = _value(raw)
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="gemma-facts-config-", delete=False)
    with handle:
        json.dump(sections, handle)
    return handle.name


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file {model, data, train, eval} layered over the profile preset")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def run_subcommand(verb: str, argv: list[str] | None = None) -> int:
    """Run one verb with its own options; a user's mistake becomes one line on stderr and exit code 2."""
    module_name, prefix, _ = VERBS[verb]
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common)
    args, rest = common.parse_known_args(sys.argv[1:] if argv is None else argv)
    debug = args.debug or os.environ.get("GEMMA_FACTS_DEBUG") == "1"
    if prefix and rest[:1] == prefix:  # `python -m helpers.data build ...`, as before
        rest = rest[1:]
    saved = {name: os.environ.get(name) for name in (CONFIG_ENV, "GEMMA_FACTS_DEBUG")}
    try:
        if args.config and not Path(args.config).is_file():
            raise FileNotFoundError(f"--config {args.config}: no such file")
        config = merged_config_file(args.config, args.set)
        if config:
            os.environ[CONFIG_ENV] = config  # read by every config_for(), here and in the stages `run` starts
        if debug:
            os.environ["GEMMA_FACTS_DEBUG"] = "1"
        code = importlib.import_module(module_name).main(prefix + rest)
        return code if isinstance(code, int) else 0  # a stage's main may return its report
    except USER_ERRORS as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"gemma-facts {verb}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    finally:  # called in-process (a notebook, a test), a verb leaves the caller's environment as it found it
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    """The ``gemma-facts`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="gemma-facts",
                                     description="one command for every stage of gemma-facts, the same config options on each",
                                     epilog="Each verb takes --config, --set and --debug, plus its own options "
                                            "(gemma-facts VERB --help).")
    parser.add_argument("verb", choices=list(VERBS), metavar="VERB",
                        help="; ".join(f"{verb}: {text}" for verb, (_, _, text) in VERBS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] not in VERBS:
        parser.error(f"unknown verb {argv[0]!r}; choose one of {', '.join(VERBS)}")
    return run_subcommand(argv[0], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
