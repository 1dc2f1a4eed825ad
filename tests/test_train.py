"""Stage 02: DPO + QLoRA on the tiny random Gemma 2 through the real 4-bit path on the CPU.

Every run here is a few optimizer steps on a handful of synthetic pairs built with the one prompt
builder (the stage 01 code is not needed), so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import TrainerCallback

from helpers.config import REFUSAL, ModelConfig, TrainConfig, config_for
from helpers.prompts import build_messages

CITIES = [("Paris", "France", "Lyon"), ("Rome", "Italy", "Milan"), ("Madrid", "Spain", "Seville"),
          ("Oslo", "Norway", "Bergen"), ("Vienna", "Austria", "Graz"), ("Dublin", "Ireland", "Cork")]


def contract_row(doc_id: str, document: str, request: str, chosen: str, rejected: str, pair_type: str,
                 answerable: bool) -> dict:
    """One pair following the shared data contract."""
    return {"prompt": build_messages(document, request, "Be brief."),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "pair_type": pair_type, "source": "entity_swap" if answerable else "near_miss", "doc_id": doc_id,
            "domain": "geo", "answerable": answerable, "document": document, "request": request,
            "system_instruction": "Be brief.", "reference": chosen if answerable else REFUSAL}


def city_rows(cities: list[tuple[str, str, str]]) -> list[dict]:
    rows = []
    for city, country, wrong in cities:
        doc = f"{city} is the capital of {country}."
        rows.append(contract_row(city, doc, f"What is the capital of {country}?", f"The capital is {city}.",
                                 f"The capital is {wrong}.", "hallucination", True))
        rows.append(contract_row(city, doc, f"How many people live in {city}?", REFUSAL,
                                 f"{city} has 2 million people.", "unanswerable", False))
    return rows


@pytest.fixture
def pairs() -> DatasetDict:
    """4 train documents (8 pairs) and 2 test documents (4 pairs); no doc_id in both splits."""
    return DatasetDict({"train": Dataset.from_list(city_rows(CITIES[:4])),
                        "test": Dataset.from_list(city_rows(CITIES[4:]))})


@pytest.fixture
def yes_no_pairs() -> DatasetDict:
    """Trivially separable: chosen is always "yes", rejected always "no"; no test split rows."""
    rows = [contract_row(f"d{i}", f"Fact number {i} is true.", f"Is fact {i} true?", "yes", "no",
                         "paraphrase", True) for i in range(8)]
    return DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:0])})


def smoke_configs(**train_overrides) -> tuple[ModelConfig, TrainConfig]:
    train = dict(max_steps=2, save_steps=2, eval_steps=2, measure_16bit_footprint=False)
    train.update(train_overrides)
    return config_for(ModelConfig, "smoke"), config_for(TrainConfig, "smoke", **train)


def logged(history: list[dict], key: str) -> list[float]:
    return [entry[key] for entry in history if key in entry]


# --------------------------------------------------------------------------- config mapping


def test_dpo_config_maps_our_fields_with_no_mixed_precision_on_cpu():
    from helpers.train.dpo import build_dpo_config

    model_cfg, train_cfg = smoke_configs(max_steps=3)
    args = build_dpo_config(model_cfg, train_cfg)
    assert (args.fp16, args.bf16) == (False, False)  # TRL would default bf16=True; the CPU gets neither
    assert args.max_length == model_cfg.max_length == 256
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.2]
    assert args.beta == train_cfg.beta and args.learning_rate == 1e-3 and args.max_steps == 3
    assert args.gradient_checkpointing is True and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert args.eval_strategy == "steps" and args.save_total_limit == 2 and args.save_steps == 2
    assert args.output_dir == train_cfg.checkpoint_dir and args.report_to == []
    assert args.prediction_loss_only and not args.logging_nan_inf_filter  # NaN must reach the watch
    assert args.warmup_steps == 0.1  # a float < 1 is a ratio in transformers 5
    assert build_dpo_config(model_cfg, train_cfg, has_eval=False).eval_strategy == "no"


@pytest.mark.parametrize(("cuda", "bf16", "expected"), [
    (False, False, {"fp16": False, "bf16": False}),  # CPU: fp32
    (True, False, {"fp16": True, "bf16": False}),  # T4: no bf16 → fp16 AMP
    (True, True, {"fp16": False, "bf16": True}),  # Ampere+
])
def test_mixed_precision_follows_the_hardware(cuda, bf16, expected):
    from helpers.train.dpo import mixed_precision_flags

    assert mixed_precision_flags(config_for(TrainConfig), cuda=cuda, bf16_supported=bf16) == expected


def test_mixed_precision_refuses_impossible_requests():
    from helpers.train.dpo import mixed_precision_flags

    with pytest.raises(ValueError, match="'fp16' needs a CUDA GPU"):
        mixed_precision_flags(config_for(TrainConfig, mixed_precision="fp16"), cuda=False)
    with pytest.raises(ValueError, match="T4 has no bf16"):
        mixed_precision_flags(config_for(TrainConfig, mixed_precision="bf16"), cuda=True, bf16_supported=False)


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(loss_weights=(1.0,)), "loss_weights needs one weight per loss_type"),
    (dict(mixed_precision="fp8"), "mixed_precision must be one of"),
    (dict(push_to_hub=True), "hub_repo_id must name the Hub repo"),
    (dict(warmup_ratio=1.0), r"warmup_ratio must be in \[0.0, 1.0\)"),
    (dict(max_eval_pairs=0), "max_eval_pairs must be > 0"),
    (dict(batch_order="by_length"), "batch_order must be one of"),
])
def test_train_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_for(TrainConfig, **overrides)


def test_other_trl_fields_pass_through_unchanged_and_ours_are_not_set_twice(smoke_model_cfg):
    from helpers.train.dpo import build_dpo_config

    train_cfg = config_for(TrainConfig, "smoke", dpo={"weight_decay": 0.01, "label_smoothing": 0.1})
    args = build_dpo_config(smoke_model_cfg, train_cfg)
    assert (args.weight_decay, args.label_smoothing, args.beta) == (0.01, 0.1, train_cfg.beta)
    with pytest.raises(ValueError, match=r"TrainConfig.dpo sets \['beta'\].*set the TrainConfig"):
        build_dpo_config(smoke_model_cfg, config_for(TrainConfig, "smoke", dpo={"beta": 0.5}))
    with pytest.raises(ValueError, match=r"\['no_such_field'\] are not fields of trl.DPOConfig"):
        build_dpo_config(smoke_model_cfg, config_for(TrainConfig, "smoke", dpo={"no_such_field": 1}))


def test_cli_reads_a_json_config_and_flags_override_it(tmp_path, monkeypatch):
    """``gemma-facts train --config FILE --set ...``: the file, then --set, then the stage's own flags."""
    from helpers.cli import merged_config_file
    from helpers.train.dpo import configs_from_args

    cfg_file = tmp_path / "run.json"
    cfg_file.write_text(json.dumps({"model": {"lora_r": 2}, "train": {"beta": 0.3, "max_steps": 9}}))
    merged = merged_config_file(str(cfg_file), ["train.beta=0.4", "model.lora_alpha=3"])
    monkeypatch.setenv("GEMMA_FACTS_CONFIG", merged)
    model_cfg, train_cfg = configs_from_args(["--profile", "smoke", "--max-steps", "5", "--no-4bit", "--no-resume"])
    assert (model_cfg.lora_r, model_cfg.lora_alpha, model_cfg.load_in_4bit, model_cfg.model_id) == \
        (2, 3, False, "tiny-random:gemma2")
    assert (train_cfg.beta, train_cfg.max_steps, train_cfg.resume_from_checkpoint) == (0.4, 5, False)
    cfg_file.write_text(json.dumps({"training": {}}))
    monkeypatch.setenv("GEMMA_FACTS_CONFIG", str(cfg_file))
    with pytest.raises(ValueError, match="unknown section"):
        configs_from_args([])


