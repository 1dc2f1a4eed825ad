"""The two-reader label review: which prompts keep their label, the rates on them, and the bundled record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.config import LABEL_REVIEW_FILE, EvalConfig, config_for, repo_root
from helpers.evaluate.label_review import confirmed_ids, item_key, label_holds, load_review
from helpers.evaluate.run import reviewed_rates
from tools.label_audit import (
    REVIEW_MD,
    REVIEW_ROUNDS,
    REVIEW_SHEETS,
    carried_readings,
    draw_review,
    merge_review,
    render_review,
)


def _item(id_, answerable, kind, request="What is it?", document="It is a cat."):
    return {"id": id_, "answerable": answerable, "source": [kind], "request": request, "document": document,
            "pair_type": ["over_refusal" if answerable else "unanswerable"], "domain": "x", "style": "question"}


def _entry(item, *verdicts):
    return {"id": item["id"], "key": item_key(item["request"], item["document"]), "answerable": item["answerable"],
            "kind": item["source"][0], "readings": [{"reader": f"R{i}", "verdict": v, "reason": "r"}
                                                    for i, v in enumerate(verdicts)]}


ITEMS = [_item("a1", True, "refusal"), _item("a2", True, "refusal", document="It is a dog."),
         _item("u1", False, "near_miss", request="What is its name?"),
         _item("u2", False, "answer_removed", document="Nothing here."),
         _item("u3", False, "unrelated_doc", request="Who won in 1903?")]
REVIEW = {"rule": "both confirm", "items": [
    _entry(ITEMS[0], "answerable", "answerable"),
    _entry(ITEMS[1], "answerable", "partly"),  # half answered by one reader: out
    _entry(ITEMS[2], "not answerable", "not answerable"),
    _entry(ITEMS[3], "answerable", "answerable"),  # both readers reverse the label: out
    _entry(ITEMS[4], "not answerable", "answerable"),  # disagreement: out
]}


def test_a_label_is_kept_only_when_both_readers_confirm_it():
    kept, summary = confirmed_ids(ITEMS, REVIEW)
    assert kept == {"a1", "u1"}
    assert summary["applied"] and summary["kept"] == 2
    assert summary["by_kind"] == {"refusal": {"kept": 1, "left_out": 1}, "near_miss": {"kept": 1, "left_out": 0},
                                  "answer_removed": {"kept": 0, "left_out": 1},
                                  "unrelated_doc": {"kept": 0, "left_out": 1}}
    assert not label_holds(REVIEW["items"][3])


@pytest.mark.parametrize("change", ["document", "label", "missing"])
def test_a_review_of_another_split_is_not_applied(change):
    items = [dict(it) for it in ITEMS]
    if change == "document":  # the same id over a rebuilt text: the readers never saw this prompt
        items[1]["document"] = "It is a dog, a big one."
    elif change == "label":
        items[2]["answerable"] = True
    else:
        items.append(_item("new", True, "refusal"))
    kept, summary = confirmed_ids(items, REVIEW)
    assert kept is None and not summary["applied"]
    assert summary["matched"] == len(items) - 1 and "another test split" in summary["reason"]


def _verdict(refused):
    return {"offline": {"refused": refused, "answered": not refused, "supported": True,
                        "grounded_correct": not refused}}


def test_reviewed_rates_count_only_the_kept_prompts_for_every_side():
    judged = {  # item order: a1, a2, u1, u2, u3
        "base": [_verdict(True), _verdict(False), _verdict(False), _verdict(True), _verdict(False)],
        "aligned": [_verdict(True), _verdict(False), _verdict(False), _verdict(True), _verdict(False)],
        "base_with_head": [_verdict(False), _verdict(True), _verdict(True), _verdict(False), _verdict(False)],
    }
    out = reviewed_rates(ITEMS, judged, "offline", REVIEW)
    assert (out["n_answerable"], out["n_unanswerable"]) == (1, 1)
    # on all five prompts the base refuses 1 of 2 answerable and answers 2 of 3 unanswerable; on the kept two:
    assert out["base"]["over_refusal_rate"]["value"] == 1.0 and out["base"]["hallucination_rate"]["value"] == 1.0
    assert out["base_with_head"]["over_refusal_rate"]["value"] == 0.0
    assert out["base_with_head"]["hallucination_rate"]["value"] == 0.0
    assert out["relative_hallucination_reduction"] == {"aligned": 0.0, "base_with_head": 1.0}
    assert set(out["base"]["by_source"]) == {"refusal", "near_miss"}
    assert not reviewed_rates(ITEMS + [_item("new", True, "refusal")], {k: v + [_verdict(True)] for k, v in
                                                                       judged.items()}, "offline", REVIEW)["applied"]


def test_a_malformed_or_missing_review_is_a_clear_error(tmp_path):
    bad = {"items": [dict(REVIEW["items"][0], readings=[{"reader": "R0", "verdict": "answerable", "reason": ""}])]}
    (tmp_path / "one_reading.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ValueError, match="a1 needs two verdicts"):
        load_review(tmp_path / "one_reading.json")
    typo = {"items": [dict(REVIEW["items"][0], readings=[{"verdict": "yes"}, {"verdict": "answerable"}])]}
    (tmp_path / "typo.json").write_text(json.dumps(typo), encoding="utf-8")
    with pytest.raises(ValueError, match="'yes'"):
        load_review(tmp_path / "typo.json")
    with pytest.raises(FileNotFoundError, match="EvalConfig.label_review"):
        load_review(tmp_path / "nope.json")


def _answer_sheets(sheets, waves, mapping, by_id):
    """Each sheet of ``waves`` answered with the item's own label (a reader who agrees with construction)."""
    for wave in waves:  # each prompt once per wave; a sheet shows neither label nor kind nor id
        for c in range(REVIEW_SHEETS):
            sheet = json.loads((sheets / f"sheet_{wave}{c + 1}.json").read_text(encoding="utf-8"))
            assert all(set(entry) == {"key", "request", "text"} for entry in sheet)
            verdicts = [{"key": e["key"], "reason": "read",
                         "verdict": "answerable" if by_id[mapping[e["key"]]]["answerable"] else "not answerable"}
                        for e in sheet]
            (sheets / f"verdicts_{wave}{c + 1}.json").write_text(json.dumps(verdicts), encoding="utf-8")


