"""Benchmark: Gemini teacher calls at concurrency 8 vs sequential, and calls made by a rerun.

Runs against the fake Gemini server (tests/gemini_server.py) with a fixed latency per request, so
it needs no key and no network. Prints one JSON object to stdout.

    python bench/bench_teacher_concurrency.py [--items 24] [--latency 0.2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from gemini_server import FAKE_API_KEY, FakeGeminiServer, fake_teacher_reply  # noqa: E402

from helpers.config import GEMINI_MODEL  # noqa: E402
from helpers.data.rows import load_rows  # noqa: E402
from helpers.data.teachers import GeminiTeacher, TeachItem  # noqa: E402
from helpers.gemini_client import GeminiClient  # noqa: E402


def timed_teach(server: FakeGeminiServer, items: list[TeachItem], concurrency: int, cache: Path) -> dict:
    """Teach all items once; wall time, API calls and the overlap the server saw."""
    server.max_active = 0
    client = GeminiClient(GEMINI_MODEL, api_key=FAKE_API_KEY, base_url=server.base_url, cache_path=cache,
                          concurrency=concurrency, requests_per_minute=100_000)
    teacher = GeminiTeacher(client=client)
    start = time.perf_counter()
    outputs = teacher.teach(items)
    return {"seconds": round(time.perf_counter() - start, 3), "api_calls": client.stats.api_calls,
            "cache_hits": client.stats.cache_hits, "ok": sum(o is not None for o in outputs),
            "max_in_flight": server.max_overlap()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rows, _ = load_rows("bundled")
    items = [TeachItem(row, row.context_document) for row in (rows * (args.items // len(rows) + 1))[:args.items]]
    items = [TeachItem(i.row, f"{i.excerpt}\n(copy {n})") for n, i in enumerate(items)]  # all prompts distinct
    with FakeGeminiServer(responder=fake_teacher_reply, latency_s=args.latency) as server, \
            tempfile.TemporaryDirectory() as tmp:
        timed_teach(server, items[:2], 2, Path(tmp) / "warmup.jsonl")  # imports + first connection, not timed
        concurrent = timed_teach(server, items, args.concurrency, Path(tmp) / "concurrent.jsonl")
        sequential = timed_teach(server, items, 1, Path(tmp) / "sequential.jsonl")
        rerun = timed_teach(server, items, args.concurrency, Path(tmp) / "concurrent.jsonl")
    print(json.dumps({
        "items": args.items, "latency_s": args.latency, "concurrency": args.concurrency,
        "concurrent": concurrent, "sequential": sequential,
        "speedup": round(sequential["seconds"] / max(concurrent["seconds"], 1e-9), 2),
        "rerun_api_calls": rerun["api_calls"], "rerun_cache_hits": rerun["cache_hits"],
    }, indent=2))


if __name__ == "__main__":
    main()