# --------------------------------------------------------------------------- document-grouped order


def test_document_grouped_order_keeps_every_row_and_groups_one_document_per_step():
    from helpers.train.dpo import document_grouped_order

    docs = ["a"] * 6 + ["b"] * 4 + ["c"] * 5 + ["d"] * 1
    answerable = [True, False, True, False, True, True] + [False, True, False, True] + [True] * 3 + [False] * 2 + [True]
    order = document_grouped_order(docs, answerable, group_size=4, seed=7)
    assert sorted(order) == list(range(len(docs)))  # a permutation: nothing dropped or repeated
    full_groups = [order[k:k + 4] for k in range(0, 12, 4)]  # a:4, b:4, c:4 (then the pooled leftovers)
    for group in full_groups:
        assert len({docs[i] for i in group}) == 1
        # refusal-chosen and answer-chosen alternate, so each micro-batch of 2 holds one of each
        assert [answerable[i] for i in group[:2]].count(True) == 1
    assert {docs[i] for i in order[12:]} == {"a", "c", "d"}  # leftovers pooled at the end
    assert document_grouped_order(docs, answerable, 4, seed=7) == order  # seeded
    assert document_grouped_order(docs, answerable, 4, seed=8) != order
    with pytest.raises(ValueError, match="group_size must be > 0"):
        document_grouped_order(docs, answerable, 0, seed=7)


