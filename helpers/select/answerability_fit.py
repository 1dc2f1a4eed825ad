"""The select stage's answerability head: fitted on the training documents outside dev, chosen on the dev
documents the checkpoint choice uses, saved beside the adapter (``gemma-facts select`` with
``TrainConfig.answerability_head``, or ``gemma-facts select --head-only`` without a trained adapter).

The head, its features and its dev rule are in ``helpers.evaluate.answerability_head`` (evaluation applies it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from helpers.evaluate.answerability_head import (
    L2_STRENGTHS,
    AnswerabilityHead,
    choose_bagged,
    choose_head,
    describe_head,
    head_path,
    prompt_features,
)

__all__ = ["extra_fit_items", "fit_answerability_head"]


def fit_answerability_head(model_cfg: Any, train_cfg: Any, model: Any = None, tokenizer: Any = None
                           ) -> AnswerabilityHead:
    """Fit the head on the training split's non-dev documents, choose it on the dev documents (the ones the
    checkpoint choice uses), save it to ``head_path()``. ``model``: an already loaded model (its base side
    is used); loaded here otherwise."""
    import torch

    from helpers.evaluate.run import eval_items, side_of
    from helpers.notebook import require_input
    from helpers.train.dpo import PAIRS_MADE_BY, dev_documents, dev_split, load_pairs, train_split_fingerprint

    n_dev = dev_documents(train_cfg)
    if not n_dev:
        raise ValueError("TrainConfig.answerability_head needs dev documents to choose the head on: set "
                         "select_dev_documents (or eval_dev_documents) > 0")
    pairs_dir = require_input(train_cfg.pairs_dir, PAIRS_MADE_BY)
    pairs = load_pairs(pairs_dir)
    fit_rows, dev_rows = dev_split(pairs["train"], n_dev, train_cfg.dev_seed)
    fit_items, dev_items = eval_items(list(fit_rows), set_name="fit"), eval_items(list(dev_rows), set_name="dev")
    reviewed = {}
    if train_cfg.answerability_label_review:  # only the prompts whose label two blind readers confirmed
        from helpers.evaluate.label_review import keep_confirmed, load_review

        review = load_review(train_cfg.answerability_label_review)
        fit_items, reviewed["fit"] = keep_confirmed(fit_items, review, "fit")
        dev_items, reviewed["dev"] = keep_confirmed(dev_items, review, "dev")
        print(f"label review: fitting on {reviewed['fit']['kept']} fit prompts ({reviewed['fit']['left_out']} left "
              f"out), choosing on {reviewed['dev']['kept']} dev prompts ({reviewed['dev']['left_out']} left out)",
              flush=True)
    extra_items = []
    if train_cfg.answerability_extra_fit_pairs:  # more fit documents from a second pairs folder, never scored
        extra_items = extra_fit_items(train_cfg.answerability_extra_fit_pairs, pairs, pairs_dir)
        print(f"extra fit: {len(extra_items)} prompts on {len({it['doc_id'] for it in extra_items})} documents "
              f"from {', '.join(train_cfg.answerability_extra_fit_pairs)}", flush=True)
    if model is None:
        from helpers.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(model_cfg)
    model.eval()
    surprisal = train_cfg.answerability_surprisal
    with side_of(model, "base"):
        fit_states, fit_surprisal = prompt_features(model, tokenizer, fit_items, model_cfg, surprisal=surprisal,
                                                    desc="head: fit prompts")
        extra_states = (prompt_features(model, tokenizer, extra_items, model_cfg, surprisal=False,
                                        desc="head: extra fit prompts")[0] if extra_items else None)
        dev_states, dev_surprisal = prompt_features(model, tokenizer, dev_items, model_cfg, surprisal=surprisal,
                                                    desc="head: dev prompts")
    options = {"l2s": tuple(train_cfg.answerability_l2s or L2_STRENGTHS),
               "threshold_rule": train_cfg.answerability_threshold, "budget": train_cfg.answerability_budget,
               "lexical": train_cfg.answerability_lexical, "lexical_only": train_cfg.answerability_lexical_only,
               "lexical_names": train_cfg.answerability_names, "stacked": train_cfg.answerability_stacked,
               "choice": train_cfg.answerability_choice, "fold_seed": train_cfg.dev_seed,
               "layer_window": train_cfg.answerability_layer_window,
               "names_after_choice": train_cfg.answerability_names_after_choice}
    if extra_items:  # after the fit prompts, as experiments/head_lexical.py appends them
        fit_items, fit_states = [*fit_items, *extra_items], torch.cat([fit_states, extra_states])
    if train_cfg.answerability_dev_splits > 1:  # heads on several dev splits of the training prompts, averaged
        head = choose_bagged([*fit_items, *dev_items], torch.cat([fit_states, dev_states]), model_cfg.model_id,
                             train_cfg.answerability_dev_splits, len({it["doc_id"] for it in dev_items}),
                             train_cfg.dev_seed, surprisal=None if fit_surprisal is None else
                             torch.cat([fit_surprisal, dev_surprisal]), **options)
    else:
        head = choose_head(fit_items, fit_states, dev_items, dev_states, model_cfg.model_id,
                           fit_surprisal=fit_surprisal, dev_surprisal=dev_surprisal, **options)
    head.dev["train_fingerprint"] = train_split_fingerprint(pairs_dir)
    if reviewed:
        head.dev["label_review"] = reviewed
    if extra_items:
        head.dev["extra_fit"] = {"pairs": list(train_cfg.answerability_extra_fit_pairs), "prompts": len(extra_items),
                                 "train_fingerprint": [train_split_fingerprint(p)
                                                       for p in train_cfg.answerability_extra_fit_pairs]}
    path = head.save(head_path())
    print(f"Answerability head: {describe_head(head.summary())}, dev AUC {head.dev['dev_auc']}, refuses {head.dev['dev_unanswerable_refused']:.0%} of unanswerable and "
          f"{head.dev['dev_answerable_refused']:.0%} of answerable dev prompts → {path}", flush=True)
    return head


def extra_fit_items(extra_pairs_dirs: Sequence[Any], main: Any, pairs_dir: Any) -> list[dict]:
    """The training prompts of more pairs folders, as fit items (set "fit", as the pseudo-test reads them), in the
    order given. Stops if one shares a document with ``main`` (the main pairs, already loaded from ``pairs_dir``),
    test split included: a test document in the fit would be scored on what it was fitted to; or with an earlier
    folder: a document fitted twice would weigh double."""
    from helpers.evaluate.run import eval_items
    from helpers.notebook import require_input
    from helpers.train.dpo import PAIRS_MADE_BY, load_pairs

    seen = {d: str(pairs_dir) for split in main.values() for d in split["doc_id"]}
    items: list[dict] = []
    for folder in extra_pairs_dirs:  # TrainConfig has made one folder given as a string a tuple
        extra = load_pairs(require_input(folder, PAIRS_MADE_BY))["train"]
        shared = sorted({d for d in extra["doc_id"] if d in seen})
        if shared:
            raise ValueError(f"TrainConfig.answerability_extra_fit_pairs ({folder}) shares {len(shared)} "
                             f"document(s) with {seen[shared[0]]}, e.g. {shared[:3]}: build it from other documents")
        seen.update({d: str(folder) for d in extra["doc_id"]})
        items += eval_items(list(extra), set_name="fit")
    return items
