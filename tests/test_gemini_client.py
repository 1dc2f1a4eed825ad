"""GeminiClient with the real google-genai SDK against the fake REST server (no network, no key)."""

from __future__ import annotations

import asyncio
import json

import pydantic
import pytest
from gemini_server import (
    FAKE_API_KEY,
    delay,
    empty_candidates,
    http,
    malformed,
    ok,
    quota_exhausted,
    rate_limited,
    safety_blocked,
    wrong_schema,
)

from helpers.gemini_client import GeminiCallError, GeminiClient, JsonlCache
from helpers.secrets import MissingSecretError

pytest_plugins = ["gemini_server"]


class Capital(pydantic.BaseModel):
    city: str
    population: int


GOOD = {"city": "Paris", "population": 2100000}


def make_client(server, tmp_path, **kwargs) -> GeminiClient:
    options = dict(api_key=FAKE_API_KEY, base_url=server.base_url, cache_path=tmp_path / "cache.jsonl",
                   concurrency=8, requests_per_minute=10_000, timeout_s=5.0, max_attempts=3,
                   retry_initial_delay_s=0.01, retry_max_delay_s=0.05)
    options.update(kwargs)
    return GeminiClient("gemini-3.5-flash", **options)


def test_good_json_is_parsed_and_request_is_the_gemini_rest_shape(gemini_server, tmp_path):
    gemini_server.push(ok(GOOD))
    client = make_client(gemini_server, tmp_path)
    [result] = client.generate_json_many(["Capital of France?"], Capital)
    assert result == Capital(**GOOD)
    [request] = gemini_server.requests
    assert request.path == "/v1beta/models/gemini-3.5-flash:generateContent"
    assert request.prompt == "Capital of France?"
    assert request.body["generationConfig"]["responseMimeType"] == "application/json"
    assert set(request.body["generationConfig"]["responseSchema"]["required"]) == {"city", "population"}
    assert request.had_api_key and "x-goog-api-key" not in {k.lower() for k in request.headers}
    assert client.stats.to_dict()["api_calls"] == 1 and client.stats.succeeded == 1


@pytest.mark.parametrize(("reply", "reason"), [
    (malformed(), "malformed_json"),
    (wrong_schema(), "schema_mismatch"),
    (empty_candidates(), "empty_candidates"),
    (safety_blocked(), "safety_blocked"),
    (http(400, "bad field"), "bad_request"),
    (http(403, "Method doesn't allow unregistered callers"), "auth"),
])
def test_bad_replies_become_counted_failures_not_exceptions(gemini_server, tmp_path, reply, reason):
    gemini_server.push(reply)
    client = make_client(gemini_server, tmp_path)
    [result] = client.generate_json_many(["q"], Capital)
    assert isinstance(result, GeminiCallError) and result.reason == reason
    assert client.stats.failures[reason] == 1
    assert len(gemini_server.requests) == 1  # 400/403/200 are never retried
    assert len(client.cache) == 0  # failures are not cached: a rerun tries again


def test_429_then_ok_is_retried_by_the_sdk_and_succeeds(gemini_server, tmp_path):
    gemini_server.push(rate_limited(), ok(GOOD))
    client = make_client(gemini_server, tmp_path)
    [result] = client.generate_json_many(["q"], Capital)
    assert result == Capital(**GOOD)
    # 2 HTTP requests for 1 call → 1 retry
    assert len(gemini_server.requests) == 2
    assert (client.stats.api_calls, client.stats.retries, sum(client.stats.failures.values())) == (1, 1, 0)


def test_persistent_500_is_retried_then_counted_as_server_error(gemini_server, tmp_path):
    gemini_server.push(http(500), http(500), http(500))
    client = make_client(gemini_server, tmp_path, max_attempts=3)
    [result] = client.generate_json_many(["q"], Capital)
    assert result.reason == "server_error"
    # max_attempts=3 → 3 requests, 2 retries
    assert len(gemini_server.requests) == 3 and client.stats.retries == 2
    assert client.stats.failures == {"server_error": 1}


def test_slow_reply_times_out(gemini_server, tmp_path):
    gemini_server.push(delay(2.0, ok(GOOD)))
    client = make_client(gemini_server, tmp_path, timeout_s=0.3, max_attempts=1)
    [result] = client.generate_json_many(["q"], Capital)
    assert result.reason == "timeout"
    assert client.stats.failures == {"timeout": 1}


def test_daily_quota_stops_the_run_cleanly_and_keeps_progress(gemini_server, tmp_path):
    # 2 prompts succeed, then the quota runs out (all attempts of the 3rd get 429 per-day)
    gemini_server.push(ok(GOOD), ok(GOOD), *[quota_exhausted()] * 3)
    client = make_client(gemini_server, tmp_path, concurrency=1, max_attempts=3)
    results = client.generate_json_many([f"q{i}" for i in range(6)], Capital)
    reasons = [r.reason if isinstance(r, GeminiCallError) else "ok" for r in results]
    assert reasons == ["ok", "ok", "quota_exhausted", "not_attempted", "not_attempted", "not_attempted"]
    assert len(gemini_server.requests) == 5  # 2 ok + 3 attempts of q2; q3..q5 never sent
    assert "quota_exhausted" in client.stats.stopped and "rerun after midnight Pacific" in client.stats.stopped
    assert len(JsonlCache(tmp_path / "cache.jsonl")) == 2  # progress kept on disk


