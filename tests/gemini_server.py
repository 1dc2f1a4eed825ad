"""A fake Gemini REST server on 127.0.0.1 for tests and benchmarks: no key, no network, scriptable.

It speaks ``POST /{v1,v1beta}/models/{model}:generateContent`` the way the real ``google-genai`` SDK
sends and parses it (``candidates[0].content.parts[0].text``, ``finishReason``, ``usageMetadata``,
``promptFeedback.blockReason``, and Google's error JSON for HTTP errors).

Use it as a fixture (``pytest_plugins = ["gemini_server"]`` in a test module, then a
``gemini_server`` argument) or as a context manager (``with FakeGeminiServer() as server:``).
Script replies with ``server.push(ok(...), http(429), ...)``; once the queue is empty,
``server.responder(request) -> Reply | str | dict`` answers (default: ``{}``). Every request is
recorded without its key; ``server.leaks_key(text)`` tells whether a text contains a key it received.

It also answers ``GET /{v1,v1beta}/models/{model}`` (the SDK's ``models.get``, the client's preflight;
recorded in ``server.model_gets``, not in ``server.requests``; ``server.model_get_reply`` scripts it) and
answers 404 NOT_FOUND, with the body Google sends for a shut-down model, for every id in
``server.retired_models`` on both endpoints.

Free tier: ``server.free_tier(per_minute=10, per_day=20, minute_s=60)`` makes generateContent answer
429 RESOURCE_EXHAUSTED with Google's QuotaFailure details (a ``...PerMinute...`` or ``...PerDay...``
quotaId) once a model has answered that many requests in the window / the day; rejected requests do
not count. ``server.advance_day()`` is midnight Pacific: the day counters restart and ``server.day``
goes up by one. ``RecordedRequest.status`` says what each request got.

Batch mode (``helpers.gemini_batch``): ``POST /{v1,v1beta}/models/{model}:batchGenerateContent`` with
inlined requests creates a job ``batches/fake-N`` and ``GET /{v1,v1beta}/batches/{id}`` answers it, both
as the long-running-operation JSON the SDK's ``batches.create``/``batches.get`` read (``metadata.state``
``BATCH_STATE_*``; on success the results inlined in ``metadata.output.inlinedResponses``, in request
order, each with the request's ``metadata``). Every inlined request is answered once, at create time, by
the same queue/responder as generateContent (a ``Reply`` with an HTTP error status becomes that
request's ``error``, so ``push(ok(...), http(500))`` scripts per-request errors); it is recorded in
``server.batch_items``, not in ``server.requests``, and no free-tier counter sees it. Knobs:
``batch_polls_before_done`` (GETs that answer RUNNING before the job ends; read on every GET, so a test
may lower it between runs), ``batch_final_state`` (``SUCCEEDED``, ``FAILED``, ``EXPIRED`` or
``CANCELLED``), ``batch_create_reply`` (a scripted answer to every create, e.g. ``http(429)``).
Records: ``server.batch_creates``, ``server.batch_gets``, ``server.batches`` (``FakeBatch`` by name),
and ``server.route_counts`` counts every request the server received by route.

PYTEST_DONT_REWRITE (test modules import it before registering it as a plugin).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "FAKE_API_KEY",
    "FakeBatch",
    "FakeGeminiServer",
    "RecordedRequest",
    "Reply",
    "delay",
    "empty_candidates",
    "fake_teacher_reply",
    "gemini_server",
    "http",
    "malformed",
    "model_info",
    "ok",
    "per_day_exceeded",
    "per_minute_exceeded",
    "quota_exhausted",
    "rate_limited",
    "retired_model",
    "safety_blocked",
    "wrong_schema",
]

#: Shaped like a real Google key so ``helpers.secrets.redact`` patterns apply to it too.
#: Derived at import, so no key-shaped literal sits in the tree (secret scanners read the source).
FAKE_API_KEY = "AIza" + hashlib.sha256(b"gemma-facts fake Gemini key").hexdigest()[:35]

PATH_RE = re.compile(r"^/(v1|v1beta)/models/([^/:]+):generateContent$")
MODEL_RE = re.compile(r"^/(v1|v1beta)/models/([^/:]+)$")
BATCH_CREATE_RE = re.compile(r"^/(v1|v1beta)/models/([^/:]+):batchGenerateContent$")
BATCH_GET_RE = re.compile(r"^/(v1|v1beta)/batches/([^/:]+)$")
BATCH_END_STATES = ("SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED")
#: google.rpc.Code of an HTTP status: what a failed request inside a batch carries as ``error.code``.
GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 408: 4, 409: 10, 429: 8, 500: 13, 503: 14, 504: 4}
USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
HTTP_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
               429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass
class Reply:
    """One scripted reply: HTTP status, JSON body, and seconds to wait before answering."""

    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class RecordedRequest:
    """What the SDK sent (headers without the key)."""

    path: str
    model: str
    headers: dict[str, str]
    body: dict[str, Any]
    had_api_key: bool
    started: float
    finished: float = 0.0
    status: int = 0

    @property
    def prompt(self) -> str:
        """The text of the first user part."""
        try:
            return self.body["contents"][0]["parts"][0]["text"]
        except (KeyError, IndexError, TypeError):
            return ""


def _candidate_body(text: str, finish: str = "STOP") -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish,
                            "index": 0}], "usageMetadata": USAGE, "modelVersion": "fake-gemini"}


def ok(payload: str | dict[str, Any] | list[Any]) -> Reply:
    """A normal reply whose text is ``payload`` (dicts/lists are JSON-encoded)."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return Reply(200, _candidate_body(text))


