"""The recorded answerability heads on the reviewed labels: the rates where two blind readers confirmed the label.

Each run folder holds the ``metrics.json`` of ``gemma-facts evaluate --base-only`` with a committed head copied
in (no refit; ``trained-on-reviewed-*``: the head the select stage fitted on the reviewed training prompts), the local profile's ``eval.label_review`` on, so evaluation wrote ``reviewed_labels``: every
side's rates on the test prompts whose label both readers of the review confirmed
(``helpers.evaluate.label_review``, ``docs/label_review.md``). This script gathers them: per run the gated base
on all prompts and on the reviewed ones, and per head family the mean / min / max over its three dev splits.
It reads the metrics files only; the test split was read by the evaluations that wrote them.

    python experiments/reviewed_labels.py [--runs results/reviewed-labels] [--out results/reviewed_labels.json]

A family's runs are the folders ``<prefix>-dev-seed-*`` of ``--runs``; the 104-document split's runs live in their own
folder (``results/reviewed-labels-104-test-docs``), since their reviewed prompts are another set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.evaluate.metrics import mean_min_max  # noqa: E402

#: run folder prefix -> (the README's row label, the head family, the committed record its head was copied from);
#: the record keeps the first two beside the family's rates, so the README and docs/RESULTS.md read them from it
FAMILIES = {
    "clean": ("state + overlap share, clean labels (eighth pass), re-read",
              "eighth pass: state + overlap, cut at the largest dev gap", "answerability-head-clean-labels"),
    "surprisal": ("+ request surprisal (ninth pass), re-read",
                  "ninth pass: + request surprisal, cut within a 4% out-of-fold budget", "answerability-head-surprisal"),
    "trained-on-reviewed": ("eighth pass's recipe on reviewed prompts (`local_head_reviewed`)",
                            "tenth pass: the eighth pass's family and rule fitted and chosen on the reviewed training "
                            "prompts (configs/local_head_reviewed.json), its own record", None),
    "lexical": ("+ which request words the document holds (`local_head_lexical`)",
                "eleventh pass: + word-level summaries of which request words the document holds, registered before "
                "its read (configs/local_head_lexical.json), its own record", None),
    "words": ("words, no surprisal (`local_head_words`)",
              "eleventh pass, second recipe: the word-level summaries without the request surprisal, registered after "
              "the lexical heads' reads and before its own (configs/local_head_words.json), its own record", None),
    "window": ("words, each layer read with ±1 (`local_head_window`)",
               "fourteenth pass: the words recipe reading each layer's state averaged with one layer on each side, "
               "registered before its read (configs/local_head_window.json), its own record", None),
    "window-104-test-docs": ("window (`local_head_window_104_test_docs`)",
                             "fifteenth pass: the window recipe unchanged on a test split of 104 documents (16 moved "
                             "from training, so that at least 80 reviewed answerable prompts are scored), registered "
                             "before its read (configs/local_head_window_104_test_docs.json), its own record", None),
    "bagged": ("window, bagged over 5 dev splits (`local_head_bagged`)",
               "fifteenth pass: the window recipe's heads chosen on five dev splits and averaged, chosen on the "
               "pseudo-test and registered before its read (configs/local_head_bagged.json), its own record", None),
    "bagged-104-test-docs": ("window, bagged over 5 dev splits (`local_head_bagged_104_test_docs`)",
                             "fifteenth pass: the bagged heads on the 104-document test split, registered before its "
                             "read (configs/local_head_bagged_104_test_docs.json), its own record", None),
    "bagged-10": ("window, bagged over 10 dev splits (`local_head_bagged_10`)",
                  "sixteenth pass: the window recipe's heads chosen on ten dev splits and averaged, chosen on the "
                  "pseudo-test and registered before its read (configs/local_head_bagged_10.json), its own record",
                  None),
    "bagged-10-104-test-docs": ("window, bagged over 10 dev splits (`local_head_bagged_10_104_test_docs`)",
                                "sixteenth pass: the heads of ten dev splits on the 104-document test split, "
                                "registered before its read (configs/local_head_bagged_10_104_test_docs.json), its "
                                "own record", None),
    "bagged-10-written-fit-104-test-docs": ("ten bagged heads + the written set's training documents in the fit "
                                            "(`local_head_bagged_10_written_fit_104_test_docs`)",
                                            "twentieth pass: the ten bagged heads with the written set's 38 training "
                                            "documents in their fit on the 104-document test split, chosen on the "
                                            "pseudo-test and registered before its read (configs/"
                                            "local_head_bagged_10_written_fit_104_test_docs.json), its own record",
                                            None),
}
FIELDS = ("hallucination_rate", "over_refusal_rate", "grounded_accuracy")


def value(rate: dict[str, Any]) -> float | None:
    return None if rate.get("value") is None else round(rate["value"], 4)


def run_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The gated base on all prompts and on the reviewed prompts, and the Banana test, from one metrics.json."""
    reviewed = metrics["reviewed_labels"]
    if not reviewed.get("applied"):
        raise ValueError(f"the review was not applied to this run: {reviewed.get('reason')}")
    head = metrics["answerability_head"]
    return {
        "head": {k: head["head"].get(k, False) for k in ("layer", "with_overlap", "with_surprisal", "with_lexical")},
        "all_prompts": {f: value(head["base_with_head"][f]) for f in FIELDS}
        | {"relative_cut": round(head["relative_hallucination_reduction"], 4)},
        "reviewed": {f: value(reviewed["base_with_head"][f]) for f in FIELDS}
        | {"relative_cut": round(reviewed["relative_hallucination_reduction"]["base_with_head"], 4),
           "hallucination_ci95": reviewed["base_with_head"]["hallucination_rate"]["ci95"],
           "over_refusal_ci95": reviewed["base_with_head"]["over_refusal_rate"]["ci95"],
           "hallucination_by_kind": {k: value(v["hallucination_rate"])
                                     for k, v in reviewed["base_with_head"]["by_source"].items()
                                     if v["hallucination_rate"]["n"]}},
        "banana_passed": bool(head["banana"]["passed"]),
    }


