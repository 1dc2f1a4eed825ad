"""Benchmark: batched (left-padded) vs one-prompt-at-a-time greedy generation on the same prompts.

Uses the evaluation's own generation path (``helpers.generation``) and model loader, checks that both
ways produce the same tokens, and prints one JSON object with the throughput ratio and each row's
answer length (rows that end early leave the batch, so the figure depends on how unequal they are).

    python bench/bench_generation.py [--profile smoke|local|colab] [--prompts 16] [--batch-size N]
                                     [--max-new-tokens N] [--long] [--repeats N]

``--long``: whole real FACTS documents (530-842 words, as in the test split) instead of 120-word
excerpts; evaluation's prompts are that long.

``--repeats``: time both ways N times, alternating (batched, one at a time, batched, ...), and report
each pass and the ratio of the medians: on the shared 2-core machine one pass of the same code varied
by up to a fifth from day to day.

Defaults: the smoke profile (tiny random Gemma 2); batch size and answer length from ``EvalConfig``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.config import EvalConfig, ModelConfig, config_for  # noqa: E402
from helpers.evaluate.probes import PROBES  # noqa: E402
from helpers.generation import generate_token_ids  # noqa: E402
from helpers.prompts import build_messages, render_prompt  # noqa: E402

SAMPLE = REPO / "helpers" / "resources" / "facts_sample.jsonl"
LONG = REPO / "helpers" / "resources" / "facts_grounding" / "facts_grounding_more.jsonl"


def bench_prompts(n: int, words: int = 120) -> list[list[dict[str, str]]]:
    """``n`` prompts: bundled documents (first ``words`` words) with their requests, else the probes."""
    prompts = []
    if SAMPLE.exists():
        for line in SAMPLE.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                doc = " ".join(row["context_document"].split()[:words])
                prompts.append(build_messages(doc, row["user_request"]))
    prompts += [p.messages() for p in PROBES]
    return (prompts * (n // len(prompts) + 1))[:n]


def long_prompts(n: int) -> list[list[dict[str, str]]]:
    """``n`` prompts: the first bundled real FACTS rows with their whole documents."""
    rows = [json.loads(line) for line in LONG.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    return [build_messages(row["context_document"], row["user_request"]) for row in rows]


def timed(model, tokenizer, prompts, fmt: str, max_new: int, batch_size: int,
          **options) -> tuple[float, list[list[int]]]:
    """Seconds and token ids for one pass over the prompts."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    ids = generate_token_ids(model, tokenizer, prompts, prompt_format=fmt, max_new_tokens=max_new,
                             batch_size=batch_size, progress=False, **options)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke", choices=("smoke", "local", "colab"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--long", action="store_true", help="whole real FACTS documents instead of excerpts")
    parser.add_argument("--repeats", type=int, default=1, help="alternating timed passes of each way")
    args = parser.parse_args()
    from helpers.models import load_model_and_tokenizer

    model_cfg = config_for(ModelConfig, args.profile)
    eval_cfg = config_for(EvalConfig, args.profile)
    batch_size = args.batch_size or eval_cfg.batch_size
    max_new = args.max_new_tokens or eval_cfg.max_new_tokens
    model, tokenizer = load_model_and_tokenizer(model_cfg)
    prompts = long_prompts(args.prompts) if args.long else bench_prompts(args.prompts)
    # Warm-up of each way on its own shapes: the first pass of a 16-row batch cost 14.6 s and the next
    # ones 11.8-12.2 s (local profile), a one-time cost that evaluation pays once, not per batch.
    timed(model, tokenizer, prompts, model_cfg.prompt_format, 2, batch_size)
    timed(model, tokenizer, prompts[:1], model_cfg.prompt_format, 2, 1)
    batched, single = [], []
    for _ in range(max(1, args.repeats)):
        batched.append(timed(model, tokenizer, prompts, model_cfg.prompt_format, max_new, batch_size))
        single.append(timed(model, tokenizer, prompts, model_cfg.prompt_format, max_new, 1))
    batched_s, single_s = statistics.median(s for s, _ in batched), statistics.median(s for s, _ in single)
    batched_ids = batched[0][1]
    tokens = sum(len(r) for r in batched_ids)
    print(json.dumps({
        "profile": args.profile, "prompts_kind": "whole FACTS documents" if args.long else "120-word excerpts",
        "prompt_tokens_max": max(len(tokenizer(render_prompt(m, model_cfg.prompt_format, tokenizer))["input_ids"])
                                 for m in prompts),
        "model": model_cfg.model_id, "load_in_4bit": model_cfg.load_in_4bit,
        "prompt_format": model_cfg.prompt_format, "prompts": len(prompts), "batch_size": batch_size,
        "max_new_tokens": max_new, "new_tokens": tokens, "row_lengths": sorted(len(r) for r in batched_ids),
        "batched_s": round(batched_s, 3), "per_example_s": round(single_s, 3),
        **({"batched_passes_s": [round(s, 3) for s, _ in batched],
            "per_example_passes_s": [round(s, 3) for s, _ in single]} if args.repeats > 1 else {}),
        "batched_tokens_per_s": round(tokens / batched_s, 2), "per_example_tokens_per_s": round(tokens / single_s, 2),
        "speedup": round(single_s / batched_s, 2),
        "identical_tokens": all(ids == batched_ids for _, ids in batched + single),
        "device": "cuda" if str(model.device).startswith("cuda") else "cpu", "machine": platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