def test_by_document_order_reaches_the_trainer_unshuffled(pairs):
    from helpers.train.dpo import build_dpo_config, order_by_document, select_pairs

    model_cfg, train_cfg = smoke_configs(batch_order="by_document", per_device_train_batch_size=2,
                                         gradient_accumulation_steps=1)
    train, _ = select_pairs(pairs, train_cfg)
    assert train["doc_id"] == order_by_document(pairs["train"], train_cfg)["doc_id"]
    assert [len(set(train["doc_id"][k:k + 2])) for k in range(0, len(train), 2)] == [1] * (len(train) // 2)
    assert build_dpo_config(model_cfg, train_cfg).train_sampling_strategy == "sequential"
    assert build_dpo_config(*smoke_configs()).train_sampling_strategy == "random"


# --------------------------------------------------------------------------- data → TRL examples


def test_load_pairs_checks_the_contract(tmp_path, pairs):
    from helpers.train.dpo import load_pairs, select_pairs

    pairs.save_to_disk(str(tmp_path / "ok"))
    loaded = load_pairs(tmp_path / "ok")
    cfg = config_for(TrainConfig, max_train_pairs=3, max_eval_pairs=100)
    train, dev = select_pairs(loaded, cfg, loaded["test"])
    assert (len(train), len(dev)) == (3, 4)  # capped at 3; 4 dev pairs < 100 stay
    assert select_pairs(loaded, cfg)[1] is None  # no dev pairs: no evaluation (never the test split)
    pairs["train"].remove_columns(["doc_id"]).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="DatasetDict with a 'train' split"):
        load_pairs(tmp_path / "bad")
    DatasetDict({"train": pairs["train"].remove_columns(["reference"])}).save_to_disk(str(tmp_path / "bad2"))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['reference'\]"):
        load_pairs(tmp_path / "bad2")


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
def test_tokenized_training_sequences_start_with_exactly_one_bos(pairs, prompt_format):
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import build_trainer, to_trl_dataset

    model_cfg, train_cfg = smoke_configs()
    model_cfg = config_for(ModelConfig, "smoke", prompt_format=prompt_format)
    model, tok = load_model_and_tokenizer(model_cfg)
    trainer = build_trainer(model, tok, to_trl_dataset(pairs["train"], prompt_format), None, model_cfg, train_cfg)
    for example in trainer.train_dataset:
        for side in ("chosen_ids", "rejected_ids"):
            ids = example["prompt_ids"] + example[side]
            assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    first = trainer.train_dataset[0]
    assert "The capital is Paris." in tok.decode(first["chosen_ids"])
    end = tok.eos_token_id if prompt_format == "plain" else tok.convert_tokens_to_ids("<end_of_turn>")
    assert end in first["chosen_ids"]  # plain: TRL appends EOS; chat: the template closes the turn