def malformed() -> Reply:
    """A reply whose text is not valid JSON (cut mid-string)."""
    return Reply(200, _candidate_body('{"grounded_answer": "The capital is', finish="MAX_TOKENS"))


def wrong_schema() -> Reply:
    """Valid JSON that does not match the requested schema."""
    return Reply(200, _candidate_body(json.dumps({"unexpected_field": 1})))


def empty_candidates() -> Reply:
    """HTTP 200 with an empty candidate list and no block reason."""
    return Reply(200, {"candidates": [], "usageMetadata": USAGE, "modelVersion": "fake-gemini"})


def safety_blocked() -> Reply:
    """The prompt was blocked: no candidates, ``promptFeedback.blockReason = SAFETY``."""
    ratings = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]
    return Reply(200, {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": ratings},
                       "usageMetadata": USAGE, "modelVersion": "fake-gemini"})


def http(code: int, message: str | None = None, details: list[dict[str, Any]] | None = None) -> Reply:
    """An HTTP error with Google's error JSON ``{"error": {"code", "message", "status", "details"}}``."""
    status = HTTP_STATUS.get(code, "UNKNOWN")
    error = {"code": code, "message": message or f"fake {status}", "status": status}
    if details:
        error["details"] = details
    return Reply(code, {"error": error})


def rate_limited() -> Reply:
    """A per-minute 429 (recoverable by waiting)."""
    return http(429, "You exceeded your current quota. Please retry in 1s.", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}])


def quota_exhausted() -> Reply:
    """A per-day 429 RESOURCE_EXHAUSTED: no request can succeed today."""
    return http(429, "You exceeded your current quota, please check your plan and billing details. "
                     "Quota exceeded for metric: generate_content_free_tier_requests, limit: 250", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                         "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}])


def _free_tier_429(model: str, limit: int, quota_id: str, tail: str, extra: list[dict[str, Any]]) -> Reply:
    """Google's free-tier 429 body: the quota violated (``quota_id``) in a ``QuotaFailure`` detail."""
    return http(429, f"You exceeded your current quota, please check your plan and billing details. Quota exceeded "
                     f"for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, "
                     f"limit: {limit}, model: {model}{tail}", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                         "quotaId": quota_id,
                         "quotaDimensions": {"location": "global", "model": model}, "quotaValue": str(limit)}]},
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}, *extra])


def per_minute_exceeded(model: str, limit: int) -> Reply:
    """Google's per-minute 429 body for ``model``: recoverable by waiting."""
    return _free_tier_429(model, limit, "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", ". Please retry in 1s.",
                          [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}])


def per_day_exceeded(model: str, limit: int) -> Reply:
    """Google's per-day 429 body for ``model``: nothing succeeds until midnight Pacific."""
    return _free_tier_429(model, limit, "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "", [])


def retired_model(model: str, version: str = "v1beta") -> Reply:
    """The 404 NOT_FOUND Google answers for a model id that does not exist (or was shut down)."""
    return http(404, f"models/{model} is not found for API version {version}, or is not supported for "
                     f"generateContent. Call ListModels to see the list of available models and their supported "
                     f"methods.")


def model_info(model: str) -> dict[str, Any]:
    """The ``models.get`` body of an available model."""
    return {"name": f"models/{model}", "version": "001", "displayName": f"Fake {model}",
            "description": "fake model of tests/gemini_server.py", "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"],
            "temperature": 1.0, "maxTemperature": 2.0, "topP": 0.95, "topK": 64, "thinking": True}


