"""One Gemini client for the teacher (stage 01) and the judge (stage 03).

It wraps the real ``google-genai`` SDK and adds what a batch job over hundreds of rows needs:
structured JSON replies validated by a pydantic schema, bounded concurrency, a requests-per-minute
limiter, the SDK's own retries for 408/429/5xx, a crash-safe JSONL cache (a rerun makes zero calls
for finished prompts), and failures returned as values with a reason instead of exceptions that
would sink the whole batch. A daily-quota, authentication or unknown-model (404) error stops the run
cleanly: items not yet sent are returned as ``not_attempted`` and everything finished stays cached.

Free tier: with ``requests_per_day`` set, the client counts every request in a per-day ledger
(``helpers.quota.UsageLedger``) and stops by itself when the day's budget is spent, before Google
answers 429; a real per-day 429 stops it the same way. ``check_model()`` (or the one-line
``check_gemini_model(model)``) asks ``GET /v1beta/models/{model}`` before a run, so a retired model id
or a key without permission fails in one cheap call instead of on every row.

The API key lives only in process memory and in the SDK's request header; every message that
could echo it is passed through ``helpers.secrets.redact``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import hashlib
import json
import logging
import os
import ssl
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from helpers import quota
from helpers.config import GEMINI_MODEL, RETIRED_GEMINI_MODELS
from helpers.secrets import redact, require_secret

__all__ = [
    "BASE_URL_ENV",
    "DAILY_STOP_REASONS",
    "FAILURE_REASONS",
    "STOP_REASONS",
    "GeminiCallError",
    "GeminiClient",
    "GeminiPreflightError",
    "GeminiRunStopped",
    "GeminiStats",
    "JsonlCache",
    "check_gemini_model",
    "classify_exception",
    "parse_response",
    "run_coroutine_sync",
]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=pydantic.BaseModel)

#: The SDK's own environment variable for a different endpoint (a proxy, or the fake test server).
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"
API_VERSION = "v1beta"
RETRY_STATUS_CODES = [408, 429, 500, 502, 503, 504]
#: Errors after which no further request can succeed in this run.
STOP_REASONS = frozenset({"quota_exhausted", "auth", "model_not_found"})
#: Stops that end with "rerun after midnight Pacific": the API's per-day 429, or the client's own daily
#: budget ("daily_budget" is a stop reason only: the items it holds back are ``not_attempted``).
DAILY_STOP_REASONS = frozenset({"quota_exhausted", "daily_budget"})
FAILURE_REASONS = ("malformed_json", "schema_mismatch", "empty_candidates", "safety_blocked", "rate_limited",
                   "server_error", "timeout", "quota_exhausted", "auth", "model_not_found", "bad_request",
                   "network", "unexpected", "not_attempted")
MODELS_PAGE = "https://ai.google.dev/gemini-api/docs/models"
#: Set inside one generate call: its HTTP attempts (the SDK's retries included) are counted there.
_ATTEMPTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("gemini_attempts", default=None)
BLOCK_FINISH_REASONS = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}


class GeminiCallError(Exception):
    """One failed item, returned (not raised) by batch calls so one bad reply never sinks a batch."""

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        self.message = redact(str(message))
        super().__init__(f"{reason}: {self.message}")

    def __repr__(self) -> str:
        return f"GeminiCallError(reason={self.reason!r}, message={self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeminiCallError) and (self.reason, self.message) == (other.reason, other.message)

    def __hash__(self) -> int:
        return hash((self.reason, self.message))


class GeminiPreflightError(GeminiCallError):
    """``check_model`` found that no call can succeed (unknown/retired model, key refused): fix and rerun."""


class GeminiRunStopped(RuntimeError):
    """A run ended early (daily quota, key refused, unknown model); finished items are cached on disk."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(redact(message))