def test_per_minute_429_is_not_a_stop(gemini_server, tmp_path):
    gemini_server.push(*[rate_limited()] * 2, ok(GOOD))
    client = make_client(gemini_server, tmp_path, concurrency=1, max_attempts=2)
    results = client.generate_json_many(["q0", "q1"], Capital)
    assert results[0].reason == "rate_limited" and results[1] == Capital(**GOOD)
    assert client.stats.stopped == ""


def test_missing_key_names_every_way_to_provide_it(monkeypatch):
    with pytest.raises(MissingSecretError, match=r"GOOGLE_API_KEY.*Colab secret.*offline"):
        GeminiClient("gemini-3.5-flash")


def test_key_from_environment_is_sent_but_never_stored_or_logged(gemini_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_API_KEY)
    gemini_server.push(ok(GOOD), http(403, f"key {FAKE_API_KEY} is not allowed"))
    client = GeminiClient("gemini-3.5-flash", base_url=gemini_server.base_url, cache_path=tmp_path / "c.jsonl",
                          max_attempts=1, concurrency=1)
    results = client.generate_json_many(["a", "b"], Capital)
    assert gemini_server.keys_seen == 1 and all(r.had_api_key for r in gemini_server.requests)
    texts = [repr(client), repr(results), json.dumps(client.stats.to_dict()), (tmp_path / "c.jsonl").read_text(),
             *capsys.readouterr()]
    assert not any(gemini_server.leaks_key(t) for t in texts)
    assert results[1].reason == "auth" and "***" in results[1].message


def test_rerun_uses_the_cache_and_sends_zero_requests(gemini_server, tmp_path):
    gemini_server.responder = lambda request: {"city": request.prompt, "population": 1}
    first = make_client(gemini_server, tmp_path).generate_json_many(["x", "y", "x"], Capital)
    assert [r.city for r in first] == ["x", "y", "x"]
    assert len(gemini_server.requests) == 2  # the duplicate "x" is sent once
    second_client = make_client(gemini_server, tmp_path)
    second = second_client.generate_json_many(["x", "y"], Capital)
    assert second == first[:2] and len(gemini_server.requests) == 2
    assert (second_client.stats.api_calls, second_client.stats.cache_hits) == (0, 2)


def test_torn_last_cache_line_is_ignored_and_not_glued_to_the_next(gemini_server, tmp_path):
    gemini_server.responder = lambda request: {"city": request.prompt, "population": 1}
    make_client(gemini_server, tmp_path).generate_json_many(["x"], Capital)
    path = tmp_path / "cache.jsonl"
    with open(path, "ab") as handle:  # a kill in the middle of the next write
        handle.write(b'{"key": "abc", "value": {"city": "to')
    client = make_client(gemini_server, tmp_path)
    assert client.cache.torn_lines == 1 and len(client.cache) == 1
    client.generate_json_many(["x", "y"], Capital)  # x from cache, y appended after the torn line
    reloaded = JsonlCache(path)
    assert len(reloaded) == 2 and reloaded.torn_lines == 1
    assert len(gemini_server.requests) == 2  # x once in the first run, y once now


def test_requests_really_overlap_at_the_configured_concurrency(gemini_server, tmp_path):
    gemini_server.latency_s = 0.2
    gemini_server.responder = lambda request: GOOD
    client = make_client(gemini_server, tmp_path, concurrency=8)
    results = client.generate_json_many([f"q{i}" for i in range(8)], Capital)
    assert all(isinstance(r, Capital) for r in results)
    # 8 items, 8 slots, 0.2 s each: the server sees more than half of them in flight at once
    assert 5 <= gemini_server.max_overlap() <= 8


def test_concurrency_bound_is_respected(gemini_server, tmp_path):
    gemini_server.latency_s = 0.05
    gemini_server.responder = lambda request: GOOD
    client = make_client(gemini_server, tmp_path, concurrency=2, cache_path=None)
    client.generate_json_many([f"q{i}" for i in range(6)], Capital)
    assert gemini_server.max_overlap() <= 2 and len(gemini_server.requests) == 6


def test_sync_wrapper_works_inside_a_running_event_loop(gemini_server, tmp_path):
    gemini_server.push(ok(GOOD))
    client = make_client(gemini_server, tmp_path)

    async def notebook_cell():  # Jupyter runs cells inside an event loop
        return client.generate_json_many(["q"], Capital)

    assert asyncio.run(notebook_cell()) == [Capital(**GOOD)]