def delay(seconds: float, reply: Reply | None = None) -> Reply:
    """Wait ``seconds`` before answering with ``reply`` (default ``{}``): makes client timeouts happen."""
    base = reply or ok({})
    return Reply(base.status, base.body, seconds)


def _between(text: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, flags=re.S)
    return match.group(1) if match else ""


def fake_teacher_reply(request: RecordedRequest) -> dict[str, Any]:
    """A deterministic, well-formed stage-01 teacher reply whose quotes really come from the prompt's document."""
    document = _between(request.prompt, "<<<DOCUMENT>>>", "<<<END DOCUMENT>>>")
    user_request = _between(request.prompt, "<<<USER REQUEST>>>", "<<<END USER REQUEST>>>")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(document.split())) if len(s.split()) >= 4]
    first = sentences[0] if sentences else document
    second = sentences[1] if len(sentences) > 1 else first
    return {
        "request_answerable": bool(sentences),
        "grounded_answer": first,
        "supporting_quote": first,
        "hallucinated_answers": [f"It is not the case that {first}", f"{first} This changed in 1999."],
        "near_miss_questions": [{"question": "What is the founding year of the organisation?",
                                 "confident_wrong_answer": "It was founded in 1871."},
                                {"question": "Who is the chief executive?",
                                 "confident_wrong_answer": "The chief executive is Martin Keller."}],
        "paraphrases": [f"Please tell me: {user_request}"],
        "additional_qa": [{"request": "What else does the document state?", "answer": second,
                           "supporting_quote": second}],
    }


Responder = Callable[[RecordedRequest], "Reply | str | dict[str, Any]"]


@dataclass
class FakeBatch:
    """One batch job: its inlined requests, their answers (fixed at create time) and its polls."""

    name: str
    model: str
    display_name: str
    items: list[RecordedRequest]
    outputs: list[dict[str, Any]]
    created: str
    polls: int = 0
    state: str = "PENDING"  # PENDING, RUNNING, then one of BATCH_END_STATES

    def operation(self) -> dict[str, Any]:
        """The JSON of ``batches.get``: a long-running operation whose metadata is the batch."""
        failed = sum("error" in out for out in self.outputs)
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": self.name, "model": f"models/{self.model}", "displayName": self.display_name,
            "createTime": self.created, "updateTime": self.created, "state": f"BATCH_STATE_{self.state}",
            "batchStats": {"requestCount": str(len(self.items))}}
        body: dict[str, Any] = {"name": self.name, "metadata": metadata}
        if self.state in BATCH_END_STATES:
            body["done"] = True
        if self.state == "SUCCEEDED":
            metadata["batchStats"].update(successfulRequestCount=str(len(self.items) - failed),
                                          failedRequestCount=str(failed))
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": self.outputs}}
        elif self.state == "FAILED":
            body["error"] = {"code": 13, "message": "fake batch failure: the job could not run"}
        return body