@dataclass
class GeminiStats:
    """Counters a report shows: calls sent, cache hits, SDK retries, failures by reason."""

    api_calls: int = 0  # one per uncached prompt sent to the API
    http_requests: int = 0  # HTTP attempts, including the SDK's retries
    cache_hits: int = 0
    succeeded: int = 0
    failures: Counter = field(default_factory=Counter)
    stopped: str = ""  # the message when quota/auth/an unknown model ended a run
    stop_reason: str = ""  # quota_exhausted, daily_budget, auth or model_not_found

    @property
    def retries(self) -> int:
        """HTTP attempts beyond the first one per call (made by the SDK's retry policy)."""
        return max(0, self.http_requests - self.api_calls)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers for reports."""
        return {"api_calls": self.api_calls, "http_requests": self.http_requests, "retries": self.retries,
                "cache_hits": self.cache_hits, "succeeded": self.succeeded,
                "failures": dict(sorted(self.failures.items())), "stopped": self.stopped,
                "stop_reason": self.stop_reason}


class JsonlCache:
    """Append-only key → JSON value store; every line is written whole and fsynced.

    A process killed mid-write leaves at most one torn last line: it is ignored on load, and the
    next append starts on a fresh line so the torn fragment never corrupts a good record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.torn_lines = 0
        self._needs_newline = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._data[record["key"]] = record["value"]
            except (ValueError, KeyError, TypeError):
                self.torn_lines += 1
        self._needs_newline = bool(raw) and not raw.endswith(b"\n")

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value, or ``default``."""
        return self._data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        """Store and append one complete line (write + flush + fsync); secrets are scrubbed first."""
        line = redact(json.dumps({"key": key, "value": value}, ensure_ascii=False)) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as handle:
                if self._needs_newline:
                    handle.write(b"\n")
                    self._needs_newline = False
                handle.write(line.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            self._data[key] = json.loads(line)["value"]


def _response_text(response: Any) -> str:
    candidate = response.candidates[0]
    parts = (candidate.content.parts if candidate.content else None) or []
    return "".join(part.text for part in parts if getattr(part, "text", None))


def parse_response(response: Any, schema: type[T]) -> T:
    """Turn an SDK ``GenerateContentResponse`` into ``schema`` or raise a ``GeminiCallError`` with a reason."""
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and feedback.block_reason:
        raise GeminiCallError("safety_blocked", f"prompt blocked: {_enum_name(feedback.block_reason)}")
    if not response.candidates:
        raise GeminiCallError("empty_candidates", "the reply had no candidates")
    finish = _enum_name(response.candidates[0].finish_reason)
    text = _response_text(response)
    if finish in BLOCK_FINISH_REASONS and not text:
        raise GeminiCallError("safety_blocked", f"candidate stopped: {finish}")
    if not text.strip():
        raise GeminiCallError("empty_candidates", f"the candidate had no text (finish reason {finish})")
    try:
        data = json.loads(text)
    except ValueError as exc:
        hint = " (reply cut at max tokens)" if finish == "MAX_TOKENS" else ""
        raise GeminiCallError("malformed_json", f"not JSON{hint}: {exc}; text starts {text[:80]!r}") from None
    try:
        return schema.model_validate(data)
    except pydantic.ValidationError as exc:
        raise GeminiCallError("schema_mismatch", f"{schema.__name__}: {exc.error_count()} error(s): "
                                                 f"{str(exc)[:300]}") from None


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "name", value))


def _is_hard_quota(error_text: str) -> bool:
    """A per-day quota or a zero limit cannot recover by waiting a minute; a per-minute one can."""
    return "PerDay" in error_text or "per day" in error_text.lower() or "limit: 0" in error_text


def _model_fix(model: str | None) -> str:
    name = repr(model) if model else "the configured model"
    retired = model in RETIRED_GEMINI_MODELS if model else False
    what = f"{name} was retired (shut down by Google)" if retired else f"{name} does not exist for this API " \
        f"(a retired or misspelt model id answers 404)"
    return (f"{what}. Fix: set DataConfig.gemini_model / EvalConfig.gemini_model to a current model, e.g. "
            f"{GEMINI_MODEL!r} (helpers.config.GEMINI_MODEL; list: {MODELS_PAGE})")


def classify_exception(exc: BaseException, model: str | None = None) -> GeminiCallError:
    """Map an SDK/HTTP exception to a ``GeminiCallError`` with one of ``FAILURE_REASONS``.

    ``model`` (the id that was called) is named in the messages of 403 and 404 with the fix.
    """
    from google.genai import errors

    if isinstance(exc, GeminiCallError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, errors.APIError):
        code = int(exc.code or 0)
        details = json.dumps(exc.details, default=str) if exc.details else ""
        body = f"{exc.message or ''} {details}"
        if code in (401, 403) or "API_KEY_INVALID" in body or "API key not valid" in body:
            target = f" for model {model!r}" if model else ""
            return GeminiCallError("auth", f"{code} {exc.status}: {exc.message} — the key was refused{target}: "
                                           f"check GOOGLE_API_KEY / the Colab secret (a key from "
                                           f"https://aistudio.google.com/apikey whose restrictions allow the "
                                           f"Generative Language API), or use the offline teacher/judge")
        if code == 404:
            return GeminiCallError("model_not_found", f"404 {exc.status}: {exc.message} — {_model_fix(model)}")
        if code == 429:
            reason = "quota_exhausted" if _is_hard_quota(body) else "rate_limited"
            return GeminiCallError(reason, f"429 {exc.status}: {exc.message}")
        if code in (408, 504):
            return GeminiCallError("timeout", f"{code} {exc.status}: {exc.message}")
        if code >= 500:
            return GeminiCallError("server_error", f"{code} {exc.status}: {exc.message}")
        return GeminiCallError("bad_request", f"{code} {exc.status}: {exc.message}")
    # The SDK runs on httpx or httpx2 (whichever is installed): match their exception names.
    lineage = {cls.__name__ for cls in type(exc).__mro__}
    if lineage & {"TimeoutException", "TimeoutError"}:
        return GeminiCallError("timeout", text)
    if lineage & {"TransportError", "ConnectionError", "OSError"}:
        return GeminiCallError("network", text)
    return GeminiCallError("unexpected", text[:500])


def run_coroutine_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, also inside Jupyter (whose loop is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class _LoopState:
    """What is bound to one event loop: the SDK client (its httpx pool) and the concurrency gate."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sdk_client: Any, concurrency: int) -> None:
        self.loop = loop
        self.sdk_client = sdk_client
        self.semaphore = asyncio.Semaphore(concurrency)