def test_the_tool_merges_blind_sheets_of_two_rounds_into_a_review_that_evaluation_matches(tmp_path, contract_pairs):
    from datasets import Dataset, DatasetDict

    from helpers.evaluate.run import eval_items

    pairs = tmp_path / "pairs"
    DatasetDict({"train": Dataset.from_list(contract_pairs[:3]), "test": Dataset.from_list(contract_pairs[3:])}
                ).save_to_disk(str(pairs))
    sheets = tmp_path / "sheets"
    items = eval_items(list(Dataset.from_list(contract_pairs[3:])), None, 42)
    by_id = {it["id"]: it for it in items}
    first = eval_items(list(Dataset.from_list(contract_pairs[3:])), 1, 42)  # round 1: one prompt per side
    mapping = draw_review(str(pairs), sheets, 1, REVIEW_ROUNDS[0])
    assert sorted(mapping.values()) == sorted([it["id"] for it in first] * 2)
    _answer_sheets(sheets, REVIEW_ROUNDS[0], mapping, by_id)
    round_one = merge_review(str(pairs), sheets)
    assert [e["id"] for e in round_one["items"]] == [it["id"] for it in first]
    mapping = draw_review(str(pairs), sheets, None, REVIEW_ROUNDS[1], {e["id"] for e in round_one["items"]})
    _answer_sheets(sheets, REVIEW_ROUNDS[1], mapping, by_id)
    review = merge_review(str(pairs), sheets)
    path = tmp_path / "review.json"
    path.write_text(json.dumps(review), encoding="utf-8")
    kept, summary = confirmed_ids(items, load_review(path))
    assert kept == {it["id"] for it in items} and summary["applied"]
    readers = {e["id"]: {r["reader"][0] for r in e["readings"]} for e in review["items"]}
    assert all(readers[it["id"]] == set(REVIEW_ROUNDS[0]) for it in first)
    assert sum(r == set(REVIEW_ROUNDS[1]) for r in readers.values()) == len(items) - len(first)
    (sheets / "verdicts_C1.json").write_text("[]", encoding="utf-8")  # a reader who skipped the sheet
    with pytest.raises(ValueError, match="verdicts_C1.json"):
        merge_review(str(pairs), sheets)