class FakeGeminiServer:
    """ThreadingHTTPServer on a random loopback port with a reply queue and a request log."""

    def __init__(self, responder: Responder | None = None, latency_s: float = 0.0) -> None:
        self.queue: deque[Reply] = deque()
        self.responder: Responder = responder or (lambda _request: ok({}))
        self.latency_s = latency_s
        self.requests: list[RecordedRequest] = []
        self.model_gets: list[RecordedRequest] = []
        self.retired_models: set[str] = set()
        self.model_get_reply: Reply | None = None  # scripted answer to every models.get (e.g. http(403))
        self.route_counts: Counter = Counter()  # every request received, by route
        self.batches: dict[str, FakeBatch] = {}
        self.batch_creates: list[RecordedRequest] = []
        self.batch_gets: list[RecordedRequest] = []
        self.batch_items: list[RecordedRequest] = []
        self.batch_polls_before_done = 0
        self.batch_final_state = "SUCCEEDED"
        self.batch_create_reply: Reply | None = None  # scripted answer to every batch create (e.g. http(429))
        self.day = 1
        self.per_minute: int | None = None
        self.per_day: int | None = None
        self.minute_s = 60.0
        self._answered_today: dict[str, int] = {}
        self._answered_at: dict[str, deque[float]] = {}
        self.active = 0
        self.max_active = 0
        self._keys_seen: set[str] = set()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ------------------------------------------------------------------------
    def push(self, *replies: Reply) -> FakeGeminiServer:
        """Queue replies; each request takes the next one, then the responder answers."""
        with self._lock:
            self.queue.extend(replies)
        return self

    @property
    def base_url(self) -> str:
        """What ``GeminiClient(base_url=...)`` / ``GOOGLE_GEMINI_BASE_URL`` should point at."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def free_tier(self, per_minute: int | None = None, per_day: int | None = None,
                  minute_s: float = 60.0) -> FakeGeminiServer:
        """Enforce free-tier limits per model (None: no limit); ``minute_s`` shrinks "a minute" for tests."""
        with self._lock:
            self.per_minute, self.per_day, self.minute_s = per_minute, per_day, minute_s
            self._answered_at.clear()  # a new per-minute window starts now (the day's count is kept)
        return self

    def advance_day(self) -> FakeGeminiServer:
        """Midnight Pacific: the per-day counters restart."""
        with self._lock:
            self.day += 1
            self._answered_today.clear()
        return self

    def answered(self) -> list[RecordedRequest]:
        """generateContent requests that got HTTP 200."""
        return [r for r in self.requests if r.status == 200]

    def _quota_reply(self, model: str) -> Reply | None:
        """A free-tier 429 for this request, or None (the request is counted as answered)."""
        with self._lock:
            if self.per_day is not None and self._answered_today.get(model, 0) >= self.per_day:
                return per_day_exceeded(model, self.per_day)
            now = time.monotonic()
            window = self._answered_at.setdefault(model, deque())
            while window and now - window[0] >= self.minute_s:
                window.popleft()
            if self.per_minute is not None and len(window) >= self.per_minute:
                return per_minute_exceeded(model, self.per_minute)
            window.append(now)
            self._answered_today[model] = self._answered_today.get(model, 0) + 1
            return None

    def leaks_key(self, text: str) -> bool:
        """True when ``text`` contains any API key this server received."""
        return any(key and key in text for key in self._keys_seen)

    @property
    def keys_seen(self) -> int:
        """How many distinct keys arrived (the value itself is never exposed)."""
        return len(self._keys_seen)

    # -- serving --------------------------------------------------------------------------
    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        produced = self.responder(request)
        if isinstance(produced, Reply):
            return produced
        reply = ok(produced)
        reply.delay_s = self.latency_s
        return reply

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if not handler.client_address[0].startswith("127."):
            handler.send_error(403)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        path = handler.path.split("?")[0]
        self._count_route(handler.command, path)
        got = MODEL_RE.match(path)
        if handler.command == "GET" and got:
            self._model_get(handler, got.group(1), got.group(2))
            return
        if handler.command == "POST" and BATCH_CREATE_RE.match(path):
            self._batch_create(handler, raw, BATCH_CREATE_RE.match(path).group(2))
            return
        if handler.command == "GET" and BATCH_GET_RE.match(path):
            self._batch_get(handler, f"batches/{BATCH_GET_RE.match(path).group(2)}")
            return
        match = PATH_RE.match(path)
        if handler.command != "POST" or not match:
            self._send(handler, http(404, f"fake server: no route {handler.command} {handler.path}"))
            return
        key = handler.headers.get("x-goog-api-key", "")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(handler, http(400, "fake server: request body is not JSON"))
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "x-goog-api-key"}
        record = RecordedRequest(handler.path, match.group(2), headers, body, bool(key), time.monotonic())
        with self._lock:
            if key:
                self._keys_seen.add(key)
            self.requests.append(record)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            reply = retired_model(match.group(2), match.group(1)) if match.group(2) in self.retired_models \
                else self._quota_reply(match.group(2)) or self._next_reply(record)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            record.status = reply.status
            self._send(handler, reply)
        finally:
            with self._lock:
                self.active -= 1
                record.finished = time.monotonic()

    def _model_get(self, handler: BaseHTTPRequestHandler, version: str, model: str) -> None:
        key = handler.headers.get("x-goog-api-key", "")
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "x-goog-api-key"}
        record = RecordedRequest(handler.path, model, headers, {}, bool(key), time.monotonic())
        reply = retired_model(model, version) if model in self.retired_models else \
            self.model_get_reply or Reply(200, model_info(model))
        record.status, record.finished = reply.status, time.monotonic()
        with self._lock:
            if key:
                self._keys_seen.add(key)
            self.model_gets.append(record)
        self._send(handler, reply)

    def _count_route(self, command: str, path: str) -> None:
        routes = ((command == "GET" and MODEL_RE.match(path), "models.get"),
                  (command == "POST" and PATH_RE.match(path), "generateContent"),
                  (command == "POST" and BATCH_CREATE_RE.match(path), "batches.create"),
                  (command == "GET" and BATCH_GET_RE.match(path), "batches.get"))
        route = next((name for matched, name in routes if matched), "unknown")
        with self._lock:
            self.route_counts[route] += 1

    def _record(self, handler: BaseHTTPRequestHandler, model: str, body: dict[str, Any]) -> RecordedRequest:
        """A request without its key (the key only joins ``_keys_seen``)."""
        key = handler.headers.get("x-goog-api-key", "")
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "x-goog-api-key"}
        with self._lock:
            if key:
                self._keys_seen.add(key)
        return RecordedRequest(handler.path, model, headers, body, bool(key), time.monotonic())

    def _answer_batch_item(self, record: RecordedRequest, metadata: dict[str, Any] | None) -> dict[str, Any]:
        """One inlined response: the queue/responder's reply, an HTTP error becoming the item's ``error``."""
        reply = self._next_reply(record)
        record.status, record.finished = reply.status, time.monotonic()
        if reply.status == 200:
            out: dict[str, Any] = {"response": reply.body}
        else:
            message = (reply.body.get("error") or {}).get("message", f"fake error {reply.status}")
            out = {"error": {"code": GRPC_CODE.get(reply.status, 2), "message": message}}
        if metadata:
            out["metadata"] = metadata
        return out

    def _batch_create(self, handler: BaseHTTPRequestHandler, raw: bytes, model: str) -> None:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(handler, http(400, "fake server: request body is not JSON"))
            return
        record = self._record(handler, model, body)
        with self._lock:
            self.batch_creates.append(record)
        reply = retired_model(model) if model in self.retired_models else self.batch_create_reply
        if reply is not None:
            record.status = reply.status
            self._send(handler, reply)
            return
        batch = body.get("batch") or {}
        inlined = ((batch.get("inputConfig") or {}).get("requests") or {}).get("requests") or []
        items, outputs = [], []
        for n, entry in enumerate(inlined):
            item = RecordedRequest(f"{handler.path}#{n}", model, record.headers, entry.get("request") or {},
                                   record.had_api_key, time.monotonic())
            items.append(item)
            outputs.append(self._answer_batch_item(item, entry.get("metadata")))
        with self._lock:
            name = f"batches/fake-{len(self.batches) + 1}"
            job = FakeBatch(name, model, batch.get("displayName", ""), items, outputs,
                            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self.batches[name] = job
            self.batch_items.extend(items)
            body_out = job.operation()
        record.status = 200
        self._send(handler, Reply(200, body_out))

    def _batch_get(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        record = self._record(handler, "", {})
        with self._lock:
            self.batch_gets.append(record)
            job = self.batches.get(name)
            if job is not None:
                job.polls += 1
                if job.state not in BATCH_END_STATES:
                    job.state = "RUNNING" if job.polls <= self.batch_polls_before_done else self.batch_final_state
                body_out = job.operation()
        reply = Reply(200, body_out) if job is not None else http(404, f"fake server: no batch {name}")
        record.status, record.finished = reply.status, time.monotonic()
        self._send(handler, reply)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        data = json.dumps(reply.body).encode()
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            pass

    def max_overlap(self) -> int:
        """Most requests in flight at the same moment (measured by the server, not by wall time)."""
        return self.max_active

    def start(self) -> FakeGeminiServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                server._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-gemini")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeGeminiServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@pytest.fixture
def gemini_server() -> Iterator[FakeGeminiServer]:
    """A started fake Gemini server, shut down after the test."""
    server = FakeGeminiServer().start()
    try:
        yield server
    finally:
        server.stop()
