"""Profiles and one config dataclass per stage.

A *profile* picks sizes, never code paths: ``colab`` (CUDA, Gemma 2 2B-it, Gemini teacher, FACTS
from the Hub), ``local`` (CPU, offline, embedded Gemma 3 270M, bundled sample, offline teacher) and
``smoke`` (CI: a tiny random Gemma 2 and a handful of rows). Every notebook prints its stage config
so a reader sees exactly which sizes produced the figures below it.

This module is a leaf: it imports nothing from ``helpers`` and nothing heavy (no torch).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "GEMINI_JUDGE_MODEL",
    "GEMINI_MODEL",
    "PROFILES",
    "REFUSAL",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "check_answerability_bagging",
    "check_answerability_choice",
    "config_for",
    "cuda_available",
    "detect_profile",
    "config_sections",
    "file_overrides",
    "in_colab",
    "output_root",
    "show_config",
]

PROFILES = ("colab", "local", "smoke")
PROFILE_ENV = "GEMMA_FACTS_PROFILE"
OUTPUT_ENV = "GEMMA_FACTS_OUTPUT"
CACHE_ENV = "GEMMA_FACTS_CACHE"
#: A JSON file layered over the profile preset: ``{"model": {...}, "data": {...}, "train": {...}, "eval": {...}}``.
#: Your own sizes without editing a cell (the simulated Colab run shrinks the colab preset this way).
CONFIG_ENV = "GEMMA_FACTS_CONFIG"

#: The canonical refusal sentence the aligned model must produce when the document lacks the answer.
REFUSAL = "The provided document does not contain this information."
# Where the answerability head cuts (TrainConfig.answerability_threshold; helpers.evaluate.answerability_head.choose_head)
ANSWERABILITY_THRESHOLD_RULES = ("dev_largest_gap", "out_of_fold_largest_gap", "out_of_fold_budget")
# How the answerability head's family is chosen (TrainConfig.answerability_choice; choose_head(choice=...))
ANSWERABILITY_CHOICES = ("dev_auc", "out_of_fold_auc", "out_of_fold_catch")


def check_answerability_choice(choice: str, threshold_rule: str, stacked: bool, name: str = "choice") -> None:
    """An out-of-fold choice scores every candidate over fit + dev and the cut is set on those scores: it needs an
    out-of-fold threshold rule, and no stacked head. One check for ``TrainConfig`` (when the config is read, before
    any feature is computed) and ``choose_head``; ``name`` is how the caller spells the option."""
    if choice not in ANSWERABILITY_CHOICES:
        raise ValueError(f"{name} must be one of {ANSWERABILITY_CHOICES}, got {choice!r}")
    if choice != "dev_auc" and (threshold_rule == "dev_largest_gap" or stacked):
        raise ValueError(f"{name}={choice!r} chooses on out-of-fold scores over fit + dev: it needs an out-of-fold "
                         f"threshold rule (got {threshold_rule!r}) and no stacked head")

def check_answerability_names_after_choice(names_after_choice: bool, threshold_rule: str, choice: str,
                                          name: str = "names_after_choice") -> None:
    """The missing-name flag added after the choice joins the refit of the chosen family on fit + dev, which only an
    out-of-fold threshold rule makes, after the dev-AUC choice. One check for ``TrainConfig`` (when the config is
    read) and ``choose_head``; ``name`` is how the caller spells the option."""
    if names_after_choice and (threshold_rule == "dev_largest_gap" or choice != "dev_auc"):
        raise ValueError(f"{name} adds the missing-name flag in the refit of the chosen family on fit + dev: it needs "
                         f"an out-of-fold threshold rule and the choice 'dev_auc', got {threshold_rule!r}, {choice!r}")


def check_answerability_bagging(n_heads: int, threshold_rule: str, choice: str, stacked: bool,
                                name: str = "n_heads") -> None:
    """Heads chosen on several dev splits and averaged are cut on their out-of-fold scores over fit + dev: they need
    the out-of-fold budget cut, the dev-AUC choice (an out-of-fold choice is the same on every split) and no stacked
    head (its out-of-fold scores would read an in-sample state column). One check for ``TrainConfig`` (when the
    config is read) and ``choose_bagged``; ``name`` is how the caller spells the option."""
    if n_heads < 1:
        raise ValueError(f"{name} must be >= 1, got {n_heads}")
    if n_heads > 1 and (threshold_rule != "out_of_fold_budget" or choice != "dev_auc" or stacked):
        raise ValueError(f"{name} > 1 averages heads chosen on several dev splits and cuts them on their out-of-fold "
                         "scores: it needs the threshold rule 'out_of_fold_budget', the choice 'dev_auc' and no "
                         f"stacked head, got {threshold_rule!r}, {choice!r}, stacked {stacked}")


#: Model ids that are built or converted offline instead of being fetched from a hub.
EMBEDDED_GEMMA3 = "embedded:gemma3-270m"
TINY_GEMMA2 = "tiny-random:gemma2"

#: The 48 written documents with reference answers and near misses (``helpers/resources/facts_sample.jsonl``).
BUNDLED_SAMPLE = "bundled"
#: The two-reader review of the bundled FACTS test split's labels (``helpers.evaluate.label_review``).
LABEL_REVIEW_FILE = Path(__file__).resolve().parent / "resources" / "facts_grounding" / "test_label_review.json"
#: The same review of its training split: the answerability head's fit and dev prompts.
LABEL_REVIEW_TRAIN_FILE = LABEL_REVIEW_FILE.with_name("train_label_review.json")
#: The 232 real FACTS Grounding rows shipped in ``helpers/resources/facts_grounding/`` (CC-BY-4.0).
BUNDLED_FACTS = "bundled-facts"

#: The default Gemini model of the teacher (stage 01). Google's deprecations page (Nov 2026):
#: gemini-2.5-flash/pro are shut down; GA now: gemini-3.5-flash (May 2026), gemini-3.5-flash-lite
#: (July 2026), gemini-3.8-flash (Sept 2026).
GEMINI_MODEL = "gemini-3.5-flash"
#: The default Gemini judge (stage 03). Free-tier quotas are per model, so a judge on Flash-Lite has a
#: day of its own: notebook 03 fits the same day as notebook 01's teacher on Flash. It judges a sample
#: (``EvalConfig.gemini_judge_sample``) next to the offline judge, which scores everything; set
#: ``gemini_model=GEMINI_MODEL`` for the stronger judge when its quota allows.
GEMINI_JUDGE_MODEL = "gemini-3.5-flash-lite"
#: Shut-down ids: a 404 for one of these says "retired" and names ``GEMINI_MODEL`` as the fix.
RETIRED_GEMINI_MODELS = frozenset({"gemini-2.5-flash", "gemini-2.5-pro", "gemini-1.5-flash", "gemini-1.5-pro",
                                   "gemini-1.0-pro"})
#: Free-tier limits ASSUMED when a config does not set them (Dec 2025 cut: 20 to 500 requests/day
#: depending on model and month, Flash-Lite higher; ~10 requests/minute). Not read from your account:
#: check https://aistudio.google.com/rate-limit and set ``requests_per_day`` / ``gemini_requests_per_day``.
#: Limits are per project and per model, and reset at midnight Pacific time.
FREE_TIER_REQUESTS_PER_MINUTE = 10
FREE_TIER_REQUESTS_PER_DAY = {"flash-lite": 100, "default": 20}


def free_tier_requests_per_day(model: str) -> int:
    """The assumed free-tier requests/day for ``model`` (Flash-Lite higher than Flash; conservative)."""
    return FREE_TIER_REQUESTS_PER_DAY["flash-lite" if "lite" in model.lower() else "default"]


def cuda_available() -> bool:
    """True when torch sees a CUDA device; False when torch is absent (keeps this module light)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def in_colab() -> bool:
    """True inside a Google Colab runtime (Colab imports ``google.colab`` before any cell runs)."""
    import sys

    return "google.colab" in sys.modules