class GeminiClient:
    """Structured-JSON Gemini calls with concurrency, rate limit, retries, cache and clean stops."""

    #: The window ``requests_per_minute`` applies to (tests shrink it).
    rate_window_s = 60.0

    def __init__(self, model: str, *, api_key: str | None = None, base_url: str | None = None,
                 cache_path: str | Path | None = None, concurrency: int = 8, requests_per_minute: int = 60,
                 timeout_s: float = 60.0, max_attempts: int = 4, retry_initial_delay_s: float = 1.0,
                 retry_max_delay_s: float = 30.0, requests_per_day: int | None = None,
                 usage_path: str | Path | None = None) -> None:
        """``requests_per_day``: the day's budget for this model, counted in a ledger at ``usage_path``
        (default ``<output root>/gemini_usage.json``); None: no daily budget (no ledger)."""
        for name, value in (("concurrency", concurrency), ("requests_per_minute", requests_per_minute),
                            ("timeout_s", timeout_s), ("max_attempts", max_attempts)):
            if value is None or value <= 0:
                raise ValueError(f"GeminiClient.{name} must be > 0, got {value!r}")
        if requests_per_day is not None and requests_per_day <= 0:
            raise ValueError(f"GeminiClient.requests_per_day must be > 0, got {requests_per_day!r}")
        if not model:
            raise ValueError("GeminiClient.model must not be empty")
        self.model = model
        self._api_key = (api_key or "").strip() or require_secret("gemini")
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or None
        self.concurrency = int(concurrency)
        self.requests_per_minute = int(requests_per_minute)
        self.timeout_s = float(timeout_s)
        self.max_attempts = int(max_attempts)
        self.retry_initial_delay_s = float(retry_initial_delay_s)
        self.retry_max_delay_s = float(retry_max_delay_s)
        self.cache = JsonlCache(cache_path) if cache_path else None
        self.requests_per_day = int(requests_per_day) if requests_per_day is not None else None
        self.ledger = quota.UsageLedger(usage_path) if requests_per_day is not None else None
        self.stats = GeminiStats()
        self._starts: deque[float] = deque()
        self._rpm_lock = threading.Lock()
        self._state: _LoopState | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._json_schemas: dict[type, dict[str, Any]] = {}

    def __repr__(self) -> str:  # never shows the key
        return (f"GeminiClient(model={self.model!r}, base_url={self.base_url!r}, concurrency={self.concurrency}, "
                f"requests_per_minute={self.requests_per_minute}, requests_per_day={self.requests_per_day}, "
                f"cache={str(self.cache.path) if self.cache else None})")

    # -- plumbing -----------------------------------------------------------------------------
    def _build_sdk_client(self) -> Any:
        from google import genai
        from google.genai import types

        async def count_request(_request: Any) -> None:
            attempts = _ATTEMPTS.get()
            if attempts is None:  # not a generate call (the preflight's GET): no quota counted
                return
            attempts[0] += 1
            self.stats.http_requests += 1
            if attempts[0] > 1 and self.ledger is not None:  # an SDK retry reaches Google too
                await asyncio.to_thread(self.ledger.add, self.model)

        retry = types.HttpRetryOptions(attempts=self.max_attempts, initial_delay=self.retry_initial_delay_s,
                                       max_delay=self.retry_max_delay_s, http_status_codes=RETRY_STATUS_CODES)
        if self._ssl_context is None:  # built once per client: it costs ~70 ms each time
            import certifi

            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        options = types.HttpOptions(base_url=self.base_url, api_version=API_VERSION,
                                    timeout=max(1, int(self.timeout_s * 1000)), retry_options=retry,
                                    client_args={"verify": self._ssl_context},
                                    async_client_args={"verify": self._ssl_context,
                                                       "event_hooks": {"request": [count_request]}})
        return genai.Client(api_key=self._api_key, vertexai=False, http_options=options)

    def new_sdk_client(self) -> Any:
        """A fresh ``genai.Client`` with this client's key, endpoint, timeout, retries and TLS settings.

        For ``helpers.gemini_batch``, whose few batch calls (create, get) use the SDK's sync side, so
        the key stays inside this class. The caller closes it (``.close()``).
        """
        return self._build_sdk_client()

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            self._state = _LoopState(loop, self._build_sdk_client(), self.concurrency)
        return self._state

    async def aclose(self) -> None:
        """Close the HTTP pool bound to the current event loop."""
        state, self._state = self._state, None
        if state is not None and state.loop is asyncio.get_running_loop():
            await state.sdk_client.aio.aclose()

    async def _throttle(self) -> None:
        """Allow at most ``requests_per_minute`` call starts in any ``rate_window_s`` (60 s) window."""
        while True:
            with self._rpm_lock:
                now = time.monotonic()
                while self._starts and now - self._starts[0] >= self.rate_window_s:
                    self._starts.popleft()
                if len(self._starts) < self.requests_per_minute:
                    self._starts.append(now)
                    return
                wait = self.rate_window_s - (now - self._starts[0])
            await asyncio.sleep(max(wait, 0.01))

    def cache_key(self, prompt: str, schema: type[pydantic.BaseModel]) -> str:
        """sha256 over model, schema name and prompt: a new model or schema never reuses old replies."""
        return hashlib.sha256(f"{self.model}\x00{schema.__name__}\x00{prompt}".encode()).hexdigest()

    def _stop(self, error: GeminiCallError) -> None:
        if self.stats.stopped:
            return
        if error.reason == "quota_exhausted" and self.ledger is not None:
            self.ledger.mark_exhausted(self.model)  # a same-day rerun stops without sending anything
        where = f"Finished items are cached in {self.cache.path}" if self.cache else "Nothing was cached"
        if error.reason in DAILY_STOP_REASONS:
            then = f"{where}; {quota.rerun_hint()}."
        else:
            then = f"{where}; fix the cause above and rerun to continue."
        self.stats.stop_reason = error.reason
        self.stats.stopped = redact(f"Gemini run stopped ({error.reason}): {error.message.rstrip('.')}. {then}")
        log.error(self.stats.stopped)
        print(f"\n*** {self.stats.stopped} ***", file=sys.stderr)

    def _daily_budget_error(self) -> GeminiCallError:
        assert self.ledger is not None
        if self.ledger.exhausted(self.model):
            return GeminiCallError("daily_budget", f"the API answered today that the daily quota of {self.model} "
                                                   f"is spent (ledger {self.ledger.path}; delete it if your plan "
                                                   f"changed since)")
        return GeminiCallError("daily_budget", f"today's budget of {self.requests_per_day} requests for "
                                               f"{self.model} is used up (an assumed free-tier limit: check "
                                               f"{quota.RATE_LIMIT_PAGE}; change it with "
                                               f"DataConfig.requests_per_day / EvalConfig.gemini_requests_per_day)")

    # -- public API ---------------------------------------------------------------------------
    def cached(self, prompt: str, schema: type[T]) -> T | None:
        """The cached reply for this prompt, or None (no network)."""
        if self.cache is None:
            return None
        value = self.cache.get(self.cache_key(prompt, schema))
        if value is None:
            return None
        try:
            return schema.model_validate(value)
        except pydantic.ValidationError:
            return None

    async def agenerate_json(self, prompt: str, schema: type[T]) -> T:
        """One structured call (cached, throttled, retried by the SDK); raises ``GeminiCallError``."""
        hit = self.cached(prompt, schema)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        state = self._loop_state()
        async with state.semaphore:
            if not self.stats.stopped:
                await self._throttle()
            if not self.stats.stopped and self.ledger is not None and self.requests_per_day is not None:
                if not await asyncio.to_thread(self.ledger.try_reserve, self.model, self.requests_per_day):
                    self._stop(self._daily_budget_error())
            if self.stats.stopped:
                self.stats.failures["not_attempted"] += 1
                raise GeminiCallError("not_attempted", self.stats.stopped)
            self.stats.api_calls += 1
            outcome = await self._call(state, prompt, schema)
        if isinstance(outcome, GeminiCallError):
            self.stats.failures[outcome.reason] += 1
            if outcome.reason in STOP_REASONS:
                self._stop(outcome)
            raise outcome
        self.stats.succeeded += 1
        if self.cache is not None:  # fsync off the event loop, so other calls keep flowing
            await asyncio.to_thread(self.cache.put, self.cache_key(prompt, schema), outcome.model_dump(mode="json"))
        return outcome

    async def _call(self, state: _LoopState, prompt: str, schema: type[T]) -> T | GeminiCallError:
        from google.genai import types

        if schema not in self._json_schemas:  # the SDK would regenerate it on every call
            self._json_schemas[schema] = schema.model_json_schema()
        config = types.GenerateContentConfig(response_mime_type="application/json",
                                             response_schema=copy.deepcopy(self._json_schemas[schema]))
        token = _ATTEMPTS.set([0])
        try:
            response = await state.sdk_client.aio.models.generate_content(model=self.model, contents=prompt,
                                                                          config=config)
            return parse_response(response, schema)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a counted reason
            return classify_exception(exc, self.model)
        finally:
            _ATTEMPTS.reset(token)

    # -- preflight and plan ---------------------------------------------------------------------
    async def acheck_model(self) -> dict[str, Any]:
        """``GET /v1beta/models/{model}``: raise ``GeminiPreflightError`` when no call can succeed.

        A 404 (unknown or retired model) or 401/403 (key refused) raises with the model and the fix;
        a model without ``generateContent`` raises too. A transient failure (network, 5xx, 429) only
        warns: the run's own calls then retry and count their failures.
        """
        state = self._loop_state()
        try:
            info = await state.sdk_client.aio.models.get(model=self.model)
        except Exception as exc:  # noqa: BLE001 - classified below
            error = classify_exception(exc, self.model)
            if error.reason in STOP_REASONS - {"quota_exhausted"}:
                raise GeminiPreflightError(error.reason, error.message) from None
            message = redact(f"Gemini preflight for {self.model} inconclusive ({error.reason}): {error.message}")
            print(f"*** {message} ***", file=sys.stderr)
            return {"model": self.model, "ok": None, "reason": error.reason, "message": message}
        finally:
            await self.aclose()
        actions = list(info.supported_actions or [])
        if actions and "generateContent" not in actions:
            raise GeminiPreflightError("model_not_found", f"{self.model!r} exists but does not support "
                                                          f"generateContent (it supports {actions}). "
                                                          f"{_model_fix(None).split('. ', 1)[1]}")
        return {"model": self.model, "ok": True, "name": info.name, "display_name": info.display_name,
                "version": info.version, "input_token_limit": info.input_token_limit,
                "output_token_limit": info.output_token_limit, "supported_actions": actions}

    def check_model(self, quiet: bool = False) -> dict[str, Any]:
        """Sync ``acheck_model`` (also inside Jupyter); prints one line saying the model answered."""
        info = run_coroutine_sync(self.acheck_model())
        if info["ok"] and not quiet:
            limits = f", input limit {info['input_token_limit']:,} tokens" if info.get("input_token_limit") else ""
            print(f"Gemini model OK: {self.model} ({info.get('display_name') or info['name']}{limits}) "
                  f"answers this key", flush=True)
        return info

    def count_cached(self, prompts: Iterable[str], schema: type[pydantic.BaseModel]) -> tuple[int, int]:
        """(distinct prompts, how many of them the cache already answers): no network."""
        unique = list(dict.fromkeys(prompts))
        return len(unique), sum(self.cached(p, schema) is not None for p in unique)

    def plan(self, prompts: Iterable[str], schema: type[pydantic.BaseModel], what: str, *,
             limit_fields: str = "", fewer_calls: str = "") -> quota.QuotaPlan:
        """The quota plan for these prompts (cached ones subtracted, today's ledger usage counted)."""
        from helpers.config import free_tier_requests_per_day

        total, cached = self.count_cached(prompts, schema)
        per_day = self.requests_per_day or free_tier_requests_per_day(self.model)
        return quota.quota_plan(what, self.model, total, cached, requests_per_minute=self.requests_per_minute,
                                requests_per_day=per_day, ledger=self.ledger, limit_fields=limit_fields,
                                fewer_calls=fewer_calls)

    async def agenerate_many(self, prompts: Iterable[str], schema: type[T],
                             desc: str = "") -> list[T | GeminiCallError]:
        """Run many prompts concurrently; results in input order; duplicates are called once."""
        from tqdm.auto import tqdm

        prompts = list(prompts)
        unique = list(dict.fromkeys(prompts))
        results: dict[str, T | GeminiCallError] = {}
        bar = tqdm(total=len(unique), desc=desc or f"Gemini {self.model}", leave=False)

        async def one(prompt: str) -> None:
            try:
                results[prompt] = await self.agenerate_json(prompt, schema)
            except GeminiCallError as exc:
                results[prompt] = exc
            bar.update(1)

        try:
            await asyncio.gather(*(one(p) for p in unique))
        finally:
            bar.close()
            await self.aclose()
        return [results[p] for p in prompts]

    def generate_json_many(self, prompts: Iterable[str], schema: type[T],
                           desc: str = "") -> list[T | GeminiCallError]:
        """Sync wrapper of ``agenerate_many`` that also works inside Jupyter's running event loop."""
        return run_coroutine_sync(self.agenerate_many(list(prompts), schema, desc))


def check_gemini_model(model: str = GEMINI_MODEL, *, api_key: str | None = None, base_url: str | None = None,
                       quiet: bool = False) -> dict[str, Any]:
    """One notebook line before a Gemini run: does ``model`` exist and does this key reach it?

    Sends one ``GET /v1beta/models/{model}`` (no generate call, no daily quota used). Prints
    ``Gemini model OK: ...`` and returns the model's info; raises ``GeminiPreflightError`` naming the
    model and the fix for a retired/unknown model (404) or a refused key (401/403).
    """
    client = GeminiClient(model, api_key=api_key, base_url=base_url, max_attempts=2)
    return client.check_model(quiet=quiet)