def test_a_rebuilt_split_reads_only_the_prompts_no_earlier_review_read_word_for_word(tmp_path, contract_pairs):
    """``--carry``: a prompt whose request and text an earlier record holds keeps that record's two readings (named
    record:id:sheet), whatever id the rebuilt split gives it; a prompt whose text changed by one word goes on the
    sheets again, so a verdict is never carried to a text its readers did not see."""
    from datasets import Dataset, DatasetDict

    from helpers.evaluate.run import eval_items

    pairs = tmp_path / "pairs"
    DatasetDict({"train": Dataset.from_list(contract_pairs[:3]), "test": Dataset.from_list(contract_pairs[3:])}
                ).save_to_disk(str(pairs))
    items = eval_items(list(Dataset.from_list(contract_pairs[3:])), None, 42)
    by_id = {it["id"]: it for it in items}
    old, changed = items[0], items[1]
    earlier = {"items": [_entry({**old, "id": "test-0099"}, "answerable", "partly"),
                         _entry({**changed, "document": changed["document"] + " More."}, "answerable", "answerable")]}
    record = tmp_path / "earlier_review.json"
    record.write_text(json.dumps(earlier), encoding="utf-8")
    carried = carried_readings([record])
    sheets = tmp_path / "sheets"
    mapping = draw_review(str(pairs), sheets, None, REVIEW_ROUNDS[0], n_sheets=REVIEW_SHEETS,
                          skip_keys=frozenset(carried))
    assert old["id"] not in mapping.values() and changed["id"] in mapping.values()
    assert sorted(mapping.values()) == sorted([it["id"] for it in items[1:]] * 2)
    _answer_sheets(sheets, REVIEW_ROUNDS[0], mapping, by_id)
    review = merge_review(str(pairs), sheets, carried=carried)
    entries = {e["id"]: e for e in review["items"]}
    assert len(entries) == len(items) and review["carried_from"] == ["earlier_review.json"]
    assert [r["verdict"] for r in entries[old["id"]]["readings"]] == ["answerable", "partly"]
    assert all(r["reader"].startswith("earlier_review.json:test-0099:") for r in entries[old["id"]]["readings"])
    assert not label_holds(entries[old["id"]])  # the carried "partly" still leaves it out
    assert {r["reader"][0] for r in entries[changed["id"]]["readings"]} == set(REVIEW_ROUNDS[0])


def test_the_104_document_review_covers_its_split_and_its_page_is_what_it_renders():
    """The review of configs/local_head_window_104_test_docs.json's split: every prompt read twice, carried or new,
    and at least 80 answerable prompts kept (the reason the split is that size)."""
    from helpers.config import config_sections

    path = repo_root() / config_sections(repo_root() / "configs" / "local_head_window_104_test_docs.json"
                                         )["eval"]["label_review"]
    review = load_review(path)
    assert len({e["doc_id"] for e in review["items"]}) == 104
    for entry in review["items"]:
        readers = [r["reader"] for r in entry["readings"]]
        assert len(readers) == 2 and len(set(readers)) == 2, entry["id"]
    kept = [e for e in review["items"] if label_holds(e)]
    assert sum(bool(e["answerable"]) for e in kept) >= 80
    page = repo_root() / "docs" / "label_review_104_test_docs.md"
    assert page.read_text(encoding="utf-8") == render_review(review)


def test_the_third_reader_is_matched_by_request_and_text_not_by_id():
    """The sampled audits were drawn from the bundled split; a rebuilt split reuses its ids for other prompts. An
    audited prompt counts where the review kept the same request and text, whatever its id there."""
    from tools.label_audit import AUDIT_JSON, review_summary

    audited = json.loads((repo_root() / AUDIT_JSON).read_text(encoding="utf-8"))["items"][:2]

    def entry(id_, request, text):
        return {"id": id_, "key": item_key(request, text), "doc_id": "d", "kind": "refusal", "answerable": True,
                "request": request, "readings": [{"reader": "a", "verdict": "answerable", "reason": "r"},
                                                 {"reader": "b", "verdict": "answerable", "reason": "r"}]}

    moved = entry("test-9999", audited[0]["request"], audited[0]["excerpt"])  # the first audited prompt, a new id
    reused = entry(audited[1]["id"], "another request", "another text")  # the second's id, another prompt
    third = review_summary({"items": [moved, reused]})["third_reader"]["answerable"]
    assert third == {"kept_and_sampled": 1, "confirmed": int(audited[0]["verdict"] == "answerable")}