def test_pairs_longer_than_max_length_fail_with_the_fix(pairs):
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import build_trainer, to_trl_dataset

    model_cfg, train_cfg = smoke_configs()
    model_cfg = config_for(ModelConfig, "smoke", max_length=16)  # every prompt here is > 16 tokens
    model, tok = load_model_and_tokenizer(model_cfg)
    with pytest.raises(ValueError, match=r"8 of 8 training pairs .*max_length=16 .* shorten the excerpts"):
        build_trainer(model, tok, to_trl_dataset(pairs["train"], "chat"), None, model_cfg, train_cfg)


def test_check_single_bos_rejects_a_doubled_bos():
    from helpers.train.dpo import check_single_bos

    class Tok:
        bos_token_id = 2

    assert check_single_bos({"prompt_ids": [2, 7, 8], "chosen_ids": [9]}, Tok()) == 1
    with pytest.raises(ValueError, match="exactly one BOS .* found 2"):
        check_single_bos({"prompt_ids": [2, 2, 7], "chosen_ids": [9]}, Tok())


# --------------------------------------------------------------------------- training runs


def test_smoke_run_saves_an_adapter_that_reloads_to_the_same_logits(pairs):
    from peft import PeftModel

    from helpers.config import output_root
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import reload_check, run_dpo

    model_cfg, train_cfg = smoke_configs(max_steps=2, merge_and_save_16bit=True)
    run = run_dpo(model_cfg, train_cfg, pairs)
    trained = run.trainer.model
    assert trained.get_base_model().is_loaded_in_4bit  # the QLoRA path, on the CPU
    assert all(p.dtype == torch.float32 for p in trained.parameters() if p.requires_grad)  # TRL made them bf16

    adapter = Path(train_cfg.output_dir)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md",
                 "gemma_facts_adapter.json"):
        assert (adapter / name).exists(), name
    report = json.loads((output_root() / "train_report.json").read_text())
    assert report["steps"] == 2 and report["model_id"] == "tiny-random:gemma2"
    assert set(report["final_eval"]) >= {"loss", "rewards/margins", "rewards/accuracies"}
    final_step_evals = [e for e in report["log_history"] if e.get("step") == 2 and "eval_loss" in e]
    assert len(final_step_evals) == 1  # the step-2 eval is the final one, not run twice
    assert report["final_eval"]["loss"] == final_step_evals[0]["eval_loss"]
    assert report["peak_memory"]["bytes"] > 0 and report["weight_footprint"]["4bit_bytes"] > 0
    assert report["seconds_per_step"] > 0 and report["tokens_per_second"] > 0
    assert (Path(report["merged_dir"]) / "config.json").exists()  # merge_and_save_16bit=True
    shared = report["shared_prompt"]  # every DPO forward (policy, reference, eval) scored each prompt once
    assert shared["packed_calls"] > 0 and shared["fallback_calls"] == 0
    assert shared["packed_tokens"] < shared["two_row_tokens"]

    base, tok = load_model_and_tokenizer(model_cfg)
    reloaded = PeftModel.from_pretrained(base, str(adapter)).eval()
    ids = tok("Paris is the capital of France.", return_tensors="pt")
    trained.eval()
    with torch.no_grad():
        assert torch.allclose(trained(**ids).logits, reloaded(**ids).logits, atol=1e-5)
    assert reload_check(trained, adapter, model_cfg, tok, "Is Rome in Italy?")["allclose"]


def dequantised_4bit(model) -> dict[str, torch.Tensor]:
    """Every 4-bit layer's weight as it computes (packed nf4 on the CPU sits in a float dtype, whose
    NaN bit patterns fool ``torch.equal`` on state dicts), keyed by its name in the plain model."""
    import bitsandbytes.functional as bnbf
    from bitsandbytes.nn import Params4bit

    return {name.removeprefix("base_model.model.").replace(".base_layer", ""):
            bnbf.dequantize_4bit(m.weight.data, m.weight.quant_state).clone()
            for name, m in model.named_modules() if isinstance(getattr(m, "weight", None), Params4bit)}


