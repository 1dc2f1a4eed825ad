"""Dev diagnostic: does the answerability head catch more when it also reads which request words the document holds?

The ninth and tenth passes of issue 16 found the linear head's limit in what it reads: on five folds of the
training documents it caught 80-85% of the unanswerable prompts when it may refuse 4-5% of the answerable ones,
whatever the threshold or the labels. On the reviewed training prompts the word-overlap share alone scores an
out-of-fold AUC of 0.971, the state of layer 10 beside it 0.972: the errors are lexical ones a single share cannot
see. ``helpers.evaluate.answerability_lexical`` adds six word-level summaries (IDF-weighted, per sentence, as
pairs, the request's specific words apart from instruction words); here every recipe runs through the package's
own ``choose_head`` (family by dev AUC, then its threshold rule) on a pseudo-test:

for each dev split (42, 7, 1234: the ``train.dev_seed`` of the recorded runs) and each of five folds of the
training documents outside dev, the head is fitted on the other folds, chosen on dev, and scored on the held fold's
prompts **whose label two blind readers confirmed** (``docs/label_review_training.md``), as the test split is now
scored. Recipes (the flags of ``TrainConfig``):

* ``eighth``: state + overlap share, largest dev gap (``configs/local_whole_clean_labels.json`` + head);
* ``ninth``: + request surprisal, 4% out-of-fold budget (``configs/local_head_surprisal.json``);
* ``lexical``: + word-level summaries, 4% out-of-fold budget;
* ``lexical_dev_gap``: + word-level summaries, largest dev gap;
* ``lexical_reviewed``: as ``lexical``, fitted and chosen on the reviewed training prompts only;
* ``lexical_budget_6`` / ``_8``: as ``lexical`` at a 6% / 8% out-of-fold budget (added after the five above ran:
  at 4% the lexical heads refused 2.4-4.5% of the answerable held prompts, inside the criterion's 5%).
* ``lexical_no_surprisal_budget_6``: ``lexical_budget_6`` without the request surprisal (added after that recipe's
  test reads: see ``RECIPES``).
* ``lexical_only_budget_6`` / ``lexical_only_no_surprisal_budget_6``: the two above offering only the candidates
  with the word summaries (``TrainConfig.answerability_lexical_only``; added after the test reads, as above).
* ``names_no_surprisal_budget_6`` / ``names_only_no_surprisal_budget_6`` (thirteenth pass): the two without the
  surprisal, their word summaries with the missing-name flag (``TrainConfig.answerability_names``).
* ``stacked_no_surprisal_budget_6`` (thirteenth pass, after the two above): ``lexical_no_surprisal_budget_6`` with
  the state read as its own fit's score (``TrainConfig.answerability_stacked``); ``stacked_l2_wide_no_surprisal_budget_6``
  (after it): the same offering L2 0.1, 1 and 10 (``TrainConfig.answerability_l2s``).
* ``oof_auc_choice_no_surprisal_budget_6`` / ``oof_catch_choice_no_surprisal_budget_6`` (fourteenth pass):
  ``lexical_no_surprisal_budget_6`` with the family chosen on out-of-fold scores over fit + dev, by their AUC or by
  their catch at the budget (``TrainConfig.answerability_choice``; the folds drawn with the dev seed); after they
  ran, the same two at a 5% budget (``..._budget_5``).
* ``window_1_no_surprisal_budget_6`` / ``window_2_no_surprisal_budget_6`` (fourteenth pass, after those):
  ``lexical_no_surprisal_budget_6`` reading each layer's state averaged with one / two layers on each side
  (``TrainConfig.answerability_layer_window``).
* ``bagged_5_window_1_no_surprisal_budget_6`` (fifteenth pass) / ``bagged_10_…`` (sixteenth): the window recipe's heads
  chosen on five / ten dev splits and averaged (``TrainConfig.answerability_dev_splits``);
  ``bagged_5_names_…`` (eighteenth): the five-head recipe with the missing-name flag among the word summaries;
  ``bagged_5_names_after_choice_…`` (after it): the flag added only in each member's refit, after the dev choice.
* ``bagged_10_swaps_3_…`` (nineteenth pass): the ten-head recipe fitted on pairs with up to three subject swaps per
  training request (``DataConfig.near_miss_swaps``; its own pairs folder, so it runs on its own);
  ``bagged_10_written_fit_…`` (after it): the ten-head recipe with the written set's 38 training documents in every
  fit (``GEMMA_FACTS_OUTPUT=outputs/written_whole gemma-facts data --config configs/local_whole_clean_labels.json
  --set data.input=bundled --set data.test_documents=null``); ``bagged_10_written_long_fit_…`` (twenty-first pass):
  that recipe with the second written set's 60 documents in every fit too (``GEMMA_FACTS_OUTPUT=outputs/written_long
  gemma-facts data --config configs/local_whole_clean_labels.json --set data.input=helpers/resources/written_long.jsonl
  --set data.test_documents=null --set data.test_fraction=0``); ``bagged_10_written_long_as_real_fit_…`` (while it
  ran): the same set built as real rows (the same command into ``outputs/written_long_as_real`` with
  ``--set data.rows_as_real=true``); ``bagged_10_written_long_as_real_fit_…_budget_5`` (after both, not yet run): that
  fit cut at a 5% out-of-fold budget.

The criterion, fixed before this ran: the most unanswerable held prompts refused among the recipes that refuse at
most 5% of the answerable ones (mean over the 15 dev split × fold cells), ties to fewer answerable refused, then to the recipe listed first. Reads
the training split only, from the select stage's feature cache (states and surprisal of every training prompt).

    python experiments/head_lexical.py --pairs outputs/whole_clean/pairs --out results/head_lexical.json

``--fit-fractions F …`` (fifteenth pass, a learning curve, no recipe chosen from it): each recipe also runs with every
cell's fit prompts cut to the prompts of a seeded share ``F`` of its fit documents (the dev split and the held fold
unchanged), recorded as ``<recipe>@fit_<F>``. Why: on the 104-document test split the window recipe's heads, fitted on
127 training documents instead of 143, let through twice the unanswerable prompts both splits share.

    python experiments/head_lexical.py --recipes window_1_no_surprisal_budget_6 --fit-fractions 0.6 0.8 \
        --out results/head_learning_curve.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = REPO / "configs" / "local_head_surprisal.json"
DEV_SEEDS = (42, 7, 1234)
BUDGET = 0.04
# name: (surprisal, lexical, threshold rule, out-of-fold budget, reviewed labels only[, more choose_head options])
RECIPES = {
    "eighth": (False, False, "dev_largest_gap", BUDGET, False),
    "ninth": (True, False, "out_of_fold_budget", BUDGET, False),
    "lexical": (True, True, "out_of_fold_budget", BUDGET, False),
    "lexical_dev_gap": (True, True, "dev_largest_gap", BUDGET, False),
    "lexical_reviewed": (True, True, "out_of_fold_budget", BUDGET, True),
    # added after the five above had run: at 4% the lexical heads refused 2.4-4.5% of the answerable held prompts,
    # below the criterion's 5%, so larger budgets were tried under the same criterion
    "lexical_budget_6": (True, True, "out_of_fold_budget", 0.06, False),
    "lexical_budget_8": (True, True, "out_of_fold_budget", 0.08, False),
    # added after the test reads of lexical_budget_6 (configs/local_head_lexical.json), whose probes showed the
    # request surprisal of a three-word document far outside the training documents' (the Banana test failed on
    # every dev split): the same recipe without the surprisal
    "lexical_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False),
    # ... and the same recipe offering only candidates that read the word summaries (on dev split 1234 the dev AUC
    # chose a family without them, the weakest head out of fold and on test)
    "lexical_only_budget_6": (True, "only", "out_of_fold_budget", 0.06, False),
    "lexical_only_no_surprisal_budget_6": (False, "only", "out_of_fold_budget", 0.06, False),
    # thirteenth pass, added before any of them ran: the chosen recipe with the missing-name flag among the word
    # summaries (TrainConfig.answerability_names): of the 20 unanswerable prompts its summaries let through first out
    # of fold, 15 were near misses whose swapped-in name the document lacks; open choice and summaries only
    "names_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False, {"lexical_names": True}),
    "names_only_no_surprisal_budget_6": (False, "only", "out_of_fold_budget", 0.06, False, {"lexical_names": True}),
    # thirteenth pass, after the two above ran (neither within the criterion): the chosen recipe with the state read
    # as one column, its own fit's score, beside the summaries in a second fit (TrainConfig.answerability_stacked).
    # Out of fold on the reviewed training prompts (no dev choice), that caught 93-95% of the unanswerable prompts
    # at 5% answerable refused for layers 7-12, against 90-94% for the joint fit
    "stacked_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False, {"stacked": True}),
    # ... after it ran (4.4% / 92.6%, AUC 0.984: 0.2 points short of the chosen recipe): its dev choice took the
    # state's fit at L2 0.001 in 12 of 15 cells, the weakest on offer, where experiments/head_words_oof.py found L2
    # 1.0 best for the state's own fit; the same recipe offering L2 0.1, 1 and 10
    "stacked_l2_wide_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                              {"stacked": True, "l2s": (0.1, 1.0, 10.0)}),
    # fourteenth pass, added before either ran: the chosen recipe with its family (layer x L2 x features) chosen on
    # out-of-fold scores over fit + dev, in document folds drawn with the dev seed (TrainConfig.answerability_choice),
    # instead of one dev split's AUC: its 15 cells chose layers 5 to 14 and L2 0.001 to 0.1, and the recorded runs'
    # test cuts spread 79-91% with their layers. By the out-of-fold AUC, and by the out-of-fold catch at the budget
    "oof_auc_choice_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                             {"choice": "out_of_fold_auc"}),
    "oof_catch_choice_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                               {"choice": "out_of_fold_catch"}),
    # ... after both ran (5.2% / 93.4% and 5.4% / 93.5%, AUC 0.981 and 0.984: more caught than the chosen recipe's
    # 92.8%, but over the criterion's 5% of the answerable refused; the out-of-fold scores the cut is set on now come
    # from the family the choice scored, so the cut keeps closer to its budget): the same two at a 5% budget
    "oof_auc_choice_no_surprisal_budget_5": (False, True, "out_of_fold_budget", 0.05, False,
                                             {"choice": "out_of_fold_auc"}),
    "oof_catch_choice_no_surprisal_budget_5": (False, True, "out_of_fold_budget", 0.05, False,
                                               {"choice": "out_of_fold_catch"}),
    # ... after those four ran (none within the criterion above 92.8%; the out-of-fold choice narrowed the cells but
    # caught no more): the chosen recipe reading each layer's state averaged with its neighbours
    # (TrainConfig.answerability_layer_window), one and two layers on each side, so that the dev choice between
    # neighbouring layers matters less
    "window_1_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False, {"layer_window": 1}),
    "window_2_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False, {"layer_window": 2}),
    # fifteenth pass, added before it ran: the chosen recipe's heads bagged over five dev splits. Every cell draws
    # five dev splits (as many documents as the cell's own) from its fit + dev documents, lets the chosen recipe
    # choose a head on each (each refitted on fit + dev, so they differ in the family chosen), averages the five
    # heads' scores, and cuts the average at the budget on the average of their out-of-fold scores over fit + dev
    # (first run by a function of this script, since moved unchanged into the package: choose_bagged).
    # Why: the learning curve (--fit-fractions) showed one head chosen on one dev split landing anywhere in a band
    # of ten points, and the two test splits' cuts (91.6% and 83.8%) fell at its two ends; averaging is the remedy
    # for a choice that varies this much
    "bagged_5_window_1_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                                {"layer_window": 1, "bagged_dev_splits": 5}),
    # sixteenth pass, added before it ran: the same with ten dev splits. Why: five bagged heads narrowed the band of
    # the three test runs on the 104-document split to 89.5-90.4%, one run under the 90% target; the members differ
    # mostly in the layer each dev split chooses, so more of them sample that choice better. (Motivated partly by
    # that test read; the pseudo-test's criterion, fixed before the eleventh pass, decides whether it is used.)
    "bagged_10_window_1_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                                 {"layer_window": 1, "bagged_dev_splits": 10}),
    # eighteenth pass, added before it ran: the fifteenth pass's bagged recipe with the missing-name flag among the
    # word summaries (TrainConfig.answerability_names). Why: on the training prompts the flag fires on 131 of 284
    # unanswerable and 14 of 239 answerable prompts and raised the word-only AUC (0.977 -> 0.984), but one head with it
    # caught less (thirteenth pass) because its dev choice went astray (layers 0 and 4 in two cells of split 1234);
    # averaging heads chosen on several dev splits is what steadied that choice for the window recipe. (Also seen,
    # said plainly: most near misses the bagged heads let through on the 104-document test split name a subject the
    # document lacks; the criterion, fixed before the eleventh pass, decides whether it is used.)
    "bagged_5_names_window_1_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                                      {"layer_window": 1, "bagged_dev_splits": 5,
                                                       "lexical_names": True}),
    # ... after it ran (4.30% / 93.71%, AUC 0.988: the best ranking, but under bagged_10's 94.29% at the budget; its
    # members chose layer 5 or below 27 times in 75, against 13 without the flag): the flag added only in each
    # member's refit, after a dev choice made without it (choose_head(names_after_choice=True)), so that it cannot
    # steer the layer
    "bagged_5_names_after_choice_window_1_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                                                   {"layer_window": 1, "bagged_dev_splits": 5,
                                                                    "names_after_choice": True}),
    # nineteenth pass, added before it ran: the ten-head recipe fitted with more near misses. The data stage's
    # offline teacher swaps up to three absent subjects into each real training request instead of one
    # (DataConfig.near_miss_swaps; configs/local_whole_clean_swaps.json: 92 more near-miss prompts on the training
    # documents, the test split's prompts unchanged, checked). Why: the learning curve (fifteenth pass) still rose
    # from 80% to all of the fit documents (92.3% -> 93.2%), and near misses are 38 of the 39 unanswerable held
    # prompts bagged_10 lets through; a swap is the example of what it misses. The held prompts it is scored on are
    # the same reviewed prompts (the new ones are unreviewed, so they only join fits and dev choices)
    "bagged_10_swaps_3_window_1_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                                         {"layer_window": 1, "bagged_dev_splits": 10,
                                                          "pairs": "outputs/whole_clean_swaps/pairs"}),
    # ... after it ran (92.45%: more near misses on the same documents caught fewer held out), added before it ran:
    # the ten-head recipe with the 38 training documents of the written set as more fit documents (their 228 prompts
    # join every cell's fit, never a dev split of the cell's own or a held fold). Why: the learning curve rose with
    # more fit *documents*, and the swaps showed more prompts on the same documents do not help; the written set's
    # near misses were written by hand. Its test split (10 documents) is not read
    "bagged_10_written_fit_window_1_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                                             {"layer_window": 1, "bagged_dev_splits": 10,
                                                              "extra_fit_pairs": "outputs/written_whole/pairs"}),
    # ... after it ran (94.71%, chosen by 3 held prompts of 703) and its test read (cut 89.5-90.8%), added before it
    # ran: the same with a second written set in every fit too, helpers/resources/written_long.jsonl (60 documents
    # of 458-709 words written for this project in the real rows' shape: long-form requests and three hand-written
    # near misses each, one a subject swap; built with data.test_fraction=0, so all 60 are training documents). Why:
    # the one lever the twentieth pass left, more fit documents (the near misses let through are what limits the cut)
    "bagged_10_written_long_fit_window_1_no_surprisal_budget_6": (False, True, "out_of_fold_budget", 0.06, False,
                                                                  {"layer_window": 1, "bagged_dev_splits": 10,
                                                                   "extra_fit_pairs": ("outputs/written_whole/pairs",
                                                                                       "outputs/written_long/pairs")}),
    # ... while it ran (registered after its first dev split's five cells were printed, 93.8% / 5.3%, before the
    # other two and its summary): the same second written set built as
    # real rows (DataConfig.rows_as_real: its hand-written answers and near misses dropped, the near misses made
    # from the request as the test split's are: 45 subject swaps and 60 topic neighbours' requests). Why: two of
    # the three hand-written near misses per row ask for an absent detail, a kind the held prompts do not have
    "bagged_10_written_long_as_real_fit_window_1_no_surprisal_budget_6": (
        False, True, "out_of_fold_budget", 0.06, False,
        {"layer_window": 1, "bagged_dev_splits": 10,
         "extra_fit_pairs": ("outputs/written_whole/pairs", "outputs/written_long_as_real/pairs")}),
    # ... after both ran (the as-real fit ranked best of any recipe, AUC 0.988, 95.79% caught, but refused 6.55% of
    # the answerable held prompts, over the criterion's 5%), registered for the next pass, not yet run: the same fit
    # cut at a 5% out-of-fold budget instead of 6%, as the fourteenth pass tried for the one-head recipes
    "bagged_10_written_long_as_real_fit_window_1_no_surprisal_budget_5": (
        False, True, "out_of_fold_budget", 0.05, False,
        {"layer_window": 1, "bagged_dev_splits": 10,
         "extra_fit_pairs": ("outputs/written_whole/pairs", "outputs/written_long_as_real/pairs")}),
}
DEFAULT_PAIRS = "outputs/whole_clean/pairs"


def extra_folders(name: str) -> tuple[str, ...]:
    """The pairs folders whose training prompts recipe ``name`` adds to every fit (one, several or none)."""
    given = (RECIPES[name][5] if len(RECIPES[name]) > 5 else {}).get("extra_fit_pairs", ())
    return (given,) if isinstance(given, str) else tuple(given)


def recipe_pairs(names: list[str], given: str | None) -> str:
    """The one pairs folder the recipes ``names`` read (a recipe's own ``pairs`` option, else ``given`` or the
    default); recipes of different folders must run separately, since the features are loaded once."""
    wanted = {(RECIPES[n][5] if len(RECIPES[n]) > 5 else {}).get("pairs", given or DEFAULT_PAIRS) for n in names}
    if len(wanted) > 1 or (given and wanted != {given}):
        raise SystemExit(f"these recipes read different pairs folders {sorted(wanted | ({given} if given else set()))}:"
                         " run them separately (--recipes …)")
    return wanted.pop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=None, help=f"the training pairs (default: the recipes' own, else "
                        f"{DEFAULT_PAIRS})")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--out", default=None)
    parser.add_argument("--fit-fractions", nargs="*", type=float, default=[],
                        help="also run each recipe on this share of every cell's fit documents (a learning curve)")
    args = parser.parse_args()
    if any(not 0 < f < 1 for f in args.fit_fractions):
        parser.error(f"--fit-fractions must lie in (0, 1), got {args.fit_fractions}")
    os.environ["GEMMA_FACTS_CONFIG"] = str(CONFIG)

    import torch

    from experiments.head_family_choice import prompt_key, training_prompt_features
    from helpers.config import LABEL_REVIEW_TRAIN_FILE, ModelConfig, TrainConfig, config_for
    from helpers.evaluate.answerability_head import choose_bagged, choose_head, document_folds, label_auc
    from helpers.evaluate.label_review import item_key, keep_confirmed, load_review
    from helpers.evaluate.run import eval_items
    from helpers.train.dpo import dev_documents, dev_split
    from helpers.train.report import code_revision

    started = time.perf_counter()
    model_cfg = config_for(ModelConfig, "local")
    train_cfg = config_for(TrainConfig, "local")
    pairs = recipe_pairs(args.recipes, args.pairs)
    rows, everything, states, surprisal = training_prompt_features(
        pairs, model_cfg, surprisal=any(RECIPES[name][0] for name in args.recipes))
    review = load_review(LABEL_REVIEW_TRAIN_FILE)
    reviewed = {e["key"] for e in review["items"]}
    # a recipe with more pairs than the review read (near_miss_swaps): its new prompts only join fits and dev
    # choices; every prompt the review did read must still be in it (keep_confirmed raises otherwise)
    covered = [it for it in everything if item_key(it["request"], it["document"]) in reviewed]
    unreviewed = [it for it in everything if item_key(it["request"], it["document"]) not in reviewed]
    if any(it["source"] != ["near_miss"] for it in unreviewed):
        raise SystemExit(f"{len(unreviewed)} training prompts are not in the review, not all added near misses")
    confirmed = {prompt_key(it) for it in keep_confirmed(covered, review, "training")[0]}
    index = {prompt_key(it): i for i, it in enumerate(everything)}
    extra_fit: dict[str, list] = {}  # a recipe's extra fit documents: their prompts, states appended to `states`
    taken = {it["doc_id"] for it in everything}
    for path in sorted({p for n in args.recipes for p in extra_folders(n)}):
        if surprisal is not None:
            raise SystemExit("extra fit documents are read without the request surprisal")
        _, extra_items, extra_states, _ = training_prompt_features(path, model_cfg, surprisal=False)
        if {it["doc_id"] for it in extra_items} & taken:
            raise SystemExit(f"{path} shares documents with {pairs} or another extra folder")
        taken |= {it["doc_id"] for it in extra_items}
        index.update({prompt_key(it): len(index) + i for i, it in enumerate(extra_items)})
        states = torch.cat([states, extra_states])
        extra_fit[path] = extra_items

    def pick(items):
        idx = torch.tensor([index[prompt_key(it)] for it in items])
        return states[idx], (surprisal[idx] if surprisal is not None else None)

    record: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "command": "python experiments/head_lexical.py " + " ".join(sys.argv[1:]),
                    "code": code_revision(), "budget": BUDGET, "unreviewed_fit_prompts": len(unreviewed),
                    "recipes": {}}

    runs = [(name, None) for name in args.recipes] + [(name, f) for f in args.fit_fractions for name in args.recipes]
    for recipe, fraction in runs:
        name = recipe if fraction is None else f"{recipe}@fit_{fraction:g}"
        with_surprisal, lexical, rule, budget, reviewed_only, *more = RECIPES[recipe]
        options = dict(more[0]) if more else {}
        bagged = options.pop("bagged_dev_splits", 0)
        options.pop("pairs", None)
        options.pop("extra_fit_pairs", None)
        extra = [it for path in extra_folders(recipe) for it in extra_fit[path]]
        cells, chosen, by_kind = [], [], {}
        for dev_seed in DEV_SEEDS:
            fit_rows, dev_rows = dev_split(rows, dev_documents(train_cfg), dev_seed)
            fit_items, dev_items = eval_items(list(fit_rows), set_name="fit"), eval_items(list(dev_rows), set_name="dev")
            if reviewed_only:
                dev_items = [it for it in dev_items if prompt_key(it) in confirmed]
            for held in document_folds(fit_items, 5, seed=0):
                rest = [it for it in fit_items if it["doc_id"] not in held
                        and (not reviewed_only or prompt_key(it) in confirmed)]
                if fraction is not None:  # a seeded share of the fit documents, the same for every recipe
                    docs = sorted({it["doc_id"] for it in rest})
                    kept = set(random.Random(f"{dev_seed}-{sorted(held)}").sample(docs, round(fraction * len(docs))))
                    rest = [it for it in rest if it["doc_id"] in kept]
                rest += extra  # a recipe's extra fit documents join every fit (none by default)
                scored = [it for it in fit_items if it["doc_id"] in held and prompt_key(it) in confirmed]
                (rs, rsur), (ds, dsur), (hs, hsur) = pick(rest), pick(dev_items), pick(scored)

                kw = {"threshold_rule": rule, "budget": budget, "lexical": bool(lexical),
                      "lexical_only": lexical == "only", "fold_seed": dev_seed, **options}
                if bagged:  # the package's bagged head over the cell's fit + dev prompts
                    pool = [*rest, *dev_items]
                    ps, psur = pick(pool)
                    head = choose_bagged(pool, ps, model_cfg.model_id, bagged, len({it["doc_id"] for it in dev_items}),
                                         f"{dev_seed}-{sorted(held)}", surprisal=psur if with_surprisal else None,
                                         **kw)
                else:
                    head = choose_head(rest, rs, dev_items, ds, model_cfg.model_id,
                                       fit_surprisal=rsur if with_surprisal else None,
                                       dev_surprisal=dsur if with_surprisal else None, **kw)
                scores = head.scores(hs, scored, hsur)
                refused = [s < head.threshold for s in scores]
                ans = [r for r, it in zip(refused, scored, strict=True) if it["answerable"]]
                una = [r for r, it in zip(refused, scored, strict=True) if not it["answerable"]]
                cells.append({"dev_seed": dev_seed, "answerable_refused": round(sum(ans) / len(ans), 3),
                              "unanswerable_refused": round(sum(una) / len(una), 3),
                              "auc": label_auc(scores, [it["answerable"] for it in scored]),
                              "prompts": [len(ans), len(una)]})
                chosen.append(f"layers {head.summary()['bagged_layers']}" if bagged else
                              f"layer {head.layer}{f' ±{head.layer_window}' if head.layer_window else ''}"
                              f"{' stacked' if head.state_score is not None else ''}"
                              f"{' +surprisal' if head.with_surprisal else ''}"
                              f"{' +lexical' if head.lexical is not None else ''}"
                              f"{' +names' if head.summary()['with_names'] else ''}, l2 {head.l2}")
                for r, it in zip(refused, scored, strict=True):
                    if not it["answerable"]:
                        count = by_kind.setdefault("+".join(it["source"]), [0, 0])
                        count[0] += r
                        count[1] += 1
            print(name, dev_seed, cells[-5:], chosen[-5:], flush=True)
        mean = {k: round(sum(c[k] for c in cells) / len(cells), 4) for k in ("answerable_refused",
                                                                            "unanswerable_refused", "auc")}
        per_split = {str(s): {k: round(sum(c[k] for c in cells if c["dev_seed"] == s) / 5, 4)
                              for k in ("answerable_refused", "unanswerable_refused", "auc")} for s in DEV_SEEDS}
        record["recipes"][name] = {"surprisal": with_surprisal, "lexical": lexical, "threshold_rule": rule,
                                   "budget": budget, "pairs": pairs,
                                   **({"extra_fit_prompts": len(extra)} if extra else {}),
                                   **({"fit_fraction": fraction} if fraction is not None else {}),
                                   "reviewed_only": reviewed_only, **options, "mean": mean, "per_dev_split": per_split,
                                   "unanswerable_refused_by_kind": by_kind, "cells": cells, "chosen": chosen}
        print(name, mean, per_split, flush=True)
    within = {n: r["mean"] for n, r in record["recipes"].items()
              if r["mean"]["answerable_refused"] <= 0.05 and "fit_fraction" not in r}  # a learning curve chooses nothing
    record["criterion"] = ("the most unanswerable held prompts refused among the recipes that refuse at most 5% of "
                           "the answerable ones (mean over dev split x fold), ties to fewer answerable refused, then to the recipe listed first")
    record["chosen_recipe"] = max(within, key=lambda n: (within[n]["unanswerable_refused"],
                                                         -within[n]["answerable_refused"])) if within else None
    record["seconds"] = round(time.perf_counter() - started, 1)
    print("chosen:", record["chosen_recipe"])
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
