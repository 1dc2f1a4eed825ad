"""Gemini *batch mode* for big builds: many prompts as one asynchronous job, results in the online cache.

Why: the free tier allows a few dozen online requests a day, so a build of thousands of rows takes
weeks online; Google's Batch API takes them all in one job at 50% of the online price (paid keys),
under its own limits (concurrent jobs, enqueued tokens) instead of the daily request count, and
answers within 24 hours (usually much sooner).

How it fits the online client (``helpers.gemini_client``):

* the same ``GeminiClient`` supplies the model, the key (only inside the SDK client it builds), the
  endpoint and the ``JsonlCache``; every result is stored under ``GeminiClient.cache_key``, so a later
  online ``generate_json_many`` of the same prompts makes 0 calls, and cached prompts are never sent;
* the prompts go as inlined requests (``client.batches.create``, ``POST models/{model}:batchGenerateContent``),
  each carrying the same JSON response schema as an online call and its cache key as metadata; jobs
  are split to stay under Google's 20 MB inline limit (``max_job_bytes``);
* right after each create, the job name and the cache keys it covers go to a small JSON state file
  (atomic write; default next to the cache, ``<cache>.batch.json``), *before* any polling, so a
  kill or disconnect while waiting loses nothing: the next run re-polls that job
  (``client.batches.get``, ``GET batches/{id}``) instead of submitting the prompts again. Results come
  back inlined in the finished job, so reading them needs no further call. (Only a kill in the instant
  between Google's answer to the create and the state write orphans a job: its prompts are sent again.)
* outcomes are values, as online: ``run_batch`` returns one reply or ``GeminiCallError`` per prompt.
  A request that failed inside a succeeded job is counted by reason and stays uncached (a rerun
  submits only those). A job that ends FAILED, EXPIRED or CANCELLED is removed from the state file and
  stops the run with a message saying what to do (a rerun submits its prompts again); a job still
  running when ``max_wait_s`` is up stops as ``batch_pending`` and stays in the state file.

Batch requests are not counted in the online daily ledger (``helpers.quota.UsageLedger``): they fall
under the batch limits, not the per-day request count.

What the teacher and the judge call (``helpers.data.teachers.GeminiTeacher``,
``helpers.evaluate.judges.GeminiJudge``; a config flag picks the mode)::

    from helpers.gemini_batch import print_plan_with_mode, run_batch

    # GeminiTeacher.preflight: after computing ``self.plan`` (instead of ``.print()``)
    choice = print_plan_with_mode(self.plan)          # the plan plus "mode: batch/online because ..."

    # GeminiTeacher.teach: instead of self.client.generate_json_many(prompts, GeminiTeacherReply, ...)
    outcome = run_batch(self.client, [self.prompt_for(i) for i in items], GeminiTeacherReply)
    replies = outcome.results                        # same shape: a reply or a GeminiCallError per item

    # GeminiJudge.judge_many: instead of self.client.generate_json_many(prompts, GroundingJudgement, ...)
    replies = run_batch(self.client, prompts, GroundingJudgement).results

``outcome.stats.to_dict()`` holds the batch counters (create/get calls, jobs, failures by reason) for
the report; ``outcome.stats.stopped`` the message when a job ended badly or is still running.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from helpers import quota
from helpers.gemini_client import GeminiCallError, GeminiClient, classify_exception, parse_response
from helpers.secrets import redact

__all__ = [
    "choose_client_mode",
    "BATCH_MIN_CALLS",
    "BATCH_STOP_REASONS",
    "MAX_INLINE_BYTES",
    "BatchOutcome",
    "BatchStats",
    "GeminiBatch",
    "ModeChoice",
    "choose_mode",
    "default_state_path",
    "mode_for_plan",
    "print_plan_with_mode",
    "read_state",
    "run_batch",
]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=pydantic.BaseModel)

#: Google takes inlined requests up to 20 MB per create call; the rest is headroom for JSON framing.
MAX_INLINE_BYTES = 15_000_000
#: Bytes one inlined request adds besides its prompt and schema (JSON keys, metadata with the cache key).
REQUEST_OVERHEAD_BYTES = 300
#: From this many calls, batch is the suggested mode even when the calls fit today's online budget.
BATCH_MIN_CALLS = 500
DEFAULT_POLL_INTERVAL_S = 30.0
STATE_FORMAT = 1
#: Stops of a batch run: the job ended badly, vanished, or is still running when the wait is over.
BATCH_STOP_REASONS = frozenset({"batch_failed", "batch_expired", "batch_cancelled", "batch_not_found",
                                "batch_pending"})
_SUCCEEDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED"}
_ENDED_BADLY = {"JOB_STATE_FAILED": "batch_failed", "JOB_STATE_EXPIRED": "batch_expired",
                "JOB_STATE_CANCELLED": "batch_cancelled"}
#: google.rpc.Code (what a failed request inside a batch carries) -> the online client's reasons.
_GRPC_REASONS = {3: "bad_request", 4: "timeout", 5: "bad_request", 7: "auth", 8: "rate_limited",
                 9: "bad_request", 11: "bad_request", 13: "server_error", 14: "server_error", 16: "auth"}


# -- online or batch ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModeChoice:
    """Online or batch for one run, and why (printed under the quota plan)."""

    mode: str  # "online" or "batch"
    reason: str

    def text(self) -> str:
        """The plan line."""
        return f"  mode: {self.mode}: {self.reason}"


def choose_mode(calls_needed: int, requests_per_day: int, rows: int | None = None, *, left_today: int | None = None,
                batch_min_calls: int = BATCH_MIN_CALLS) -> ModeChoice:
    """Online when the calls fit today's budget and the run is small; batch otherwise.

    Batch when ``calls_needed`` exceeds what is left today (online would stop and continue over
    several days), or when it reaches ``batch_min_calls`` (at that size half the price matters more
    than answers within minutes). ``left_today`` defaults to the whole ``requests_per_day``.
    """
    if requests_per_day <= 0 or batch_min_calls <= 0:
        raise ValueError(f"choose_mode: limits must be > 0, got {requests_per_day}/day, "
                         f"batch_min_calls={batch_min_calls}")
    left = requests_per_day if left_today is None else max(0, left_today)
    size = f"{calls_needed} calls" + (f" for {rows} rows" if rows is not None else "")
    batch_terms = ("the batch job has its own limits (concurrent jobs, enqueued tokens; "
                   f"{quota.RATE_LIMIT_PAGE}), costs 50% of the online price on a paid key and answers "
                   "within 24 h, usually much sooner; a key without batch access (the free tier may lack "
                   "it) is refused at once, then stay online")
    if calls_needed <= 0:
        return ModeChoice("online", "nothing to send: every answer is cached")
    if calls_needed > left:
        days = 1 + math.ceil((calls_needed - left) / requests_per_day)
        return ModeChoice("batch", f"{size} exceed today's online budget ({left} of {requests_per_day}/day "
                                   f"left; online would take {days} days); {batch_terms}")
    if calls_needed >= batch_min_calls:
        return ModeChoice("batch", f"{size} reach the batch threshold of {batch_min_calls}; {batch_terms}")
    return ModeChoice("online", f"{size} fit today's online budget ({left} of {requests_per_day}/day left) and "
                                f"stay under the batch threshold of {batch_min_calls}: answers now, not after "
                                f"a batch queue")


def mode_for_plan(plan: quota.QuotaPlan, *, batch_min_calls: int = BATCH_MIN_CALLS) -> ModeChoice:
    """``choose_mode`` for a printed quota plan (its calls, daily budget, what is left today, rows)."""
    return choose_mode(plan.calls_needed, plan.requests_per_day, plan.total, left_today=plan.left_today,
                       batch_min_calls=batch_min_calls)


def print_plan_with_mode(plan: quota.QuotaPlan, *, batch_min_calls: int = BATCH_MIN_CALLS) -> ModeChoice:
    """Print the quota plan followed by the online/batch line; returns the choice."""
    choice = mode_for_plan(plan, batch_min_calls=batch_min_calls)
    print(plan.text() + "\n" + choice.text(), flush=True)
    return choice


# -- the state file ------------------------------------------------------------------------------
def choose_client_mode(client: Any, mode: str, plan: quota.QuotaPlan | None, prompts: Sequence[str], schema: type,
                       *, setting: str, noun: str = "prompts") -> ModeChoice:
    """The teacher's or judge's mode: ``mode`` as configured, or for "auto" the plan's choice; prompts that
    sit in an unread batch job stay in batch (polled, never sent twice).

    ``setting`` names the config field in messages (``DataConfig.gemini_mode``); ``noun`` what a prompt is.
    Raises ValueError for "batch" without a reply cache (a job's results are read once and must land on disk).
    """
    cache = getattr(client, "cache", None)
    if cache is None or plan is None:
        if mode == "batch":
            raise ValueError(f"{setting}='batch' needs a Gemini client with a reply cache (cache_path): a batch "
                             f"job's results are read once and must land on disk")
        return ModeChoice("online", f"set by {setting}" if mode == "online" else
                          "batch mode needs a reply cache (cache_path) and this client has none")
    try:
        jobs = read_state(default_state_path(cache.path))["jobs"]
    except ValueError:  # an unreadable state file must stop batch runs, not online ones
        if mode != "online":
            raise
        jobs = []
    submitted = {key for job in jobs for key in job["keys"]}
    waiting = sum(client.cache_key(p, schema) in submitted for p in dict.fromkeys(prompts))
    auto = mode_for_plan(plan)
    if mode == "auto":
        if waiting:
            return ModeChoice("batch", f"{waiting} of these {noun} are in a batch job submitted earlier "
                                       f"({default_state_path(cache.path)}): it is polled, not sent again")
        return auto
    note = f"; {waiting} of these {noun} are also in an unread batch job and are sent again" \
        if waiting and mode == "online" else ""
    return ModeChoice(mode, f"set by {setting} (auto would choose {auto.mode}){note}")


def default_state_path(cache_path: str | Path) -> Path:
    """``<cache>.batch.json`` next to the cache: the teacher's and the judge's jobs never mix."""
    path = Path(cache_path)
    return path.with_name(path.name + ".batch.json")


def read_state(path: str | Path) -> dict[str, Any]:
    """The jobs submitted and not yet read back (``{"format": 1, "jobs": [...]}``; none when absent).

    An unreadable file raises instead of being ignored: ignoring it would submit every prompt again.
    """
    path = Path(path)
    if not path.exists():
        return {"format": STATE_FORMAT, "jobs": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("jobs"), list):
            raise ValueError("no job list")
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"batch state {path} is unreadable ({exc}). It names submitted Gemini batch jobs: "
                         f"look at it, and delete it only if those jobs are finished or unwanted (their "
                         f"prompts are then submitted again)") from None
    return data


def _write_state(path: Path, data: dict[str, Any]) -> None:
    """Atomic: a temporary file, fsynced, renamed over the old one; no jobs left: the file goes."""
    if not data["jobs"]:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(redact(json.dumps(data, indent=1)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- counters and outcome ------------------------------------------------------------------------
@dataclass
class BatchStats:
    """Counters a report shows: batch API calls, jobs, prompts, failures by reason."""

    create_calls: int = 0  # batches.create requests (one per job submitted)
    get_calls: int = 0  # batches.get polls; the inlined results arrive with the last one (no extra call)
    jobs_created: int = 0
    jobs_resumed: int = 0  # jobs found in the state file and polled again instead of resubmitted
    jobs_read: int = 0  # succeeded jobs whose inlined results were read
    requests_submitted: int = 0  # prompts sent inside created jobs
    cache_hits: int = 0
    succeeded: int = 0
    poll_errors: int = 0  # polls that failed transiently (the job is polled again)
    failures: Counter = field(default_factory=Counter)
    stopped: str = ""
    stop_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers for reports."""
        return {"create_calls": self.create_calls, "get_calls": self.get_calls,
                "calls": self.create_calls + self.get_calls, "jobs_created": self.jobs_created,
                "jobs_resumed": self.jobs_resumed, "jobs_read": self.jobs_read,
                "requests_submitted": self.requests_submitted, "cache_hits": self.cache_hits,
                "succeeded": self.succeeded, "poll_errors": self.poll_errors,
                "failures": dict(sorted(self.failures.items())), "stopped": self.stopped,
                "stop_reason": self.stop_reason}


@dataclass
class BatchOutcome:
    """What ``run_batch`` returns: one reply or ``GeminiCallError`` per prompt, in input order."""

    results: list[Any]
    stats: BatchStats
    state_path: Path


def _item_error(error: Any) -> GeminiCallError:
    """A request that failed inside a job, as the online client's reason (google.rpc or HTTP code)."""
    code = int(getattr(error, "code", 0) or 0)
    message = f"inside the batch job: code {code}: {getattr(error, 'message', '') or 'no message'}"
    if code >= 100:  # an HTTP status
        reason = "auth" if code in (401, 403) else "rate_limited" if code == 429 else \
            "timeout" if code in (408, 504) else "server_error" if code >= 500 else "bad_request"
    else:
        reason = _GRPC_REASONS.get(code, "unexpected")
    return GeminiCallError(reason, message)


class GeminiBatch:
    """Submit uncached prompts as batch jobs, remember them on disk, poll, and cache every result."""

    def __init__(self, client: GeminiClient, *, state_path: str | Path | None = None,
                 poll_interval_s: float = DEFAULT_POLL_INTERVAL_S, max_wait_s: float | None = None,
                 max_job_bytes: int = MAX_INLINE_BYTES) -> None:
        """``max_wait_s`` None: poll until every job has ended; a number: stop as ``batch_pending``
        after that long (the jobs stay in the state file; a rerun polls them again)."""
        if client.cache is None:
            raise ValueError("run_batch needs a GeminiClient with a cache_path: the results of a finished job "
                             "are read once and must land on disk")
        if poll_interval_s <= 0 or max_job_bytes <= 0 or (max_wait_s is not None and max_wait_s < 0):
            raise ValueError(f"GeminiBatch: poll_interval_s and max_job_bytes must be > 0 and max_wait_s >= 0, got "
                             f"{poll_interval_s}, {max_job_bytes}, {max_wait_s}")
        self.client = client
        self.cache = client.cache
        self.state_path = Path(state_path) if state_path else default_state_path(client.cache.path)
        self.poll_interval_s = float(poll_interval_s)
        self.max_wait_s = max_wait_s
        self.max_job_bytes = int(max_job_bytes)
        self.stats = BatchStats()
        self.sleep: Callable[[float], None] = time.sleep  # tests replace it to simulate a kill mid-wait

    def __repr__(self) -> str:  # never shows the key
        return f"GeminiBatch(model={self.client.model!r}, state_path={str(self.state_path)!r})"

    # -- public ------------------------------------------------------------------------------
    def run(self, prompts: Iterable[str], schema: type[T]) -> list[T | GeminiCallError]:
        """Cached prompts from the cache, the rest through batch jobs; results in input order."""
        prompts = list(prompts)
        outcomes: dict[str, Any] = {}
        todo: dict[str, str] = {}  # cache key -> prompt, for prompts the cache does not answer
        for prompt in dict.fromkeys(prompts):
            hit = self.client.cached(prompt, schema)
            if hit is not None:
                self.stats.cache_hits += 1
                outcomes[prompt] = hit
            else:
                todo[self.client.cache_key(prompt, schema)] = prompt
        if todo:
            by_key = self._run_jobs(todo, schema)
            outcomes.update({prompt: by_key[key] for key, prompt in todo.items()})
        return [outcomes[p] for p in prompts]

    # -- jobs ----------------------------------------------------------------------------------
    def _run_jobs(self, todo: dict[str, str], schema: type[T]) -> dict[str, Any]:
        state = read_state(self.state_path)
        resumed = [job for job in state["jobs"] if not todo.keys().isdisjoint(job["keys"])]
        covered = {key for job in resumed for key in job["keys"]}
        self.stats.jobs_resumed += len(resumed)
        for job in resumed:
            print(f"Gemini batch: polling job {job['name']} again (submitted {job.get('created', '?')}, "
                  f"{len(job['keys'])} prompts; saved in {self.state_path})", flush=True)
        results: dict[str, Any] = {}
        sdk = self.client.new_sdk_client()
        try:
            fresh = [(key, prompt) for key, prompt in todo.items() if key not in covered]
            created = self._submit(sdk, fresh, schema, state, results)
            self._wait(sdk, resumed + created, schema, state, results)
        finally:
            sdk.close()
        for key in todo.keys() - results.keys():  # not sent: an earlier create failed
            results[key] = GeminiCallError("not_attempted", self.stats.stopped)
            self.stats.failures["not_attempted"] += 1
        return results

    def _submit(self, sdk: Any, fresh: list[tuple[str, str]], schema: type[T], state: dict[str, Any],
                results: dict[str, Any]) -> list[dict[str, Any]]:
        """Create one job per chunk; each job is written to the state file before anything else."""
        from google.genai import types

        json_schema = schema.model_json_schema()
        created = []
        for chunk in self._chunks(fresh, len(json.dumps(json_schema))):
            requests = [types.InlinedRequest(contents=prompt, metadata={"key": key},
                                             config=types.GenerateContentConfig(
                                                 response_mime_type="application/json",
                                                 response_schema=copy.deepcopy(json_schema)))
                        for key, prompt in chunk]
            name = f"gemma-facts {schema.__name__} x{len(chunk)}"
            self.stats.create_calls += 1
            try:
                job = sdk.batches.create(model=self.client.model, src=requests, config={"display_name": name})
            except Exception as exc:  # noqa: BLE001 - classified: the run stops with the reason
                error = classify_exception(exc, self.client.model)
                self._fail([key for key, _ in chunk], error, results)
                self._stop(error.reason, f"creating a batch job failed: {error.message}")
                break
            entry = {"name": job.name, "model": self.client.model, "schema": schema.__name__,
                     "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     "keys": [key for key, _ in chunk]}
            state["jobs"].append(entry)
            _write_state(self.state_path, state)
            self.stats.jobs_created += 1
            self.stats.requests_submitted += len(chunk)
            created.append(entry)
            print(f"Gemini batch: submitted job {job.name} ({len(chunk)} prompts, {self.client.model}); "
                  f"saved in {self.state_path}", flush=True)
        return created

    def _chunks(self, fresh: list[tuple[str, str]], schema_bytes: int) -> list[list[tuple[str, str]]]:
        """Split so that no create call carries more than ``max_job_bytes`` of inlined requests."""
        chunks: list[list[tuple[str, str]]] = []
        size = 0
        for key, prompt in fresh:
            cost = len(prompt.encode("utf-8")) + schema_bytes + REQUEST_OVERHEAD_BYTES
            if not chunks or size + cost > self.max_job_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append((key, prompt))
            size += cost
        return chunks

    def _wait(self, sdk: Any, jobs: list[dict[str, Any]], schema: type[T], state: dict[str, Any],
              results: dict[str, Any]) -> None:
        """Poll every ``poll_interval_s`` until each job has ended or ``max_wait_s`` is up."""
        start = time.monotonic()
        active = list(jobs)
        last_state: dict[str, str] = {}
        while active:
            for job in list(active):
                ended, last_state[job["name"]] = self._poll(sdk, job, schema, state, results)
                if ended:
                    active.remove(job)
            if not active:
                return
            waited = time.monotonic() - start
            if self.max_wait_s is not None and waited + self.poll_interval_s > self.max_wait_s:
                for job in active:
                    self._still_running(job, last_state.get(job["name"], "unknown"), waited, results)
                return
            self.sleep(self.poll_interval_s)

    def _poll(self, sdk: Any, job: dict[str, Any], schema: type[T], state: dict[str, Any],
              results: dict[str, Any]) -> tuple[bool, str]:
        """One ``batches.get``: (has the job ended for this run, its state name)."""
        from google.genai import errors

        self.stats.get_calls += 1
        try:
            batch = sdk.batches.get(name=job["name"])
        except Exception as exc:  # noqa: BLE001 - classified below
            if isinstance(exc, errors.APIError) and exc.code == 404:
                self._forget(job, state)
                self._end_badly(job, "batch_not_found", f"batch job {job['name']} is not found (deleted, or "
                                                        f"made with another project's key)", results)
                return True, "NOT_FOUND"
            error = classify_exception(exc, self.client.model)
            if error.reason == "auth":  # the job is kept: a rerun with a working key polls it again
                self._fail(job["keys"], error, results)
                self._stop("auth", f"polling batch job {job['name']} was refused: {error.message}")
                return True, "UNKNOWN"
            self.stats.poll_errors += 1
            log.warning("polling batch job %s failed (%s), will retry: %s", job["name"], error.reason, error.message)
            return False, "UNKNOWN"
        name = batch.state.name if batch.state is not None else "JOB_STATE_UNSPECIFIED"
        if name in _SUCCEEDED:
            self._read_results(batch, job, schema, results)
            self._forget(job, state)
            return True, name
        if name in _ENDED_BADLY:
            self._forget(job, state)
            self._end_badly(job, _ENDED_BADLY[name], self._ended_message(job, name), results)
            return True, name
        return False, name

    def _read_results(self, batch: Any, job: dict[str, Any], schema: type[T], results: dict[str, Any]) -> None:
        """Every result of a succeeded job into the cache; failed requests counted and left uncached."""
        responses = list(batch.dest.inlined_responses or []) if batch.dest is not None else []
        if not responses and batch.dest is not None and batch.dest.file_name:
            error = GeminiCallError("unexpected", f"batch job {job['name']} wrote its results to the file "
                                                  f"{batch.dest.file_name}; only inlined results are read")
            self._fail(job["keys"], error, results)
            return
        by_key = {}
        for index, item in enumerate(responses):
            key = (item.metadata or {}).get("key") or (job["keys"][index] if index < len(job["keys"]) else "")
            by_key[key] = item
        self.stats.jobs_read += 1
        for key in job["keys"]:
            outcome = self._parse_item(by_key.get(key), schema)
            if isinstance(outcome, GeminiCallError):
                self._fail([key], outcome, results)
                continue
            if key not in self.cache:
                self.cache.put(key, outcome.model_dump(mode="json"))
            self.stats.succeeded += 1
            results[key] = outcome

    @staticmethod
    def _parse_item(item: Any, schema: type[T]) -> T | GeminiCallError:
        if item is None:
            return GeminiCallError("empty_candidates", "the batch job returned no response for this request")
        if item.error is not None:
            return _item_error(item.error)
        if item.response is None:
            return GeminiCallError("empty_candidates", "the batch job returned an empty response")
        try:
            return parse_response(item.response, schema)
        except GeminiCallError as exc:
            return exc

    # -- endings -------------------------------------------------------------------------------
    def _forget(self, job: dict[str, Any], state: dict[str, Any]) -> None:
        """Drop a job that ended from the state file (its results, if any, are cached already)."""
        state["jobs"] = [j for j in state["jobs"] if j["name"] != job["name"]]
        _write_state(self.state_path, state)

    def _ended_message(self, job: dict[str, Any], state_name: str) -> str:
        what = {"JOB_STATE_FAILED": "failed at Google (look at the model, the key's batch access and the request "
                                    "size; the job's page in AI Studio says more)",
                "JOB_STATE_EXPIRED": "expired: Google did not finish it in time (pending or running jobs expire, "
                                     "after 48 h at the time of writing)",
                "JOB_STATE_CANCELLED": "was cancelled (in AI Studio or through the API)"}[state_name]
        return (f"batch job {job['name']} {what}. It was removed from {self.state_path}, so a rerun submits its "
                f"{len(job['keys'])} prompts again")

    def _end_badly(self, job: dict[str, Any], reason: str, message: str, results: dict[str, Any]) -> None:
        self._fail(job["keys"], GeminiCallError(reason, message), results)
        self._stop(reason, message)

    def _still_running(self, job: dict[str, Any], state_name: str, waited: float, results: dict[str, Any]) -> None:
        message = (f"batch job {job['name']} is still {state_name.removeprefix('JOB_STATE_')} after {waited:.0f} s "
                   f"of waiting. Its id is saved in {self.state_path}: rerun the same call to keep waiting "
                   f"(nothing is submitted twice); Google answers within 24 h, usually much sooner")
        self._fail(job["keys"], GeminiCallError("batch_pending", message), results)
        self._stop("batch_pending", message)

    def _fail(self, keys: Iterable[str], error: GeminiCallError, results: dict[str, Any]) -> None:
        for key in keys:
            results[key] = error
            self.stats.failures[error.reason] += 1

    def _stop(self, reason: str, message: str) -> None:
        """Record and print the first stop of the run (later ones stay in the per-prompt errors)."""
        if self.stats.stopped:
            return
        self.stats.stop_reason = reason
        self.stats.stopped = redact(f"Gemini batch stopped ({reason}): {message.rstrip('.')}. Finished prompts "
                                    f"are cached in {self.cache.path}.")
        log.error(self.stats.stopped)
        print(f"\n*** {self.stats.stopped} ***", file=sys.stderr, flush=True)


def run_batch(client_or_model: GeminiClient | str, prompts: Iterable[str], schema: type[T], *,
              cache_path: str | Path | None = None, state_path: str | Path | None = None,
              poll_interval_s: float = DEFAULT_POLL_INTERVAL_S, max_wait_s: float | None = None,
              max_job_bytes: int = MAX_INLINE_BYTES, **client_options: Any) -> BatchOutcome:
    """Answer ``prompts`` (JSON replies validated by ``schema``) through Gemini batch jobs.

    ``client_or_model``: the teacher's or judge's ``GeminiClient`` (its cache, key and endpoint are
    used), or a model id, for which a client is built with ``cache_path`` and ``client_options``
    (``api_key``, ``base_url``, ``timeout_s``, ``max_attempts``, ...). ``state_path`` defaults to
    ``<cache>.batch.json``. Cached prompts are never sent; duplicates are sent once.
    """
    if isinstance(client_or_model, GeminiClient):
        if cache_path is not None or client_options:
            raise ValueError("run_batch: cache_path and client options apply to a model id only; a GeminiClient "
                             "brings its own cache and settings")
        client = client_or_model
    else:
        client = GeminiClient(client_or_model, cache_path=cache_path, **client_options)
    batch = GeminiBatch(client, state_path=state_path, poll_interval_s=poll_interval_s, max_wait_s=max_wait_s,
                        max_job_bytes=max_job_bytes)
    results = batch.run(prompts, schema)
    return BatchOutcome(results=results, stats=batch.stats, state_path=batch.state_path)
