"""Stage 03 driver: base vs aligned on the document-disjoint test split, judged, with CIs.

One model in memory: the base is loaded once through ``helpers.models.load_model_and_tokenizer``,
the adapter is attached with PEFT (``helpers.adapters.load_adapter``), and the *base* answers are
generated inside ``model.disable_adapter()``. Both sides share the prompt rendering, the batching
and the stopping rule of ``helpers.generation``.

Evaluation items are the unique (doc_id, request) prompts of the test split (a request that occurs
both with its own and with an unrelated document counts once per answerability). An optional
FACTS-schema file adds a second held-out set: each row's request with its own document
(answerable) and with the next row's document (unanswerable), reported separately as ``heldout_2``.

Judging: the offline judge scores every item. The Gemini judge (``judge="gemini"``) scores a seeded
sample of ``EvalConfig.gemini_judge_sample`` items per set, both sides (2 calls per item), sized to fit
a free-tier day; when the sample is smaller than the set the headline metrics stay offline and
``metrics["gemini_sample"]`` holds Gemini's rates and its agreement with the offline judge on the
sample. Before any Gemini call the model is checked and the quota plan printed.

CLI: ``python -m helpers.evaluate [--profile P] [--judge offline|gemini] [--max-examples N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import hashlib
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from helpers.config import REFUSAL, EvalConfig, ModelConfig, config_for, output_root
from helpers.data.excerpts import round_robin
from helpers.data.pairs import PAIRS_MADE_BY
from helpers.data.requests import request_style
from helpers.evaluate.judges import Verdict, judge_offline
from helpers.evaluate.metrics import breakdown, judge_agreement, relative_reduction, side_metrics
from helpers.evaluate.probes import BANANA, PROBES, probe_passes, run_probes
from helpers.generation import generate_answers, generate_token_ids
from helpers.prompts import build_messages, render_prompt
from helpers.secrets import redact

__all__ = [
    "SIDES",
    "evaluate",
    "eval_items",
    "gemini_sample_ids",
    "generate_side",
    "base_answers_path",
    "heldout_items",
    "judge_side",
    "load_aligned_model",
    "main",
    "measure_latency",
    "reviewed_rates",
    "side_metrics_offline",
    "has_adapter",
    "side_of",
    "verdict_records",
]

SIDES = ("base", "aligned")
ADAPTER_MADE_BY = "notebook 02 (02_dpo_training.ipynb) / python -m helpers.train"


# -- evaluation items -------------------------------------------------------------------------------
def _item(row: dict[str, Any], index: int, set_name: str) -> dict[str, Any]:
    return {"id": f"{set_name}-{index:04d}", "set": set_name, "doc_id": str(row.get("doc_id", "")),
            "request": row["request"], "document": row["document"],
            "system_instruction": row.get("system_instruction", "") or "",
            "prompt": row.get("prompt") or build_messages(row["document"], row["request"],
                                                          row.get("system_instruction")),
            "answerable": bool(row["answerable"]), "reference": row.get("reference", "") or "",
            "domain": row.get("domain", "") or "", "style": request_style(row["request"]),
            "pair_type": [], "source": []}


def _cap_per_side(items: list[dict[str, Any]], max_examples: int | None, seed: int) -> list[dict[str, Any]]:
    """Keep at most ``max_examples`` answerable and unanswerable items (seeded pick, original order).

    Within a side the pick takes the item kinds (``source``: near miss, answer removed, other
    document) in turn, so a cap keeps every kind represented instead of the most numerous one."""
    if max_examples is None:
        return items
    keep: set[int] = set()
    for flag in (True, False):
        by_kind: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            if it["answerable"] is flag:
                by_kind.setdefault(it["source"][0] if it["source"] else "unknown", []).append(i)
        rng = random.Random(seed)
        queues = [by_kind[k] for k in sorted(by_kind)]
        for queue in queues:
            rng.shuffle(queue)
        keep.update(round_robin(queues, max_examples))
    return [it for i, it in enumerate(items) if i in keep]


def eval_items(rows: Sequence[dict[str, Any]], max_examples: int | None = None, seed: int = 42,
               set_name: str = "test") -> list[dict[str, Any]]:
    """Unique (doc_id, request, answerable) prompts of the pairs' test split, with all their pair types.

    Args:
        rows: test-split pairs following the shared data contract.
        max_examples: cap per side (answerable / unanswerable); None keeps all.
        seed: picks which items survive the cap.
    """
    by_key: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for row in rows:
        key = (str(row.get("doc_id", "")), row["request"].strip(), bool(row["answerable"]))
        if key not in by_key:
            by_key[key] = _item(row, len(by_key), set_name)
        item = by_key[key]
        for field_name in ("pair_type", "source"):
            value = row.get(field_name) or "unknown"
            if value not in item[field_name]:
                item[field_name].append(value)
    return _cap_per_side(list(by_key.values()), max_examples, seed)


def heldout_items(path: str | Path, tokenizer: Any, model_cfg: ModelConfig, eval_cfg: EvalConfig) -> list[dict[str, Any]]:
    """A FACTS-schema .jsonl as a second held-out set: own document → answerable, next row's → unanswerable.

    Long documents are cut exactly as stage 01 cuts its test split (``helpers.data.excerpts.select_excerpt``:
    BM25 passages relevant to the request) so that prompt + answer fit the test split's budget
    (``DataConfig.test_max_length`` / ``test_document_tokens``, else the training one).
    """
    from helpers.config import DataConfig
    from helpers.data.build import split_document_cap, split_max_length
    from helpers.data.excerpts import document_budget, select_excerpt, token_counter

    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("user_request") and r.get("context_document")][: eval_cfg.heldout_max_rows]
    if len(rows) < 2:
        raise ValueError(f"EvalConfig.heldout_path: {path} needs at least 2 rows with user_request and "
                         f"context_document, found {len(rows)}")
    count = token_counter(tokenizer)
    data_cfg = config_for(DataConfig, model_cfg.profile)
    items = []
    for i, row in enumerate(rows):
        request, instruction = row["user_request"], row.get("system_instruction") or ""
        budget = document_budget(count, request, instruction, split_max_length(data_cfg, "test"),
                                 eval_cfg.max_new_tokens)
        cap = split_document_cap(data_cfg, "test")  # the same excerpt size as the test split
        if cap is not None:
            budget = min(budget, cap)
        for answerable, source in ((True, row), (False, rows[(i + 1) % len(rows)])):
            excerpt = select_excerpt(source["context_document"], request, count_tokens=count,
                                     budget_tokens=budget, passage_words=data_cfg.passage_words)
            items.append({"doc_id": str(source.get("id", i)), "request": request, "document": excerpt.text,
                          "system_instruction": instruction, "answerable": answerable,
                          "reference": "" if answerable else REFUSAL, "domain": row.get("domain", ""),
                          "pair_type": "facts_own_document" if answerable else "facts_other_document",
                          "source": "heldout"})
    return eval_items(items, set_name="heldout_2")


# -- model and generation -----------------------------------------------------------------------------
def load_aligned_model(model_cfg: ModelConfig, adapter_dir: str | Path) -> tuple[Any, Any]:
    """The base model loaded once through the one loader, with the trained adapter attached (PEFT)."""
    from helpers.adapters import load_adapter
    from helpers.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_cfg)
    return load_adapter(model, adapter_dir), tokenizer


def has_adapter(model: Any) -> bool:
    """A PEFT model (``disable_adapter`` is PEFT's); a plain model (``evaluate --base-only``, the experiments)
    is its own base, and its aligned side is its base side."""
    return hasattr(model, "disable_adapter")


@contextmanager
def side_of(model: Any, side: str) -> Iterator[None]:
    """``base``: the adapter disabled (same weights in memory); ``aligned``: the adapter active.

    A model without a PEFT adapter (``disable_adapter`` is PEFT's) is its own base, so the base-answer cache
    of ``generate_side`` serves a plain base model too (``experiments/answerability_probe.py``)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    with model.disable_adapter() if side == "base" and has_adapter(model) else nullcontext():
        yield


def generate_side(model: Any, tokenizer: Any, messages_list: Sequence[list[dict[str, str]]], side: str,
                  model_cfg: ModelConfig, eval_cfg: EvalConfig, desc: str = "") -> list[str]:
    """Answers of one side for many prompts (batched, greedy, cut at the end of the answer).

    The base side's answers are kept on disk (``base_answers_path``): the base model, the prompts and
    the decoding settings are identical in every training seed of ``gemma-facts run --seeds``, so its
    greedy answers are too, and a second seed need not spend CPU minutes regenerating them."""
    cache = base_answers_path(model_cfg, eval_cfg, messages_list) if side == "base" else None
    if cache is not None and cache.exists():
        answers = json.loads(cache.read_text(encoding="utf-8"))
        if len(answers) == len(messages_list):
            print(f"{desc or side + ' answers'}: {len(answers)} from {cache}", flush=True)
            return answers
    with side_of(model, side):
        answers = generate_answers(model, tokenizer, messages_list, prompt_format=model_cfg.prompt_format,
                                   max_new_tokens=eval_cfg.max_new_tokens, batch_size=eval_cfg.batch_size,
                                   desc=desc or f"{side} answers")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(answers), encoding="utf-8")
        tmp.replace(cache)
    return answers


def base_answers_path(model_cfg: ModelConfig, eval_cfg: EvalConfig,
                      messages_list: Sequence[list[dict[str, str]]]) -> Path | None:
    """Where the base side's answers for these prompts live on this machine (None: not cached).

    The key holds everything that decides a greedy answer: the model and how it is loaded, the
    library versions, the decoding settings, the batch size (it sets the padding) and every prompt.
    Offline models only: a Hub model id can change its weights under the same name."""
    from helpers.config import cache_root
    from helpers.models import offline_model_identity

    identity = offline_model_identity(model_cfg)
    if identity is None:
        return None
    loading, versions = identity
    key = json.dumps([*loading, eval_cfg.max_new_tokens, eval_cfg.batch_size, *versions, list(messages_list)],
                     sort_keys=True, ensure_ascii=False)
    return cache_root() / "base_answers" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")


def _peak_memory_bytes() -> tuple[str, int]:
    import resource

    import torch

    if torch.cuda.is_available():
        return "cuda_max_memory_allocated", int(torch.cuda.max_memory_allocated())
    return "process_peak_rss", int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _time_generation(model: Any, tokenizer: Any, prompts: list, model_cfg: ModelConfig, max_new: int) -> dict:
    import torch

    generate_token_ids(model, tokenizer, prompts[:1], prompt_format=model_cfg.prompt_format, max_new_tokens=2,
                       batch_size=1, progress=False)  # warm-up: first-call kernel and cache setup
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    ids = generate_token_ids(model, tokenizer, prompts, prompt_format=model_cfg.prompt_format,
                             max_new_tokens=max_new, batch_size=1, use_stop_strings=False, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = max(1, sum(len(row) for row in ids))
    kind, peak = _peak_memory_bytes()
    return {"ms_per_token": round(1000 * seconds / tokens, 3), "new_tokens": tokens, "seconds": round(seconds, 3),
            "weights_bytes": int(model.get_memory_footprint()), "peak_bytes": peak, "peak_kind": kind}


def measure_latency(model_cfg: ModelConfig, eval_cfg: EvalConfig, loaded: tuple[Any, Any] | None = None) -> dict:
    """ms/token and memory, 4-bit vs 16-bit (GPU) or fp32 (CPU), one prompt at a time on a few probes.

    The unquantised copy is loaded only here, after the evaluation, and freed right after.
    """
    from helpers.models import load_model_and_tokenizer, resolve_compute_dtype

    prompts = [p.messages() for p in PROBES[: eval_cfg.latency_prompts]]
    out: dict[str, Any] = {"prompts": len(prompts), "max_new_tokens": eval_cfg.max_new_tokens, "batch_size": 1}
    for four_bit in (True, False):
        cfg = dataclasses.replace(model_cfg, load_in_4bit=four_bit)
        label = "4bit_nf4" if four_bit else str(resolve_compute_dtype(cfg)).replace("torch.", "")
        if four_bit and loaded is not None and model_cfg.load_in_4bit:
            model, tokenizer = loaded
            with side_of(model, "base"):
                out[label] = _time_generation(model, tokenizer, prompts, cfg, eval_cfg.max_new_tokens)
            continue
        model, tokenizer = load_model_and_tokenizer(cfg)
        out[label] = _time_generation(model, tokenizer, prompts, cfg, eval_cfg.max_new_tokens)
        del model
        _free_memory()
    return out


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- judging ----------------------------------------------------------------------------------------
def gemini_judge(eval_cfg: EvalConfig) -> Any | None:
    """The Gemini judge, model-checked, or None (said loudly) when no key is configured.

    A retired/unknown model or a refused key raises ``GeminiPreflightError`` here, before any model loads.
    """
    from helpers.evaluate.judges import GeminiJudge
    from helpers.secrets import MissingSecretError

    try:
        judge = GeminiJudge(eval_cfg.gemini_model, cache_path=str(output_root() / "judge_cache.jsonl"),
                            concurrency=eval_cfg.gemini_concurrency,
                            requests_per_minute=eval_cfg.gemini_requests_per_minute,
                            requests_per_day=eval_cfg.gemini_requests_per_day, mode=eval_cfg.gemini_mode)
    except MissingSecretError as exc:
        print(f"\n*** Gemini judge unavailable, using the OFFLINE judge instead: {redact(str(exc))} ***\n")
        return None
    judge.check_model()
    return judge


def gemini_sample_ids(items: Sequence[dict[str, Any]], sample: int | None, seed: int = 42) -> set[str] | None:
    """Ids of the items the Gemini judge sees: ``sample`` of them, half answerable where possible, seeded;
    None (every item) when ``sample`` is None or covers the set."""
    if sample is None or sample >= len(items):
        return None
    groups = [[it["id"] for it in items if it["answerable"] is flag] for flag in (True, False)]
    for group in groups:
        random.Random(seed).shuffle(group)
    first = min(len(groups[0]), (sample + 1) // 2)
    second = min(len(groups[1]), sample - first)
    first = min(len(groups[0]), sample - second)  # a short side leaves its share to the other
    return set(groups[0][:first] + groups[1][:second])


def _print_judge_estimate(gemini: Any, sets: dict[str, tuple[int, int]], eval_cfg: EvalConfig) -> None:
    """Before generation: the upper bound of Gemini calls (the answers, hence the cache hits, come later)."""
    from helpers import quota

    calls = sum(2 * judged for judged, _ in sets.values())
    parts = ", ".join(f"{name}: {judged} of {total} items" for name, (judged, total) in sets.items())
    print(f"Gemini judge on {parts} (EvalConfig.gemini_judge_sample), both sides: up to {calls} calls; the "
          f"offline judge scores every item.")
    client = gemini.client
    if getattr(client, "ledger", None) is not None and client.requests_per_day:
        quota.quota_plan("Gemini judge, estimate before the answers exist (notebook 03)", client.model, calls, 0,
                         requests_per_minute=client.requests_per_minute, requests_per_day=client.requests_per_day,
                         ledger=client.ledger,
                         limit_fields="EvalConfig.gemini_requests_per_minute, EvalConfig.gemini_requests_per_day",
                         fewer_calls="EvalConfig.gemini_judge_sample").print()


def judge_side(items: Sequence[dict[str, Any]], answers: Sequence[str], eval_cfg: EvalConfig,
               gemini: Any | None = None, gemini_ids: set[str] | None = None) -> list[dict[str, Any]]:
    """Per item: the offline verdict, and the Gemini verdict (or its failure reason) when a judge is given.

    ``gemini_ids``: the items the Gemini judge sees (None: all of them).
    """
    out = []
    for item, answer in zip(items, answers, strict=True):
        prompt_text = render_prompt(item["prompt"], "plain")
        verdict = judge_offline(answer, item["document"], item["answerable"], reference=item["reference"],
                                request=item["request"], prompt_text=prompt_text,
                                min_recall=eval_cfg.min_reference_recall)
        out.append({"answer": answer, "offline": verdict.to_dict()})
    if gemini is not None:
        picked = [i for i, it in enumerate(items) if gemini_ids is None or it.get("id") in gemini_ids]
        replies = gemini.judge_many([{"answer": answers[i], "document": items[i]["document"],
                                      "request": items[i]["request"], "answerable": items[i]["answerable"]}
                                     for i in picked]) if picked else []
        for record, reply in zip([out[i] for i in picked], replies, strict=True):
            record["gemini"] = reply.to_dict() if isinstance(reply, Verdict) else {
                "failure": getattr(reply, "reason", "unexpected"), "message": redact(str(reply))[:300]}
    return out


def verdict_records(items: Sequence[dict[str, Any]], judged: Sequence[dict[str, Any]], judge: str) -> list[dict[str, Any]]:
    """Metric records from the primary judge; items the judge failed on are left out (and counted)."""
    records = []
    for item, j in zip(items, judged, strict=True):
        verdict = j.get(judge, {})
        if "refused" not in verdict:
            continue
        records.append({**verdict, "answerable": item["answerable"], "pair_type": item["pair_type"],
                        "source": item["source"], "domain": item["domain"],
                        "style": item.get("style") or request_style(item["request"])})  # hand-built items lack it
    return records


def summarise_sets(items: list[dict[str, Any]], judged: dict[str, list[dict[str, Any]]], judge: str,
               gemini_ids: set[str] | None = None, with_gemini: bool = False) -> dict[str, Any]:
    """Headline metrics, breakdowns, judge failures and judge agreement for one item set.

    ``with_gemini`` with an offline primary judge: Gemini judged the sample ``gemini_ids``; its rates on
    that sample go to ``gemini_sample`` and the agreement is measured there.
    """
    out: dict[str, Any] = {}
    for side in SIDES:
        records = verdict_records(items, judged[side], judge)
        out[side] = side_metrics(records)
        out[side]["judge_failures"] = len(items) - len(records)
        out.setdefault("breakdowns", {})[side] = {k: breakdown(records, k)
                                                    for k in ("pair_type", "source", "domain", "style")}
    out["relative_hallucination_reduction"] = relative_reduction(
        out["base"]["hallucination_rate"]["value"], out["aligned"]["hallucination_rate"]["value"])
    out["n_answerable"] = sum(it["answerable"] for it in items)
    out["n_unanswerable"] = len(items) - out["n_answerable"]
    if judge == "gemini" or with_gemini:
        agreement = {}
        for label in ("refused", "grounded_correct"):
            pairs = [(j["offline"][label], j["gemini"].get(label)) for side in SIDES for j in judged[side]
                     if "gemini" in j]
            agreement[label] = judge_agreement([a for a, _ in pairs], [b for _, b in pairs])
        out["judge_agreement"] = agreement
    if judge == "offline" and with_gemini:
        keep = [i for i, it in enumerate(items) if gemini_ids is None or it["id"] in gemini_ids]
        sample = [items[i] for i in keep]
        out["gemini_sample"] = {"n_items": len(sample), "n_answerable": sum(it["answerable"] for it in sample),
                                "judge_agreement": out["judge_agreement"]}
        for side in SIDES:
            records = verdict_records(sample, [judged[side][i] for i in keep], "gemini")
            out["gemini_sample"][side] = side_metrics(records)
            out["gemini_sample"][side]["judge_failures"] = len(sample) - len(records)
    return out


# -- outputs ----------------------------------------------------------------------------------------
def _examples(items: list[dict[str, Any]], judged: dict[str, list[dict[str, Any]]], k: int) -> list[dict[str, Any]]:
    """Up to ``k`` generations, preferring items where base and aligned verdicts differ."""
    same = [(judged["base"][i]["offline"]["grounded_correct"] == judged["aligned"][i]["offline"]["grounded_correct"],
             i) for i in range(len(items))]
    picked = [i for _, i in sorted(same)[:k]]
    return [{"id": items[i]["id"], "request": items[i]["request"], "document": items[i]["document"][:600],
             "answerable": items[i]["answerable"], "reference": items[i]["reference"],
             **{s: {"answer": judged[s][i]["answer"], "verdict": judged[s][i]["offline"]["detail"],
                    "correct": judged[s][i]["offline"]["grounded_correct"]} for s in SIDES}}
            for i in sorted(picked)]


def reviewed_rates(items: Sequence[dict[str, Any]], judged: dict[str, list[dict[str, Any]]], judge: str,
                   review: dict[str, Any]) -> dict[str, Any]:
    """Every side's headline rates on the prompts whose label the review confirms
    (``helpers.evaluate.label_review``), beside the rates on all prompts.

    ``judged``: per side (base, aligned, and base_with_head with a head) the verdicts in item order, as
    evaluation holds them and generations.jsonl stores them, so a finished run can be re-scored from
    its generations. Returns the review's summary alone (``applied: False``) when it does not cover
    every item.
    """
    from helpers.evaluate.label_review import confirmed_ids

    kept, out = confirmed_ids(items, review)
    if kept is None:
        return out
    keep = [i for i, it in enumerate(items) if it["id"] in kept]
    subset = [items[i] for i in keep]
    out["n_answerable"] = sum(bool(it["answerable"]) for it in subset)
    out["n_unanswerable"] = len(subset) - out["n_answerable"]
    for side, verdicts in judged.items():
        records = verdict_records(subset, [verdicts[i] for i in keep], judge)
        out[side] = side_metrics(records) | {"by_source": breakdown(records, "source")}
    out["relative_hallucination_reduction"] = {
        side: relative_reduction(out["base"]["hallucination_rate"]["value"], out[side]["hallucination_rate"]["value"])
        for side in judged if side != "base"}
    return out


def _write_generations(path: Path, sets: dict[str, tuple[list, dict]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for items, judged in sets.values():
            for i, item in enumerate(items):
                row = {k: item[k] for k in ("id", "set", "doc_id", "request", "document", "answerable",
                                            "reference", "pair_type", "source", "domain", "style")}
                row.update({s: judged[s][i] for s in judged})  # the two sides (and base_with_head, with a head)
                handle.write(redact(json.dumps(row, ensure_ascii=False)) + "\n")


def _probe_results(model: Any, tokenizer: Any, model_cfg: ModelConfig, eval_cfg: EvalConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in SIDES:
        if side != "base" and not has_adapter(model):  # no adapter (--base-only): the base's answers
            out[side] = out["base"]
            continue

        def gen(msgs: Sequence[list[dict[str, str]]], side: str = side) -> list[str]:
            return generate_side(model, tokenizer, msgs, side, model_cfg, eval_cfg, desc=f"{side} probes")

        out[side] = run_probes(gen)
    return out


def _banana(probes: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    result: dict[str, Any] = {"document": BANANA.document, "request": BANANA.request}
    for side in SIDES:
        row = next(p for p in probes[side] if p["name"] == BANANA.name)
        result[side] = {"answer": row["answer"], "passed": row["passed"]}
    return result


def _gate_set(head: Any, model: Any, tokenizer: Any, items: list[dict[str, Any]],
              judged: dict[str, list[dict[str, Any]]], model_cfg: ModelConfig, eval_cfg: EvalConfig,
              desc: str) -> tuple[dict[str, Any], int]:
    """One item set's base answers gated by ``head``, judged offline; adds ``base_with_head`` to ``judged``.
    Returns the set's summary (``aligned`` = the gated base) and how many answers the head replaced."""
    from helpers.evaluate.answerability_head import gate_answers

    with side_of(model, "base"):
        refuses = head.refuses_on(model, tokenizer, items, model_cfg, desc=desc)
    gated = judge_side(items, gate_answers([j["answer"] for j in judged["base"]], refuses), eval_cfg)
    judged["base_with_head"] = gated
    return summarise_sets(items, {"base": judged["base"], "aligned": gated}, "offline"), sum(refuses)


def _answerability_head_results(model: Any, tokenizer: Any, items: list[dict[str, Any]],
                                judged: dict[str, list[dict[str, Any]]], probes: dict[str, list[dict[str, Any]]],
                                model_cfg: ModelConfig, eval_cfg: EvalConfig,
                                held: tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]] | None = None
                                ) -> dict[str, Any] | None:
    """The base model's test answers gated by the answerability head the select stage fitted (None: no head).

    The same base answers as the base side (no new generation): each is replaced by the refusal where the
    head, reading the base model's state at the last prompt token, says the document lacks the answer.
    Judged offline on every item (a Gemini judge, when on, saw base and aligned only); the probes, the
    Banana test and the second held-out set (``held``: its items and verdicts) are gated the same way. The
    gated verdicts are added to each set's ``judged`` as ``base_with_head``, so generations.jsonl shows them
    beside the two sides."""
    from helpers.evaluate.answerability_head import AnswerabilityHead, gate_answers, head_path

    path = head_path()
    if not path.exists():
        return None
    head = AnswerabilityHead.load(path)
    if head.model_id != model_cfg.model_id:
        raise ValueError(f"{path} was fitted on {head.model_id}, this run evaluates {model_cfg.model_id}: run "
                         "gemma-facts select again (with train.answerability_head) or remove the file")
    by_name = {p.name: p for p in PROBES}
    probe_items = [{"prompt": by_name[p["name"]].messages(), "request": p["request"], "document": p["document"]}
                   for p in probes["base"]]
    summary, refused = _gate_set(head, model, tokenizer, items, judged, model_cfg, eval_cfg, "head: test prompts")
    with side_of(model, "base"):
        probe_refuses = head.refuses_on(model, tokenizer, probe_items, model_cfg, progress=False)
    gated_probes = [{**p, "answer": a, "passed": probe_passes(by_name[p["name"]], a)} for p, a in
                    zip(probes["base"], gate_answers([p["answer"] for p in probes["base"]], probe_refuses),
                        strict=True)]
    result = {"head": head.summary() | {"dev": {k: v for k, v in head.dev.items() if k != "dev_auc_by_candidate"}},
              "judge": "offline", "base_with_head": summary["aligned"],
              "relative_hallucination_reduction": summary["relative_hallucination_reduction"],
              "breakdowns": summary["breakdowns"]["aligned"], "refused_by_head": refused,
              "banana": next({"answer": p["answer"], "passed": p["passed"]} for p in gated_probes
                             if p["name"] == BANANA.name),
              "probes_passed": sum(p["passed"] for p in gated_probes), "probes": len(gated_probes)}
    if held:
        held_summary, held_refused = _gate_set(head, model, tokenizer, *held, model_cfg, eval_cfg,
                                               "head: held-out prompts")
        result["heldout_2"] = {"base_with_head": held_summary["aligned"], "refused_by_head": held_refused,
                               "relative_hallucination_reduction": held_summary["relative_hallucination_reduction"]}
    return result


def load_test_rows(pairs_dir: str) -> list[dict[str, Any]]:
    from datasets import load_from_disk

    from helpers.notebook import require_input

    require_input(pairs_dir, PAIRS_MADE_BY)
    data = load_from_disk(pairs_dir)
    if "test" not in data:
        raise ValueError(f"{pairs_dir} has no 'test' split (found {list(data)}); rebuild it with {PAIRS_MADE_BY}")
    return [dict(r) for r in data["test"]]


def _run_set(model: Any, tokenizer: Any, items: list[dict[str, Any]], model_cfg: ModelConfig,
             eval_cfg: EvalConfig, gemini: Any | None, gemini_ids: set[str] | None = None
             ) -> dict[str, list[dict[str, Any]]]:
    judged: dict[str, list[dict[str, Any]]] = {}
    for side in SIDES:
        if side != "base" and not has_adapter(model):  # no adapter (--base-only): the base's answers
            answers = [j["answer"] for j in judged["base"]]
        else:
            answers = generate_side(model, tokenizer, [it["prompt"] for it in items], side, model_cfg, eval_cfg,
                                    desc=f"{side} · {items[0]['set'] if items else ''}")
        judged[side] = judge_side(items, answers, eval_cfg, gemini, gemini_ids)
    return judged


def side_metrics_offline(model: Any, tokenizer: Any, items: list[dict[str, Any]], side: str,
                         model_cfg: ModelConfig, eval_cfg: EvalConfig) -> dict[str, Any]:
    """One side's headline rates on ``items`` with the offline judge, for the benches that probe a run
    (the dev tuning and the checkpoint curve) without writing metrics.json."""
    answers = generate_side(model, tokenizer, [it["prompt"] for it in items], side, model_cfg, eval_cfg)
    return side_metrics(verdict_records(items, judge_side(items, answers, eval_cfg), "offline"))


def evaluate(model_cfg: ModelConfig, eval_cfg: EvalConfig, *, loaded: tuple[Any, Any] | None = None,
             command: str | None = None, base_only: bool = False) -> dict[str, Any]:
    """Evaluate base vs aligned; write metrics.json and generations.jsonl; return the metrics.

    Args:
        model_cfg: the model/profile (same as training).
        eval_cfg: sizes, judge, paths.
        loaded: an already loaded ``(peft_model, tokenizer)`` from ``load_aligned_model`` (the
            notebook reuses it for the playground); loaded here and freed afterwards otherwise.
        command: recorded in metrics.json (the CLI passes its command line).
        base_only: no adapter: the aligned side is the base model itself (its answers, from the base
            side's cache), for the base and its answerability head alone (``evaluate --base-only``).
    """
    from helpers.notebook import require_input

    rows = load_test_rows(eval_cfg.pairs_dir)
    if not base_only:
        require_input(eval_cfg.adapter_dir, ADAPTER_MADE_BY)
    items = eval_items(rows, eval_cfg.max_examples, eval_cfg.seed)
    if not items:
        raise ValueError(f"the test split in {eval_cfg.pairs_dir} is empty; rebuild it with {PAIRS_MADE_BY}")
    gemini = gemini_judge(eval_cfg) if eval_cfg.judge == "gemini" else None
    sample_ids = gemini_sample_ids(items, eval_cfg.gemini_judge_sample, eval_cfg.seed) if gemini else None
    # Gemini is the headline judge only when it sees every item; on a sample it is the check of the offline one
    judge = "gemini" if gemini is not None and sample_ids is None else "offline"
    free_after = loaded is None
    if loaded is None:
        from helpers.models import load_model_and_tokenizer

        loaded = load_model_and_tokenizer(model_cfg) if base_only else load_aligned_model(model_cfg, eval_cfg.adapter_dir)
    model, tokenizer = loaded
    held = heldout_items(eval_cfg.heldout_path, tokenizer, model_cfg, eval_cfg) if eval_cfg.heldout_path else []
    held_ids = gemini_sample_ids(held, eval_cfg.gemini_judge_sample, eval_cfg.seed) if gemini and held else None
    if gemini is not None:
        sizes = {"test": (len(sample_ids) if sample_ids is not None else len(items), len(items))}
        if held:
            sizes["heldout_2"] = (len(held_ids) if held_ids is not None else len(held), len(held))
        _print_judge_estimate(gemini, sizes, eval_cfg)
    sets = {"test": (items, _run_set(model, tokenizer, items, model_cfg, eval_cfg, gemini, sample_ids))}
    if held:
        sets["heldout_2"] = (held, _run_set(model, tokenizer, held, model_cfg, eval_cfg, gemini, held_ids))
    probes = _probe_results(model, tokenizer, model_cfg, eval_cfg)
    summary = summarise_sets(*sets["test"], judge, sample_ids, with_gemini=gemini is not None)
    head_results = _answerability_head_results(model, tokenizer, items, sets["test"][1], probes, model_cfg, eval_cfg,
                                               held=sets.get("heldout_2"))
    metrics: dict[str, Any] = {
        "base": summary["base"], "aligned": summary["aligned"],
        "relative_hallucination_reduction": summary["relative_hallucination_reduction"],
        "banana": _banana(probes), "n_answerable": summary["n_answerable"],
        "n_unanswerable": summary["n_unanswerable"],
        "judge": gemini.name if judge == "gemini" else "offline", "judge_requested": eval_cfg.judge,
        "model": model_cfg.model_id, "aligned_is_base": base_only,
        "profile": model_cfg.profile, "prompt_format": model_cfg.prompt_format,
        "breakdowns": summary["breakdowns"], "probes": probes,
        "examples": _examples(*sets["test"], eval_cfg.n_examples),
    }
    if gemini is not None:
        metrics["judge_agreement"] = summary["judge_agreement"]
        metrics["judge_stats"] = gemini.stats.to_dict()
        metrics["gemini_judge"] = {"model": gemini.client.model, "sample": eval_cfg.gemini_judge_sample,
                                   "quota_plans": [p.to_dict() for p in gemini.plans]}
        if "gemini_sample" in summary:
            metrics["gemini_sample"] = summary["gemini_sample"]
        if gemini.stats.stopped:
            print(f"\n*** {gemini.stats.stopped} ***\n")
    if head_results is not None:
        metrics["answerability_head"] = head_results
    if eval_cfg.label_review:
        from helpers.evaluate.label_review import load_review

        metrics["reviewed_labels"] = reviewed_rates(items, sets["test"][1], judge, load_review(eval_cfg.label_review))
        if not metrics["reviewed_labels"]["applied"]:
            print(f"label review not applied: {metrics['reviewed_labels']['reason']}")
    if "heldout_2" in sets:
        metrics["heldout_2"] = {"path": Path(eval_cfg.heldout_path).name,
                                **summarise_sets(*sets["heldout_2"], judge, held_ids, with_gemini=gemini is not None)}
    if eval_cfg.latency_prompts:
        metrics["latency"] = measure_latency(model_cfg, eval_cfg, (model, tokenizer))
    if free_after:
        del model
        _free_memory()
    metrics.update({"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "command": command or f"evaluate(profile={model_cfg.profile!r})",
                    "config": {"model": dataclasses.asdict(model_cfg), "eval": dataclasses.asdict(eval_cfg)}})
    _write_generations(Path(eval_cfg.generations_path), sets)
    path = Path(eval_cfg.metrics_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact(json.dumps(metrics, indent=2, default=str)), encoding="utf-8")
    return metrics


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI: evaluate base vs aligned and print the headline numbers."""
    parser = argparse.ArgumentParser(prog="python -m helpers.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=("colab", "local", "smoke"), default=None)
    parser.add_argument("--judge", choices=("offline", "gemini"), default=None)
    parser.add_argument("--max-examples", type=int, default=None, help="cap per side (answerable/unanswerable)")
    parser.add_argument("--heldout", default=None, help="optional FACTS-schema .jsonl evaluated as heldout_2")
    parser.add_argument("--no-latency", action="store_true", help="skip the 4-bit vs unquantised timing")
    parser.add_argument("--base-only", action="store_true",
                        help="no adapter: the base model (and its answerability head, when the select stage fitted one)")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.judge:
        overrides["judge"] = args.judge
    if args.max_examples is not None:
        overrides["max_examples"] = args.max_examples
    if args.heldout:
        overrides["heldout_path"] = args.heldout
    if args.no_latency:
        overrides["latency_prompts"] = 0
    model_cfg = config_for(ModelConfig, args.profile)
    eval_cfg = config_for(EvalConfig, args.profile, **overrides)
    command = "python -m helpers.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
    metrics = evaluate(model_cfg, eval_cfg, command=command.strip(), base_only=args.base_only)
    from helpers.evaluate.tables import impact_table

    print(impact_table(metrics))
    print(f"metrics: {eval_cfg.metrics_path}")
    return metrics


if __name__ == "__main__":
    main()
