"""helpers.evaluate.answerability_lexical: the word-level summaries the answerability head may read, their
vocabulary (fitted on the fit prompts, saved with the head), and the head's dev choice offering them."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.evaluate.answerability_head import AnswerabilityHead, choose_head, label_auc
from helpers.evaluate.answerability_lexical import (
    LEXICAL_NAMES,
    NAME_SUMMARY,
    LexicalVocabulary,
    lexical_features,
    lexical_summary,
    missing_names,
    request_names,
)

DOCS = [
    "The Danube flows through Vienna. Its delta lies in Romania.\nBarges carry grain downstream.",
    "Marie Curie won two Nobel prizes. She studied radium in Paris.",
    "Vienna hosts the opera ball every winter. The river Danube freezes rarely.",
    "Grain prices rose in Romania after the harvest failed.",
]


def _item(request, document, answerable=True):
    return {"request": request, "document": document, "answerable": answerable}


def _vocab() -> LexicalVocabulary:
    requests = ["Summarize the text using bullet points.", "Summarize where the Danube flows.",
                "Summarize Curie's prizes.", "Which city hosts the ball?"]
    return LexicalVocabulary.fit([_item(r, d) for r, d in zip(requests, DOCS, strict=True)])


def test_the_vocabulary_keeps_shared_words_and_the_instruction_words_of_requests():
    vocab = _vocab()
    assert "danube" in vocab.idf and "vienna" in vocab.idf and "romania" in vocab.idf  # in two documents
    assert "curie" not in vocab.idf and vocab.weight("curie") == vocab.unseen_idf  # in one: the rare weight
    assert vocab.weight("danube") < vocab.unseen_idf  # a word in more documents weighs less
    assert "summarize" in vocab.generic  # in 3 of 4 requests: an instruction word, not a subject
    assert json.loads(json.dumps(vocab.__dict__)) == vocab.__dict__  # plain types: saved in the head's JSON
    with pytest.raises(ValueError, match="fit prompts"):
        LexicalVocabulary.fit([])


def test_a_swapped_subject_reads_as_missing_and_a_missing_instruction_word_does_not():
    vocab = _vocab()
    doc = DOCS[0]
    answerable = dict(zip(LEXICAL_NAMES, lexical_summary("Summarize where the Danube flows through.", doc, vocab),
                          strict=True))
    near_miss = dict(zip(LEXICAL_NAMES, lexical_summary("Summarize where the Rhine flows through.", doc, vocab),
                         strict=True))
    # "summarize" is missing from the document in both; only the near miss lacks its subject
    assert answerable["share"] < 1 and answerable["specific share"] == 1.0
    assert near_miss["specific share"] < answerable["specific share"]
    assert near_miss["specific idf missing"] > answerable["specific idf missing"] == 0.0
    assert near_miss["idf missing"] > answerable["idf missing"]


def test_the_best_sentence_and_the_pairs_see_where_the_words_sit():
    vocab = _vocab()
    together = "The Danube delta lies in Romania."
    apart = "The Danube is long.\nA delta forms at sea.\nRomania is large."
    request = "Where does the Danube delta lie in Romania?"
    one, spread = (dict(zip(LEXICAL_NAMES, lexical_summary(request, d, vocab), strict=True)) for d in (together, apart))
    assert one["share"] == spread["share"]  # the same words in both documents
    assert one["best sentence"] > spread["best sentence"]
    assert one["bigram share"] > spread["bigram share"]
    empty = lexical_summary("the of and", DOCS[0], vocab)  # no content words at all: defined, not a crash
    assert len(empty) == len(LEXICAL_NAMES)


def test_the_head_chooses_the_word_summaries_when_they_carry_the_label_and_keeps_its_vocabulary(tmp_path):
    """States that are noise and requests whose subject is in the document or not: only a candidate reading the
    word summaries separates dev, and the saved head scores a prompt with the fit's vocabulary, never with the
    prompts it is scoring (a prompt's score does not depend on its neighbours)."""
    def word(prefix, i):  # a word of its own per prompt: no subject is common enough to count as generic
        return prefix + "".join(chr(97 + int(c)) for c in str(i))

    def items(n, seed):
        gen = torch.Generator().manual_seed(seed)
        out = []
        for i in range(n):
            answerable = bool(torch.rand(1, generator=gen) < 0.5)
            subject, other = word("subj", seed * 1000 + i), word("absent", seed * 1000 + i)
            doc = f"Notes on {subject} and more. They matter here."
            # one of three content words in the document either way: the overlap share cannot tell them apart
            request = f"Summarize {subject} in bullets." if answerable else f"Summarize {other} in notes."
            out.append({"request": request, "document": doc, "answerable": answerable, "doc_id": f"d{i % 20}"})
        return out

    fit, dev = items(120, 1), items(60, 2)
    gen = torch.Generator().manual_seed(3)
    fit_x, dev_x = torch.randn(120, 3, 8, generator=gen), torch.randn(60, 3, 8, generator=gen)
    plain = choose_head(fit, fit_x, dev, dev_x, model_id="m")
    head = choose_head(fit, fit_x, dev, dev_x, model_id="m", lexical=True)
    assert plain.dev["dev_auc"] < 0.8 and head.dev["dev_auc"] > 0.95
    assert head.lexical is not None
    assert any("+lexical" in k for k in head.dev["dev_auc_by_candidate"])
    assert LexicalVocabulary(**head.lexical) == LexicalVocabulary.fit(fit)  # the fit's own vocabulary
    refused = head.refuses(dev_x, dev)
    assert [head.refuses(dev_x[i:i + 1], [it])[0] for i, it in enumerate(dev)] == refused
    from helpers.evaluate.plots import plot_head_choice

    ax = plot_head_choice(head).axes[0]
    assert "… + word-level summaries" in [line.get_label() for line in ax.get_lines()]  # its own curve, marked
    assert tuple(ax.collections[0].get_offsets()[0]) == (head.layer, pytest.approx(head.dev["dev_auc"]))
    loaded = AnswerabilityHead.load(head.save(tmp_path / "head.json"))
    assert loaded.lexical == head.lexical and loaded.refuses(dev_x, dev) == refused
    # the out-of-fold rule refits on fit + dev, with their vocabulary
    oof = choose_head(fit, fit_x, dev, dev_x, model_id="m", lexical=True, threshold_rule="out_of_fold_budget")
    assert oof.lexical is not None and LexicalVocabulary(**oof.lexical) == LexicalVocabulary.fit([*fit, *dev])
    assert lexical_features(dev[:3], LexicalVocabulary(**head.lexical)).shape == (3, len(LEXICAL_NAMES))


def test_lexical_only_offers_no_candidate_without_the_word_summaries():
    """Where the word summaries carry nothing (every request word in its document) and a state dimension carries the
    label, the open choice takes the state alone; ``lexical_only`` still reads the summaries, beside that state."""
    gen = torch.Generator().manual_seed(0)
    fit = [_item("Danube flows", DOCS[0], bool(a)) | {"doc_id": f"d{i % 10}"}
           for i, a in enumerate((torch.rand(80, generator=gen) < 0.5).tolist())]
    dev = [dict(it, doc_id=f"v{i % 5}") for i, it in enumerate(fit[:40])]
    x = torch.randn(80, 3, 4, generator=gen)
    x[:, 1, 0] += torch.tensor([2.0 if it["answerable"] else -2.0 for it in fit])
    open_choice = choose_head(fit, x, dev, x[:40], model_id="m", lexical=True)
    only = choose_head(fit, x, dev, x[:40], model_id="m", lexical=True, lexical_only=True)
    assert open_choice.lexical is None  # ties go to fewer features: the summaries are constant here
    assert only.lexical is not None and only.layer == 1
    assert all(k.endswith(("+lexical/l2=0.001", "+lexical/l2=0.01", "+lexical/l2=0.1"))
               for k in only.dev["dev_auc_by_candidate"])
    assert "word-level summaries" in only.dev["rule"] and "state |" not in only.dev["rule"]
    offered = "highest dev AUC over layers x l2 x ({}); "
    assert open_choice.dev["rule"].startswith(offered.format(
        "state | state + overlap share | state + overlap share + word-level summaries"))
    assert only.dev["rule"].startswith(offered.format("state + overlap share + word-level summaries"))


def test_request_names_are_capitalised_words_a_clause_cannot_start_with():
    assert request_names("What are the most impactful 2023 developments for TikTok?") == ["TikTok"]
    # a clause's first word, a contraction and an instruction word are not names; a possessive is cut off
    assert request_names("Based on the text above, My teen and I'm sure Please tell NetChoice's plans to OPM.",
                         generic=["please"]) == ["NetChoice", "OPM"]
    assert request_names("Question about the document: Does Bacillus support big families?") == ["Bacillus"]
    assert request_names("what does the document say?") == []


def test_a_missing_name_is_one_the_document_never_mentions_in_any_case_or_number():
    doc = "Disney's theme parks charge fees. Cola prices rose; COLA adjustments follow the CPI."
    assert missing_names("How much has Neoantigens collected in fees from Disney since 2014?", doc) == ["Neoantigens"]
    assert missing_names("Explain how COLAs and the CPI are linked.", doc) == []  # plural and case do not matter
    assert missing_names("How do Theme Parks charge?", doc) == []


def test_the_missing_name_flag_is_a_seventh_summary_only_when_asked_and_old_vocabularies_load_without_it():
    vocab = _vocab()
    named = LexicalVocabulary.fit([_item(r, d) for r, d in zip(["Summarize the text.", "Summarize the Danube.",
                                                                "Summarize Curie's prizes.", "Which city?"],
                                                               DOCS, strict=True)], names=True)
    assert named.summary_names == (*LEXICAL_NAMES, NAME_SUMMARY) and vocab.summary_names == LEXICAL_NAMES
    saved = {k: v for k, v in vars(vocab).items() if k != "names"}  # a head's JSON from before the flag
    assert LexicalVocabulary(**saved).names is False
    # a long request whose one swapped subject is diluted in the shares, flagged whole by the name
    long = "Summarize where the Rhine flows through Vienna and Romania, and what barges carry downstream."
    held = long.replace("Rhine", "Danube")
    flags = [dict(zip(named.summary_names, lexical_summary(r, DOCS[0], named), strict=True)) for r in (long, held)]
    assert flags[0][NAME_SUMMARY] == 1.0 and flags[1][NAME_SUMMARY] == 0.0
    assert flags[0]["share"] > 0.75  # the shares barely move: 1 of 7 specific words
    assert lexical_features([_item(long, DOCS[0])], named).shape == (1, len(LEXICAL_NAMES) + 1)


def test_the_head_offers_the_flag_when_asked_and_says_so():
    """Requests that miss one word of their document in the same place, a name when unanswerable and a plain word
    when answerable: the six summaries are equal on both sides, so only a head reading the flag separates dev; with
    ``lexical_names`` the choice reads it, and its rule text and summary say so."""
    gen = torch.Generator().manual_seed(5)

    def items(n, offset):
        out = []
        for i in range(n):
            answerable = i % 2 == 0
            word = "".join(chr(97 + int(c)) for c in str(1000 * offset + i))  # unseen, never generic
            cargo = "cargo" + word if answerable else "Cargo" + word
            request = f"Explain how barges carry {cargo} downstream to Vienna."
            out.append(_item(request, DOCS[0], answerable) | {"doc_id": f"d{(i + offset) % 10}"})
        return out

    fit, dev = items(60, 1), items(30, 2)
    x_fit, x_dev = torch.randn(60, 2, 4, generator=gen), torch.randn(30, 2, 4, generator=gen)
    plain = choose_head(fit, x_fit, dev, x_dev, model_id="m", lexical=True)
    head = choose_head(fit, x_fit, dev, x_dev, model_id="m", lexical_names=True)
    assert plain.dev["dev_auc"] < 0.8 and head.dev["dev_auc"] == 1.0
    assert head.lexical is not None and head.lexical["names"] is True
    assert head.summary()["with_names"] is True and "missing-name flag" in head.dev["rule"]
    from helpers.evaluate.answerability_head import describe_head

    assert describe_head(head.summary()).endswith("word-level summaries + missing-name flag")
    assert head.refuses(x_dev, dev) == [not it["answerable"] for it in dev]


def test_the_flag_can_join_after_the_choice_so_it_cannot_steer_it():
    """``names_after_choice``: the family (layer, L2) is the one chosen without the flag, and the refit on fit + dev
    reads the flag, which then separates the prompts the plain summaries cannot. It needs an out-of-fold rule."""
    gen = torch.Generator().manual_seed(5)

    def items(n, offset):
        out = []
        for i in range(n):
            answerable = i % 2 == 0
            word = "".join(chr(97 + int(c)) for c in str(1000 * offset + i))
            cargo = "cargo" + word if answerable else "Cargo" + word
            out.append(_item(f"Explain how barges carry {cargo} downstream to Vienna.", DOCS[0], answerable)
                       | {"doc_id": f"d{(i + offset) % 10}"})
        return out

    fit, dev = items(60, 1), items(30, 2)
    x_fit, x_dev = torch.randn(60, 3, 4, generator=gen), torch.randn(30, 3, 4, generator=gen)
    rule = {"threshold_rule": "out_of_fold_budget", "budget": 0.1, "lexical_only": True}
    plain = choose_head(fit, x_fit, dev, x_dev, model_id="m", **rule)
    steered = choose_head(fit, x_fit, dev, x_dev, model_id="m", lexical_names=True, **rule)
    after = choose_head(fit, x_fit, dev, x_dev, model_id="m", names_after_choice=True, **rule)
    assert (after.layer, after.l2, after.dev["dev_auc_by_candidate"]) == \
        (plain.layer, plain.l2, plain.dev["dev_auc_by_candidate"])  # chosen as if the flag did not exist
    assert steered.dev["dev_auc"] == 1.0 and after.dev["dev_auc"] < 0.8  # the flag would have carried the choice
    assert plain.lexical["names"] is False and after.lexical["names"] is True
    assert "missing-name flag added" in after.dev["rule"]
    assert after.refuses(x_dev, dev) == [not it["answerable"] for it in dev]  # the refit reads it
    assert plain.refuses(x_dev, dev) != [not it["answerable"] for it in dev]
    with pytest.raises(ValueError, match="out-of-fold"):
        choose_head(fit, x_fit, dev, x_dev, model_id="m", names_after_choice=True, lexical_only=True)
    from helpers.config import TrainConfig, config_for

    with pytest.raises(ValueError, match="answerability_names_after_choice"):
        config_for(TrainConfig, "smoke", answerability_names_after_choice=True)  # the default cut is dev's
    assert config_for(TrainConfig, "smoke", answerability_names_after_choice=True,
                      answerability_threshold="out_of_fold_budget").answerability_names_after_choice


def test_a_stacked_head_learns_from_out_of_fold_state_scores_so_noise_cannot_pose_as_signal():
    """States of pure noise, wider than the fit is long (a fit of them alone separates its own prompts perfectly),
    and word summaries that carry the label: the second fit of a stacked head sees the state column out of fold,
    where it is noise, so it leans on the summaries. Fed the in-sample column, it would lean on the state."""
    from helpers.evaluate.answerability_head import fit_logistic

    def items(n, seed):
        out = []
        for i in range(n):
            answerable = i % 2 == 0
            word = "".join(chr(97 + int(c)) for c in str(1000 * seed + i))
            request = f"Summarize subj{word} in notes." if answerable else f"Summarize absent{word} in notes."
            out.append(_item(request, f"Notes on subj{word} and more.", answerable) | {"doc_id": f"d{i % 20}"})
        return out

    fit, dev = items(80, 1), items(40, 2)
    gen = torch.Generator().manual_seed(4)
    fit_x, dev_x = torch.randn(80, 1, 200, generator=gen), torch.randn(40, 1, 200, generator=gen)
    head = choose_head(fit, fit_x, dev, dev_x, model_id="m", lexical_only=True, stacked=True)
    assert head.state_score is not None and head.dev["dev_auc"] > 0.95
    state_weight, *other_weights = head.score.weight
    assert abs(state_weight) < 0.5 * max(abs(w) for w in other_weights)
    in_sample = fit_logistic(fit_x[:, 0], torch.tensor([it["answerable"] for it in fit]), head.l2)
    column = in_sample(fit_x[:, 0]).reshape(-1, 1)
    assert label_auc(column.flatten().tolist(), [it["answerable"] for it in fit]) == 1.0  # what a leak would look like