def spread(runs: dict[str, dict[str, Any]], part: str) -> dict[str, Any]:
    """Mean, min and max of each rate of ``part`` ("reviewed" / "all_prompts") over the runs."""
    return {field: mean_min_max([r[part][field] for r in runs.values()]) for field in (*FIELDS, "relative_cut")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(REPO / "results" / "reviewed-labels"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    record: dict[str, Any] = {"families": {}}
    base: dict[str, Any] | None = None
    for prefix, (label, about, committed) in FAMILIES.items():
        runs = {}
        for folder in sorted(Path(args.runs).glob(f"{prefix}-dev-seed-*")):
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            runs[folder.name] = run_summary(metrics)
            if committed:  # a committed head re-read: its record's rates on all prompts, beside this read's
                original = json.loads((REPO / "results" / committed / folder.name.removeprefix(f"{prefix}-") /
                                       "metrics.json").read_text(encoding="utf-8"))["answerability_head"]
                runs[folder.name]["committed_record_all_prompts"] = {
                    f: value(original["base_with_head"][f]) for f in FIELDS}
            reviewed = metrics["reviewed_labels"]
            base = base or {"all_prompts": {f: value(metrics["base"][f]) for f in FIELDS},
                            "reviewed": {f: value(reviewed["base"][f]) for f in FIELDS},
                            "reviewed_n": {"answerable": reviewed["n_answerable"],
                                           "unanswerable": reviewed["n_unanswerable"],
                                           "by_kind": reviewed["by_kind"]}}
        if runs:
            record["families"][prefix] = {"label": label, "about": about, "heads_from": f"results/{committed}/" if committed else
                                          "fitted by the run (answerability_head.json beside each metrics.json)",
                                          "runs": runs,
                                          "reviewed_spread": spread(runs, "reviewed"),
                                          "all_prompts_spread": spread(runs, "all_prompts"),
                                          "banana_passed": sum(r["banana_passed"] for r in runs.values())}
    record["base"] = base
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
