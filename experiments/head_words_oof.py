"""Dev diagnostic (thirteenth pass of issue 16): where the word summaries let unanswerable prompts through, and
whether a missing-name flag or a stacked state helps, out of fold on the reviewed training prompts.

No dev choice and no threshold rule here: five document folds of the training prompts whose label both blind
readers confirmed (``docs/label_review_training.md``), a logistic fit on four, scored on the fifth; reported as the
AUC and the share of unanswerable prompts caught where at most 5% of the answerable ones are refused
(``budget_threshold`` on the out-of-fold scores). Rows:

* ``words``: the six word summaries alone (``helpers.evaluate.answerability_lexical``), and the same with the
  missing-name flag (``LexicalVocabulary.fit(names=True)``); how often the flag fires per label; the 20 unanswerable
  prompts the words score most answerable and the 10 answerable ones they score least;
* ``joint`` / ``stacked``: the state of layers 7, 10 and 12 with the overlap share and the six summaries, in one fit
  (L2 0.1) or stacked (the state's own fit, L2 1.0, out of fold inside the four folds, then a second fit, L2 0.01).

Reads the training split and the select stage's cache of the training prompts' states (the model is loaded to fill
it when empty: ~10 min).

    python experiments/head_words_oof.py --pairs outputs/whole_clean/pairs --out results/head_words_oof.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LAYERS = (7, 10, 12)
BUDGET = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="outputs/whole_clean/pairs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    from experiments.head_family_choice import prompt_key, training_prompt_features
    from helpers.config import LABEL_REVIEW_TRAIN_FILE, ModelConfig, config_for
    from helpers.data.excerpts import content_words
    from helpers.evaluate.answerability_head import (
        budget_threshold,
        document_folds,
        fit_logistic,
        label_auc,
        overlap_shares,
        state_score_column,
    )
    from helpers.evaluate.answerability_lexical import LexicalVocabulary, lexical_features, missing_names
    from helpers.evaluate.label_review import keep_confirmed, load_review
    from helpers.train.report import code_revision

    started = time.perf_counter()
    _, everything, states, _ = training_prompt_features(args.pairs, config_for(ModelConfig, "local"), surprisal=False)
    confirmed = {prompt_key(it) for it in keep_confirmed(everything, load_review(LABEL_REVIEW_TRAIN_FILE), "training")[0]}
    keep = [i for i, it in enumerate(everything) if prompt_key(it) in confirmed]
    items, states = [everything[i] for i in keep], states[torch.tensor(keep)]
    y = torch.tensor([bool(it["answerable"]) for it in items])
    answerable = y.tolist()

    def out_of_fold(design, l2: float) -> list[float]:
        """``design(train_idx, test_idx) -> (x_train, x_test)``; each prompt scored by a fit without its document."""
        scores = [0.0] * len(items)
        for held in document_folds(items, 5, seed=0):
            train = [i for i, it in enumerate(items) if it["doc_id"] not in held]
            test = [i for i, it in enumerate(items) if it["doc_id"] in held]
            x_train, x_test = design(train, test)
            for i, v in zip(test, fit_logistic(x_train, y[train], l2)(x_test).tolist(), strict=True):
                scores[i] = v
        return scores

    def rates(scores: list[float]) -> dict:
        _, at = budget_threshold(scores, answerable, BUDGET)
        return {"auc": label_auc(scores, answerable), "answerable_refused": at["dev_answerable_refused"],
                "unanswerable_caught": at["dev_unanswerable_refused"]}

    def words(names: bool):
        def design(train, test):
            vocab = LexicalVocabulary.fit([items[i] for i in train], names=names)
            return (lexical_features([items[i] for i in idx], vocab) for idx in (train, test))
        return design

    def with_state(layer: int, stacked: bool):
        def design(train, test):
            vocab = LexicalVocabulary.fit([items[i] for i in train])

            def rest(idx):
                chosen = [items[i] for i in idx]
                return torch.cat([overlap_shares(chosen), lexical_features(chosen, vocab)], 1)

            if not stacked:
                return (torch.cat([states[idx, layer], rest(idx)], 1) for idx in (train, test))
            inner, column = state_score_column(states[train, layer], [items[i] for i in train], 1.0)
            return (torch.cat([column, rest(train)], 1),
                    torch.cat([inner(states[test, layer]).reshape(-1, 1), rest(test)], 1))
        return design

    generic = LexicalVocabulary.fit(items).generic  # the instruction words of all the prompts' requests

    def listed(scores, want_answerable: bool, n: int) -> list[dict]:
        order = sorted((i for i in range(len(items)) if answerable[i] == want_answerable),
                       key=lambda i: scores[i], reverse=not want_answerable)[:n]
        out = []
        for i in order:
            held = set(content_words(items[i]["document"]))
            out.append({"score": round(scores[i], 2), "source": "+".join(items[i]["source"]),
                        "request": items[i]["request"][:160],
                        "missing_words": [w for w in dict.fromkeys(content_words(items[i]["request"])) if w not in held][:10],
                        "missing_names": missing_names(items[i]["request"], items[i]["document"], generic)})
        return out

    record: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "command": "python experiments/head_words_oof.py " + " ".join(sys.argv[1:]),
                    "code": code_revision(), "prompts": {"answerable": sum(answerable),
                                                         "unanswerable": len(answerable) - sum(answerable)}}
    plain = out_of_fold(words(False), 0.01)
    record["words"] = rates(plain)
    record["words_and_names"] = {f"l2 {l2}": rates(out_of_fold(words(True), l2)) for l2 in (0.01, 0.1)}
    fires = [bool(missing_names(it["request"], it["document"], generic)) for it in items]
    record["name_flag_fires"] = {"answerable": sum(f for f, a in zip(fires, answerable, strict=True) if a),
                                 "unanswerable": sum(f for f, a in zip(fires, answerable, strict=True) if not a)}
    record["words_let_through"] = listed(plain, False, 20)
    record["words_refuse_first"] = listed(plain, True, 10)
    record["state"] = {f"layer {layer}": {"joint": rates(out_of_fold(with_state(layer, False), 0.1)),
                                          "stacked": rates(out_of_fold(with_state(layer, True), 0.01))}
                       for layer in LAYERS}
    record["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({k: v for k, v in record.items() if k not in ("words_let_through", "words_refuse_first")},
                     indent=1))
    let_through = record["words_let_through"]
    print("let through:", sum(bool(r["missing_names"]) for r in let_through), "of", len(let_through),
          "with a missing name;", sum(r["source"] == "near_miss" for r in let_through), "near misses")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