def test_async_single_call_raises_the_reason(gemini_server, tmp_path):
    gemini_server.push(wrong_schema())
    client = make_client(gemini_server, tmp_path)

    async def call():
        try:
            return await client.agenerate_json("q", Capital)
        finally:
            await client.aclose()

    with pytest.raises(GeminiCallError, match="schema_mismatch"):
        asyncio.run(call())


@pytest.mark.parametrize(("field", "value"), [("concurrency", 0), ("requests_per_minute", -1), ("max_attempts", 0)])
def test_invalid_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"GeminiClient.{field}"):
        GeminiClient("m", api_key=FAKE_API_KEY, **{field: value})


def test_requests_per_minute_limits_starts_in_the_window(gemini_server, tmp_path):
    gemini_server.responder = lambda request: GOOD
    client = make_client(gemini_server, tmp_path, requests_per_minute=2, cache_path=None)
    client.rate_window_s = 0.5  # "per minute" shrunk to half a second for the test
    client.generate_json_many([f"q{i}" for i in range(3)], Capital)
    starts = sorted(r.started for r in gemini_server.requests)
    # 2 starts allowed per window: the 3rd waits until the 1st has left the window
    assert starts[2] - starts[0] >= 0.45


# -- the preflight: retired / unknown models and refused keys stop before any generate call ---------------
def test_preflight_ok_prints_the_model_and_uses_no_generate_call(gemini_server, capsys):
    from helpers.gemini_client import check_gemini_model

    info = check_gemini_model("gemini-3.5-flash", api_key=FAKE_API_KEY, base_url=gemini_server.base_url)
    assert info["ok"] and "generateContent" in info["supported_actions"]
    assert "Gemini model OK: gemini-3.5-flash" in capsys.readouterr().out
    assert [g.path for g in gemini_server.model_gets] == ["/v1beta/models/gemini-3.5-flash"]
    assert gemini_server.requests == []  # a GET, never a generate call


def test_retired_model_fails_the_preflight_naming_the_model_and_the_fix(gemini_server):
    from helpers.gemini_client import GeminiPreflightError, check_gemini_model

    gemini_server.retired_models.add("gemini-2.5-flash")
    with pytest.raises(GeminiPreflightError) as raised:
        check_gemini_model("gemini-2.5-flash", api_key=FAKE_API_KEY, base_url=gemini_server.base_url)
    error = raised.value
    assert error.reason == "model_not_found"
    for words in ("404 NOT_FOUND", "'gemini-2.5-flash' was retired", "DataConfig.gemini_model",
                  "EvalConfig.gemini_model", "'gemini-3.5-flash'"):
        assert words in error.message, words
    assert gemini_server.requests == []
    gemini_server.retired_models.add("gemini-3.5-flsh")  # a misspelt id: the same 404 from Google
    with pytest.raises(GeminiPreflightError, match="does not exist for this API"):
        check_gemini_model("gemini-3.5-flsh", api_key=FAKE_API_KEY, base_url=gemini_server.base_url)


def test_preflight_with_a_refused_key_stops_naming_the_model(gemini_server):
    from helpers.gemini_client import GeminiPreflightError, check_gemini_model

    gemini_server.model_get_reply = http(403, "Permission denied: Consumer does not have access to the model")
    with pytest.raises(GeminiPreflightError) as raised:
        check_gemini_model("gemini-3.5-flash", api_key=FAKE_API_KEY, base_url=gemini_server.base_url)
    assert raised.value.reason == "auth" and "model 'gemini-3.5-flash'" in raised.value.message
    assert "GOOGLE_API_KEY" in raised.value.message and not gemini_server.leaks_key(raised.value.message)


def test_preflight_on_a_transient_error_only_warns(gemini_server, capsys):
    from helpers.gemini_client import check_gemini_model

    gemini_server.model_get_reply = http(500)
    info = check_gemini_model("gemini-3.5-flash", api_key=FAKE_API_KEY, base_url=gemini_server.base_url)
    assert info["ok"] is None and info["reason"] == "server_error"
    assert "inconclusive" in capsys.readouterr().err


def test_model_not_found_mid_run_stops_at_once(gemini_server, tmp_path):
    gemini_server.retired_models.add("gemini-2.5-flash")
    client = GeminiClient("gemini-2.5-flash", api_key=FAKE_API_KEY, base_url=gemini_server.base_url,
                          cache_path=tmp_path / "c.jsonl", concurrency=1, max_attempts=3)
    results = client.generate_json_many([f"q{i}" for i in range(5)], Capital)
    assert [r.reason for r in results] == ["model_not_found"] + ["not_attempted"] * 4
    assert len(gemini_server.requests) == 1  # 404 is not retried, and no other row is sent
    assert client.stats.stop_reason == "model_not_found"
    assert "'gemini-2.5-flash' was retired" in client.stats.stopped and "gemini-3.5-flash" in client.stats.stopped