def detect_profile(profile: str | None = None) -> str:
    """Resolve the profile: explicit argument, then ``GEMMA_FACTS_PROFILE``, then Colab or CUDA → colab, else local.

    On Colab the profile is colab even on a CPU runtime: falling back to ``local`` there would train
    another model silently; ``helpers.notebook.prepare_notebook`` says loudly that a GPU is missing.
    """
    name = profile or os.environ.get(PROFILE_ENV) or ("colab" if in_colab() or cuda_available() else "local")
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(f"profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)} "
                         f"(set {PROFILE_ENV} or pass profile=...)")
    return name


def repo_root() -> Path:
    """The checkout holding ``helpers`` (notebooks run from ``notebooks/``, terminals from anywhere)."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def output_root() -> Path:
    """Where stages exchange artefacts: ``GEMMA_FACTS_OUTPUT``, default ``<repo>/outputs``."""
    env = os.environ.get(OUTPUT_ENV)
    return Path(env) if env else repo_root() / "outputs"


def cache_root() -> Path:
    """Where converted/built models live between runs (``GEMMA_FACTS_CACHE``)."""
    default = Path.home() / ".cache" / "gemma-facts"
    return Path(os.environ.get(CACHE_ENV, default))


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None or value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {value!r}")


def _fraction(obj: Any, name: str, *, lo: float = 0.0, hi: float = 1.0, open_hi: bool = False) -> None:
    value = getattr(obj, name)
    ok = lo <= value < hi if open_hi else lo <= value <= hi
    if not ok:
        raise ValueError(f"{type(obj).__name__}.{name} must be in [{lo}, {hi}{')' if open_hi else ']'}, got {value!r}")


def _choice(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ValueError(f"{type(obj).__name__}.{name} must be one of {choices}, got {value!r}")


@dataclass
class ModelConfig:
    """Everything the one loader needs: which model, how it is quantised and adapted."""

    profile: str = "local"
    model_id: str = EMBEDDED_GEMMA3
    load_in_4bit: bool = True
    compute_dtype: str = "auto"  # auto: bf16 on GPUs with native bf16 (sm_80+), fp16 on a T4, fp32 on CPU
    attn_implementation: str = "eager"  # Gemma 2 needs eager for logit softcapping
    prompt_format: str = "plain"  # "chat" (Gemma turns) or "plain" (DOCUMENT:/USER REQUEST:)
    max_length: int = 512
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    gradient_checkpointing: bool = True
    seed: int = 42

    def __post_init__(self) -> None:
        self.profile = detect_profile(self.profile)
        _choice(self, "compute_dtype", ("auto", "float32", "float16", "bfloat16"))
        _choice(self, "attn_implementation", ("eager", "sdpa", "flash_attention_2"))
        _choice(self, "prompt_format", ("chat", "plain"))
        _positive(self, "max_length", "lora_r", "lora_alpha")
        _fraction(self, "lora_dropout", open_hi=True)
        self.lora_target_modules = tuple(self.lora_target_modules)
        if not self.lora_target_modules:
            raise ValueError("ModelConfig.lora_target_modules must name at least one module")
        if not self.model_id:
            raise ValueError("ModelConfig.model_id must not be empty")


@dataclass
class DataConfig:
    """Stage 01: FACTS rows → validated rows → excerpts → teacher outputs → DPO pairs."""

    profile: str = "local"
    input: str = BUNDLED_SAMPLE  # "bundled" (written), "bundled-facts" (real FACTS rows), a .jsonl/.csv path, a Hub id
    hf_config: str | None = "examples"
    hf_split: str = "public"
    teacher: str = "offline"  # "offline" or "gemini"
    gemini_model: str = GEMINI_MODEL
    max_rows: int | None = None
    max_length: int | None = None  # None: ModelConfig.max_length, the one budget for prompt + answer
    answer_budget: int = 96  # tokens kept for the answer inside max_length
    passage_words: int = 120  # words per passage when a long document is split
    document_tokens: int | None = None  # cap on the excerpt's tokens (None: whatever max_length leaves)
    # The test split's cap (None: document_tokens). Evaluation can afford what training cannot: on the CPU
    # a training step's cost grows with every token, while a longer test excerpt is what makes a real
    # request's "answerable" label hold (docs/label_audit.md).
    test_document_tokens: int | None = None
    # The test split's prompt + answer budget (None: max_length). With a test_document_tokens above what
    # max_length leaves, test prompts carry whole documents: evaluation only generates, so it can afford a
    # context that training (whose cost grows with every token of every step) cannot.
    test_max_length: int | None = None
    pairs_per_kind: dict[str, int] = field(default_factory=lambda: {
        "hallucination": 2, "unanswerable": 2, "unrelated": 1, "over_refusal": 2, "paraphrase": 1})
    test_fraction: float = 0.2
    test_documents: int | None = None  # a number of test documents instead of test_fraction
    # The test split's own mix (None: pairs_per_kind). Its requests are what evaluation asks, so it needs
    # no paraphrases, and one request of each unanswerable kind per document.
    test_pairs_per_kind: dict[str, int] | None = None
    # Subject swaps the offline teacher makes from each real request, each with another absent subject
    # (the first comes before the topic neighbour's request, the others after it, so a mix that takes two
    # near misses per row is the same with any value). Why more than one: the swapped-in name the document
    # lacks is what the answerability head misses most, and each swap is another example of it.
    near_miss_swaps: int = 1
    # Build written rows as real FACTS rows: their own answer, extra questions and near misses are dropped, so the
    # answer is ranked from the document against the request and the near misses are made from the request
    # (subject swaps, a topic neighbour's request), as the test split's are. Why: a written set's hand-written near
    # misses are another kind of prompt than those the head is scored on (docs/local_results.md, twenty-first pass).
    rows_as_real: bool = False
    seed: int = 42
    concurrency: int = 2  # Gemini calls in flight (free tier: 10 requests/minute leave nothing for more)
    requests_per_minute: int = FREE_TIER_REQUESTS_PER_MINUTE
    # Gemini requests this build may send per Pacific day (None: the assumed free-tier limit of
    # gemini_model, see FREE_TIER_REQUESTS_PER_DAY); the client stops cleanly there, rerun the next day.
    requests_per_day: int | None = None
    # "auto": batch jobs (helpers.gemini_batch) when the calls exceed today's budget or reach 500, else online
    gemini_mode: str = "auto"  # "auto", "online" or "batch"
    pairs_dir: str = ""  # where the pairs go (default: <output root>/pairs); the same name in every stage

    def __post_init__(self) -> None:
        self.profile = detect_profile(self.profile)
        _choice(self, "teacher", ("offline", "gemini"))
        _choice(self, "gemini_mode", ("auto", "online", "batch"))
        if self.max_length is None:  # built without config_for: the ModelConfig default budget
            self.max_length = ModelConfig.max_length
        _positive(self, "max_length", "answer_budget", "passage_words", "concurrency", "requests_per_minute",
                  "near_miss_swaps")
        if self.requests_per_day is None:
            self.requests_per_day = free_tier_requests_per_day(self.gemini_model)
        _positive(self, "requests_per_day")
        if self.max_rows is not None:
            _positive(self, "max_rows")
        for name in ("document_tokens", "test_document_tokens", "test_documents", "test_max_length"):
            if getattr(self, name) is not None:
                _positive(self, name)
        if self.answer_budget >= self.max_length:
            raise ValueError(f"DataConfig.answer_budget ({self.answer_budget}) must be smaller than "
                             f"max_length ({self.max_length})")
        _fraction(self, "test_fraction", lo=0.0, hi=1.0, open_hi=True)
        known = ("hallucination", "unanswerable", "unrelated", "over_refusal", "paraphrase", "answer_removed")
        for name in ("pairs_per_kind", "test_pairs_per_kind"):
            mix = getattr(self, name)
            if mix is None:
                continue
            unknown = sorted(set(mix) - set(known))
            if unknown:
                raise ValueError(f"DataConfig.{name} has unknown kind(s) {unknown}; known: {known}")
            for kind, count in mix.items():
                if count < 0:
                    raise ValueError(f"DataConfig.{name}[{kind!r}] must be >= 0, got {count}")
        if not self.pairs_dir:
            self.pairs_dir = str(output_root() / "pairs")


@dataclass
class TrainConfig:
    """Stage 02: DPO with QLoRA. Mapped onto TRL's ``DPOConfig`` by ``helpers.train``."""

    profile: str = "local"
    pairs_dir: str = ""  # default: <output root>/pairs
    output_dir: str = ""  # default: <output root>/adapter
    checkpoint_dir: str = ""  # default: <output root>/checkpoints
    beta: float = 0.1
    loss_type: tuple[str, ...] = ("sigmoid", "sft")
    loss_weights: tuple[float, ...] = (1.0, 0.2)
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 2
    per_device_eval_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    warmup_ratio: float = 0.1
    logging_steps: int = 5
    eval_steps: int = 25
    save_steps: int = 50
    save_total_limit: int = 2
    max_train_pairs: int | None = None
    max_eval_pairs: int | None = None
    # "random": TRL's shuffled sampler. "by_document": each optimizer step sees requests about one
    # document, refusal-chosen and answer-chosen pairs mixed, so the step's gradient cancels the
    # "refuse more / less" drift and keeps what separates them: does the document hold the answer?
    batch_order: str = "random"
    precompute_ref_log_probs: bool = False
    # Score a pair's two answers in one row, the prompt computed once (helpers.train.shared_prompt): the same
    # log-probs and gradients as TRL's two rows from ~40% fewer tokens. False: TRL's own forward.
    shared_prompt: bool = True
    # Save the mean of the adapter weights of the checkpoints from this fraction of the run on (and the
    # final weights) instead of the last weights alone (helpers.train.checkpoint_average); None: the last.
    average_checkpoints_from: float | None = None
    # Early stopping on dev (helpers.select.dev_choice): move this many training documents to a dev split
    # before training; afterwards score the kept checkpoints from `select_from_fraction` of the run on
    # (and the final weights) on their requests, and keep the ones the rule picks. 0: keep the last.
    # Keep save_total_limit >= the checkpoints in that window.
    select_dev_documents: int = 0
    # Training documents held out as dev only for the trainer's own eval curves when select_dev_documents
    # is 0 (with it, its dev split serves both). The test split is never read during training.
    eval_dev_documents: int = 0
    dev_seed: int = 42  # which documents go to dev: fixed across training seeds, so every seed is chosen alike
    select_from_fraction: float = 0.6
    # A checkpoint is kept only with at least this many fewer balanced dev errors (both sides weighted alike)
    # and hallucinations than the base (helpers.select.dev_choice); otherwise the adapter is the base itself.
    select_min_gain: int = 2
    # ... and only if its refusals follow the document: one-sided Fisher exact p <= this that they are independent
    # of answerability (1: no such condition; the smoke profile's 4 dev requests cannot reach 0.05).
    select_max_p: float = 0.05
    select_max_examples: int = 24  # dev requests per side (answerable / unanswerable)
    # Enough tokens to see a refusal, or a claim after one; the rule reads no more than that.
    select_max_new_tokens: int = 32
    # Also fit a linear answerability head on the base model in the select stage (helpers.evaluate.answerability_head):
    # fitted on the training documents outside dev, chosen on the dev documents, saved beside the adapter; evaluation
    # then reports the base answers it gates. Costs one forward pass per training prompt (cached per prompt).
    answerability_head: bool = False
    # The head may also read the request's surprisal given the document (one more short pass per prompt; a near
    # miss's swapped subject is a token the document does not explain), offered beside the state in the dev choice.
    answerability_surprisal: bool = False
    # ... and word-level summaries of which request words the document holds (IDF-weighted, per sentence, as pairs,
    # the request's specific words apart from instruction words; helpers.evaluate.answerability_lexical), offered
    # beside the overlap share (and the surprisal) in the dev choice. No forward pass: words only.
    answerability_lexical: bool = False
    # ... and offer only the candidates that read them (the dev AUC of one split may otherwise prefer a family
    # without them that is weaker out of fold: the eleventh pass's dev split 1234, docs/local_results.md)
    answerability_lexical_only: bool = False
    # ... and among the word summaries, a flag for a request that names something the document never mentions (a near
    # miss's swapped-in subject; helpers.evaluate.answerability_lexical.missing_names). Implies answerability_lexical.
    answerability_names: bool = False
    # ... or add that flag only after the dev choice, in the refit of the chosen family (an out-of-fold threshold rule;
    # choose_head(names_after_choice=True)): chosen with the flag, the family drifts to shallow layers.
    answerability_names_after_choice: bool = False
    # ... and read the state as one column, the score of a fit of the state alone, beside the other features in a
    # second fit (helpers.evaluate.answerability_head.choose_head(stacked=True)).
    answerability_stacked: bool = False
    # Its threshold: "dev_largest_gap" (the dev split's largest refusal gap), or the chosen family refitted on fit +
    # dev and cut on out-of-fold scores over both: "out_of_fold_largest_gap", or "out_of_fold_budget" (refuse at
    # most answerability_budget of the answerable prompts). helpers.evaluate.answerability_head.choose_head.
    answerability_threshold: str = "dev_largest_gap"
    answerability_budget: float = 0.05
    # The L2 strengths the dev choice offers (None: helpers.evaluate.answerability_head.L2_STRENGTHS, 0.001-0.1); a
    # stacked head applies them to the state's own fit.
    answerability_l2s: list[float] | None = None
    # How the head's family (layer x L2 x features) is chosen: "dev_auc" (the dev split's AUC), or on out-of-fold
    # scores over fit + dev, in document folds drawn with dev_seed: "out_of_fold_auc" (their AUC) or
    # "out_of_fold_catch" (the unanswerable share they refuse at answerability_budget; AUC breaks ties). The
    # out-of-fold choices need an out-of-fold threshold rule and no stacked head.
    answerability_choice: str = "dev_auc"
    # Read the state of each layer averaged with this many layers on each side (0: the layer alone;
    # helpers.evaluate.answerability_head.layer_window_mean).
    answerability_layer_window: int = 0
    # Choose a head on this many dev splits (each of select_dev_documents documents, drawn from the training
    # documents with dev_seed) and average them, cut at answerability_budget on the mean of their out-of-fold scores
    # (1: one head on the dev split; helpers.evaluate.answerability_head.choose_bagged). Needs the
    # "out_of_fold_budget" threshold, the "dev_auc" choice (an out-of-fold choice is the same on every split) and
    # no stacked head.
    answerability_dev_splits: int = 1
    # Fit and choose the head only on the training prompts whose label two blind readers confirmed ("bundled": the
    # review of the bundled FACTS training split, docs/label_review_training.md; "": every prompt as built).
    answerability_label_review: str = ""
    # More pairs folders (stage 01's output, e.g. the written set's: `gemma-facts data --set data.input=bundled`)
    # whose training prompts join the head's fit, and with several dev splits the pool they are drawn from; never
    # scored. Why: the pseudo-test's learning curve rose with more fit documents, not more prompts on the same ones
    # (docs/local_results.md, twentieth pass). One folder may be given as a string. Their documents must not be the
    # main pairs' nor each other's; read without surprisal.
    answerability_extra_fit_pairs: tuple[str, ...] = ()
    max_grad_norm: float = 1.0
    # Any other field of trl.DPOConfig, passed to it unchanged (e.g. {"weight_decay": 0.01,
    # "label_smoothing": 0.1}). A field this config names itself (beta, learning_rate, ...) is set there, so
    # one value never lives in two places; helpers.train.dpo.build_dpo_config refuses both.
    dpo: dict[str, Any] = field(default_factory=dict)
    mixed_precision: str = "auto"  # auto: bf16 on Ampere+, fp16 on T4 (LoRA weights kept fp32), none on CPU
    resume_from_checkpoint: bool = True  # continue from the latest checkpoint in checkpoint_dir, if any
    measure_16bit_footprint: bool = True  # load the base once more in 16 bits to report the weight footprint
    push_to_hub: bool = False  # needs an HF token (HF_TOKEN / Colab secret) and hub_repo_id
    hub_repo_id: str = ""
    hub_private: bool = True
    merge_and_save_16bit: bool = False  # also write base + adapter merged in 16 bits for serving
    merged_dir: str = ""  # default: <output root>/merged
    seed: int = 42

    def __post_init__(self) -> None:
        self.profile = detect_profile(self.profile)
        _positive(self, "beta", "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
                  "gradient_accumulation_steps", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
                  "max_grad_norm")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("TrainConfig.num_train_epochs must be > 0 when max_steps is not set")
        self.loss_type = tuple(self.loss_type)
        self.loss_weights = tuple(float(w) for w in self.loss_weights)
        if not self.loss_type:
            raise ValueError("TrainConfig.loss_type must name at least one loss (e.g. ('sigmoid',))")
        if len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"TrainConfig.loss_weights needs one weight per loss_type "
                             f"({len(self.loss_type)}), got {len(self.loss_weights)}")
        _fraction(self, "warmup_ratio", open_hi=True)
        if not isinstance(self.dpo, dict):
            raise ValueError(f"TrainConfig.dpo must be a mapping of trl.DPOConfig fields, got {self.dpo!r}")
        _choice(self, "mixed_precision", ("auto", "no", "fp16", "bf16"))
        _choice(self, "batch_order", ("random", "by_document"))
        if self.average_checkpoints_from is not None:
            _fraction(self, "average_checkpoints_from", lo=0.0, hi=1.0)
        if self.eval_dev_documents < 0:
            raise ValueError("TrainConfig.eval_dev_documents must be >= 0")
        if self.answerability_head and not (self.select_dev_documents or self.eval_dev_documents):
            raise ValueError("TrainConfig.answerability_head needs dev documents to choose the head on: set "
                             "select_dev_documents (or eval_dev_documents) > 0")
        if self.answerability_threshold not in ANSWERABILITY_THRESHOLD_RULES:
            raise ValueError(f"TrainConfig.answerability_threshold must be one of {ANSWERABILITY_THRESHOLD_RULES}, "
                             f"got {self.answerability_threshold!r}")
        if not 0 <= self.answerability_budget < 1:
            raise ValueError("TrainConfig.answerability_budget is a share of answerable prompts: 0 <= it < 1")
        check_answerability_choice(self.answerability_choice, self.answerability_threshold, self.answerability_stacked,
                                   "TrainConfig.answerability_choice")
        check_answerability_names_after_choice(self.answerability_names_after_choice, self.answerability_threshold,
                                               self.answerability_choice, "TrainConfig.answerability_names_after_choice")
        if self.answerability_layer_window < 0:
            raise ValueError("TrainConfig.answerability_layer_window is a number of layers on each side: >= 0, got "
                             f"{self.answerability_layer_window}")
        check_answerability_bagging(self.answerability_dev_splits, self.answerability_threshold,
                                    self.answerability_choice, self.answerability_stacked,
                                    "TrainConfig.answerability_dev_splits")
        if self.answerability_l2s is not None and (not self.answerability_l2s
                                                   or any(not v > 0 for v in self.answerability_l2s)):
            raise ValueError("TrainConfig.answerability_l2s lists L2 strengths > 0 (or is None for the default), "
                             f"got {self.answerability_l2s}")
        extra = self.answerability_extra_fit_pairs
        self.answerability_extra_fit_pairs = tuple(str(p) for p in ((extra,) if isinstance(extra, str) else extra) if p)
        if self.answerability_extra_fit_pairs and self.answerability_surprisal:
            raise ValueError("TrainConfig.answerability_extra_fit_pairs is read without the request surprisal: set "
                             "answerability_surprisal to false")
        if self.answerability_label_review == BUNDLED_SAMPLE:
            self.answerability_label_review = str(LABEL_REVIEW_TRAIN_FILE)
        if self.select_dev_documents < 0:
            raise ValueError("TrainConfig.select_dev_documents must be >= 0 (0 keeps the last weights)")
        if self.select_dev_documents and self.average_checkpoints_from is not None:
            raise ValueError("TrainConfig: choose either select_dev_documents (keep one checkpoint picked on "
                             "dev) or average_checkpoints_from (average the later ones), not both")
        if self.select_dev_documents and (self.push_to_hub or self.merge_and_save_16bit):
            raise ValueError("TrainConfig: with select_dev_documents the adapter is chosen after training "
                             "(python -m helpers.select.dev_choice); push or merge it after that step, not from training")
        _fraction(self, "select_from_fraction", lo=0.0, hi=1.0)
        if not 0 < self.select_max_p <= 1:
            raise ValueError(f"TrainConfig.select_max_p must be in (0, 1], got {self.select_max_p}")
        if self.select_min_gain < 1:
            raise ValueError(f"TrainConfig.select_min_gain must be >= 1, got {self.select_min_gain}")
        for name in ("select_max_examples", "select_max_new_tokens"):
            _positive(self, name)
        for name in ("max_train_pairs", "max_eval_pairs"):
            if getattr(self, name) is not None:
                _positive(self, name)
        if self.push_to_hub and not self.hub_repo_id:
            raise ValueError("TrainConfig.hub_repo_id must name the Hub repo (user/name) when push_to_hub is True")
        root = output_root()
        self.pairs_dir = self.pairs_dir or str(root / "pairs")
        self.output_dir = self.output_dir or str(root / "adapter")
        self.checkpoint_dir = self.checkpoint_dir or str(root / "checkpoints")
        self.merged_dir = self.merged_dir or str(root / "merged")