def test_the_base_trained_against_is_the_base_a_fresh_load_gives(pairs):
    """Evaluations and checkpoint saves in the middle of training leave the frozen 4-bit base untouched.

    On AVX512-BF16 CPUs bitsandbytes used to repack the weights at the first eval forward and undo
    it lossily at the next save: the base then differed from a fresh load (dequantised weights by
    up to ~4e-4, logits by ~5e-3) and a reload check could never pass. Exact equality is expected:
    nothing may re-quantise the base, and both forwards run the same fp32 kernels in one process.
    """
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import run_dpo

    # an eval and a checkpoint after step 1, training on after them, and the final eval + save
    model_cfg, train_cfg = smoke_configs(max_steps=2, eval_steps=1, save_steps=1)
    trained = run_dpo(model_cfg, train_cfg, pairs).trainer.model
    fresh, tok = load_model_and_tokenizer(model_cfg)
    ours, theirs = dequantised_4bit(trained), dequantised_4bit(fresh)
    assert ours.keys() == theirs.keys() and len(ours) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0, msg=name)
    ids = tok("Paris is the capital of France.", return_tensors="pt")
    trained.eval()
    fresh.eval()
    with torch.no_grad(), trained.disable_adapter():
        torch.testing.assert_close(trained(**ids).logits, fresh(**ids).logits, rtol=0, atol=0)


def test_training_on_separable_pairs_drives_reward_accuracy_to_one(yes_no_pairs):
    from helpers.train.dpo import run_training, start_run

    # 8 pairs, batch 4 → 2 steps per epoch; 6 steps = 3 epochs at lr 1e-3, no warm-up (step 1 already learns)
    model_cfg, train_cfg = smoke_configs(max_steps=6, per_device_train_batch_size=4, loss_type=("sigmoid",),
                                         loss_weights=(1.0,), warmup_ratio=0.0, save_steps=100, eval_dev_documents=0,
                                         answerability_head=False)
    run = start_run(model_cfg, train_cfg, yes_no_pairs)
    assert run.trainer.eval_dataset is None  # no dev documents means no evaluation
    run_training(run)
    history = run.trainer.state.log_history
    accuracies, margins, losses = (logged(history, k) for k in ("rewards/accuracies", "rewards/margins", "loss"))
    assert margins[0] == 0.0  # step 1: policy == reference (LoRA B starts at zero)
    assert accuracies[-1] == 1.0
    assert all(later > earlier for earlier, later in zip(margins, margins[1:], strict=False))  # the margin grows every step
    assert losses[-1] < losses[0] < math.log(2) + 1e-3  # sigmoid loss starts at log 2 ≈ 0.693


def test_resume_continues_the_global_step_and_the_eta_counts_only_what_is_left(pairs):
    from helpers.train.dpo import estimate_eta, run_training, start_run

    model_cfg, first_cfg = smoke_configs(max_steps=2, save_steps=2)
    first = start_run(model_cfg, first_cfg, pairs)
    assert first.resume_from is None
    run_training(first)
    assert (Path(first_cfg.checkpoint_dir) / "checkpoint-2" / "trainer_state.json").exists()

    _, second_cfg = smoke_configs(max_steps=4, save_steps=2)
    second = start_run(model_cfg, second_cfg, pairs)
    assert second.resume_from.endswith("checkpoint-2")
    eta = estimate_eta(second.trainer, second.resume_from)
    assert (eta["total_steps"], eta["done_steps"]) == (4, 2) and eta["seconds_per_step"] > 0
    assert math.isclose(eta["eta_seconds"], 2 * eta["seconds_per_step"])  # 4 planned - 2 done
    assert all(p.grad is None for p in second.trainer.model.parameters())  # the probe leaves no trace
    assert not second.trainer._metrics["train"]
    run_training(second)
    assert second.trainer.state.global_step == 4
    assert [e["step"] for e in second.trainer.state.log_history if "loss" in e] == [1, 2, 3, 4]
    progress = next(cb for cb in second.trainer.callback_handler.callbacks if type(cb).__name__ == "ProgressPrinter")
    assert len(progress.step_seconds) == 2  # only steps 3 and 4 ran in the second session