def test_the_bundled_review_reads_every_prompt_twice_and_its_page_is_what_it_renders():
    cfg = config_for(EvalConfig, "local", label_review="bundled")
    assert Path(cfg.label_review) == LABEL_REVIEW_FILE
    review = load_review(LABEL_REVIEW_FILE)
    assert len(review["items"]) >= 160 and len({e["id"] for e in review["items"]}) == len(review["items"])
    for entry in review["items"]:  # two readers, one per wave of one round, never the same sheet
        assert tuple(sorted(r["reader"][0] for r in entry["readings"])) in REVIEW_ROUNDS, entry["id"]
        assert all(r["reason"].strip() for r in entry["readings"]), entry["id"]
    assert (repo_root() / REVIEW_MD).read_text(encoding="utf-8") == render_review(review)


def test_the_head_is_fitted_and_chosen_on_the_confirmed_training_prompts_only(tmp_path):
    """``TrainConfig.answerability_label_review``: a training prompt a reader found only partly answered is left
    out of the head's fit or dev prompts (matched by its text: fit and dev ids depend on the dev split); a review
    that lacks a prompt stops the stage."""
    import dataclasses

    from datasets import Dataset, DatasetDict

    from helpers.config import ModelConfig, TrainConfig
    from helpers.evaluate.run import eval_items
    from helpers.select.answerability_fit import fit_answerability_head
    from tests.test_train import CITIES, city_rows

    pairs = DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:4])),
                         "test": Dataset.from_list(city_rows(CITIES[4:]))})
    train_cfg = config_for(TrainConfig, "smoke", answerability_head=True)
    pairs.save_to_disk(train_cfg.pairs_dir)
    from helpers.train.dpo import dev_documents, dev_split

    items = eval_items(list(pairs["train"]), None, 42, set_name="train")
    _, dev_rows = dev_split(pairs["train"], dev_documents(train_cfg), train_cfg.dev_seed)
    dev_docs = set(dev_rows["doc_id"])
    left_out = next(it for it in items if it["answerable"] and it["doc_id"] not in dev_docs)  # a fit prompt
    review = {"items": [_entry(it, *(["partly", "answerable"] if it is left_out else
                                     [("answerable" if it["answerable"] else "not answerable")] * 2))
                        for it in items]}
    (tmp_path / "train_review.json").write_text(json.dumps(review), encoding="utf-8")
    cfg = dataclasses.replace(train_cfg, answerability_label_review=str(tmp_path / "train_review.json"))
    head = fit_answerability_head(config_for(ModelConfig, "smoke"), cfg)
    counts = head.dev["label_review"]
    assert (counts["fit"]["left_out"], counts["dev"]["left_out"]) == (1, 0)
    assert counts["fit"]["kept"] + counts["dev"]["kept"] == len(items) - 1
    assert sum(head.dev["fit"].values()) + sum(head.dev["dev"].values()) == len(items) - 1
    review["items"] = review["items"][1:]  # a review of another split: one prompt it never read
    (tmp_path / "train_review.json").write_text(json.dumps(review), encoding="utf-8")
    with pytest.raises(ValueError, match="does not cover"):
        fit_answerability_head(config_for(ModelConfig, "smoke"), cfg)


def test_the_bundled_training_review_reads_every_prompt_twice_and_its_page_is_what_it_renders():
    from helpers.config import LABEL_REVIEW_TRAIN_FILE, TrainConfig
    from tools.label_audit import TRAIN_REVIEW_MD, TRAIN_REVIEW_WAVES

    assert config_for(TrainConfig, "local", answerability_label_review="bundled").answerability_label_review == str(
        LABEL_REVIEW_TRAIN_FILE)
    review = load_review(LABEL_REVIEW_TRAIN_FILE)
    assert len(review["items"]) >= 500 and len({e["key"] for e in review["items"]}) == len(review["items"])
    for entry in review["items"]:
        assert sorted(r["reader"][0] for r in entry["readings"]) == sorted(TRAIN_REVIEW_WAVES), entry["id"]
    assert (repo_root() / TRAIN_REVIEW_MD).read_text(encoding="utf-8") == render_review(review)