@dataclass
class EvalConfig:
    """Stage 03: base vs aligned on the document-disjoint test split (+ an optional held-out FACTS file)."""

    profile: str = "local"
    pairs_dir: str = ""  # default: <output root>/pairs
    adapter_dir: str = ""  # default: <output root>/adapter
    metrics_path: str = ""  # default: <output root>/metrics.json
    generations_path: str = ""  # default: <output root>/generations.jsonl
    judge: str = "offline"  # "offline" or "gemini" (falls back to offline, loudly, without a key)
    gemini_model: str = GEMINI_JUDGE_MODEL
    gemini_concurrency: int = 2
    gemini_requests_per_minute: int = FREE_TIER_REQUESTS_PER_MINUTE
    gemini_requests_per_day: int | None = None  # None: the assumed free-tier limit of gemini_model
    # "auto": batch jobs (helpers.gemini_batch) when the calls exceed today's budget or reach 500, else online
    gemini_mode: str = "auto"  # "auto", "online" or "batch"
    # Items (per item set) the Gemini judge sees, each on both sides = 2 calls per item. 8 items = 16
    # calls fit a 20-request free-tier day with room for retries. When the sample is smaller than the
    # set, the offline judge scores everything (headline metrics) and Gemini's agreement with it is
    # reported on the sample. None: Gemini judges every item (a paid key).
    gemini_judge_sample: int | None = 8
    max_new_tokens: int = 64
    batch_size: int = 8
    max_examples: int | None = None  # per side (answerable / unanswerable)
    min_reference_recall: float = 0.5  # share of the reference's answer terms a correct answer covers
    heldout_path: str = ""  # optional FACTS-schema .jsonl evaluated as "heldout_2"; "bundled": the written documents
    heldout_max_rows: int = 16  # rows of the held-out file used (each gives 1 answerable + 1 unanswerable)
    latency_prompts: int = 2  # prompts timed for 4-bit vs 16-bit (GPU) / fp32 (CPU); 0 skips it
    n_examples: int = 4  # example generations stored in metrics.json
    # rates also on the prompts whose label two blind readers confirmed ("bundled": the review of the
    # bundled FACTS test split, applied only when it covers every evaluation item; "": off)
    label_review: str = ""
    seed: int = 42

    def __post_init__(self) -> None:
        self.profile = detect_profile(self.profile)
        _choice(self, "judge", ("offline", "gemini"))
        _choice(self, "gemini_mode", ("auto", "online", "batch"))
        _positive(self, "max_new_tokens", "batch_size", "gemini_concurrency", "gemini_requests_per_minute",
                  "heldout_max_rows")
        if self.max_examples is not None:
            _positive(self, "max_examples")
        if self.gemini_requests_per_day is None:
            self.gemini_requests_per_day = free_tier_requests_per_day(self.gemini_model)
        _positive(self, "gemini_requests_per_day")
        if self.gemini_judge_sample is not None:
            _positive(self, "gemini_judge_sample")
        _fraction(self, "min_reference_recall")
        for name in ("latency_prompts", "n_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"EvalConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        root = output_root()
        self.pairs_dir = self.pairs_dir or str(root / "pairs")
        self.adapter_dir = self.adapter_dir or str(root / "adapter")
        self.metrics_path = self.metrics_path or str(root / "metrics.json")
        self.generations_path = self.generations_path or str(root / "generations.jsonl")
        if self.heldout_path == BUNDLED_SAMPLE:  # the 48 written documents, beside the real-FACTS test split
            self.heldout_path = str(Path(__file__).resolve().parent / "resources" / "facts_sample.jsonl")
        if self.label_review == BUNDLED_SAMPLE:
            self.label_review = str(LABEL_REVIEW_FILE)


#: Section of a config file (``GEMMA_FACTS_CONFIG``) for each stage config.
CONFIG_SECTIONS: dict[type, str] = {ModelConfig: "model", DataConfig: "data", TrainConfig: "train", EvalConfig: "eval"}


def config_sections(path: str | Path) -> dict[str, dict[str, Any]]:
    """Every section of a config file (the presets and ``--config`` files share the format), checked.

    Raises:
        ValueError: the file is missing, is not a JSON object, or names an unknown section.
    """
    file = Path(path)
    where = f"config file {file}" + (f" (${CONFIG_ENV})" if str(path) == os.environ.get(CONFIG_ENV) else "")
    if not file.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        sections = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(sections, dict):
        raise ValueError(f"{where}: expected a JSON object with sections {sorted(CONFIG_SECTIONS.values())}")
    unknown = set(sections) - set(CONFIG_SECTIONS.values())
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {sorted(unknown)}; use {sorted(CONFIG_SECTIONS.values())}")
    return {name: dict(values) for name, values in sections.items()}


def file_overrides(cls: type, path: str | Path | None = None) -> dict[str, Any]:
    """The fields a config file (default: ``$GEMMA_FACTS_CONFIG``) sets for ``cls``; {} without a file."""
    path = path or os.environ.get(CONFIG_ENV)
    return config_sections(path).get(CONFIG_SECTIONS[cls], {}) if path else {}


def presets_dir() -> Path:
    """``configs/`` of the checkout: one JSON preset per profile (``colab.json``, ``local.json``, ``smoke.json``)."""
    return repo_root() / "configs"


def preset(cls: type, profile: str) -> dict[str, Any]:
    """The fields ``configs/<profile>.json`` sets for ``cls`` (only sizes and sources differ between profiles).

    Why each preset value is what it is, with the runs that measured it: ``docs/presets.md``.
    """
    path = presets_dir() / f"{profile}.json"
    if not path.is_file():
        raise ValueError(f"profile {profile!r}: no preset file {path} (is this a checkout of gemma-facts?)")
    return file_overrides(cls, path)


def config_for(cls: type, profile: str | None = None, **overrides: Any) -> Any:
    """Build a stage config: the profile's preset, then the ``GEMMA_FACTS_CONFIG`` file, then explicit overrides.

    ``DataConfig.max_length`` is not set anywhere of its own: it is the ``ModelConfig.max_length`` of the
    same profile and files (the one token budget of prompt + answer), unless a caller passes it.
    """
    name = detect_profile(profile)
    known = {f.name for f in dataclasses.fields(cls)}
    from_preset, from_file = preset(cls, name), file_overrides(cls)
    unknown = (set(overrides) | set(from_file) | set(from_preset)) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    values = {**from_preset, **from_file, **overrides, "profile": name}
    if cls is DataConfig and values.get("max_length") is None:
        values["max_length"] = config_for(ModelConfig, name).max_length
    return cls(**values)


def show_config(cfg: Any) -> str:
    """Render a config as indented JSON for a notebook cell (no secrets live in configs)."""
    data = dataclasses.asdict(cfg)
    text = f"{type(cfg).__name__} " + json.dumps(data, indent=2, default=str)
    print(text)
    return text