def test_resume_refuses_checkpoints_of_another_model(pairs, tmp_path):
    from helpers.train.dpo import RUN_SIGNATURE, find_resume_checkpoint

    model_cfg, train_cfg = smoke_configs()
    ckpt = Path(train_cfg.checkpoint_dir)
    (ckpt / "checkpoint-4").mkdir(parents=True)
    (ckpt / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (ckpt / "checkpoint-6").mkdir()  # no trainer_state.json: a save cut off by a disconnect, skipped
    assert find_resume_checkpoint(train_cfg, model_cfg).endswith("checkpoint-4")
    assert find_resume_checkpoint(config_for(TrainConfig, resume_from_checkpoint=False), model_cfg) is None
    (ckpt / RUN_SIGNATURE).write_text(json.dumps({"model_id": "google/gemma-2-2b-it"}))
    with pytest.raises(ValueError, match="were made with .*gemma-2-2b-it"):
        find_resume_checkpoint(train_cfg, model_cfg)


def test_resume_refuses_checkpoints_of_other_training_settings_or_pairs(pairs):
    """A changed preset must not continue an old run's checkpoint (it would splice two runs)."""
    from helpers.train.dpo import RUN_SIGNATURE, find_resume_checkpoint, pairs_digest, run_signature

    model_cfg, train_cfg = smoke_configs()
    ckpt = Path(train_cfg.checkpoint_dir)
    (ckpt / "checkpoint-2").mkdir(parents=True)
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text("{}")
    digest = pairs_digest(pairs["train"])
    (ckpt / RUN_SIGNATURE).write_text(json.dumps(run_signature(model_cfg, train_cfg, digest)))
    assert find_resume_checkpoint(train_cfg, model_cfg, digest).endswith("checkpoint-2")
    longer = config_for(TrainConfig, "smoke", **{**{k: getattr(train_cfg, k) for k in ("max_train_pairs",)},
                                                 "max_steps": 10, "save_steps": 2, "eval_steps": 2})
    assert find_resume_checkpoint(longer, model_cfg, digest)  # more steps: continue the same run
    other_lr = config_for(TrainConfig, "smoke", max_steps=2, save_steps=2, eval_steps=2, learning_rate=5e-5)
    with pytest.raises(ValueError, match=r"train\.learning_rate: 0\.001 there, 5e-05 here"):
        find_resume_checkpoint(other_lr, model_cfg, digest)
    with pytest.raises(ValueError, match="train_pairs_sha256"):
        find_resume_checkpoint(train_cfg, model_cfg, pairs_digest(pairs["train"].select(range(3))))
    (ckpt / RUN_SIGNATURE).write_text(json.dumps(run_signature(model_cfg)))  # recorded before training settings were
    with pytest.raises(ValueError, match="<not recorded>"):
        find_resume_checkpoint(train_cfg, model_cfg, digest)


# --------------------------------------------------------------------------- callbacks


class InjectNaN(TrainerCallback):
    """A callback that turns the logged loss at ``step`` into NaN, as an fp16 overflow would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step and "loss" in logs:
            logs["loss"] = float("nan")


def test_nan_loss_stops_training_with_the_fix_in_the_message(pairs):
    from helpers.train.callbacks import NonFiniteTrainingError, NonFiniteWatch
    from helpers.train.dpo import run_training, start_run

    model_cfg, train_cfg = smoke_configs(max_steps=4, save_steps=100)
    run = start_run(model_cfg, train_cfg, pairs, callbacks=[InjectNaN(step=2), NonFiniteWatch()])
    with pytest.raises(NonFiniteTrainingError, match=r"loss is nan \(NaN/inf\) at step 2: fp16 overflow .* lower learning_rate"):
        run_training(run)
    assert run.trainer.state.global_step == 2  # stopped, not 4


def test_grad_norm_overflow_is_tolerated_once_then_stops():
    from types import SimpleNamespace

    from helpers.train.callbacks import NonFiniteTrainingError, NonFiniteWatch

    watch, state = NonFiniteWatch(grad_patience=2), SimpleNamespace(global_step=7)
    watch.on_log(None, state, None, logs={"loss": 0.6, "grad_norm": float("inf")})  # a skipped fp16 step: fine
    watch.on_log(None, state, None, logs={"loss": 0.6, "grad_norm": 1.0})  # recovered: the count resets
    watch.on_log(None, state, None, logs={"loss": 0.6, "grad_norm": float("inf")})
    with pytest.raises(NonFiniteTrainingError, match=r"grad_norm is inf \(NaN/inf\) at step 7"):
        watch.on_log(None, state, None, logs={"loss": 0.6, "grad_norm": float("inf")})


def test_format_seconds():
    from helpers.train.callbacks import format_seconds

    assert [format_seconds(s) for s in (4.4, 75, 3725)] == ["4s", "1m15s", "1h02m05s"]  # 3725 = 3600 + 120 + 5


# --------------------------------------------------------------------------- adapters


@pytest.fixture
def random_adapter(tmp_path):
    """A saved LoRA adapter on the tiny model with non-zero weights (so it changes the logits)."""
    from peft import get_peft_model

    from helpers.adapters import write_adapter_metadata
    from helpers.models import load_model_and_tokenizer, lora_config

    model_cfg = config_for(ModelConfig, "smoke", load_in_4bit=False)
    base, tok = load_model_and_tokenizer(model_cfg)
    peft_model = get_peft_model(base, lora_config(model_cfg))
    torch.manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    out = tmp_path / "adapter"
    peft_model.save_pretrained(out)
    tok.save_pretrained(out)
    write_adapter_metadata(out, peft_model, model_cfg)
    return out, model_cfg


def other_gemma(tmp_path: Path, hidden_size: int):
    """A second random Gemma 2 of another width, saved under a different checkpoint name."""
    from transformers import AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(vocab_size=2048, hidden_size=hidden_size, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    Gemma2ForCausalLM(cfg).save_pretrained(tmp_path / "other-gemma")
    return AutoModelForCausalLM.from_pretrained(tmp_path / "other-gemma", attn_implementation="eager")


def test_adapter_on_the_wrong_base_model_fails_clearly(random_adapter, tmp_path):
    from helpers.adapters import ADAPTER_METADATA, AdapterMismatchError, load_adapter

    adapter, _ = random_adapter
    with pytest.raises(AdapterMismatchError, match=r"trained on 'tiny-random:gemma2'.*hidden_size 64 \(adapter\) vs 32"):
        load_adapter(other_gemma(tmp_path, hidden_size=32), adapter)
    (adapter / ADAPTER_METADATA).unlink()  # an adapter from elsewhere: PEFT's shape error is translated
    with pytest.raises(AdapterMismatchError, match="does not fit this base model"):
        load_adapter(other_gemma(tmp_path, hidden_size=32), adapter, check_name=False)


def test_adapter_on_a_same_shaped_but_different_checkpoint_fails(random_adapter):
    from helpers.adapters import AdapterMismatchError, load_adapter
    from helpers.models import load_model_and_tokenizer

    adapter, model_cfg = random_adapter
    base, _ = load_model_and_tokenizer(model_cfg)
    base.config._name_or_path = "/somewhere/gemma-2-2b"  # same architecture numbers, other weights
    with pytest.raises(AdapterMismatchError, match="'gemma-2-2b'"):
        load_adapter(base, adapter)
    assert load_adapter(base, adapter, check_name=False).peft_config["default"].r == model_cfg.lora_r


def test_merged_16bit_model_matches_base_plus_adapter(random_adapter, tmp_path):
    from transformers import AutoModelForCausalLM

    from helpers.adapters import load_adapter, merge_adapter_to_16bit
    from helpers.models import load_model_and_tokenizer

    adapter, model_cfg = random_adapter
    merged_dir = merge_adapter_to_16bit(model_cfg, adapter, tmp_path / "merged", dtype="float32")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, attn_implementation="eager").eval()
    base, tok = load_model_and_tokenizer(model_cfg)
    ids = tok("Oslo is in Norway.", return_tensors="pt")
    with torch.no_grad():
        plain = base(**ids).logits
        adapted = load_adapter(base, adapter)(**ids).logits
        fused = merged(**ids).logits
    assert not torch.allclose(plain, adapted, atol=1e-3)  # the adapter does change the model
    assert torch.allclose(fused, adapted, atol=1e-4)
    assert (merged_dir / "tokenizer.json").exists()


def test_push_to_hub_needs_a_token_and_fails_before_any_network(tmp_path):
    from helpers.secrets import MissingSecretError
    from helpers.train.dpo import push_adapter

    train_cfg = config_for(TrainConfig, push_to_hub=True, hub_repo_id="someone/gemma-facts-dpo")
    with pytest.raises(MissingSecretError, match="HF_TOKEN"):
        push_adapter(tmp_path, train_cfg)


# --------------------------------------------------------------------------- report and plots


HISTORY = [
    {"loss": 0.69, "rewards/margins": 0.0, "rewards/accuracies": 0.0, "num_tokens": 100.0, "step": 1},
    {"loss": 0.60, "rewards/margins": 0.2, "rewards/accuracies": 0.5, "num_tokens": 200.0, "step": 2},
    {"eval_loss": 0.65, "eval_rewards/margins": 0.1, "eval_rewards/accuracies": 0.5, "step": 2},
    {"loss": 0.50, "rewards/margins": 0.4, "rewards/accuracies": 1.0, "num_tokens": 300.0, "step": 3},
    {"train_runtime": 3.0, "train_loss": 0.6, "step": 3},
]


def test_final_metrics_and_tokens_per_second():
    from helpers.train.report import final_metrics, tokens_per_second

    assert final_metrics(HISTORY) == {"loss": 0.50, "rewards/margins": 0.4, "rewards/accuracies": 1.0}
    assert final_metrics(HISTORY, "eval_") == {"loss": 0.65, "rewards/margins": 0.1, "rewards/accuracies": 0.5}
    assert tokens_per_second(HISTORY, first_step=0, seconds=1.5) == 200.0  # 300 tokens / 1.5 s


def test_training_curves_and_memory_figures(tmp_path):
    from helpers.data.plots import save_figure
    from helpers.train.plots import human_size, plot_memory, plot_training_curves, series

    assert series(HISTORY, "loss") == ([1, 2, 3], [0.69, 0.60, 0.50])
    assert series(HISTORY, "rewards/margins", "eval_") == ([2], [0.1])
    fig = plot_training_curves(HISTORY)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "rewards/margins", "rewards/accuracies"]
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 2]  # train line + eval markers in each panel
    mem = plot_memory({"4bit_bytes": 2**30, "16bit_bytes": 3 * 2**30, "16bit_dtype": "float16", "fp32_bytes": None},
                      {"kind": "cuda_max_memory_allocated", "bytes": 5 * 2**30})
    heights = [bar.get_height() for bar in mem.axes[0].patches]
    assert heights == [1.0, 3.0, 5.0]  # GiB; the missing fp32 bar is left out
    assert [human_size(b) for b in (3 * 2**30, 5 * 2**20, 2048)] == ["3.00 GiB", "5.0 MiB", "2 KiB"]
    assert save_figure(fig, "curves", tmp_path / "figures").stat().st_size > 0


def test_cpu_compact_lm_head_gives_the_same_log_probs(smoke_model):
    """The CPU speed-up patch must not change a single log-prob (only which rows are projected)."""
    import torch
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from helpers.config import ModelConfig, config_for
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import score_only_completion_tokens_on_cpu

    model, _ = load_model_and_tokenizer(config_for(ModelConfig, "smoke", load_in_4bit=False))
    add_fused_lm_head(model)
    ids = torch.randint(10, 500, (2, 24))
    labels = ids.clone()
    labels[:, :16] = -100  # prompt positions are masked, as in DPO
    original = trl_utils._use_triton
    try:
        trl_utils._use_triton = lambda device: False  # TRL's CPU behaviour: score every position
        with torch.no_grad():
            full = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        assert score_only_completion_tokens_on_cpu()
        assert trl_utils._use_triton(torch.device("cpu")) is True
        with torch.no_grad():
            compact = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    finally:
        trl_utils._use_triton = original
    assert torch.count_nonzero(full) == 2 * 8  # 8 completion labels per row are scored
    assert torch.allclose(full, compact, atol=1e-6)
