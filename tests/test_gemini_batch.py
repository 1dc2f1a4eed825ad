"""Gemini batch mode with the real google-genai SDK against the fake REST server (no network, no key)."""

from __future__ import annotations

import json

import pydantic
import pytest
from gemini_server import FAKE_API_KEY, http, malformed

from helpers.gemini_batch import (
    BATCH_MIN_CALLS,
    GeminiBatch,
    choose_mode,
    default_state_path,
    print_plan_with_mode,
    read_state,
    run_batch,
)
from helpers.gemini_client import GeminiCallError, GeminiClient, JsonlCache
from helpers.quota import quota_plan

pytest_plugins = ["gemini_server"]

POLL_S = 0.05


class Capital(pydantic.BaseModel):
    city: str
    population: int


def echo_city(request):
    """Every prompt answered with itself as the city: results are checkable per prompt."""
    return {"city": request.prompt, "population": len(request.prompt)}


def make_client(server, tmp_path, **kwargs) -> GeminiClient:
    options = dict(api_key=FAKE_API_KEY, base_url=server.base_url, cache_path=tmp_path / "cache.jsonl",
                   timeout_s=5.0, max_attempts=2, retry_initial_delay_s=0.01, retry_max_delay_s=0.05,
                   requests_per_minute=10_000)
    options.update(kwargs)
    return GeminiClient("gemini-3.5-flash", **options)


def batch_prompts(server) -> list[str]:
    return [item.prompt for item in server.batch_items]


def test_one_job_sends_every_prompt_once_and_an_online_rerun_makes_zero_calls(gemini_server, tmp_path):
    gemini_server.responder = echo_city
    prompts = ["q0", "q1", "q2", "q1", "q3"]  # q1 twice: sent once
    client = make_client(gemini_server, tmp_path)
    outcome = run_batch(client, prompts, Capital, poll_interval_s=POLL_S)
    assert [r.city for r in outcome.results] == prompts
    assert gemini_server.route_counts["batches.create"] == 1 and sorted(batch_prompts(gemini_server)) == \
        ["q0", "q1", "q2", "q3"]
    [create] = gemini_server.batch_creates
    assert create.path == "/v1beta/models/gemini-3.5-flash:batchGenerateContent"
    config = gemini_server.batch_items[0].body["generationConfig"]  # the online call's JSON schema, per request
    assert config["responseMimeType"] == "application/json"
    assert set(config["responseSchema"]["required"]) == {"city", "population"}
    assert gemini_server.requests == []  # no online generateContent at all
    stats = outcome.stats.to_dict()
    assert (stats["create_calls"], stats["get_calls"], stats["jobs_read"], stats["succeeded"]) == (1, 1, 1, 4)
    assert not outcome.state_path.exists()  # every job read back: nothing left to resume

    online = make_client(gemini_server, tmp_path)
    again = online.generate_json_many(prompts, Capital)
    assert again == outcome.results
    assert gemini_server.requests == [] and (online.stats.api_calls, online.stats.cache_hits) == (0, 4)


def test_a_job_that_needs_several_polls_is_polled_at_the_interval_until_it_succeeds(gemini_server, tmp_path):
    gemini_server.responder = echo_city
    gemini_server.batch_polls_before_done = 3
    batch = GeminiBatch(make_client(gemini_server, tmp_path), poll_interval_s=POLL_S)
    waits = []
    batch.sleep = waits.append
    results = batch.run(["a", "b"], Capital)
    assert [r.city for r in results] == ["a", "b"]
    # 3 RUNNING answers, then SUCCEEDED: 4 gets with a wait of the interval between each
    assert (batch.stats.get_calls, len(gemini_server.batch_gets), waits) == (4, 4, [POLL_S] * 3)


@pytest.mark.parametrize("first_run_ends", ["killed while waiting", "max_wait_s is up"])
def test_a_run_stopped_after_create_resumes_the_same_job_on_the_next_run(gemini_server, tmp_path, first_run_ends):
    gemini_server.responder = echo_city
    gemini_server.batch_polls_before_done = 10_000  # the job keeps running during the first run
    prompts = ["p0", "p1", "p2"]
    client = make_client(gemini_server, tmp_path)
    if first_run_ends == "killed while waiting":
        batch = GeminiBatch(client, poll_interval_s=POLL_S)

        def kill(_seconds):
            raise KeyboardInterrupt

        batch.sleep = kill
        with pytest.raises(KeyboardInterrupt):
            batch.run(prompts, Capital)
    else:
        outcome = run_batch(client, prompts, Capital, poll_interval_s=POLL_S, max_wait_s=0)
        assert {r.reason for r in outcome.results} == {"batch_pending"}
        assert outcome.stats.stop_reason == "batch_pending" and "rerun the same call" in outcome.stats.stopped
    state_path = default_state_path(tmp_path / "cache.jsonl")
    [job] = read_state(state_path)["jobs"]  # written before the first poll
    assert job["name"] == "batches/fake-1"
    assert job["keys"] == [client.cache_key(p, Capital) for p in prompts]

    gemini_server.batch_polls_before_done = 0  # the job has finished meanwhile
    second = run_batch(make_client(gemini_server, tmp_path), prompts, Capital, poll_interval_s=POLL_S)
    assert [r.city for r in second.results] == prompts
    assert gemini_server.route_counts["batches.create"] == 1 and len(gemini_server.batch_items) == 3
    assert (second.stats.jobs_resumed, second.stats.create_calls) == (1, 0)
    assert not state_path.exists() and len(JsonlCache(tmp_path / "cache.jsonl")) == 3


@pytest.mark.parametrize(("final_state", "reason", "words"), [
    ("FAILED", "batch_failed", "failed at Google"),
    ("EXPIRED", "batch_expired", "expired: Google did not finish it in time"),
    ("CANCELLED", "batch_cancelled", "was cancelled"),
])
def test_a_job_that_ends_badly_stops_clearly_caches_nothing_and_is_resubmitted_next_run(
        gemini_server, tmp_path, capsys, final_state, reason, words):
    gemini_server.responder = echo_city
    gemini_server.batch_final_state = final_state
    prompts = ["x", "y"]
    outcome = run_batch(make_client(gemini_server, tmp_path), prompts, Capital, poll_interval_s=POLL_S)
    assert [r.reason for r in outcome.results] == [reason, reason]
    assert outcome.stats.stop_reason == reason and outcome.stats.failures == {reason: 2}
    for text in (outcome.stats.stopped, capsys.readouterr().err):
        assert words in text and "batches/fake-1" in text and "a rerun submits its 2 prompts again" in text
    assert not (tmp_path / "cache.jsonl").exists()
    assert not outcome.state_path.exists()  # the dead job is forgotten: nothing to re-poll

    gemini_server.batch_final_state = "SUCCEEDED"
    rerun = run_batch(make_client(gemini_server, tmp_path), prompts, Capital, poll_interval_s=POLL_S)
    assert [r.city for r in rerun.results] == prompts and rerun.stats.jobs_created == 1
    assert gemini_server.route_counts["batches.create"] == 2


def test_failed_requests_inside_a_job_are_counted_left_uncached_and_only_they_are_resent(gemini_server, tmp_path):
    broken = {"q1": http(500, "internal error"), "q3": malformed()}
    gemini_server.responder = lambda request: broken.get(request.prompt) or echo_city(request)
    prompts = [f"q{i}" for i in range(5)]
    outcome = run_batch(make_client(gemini_server, tmp_path), prompts, Capital, poll_interval_s=POLL_S)
    reasons = [r.reason if isinstance(r, GeminiCallError) else "ok" for r in outcome.results]
    assert reasons == ["ok", "server_error", "ok", "malformed_json", "ok"]
    assert outcome.stats.failures == {"server_error": 1, "malformed_json": 1} and outcome.stats.succeeded == 3
    assert outcome.stats.stop_reason == ""  # a failed request is not a failed job
    assert len(JsonlCache(tmp_path / "cache.jsonl")) == 3

    broken.clear()
    rerun = run_batch(make_client(gemini_server, tmp_path), prompts, Capital, poll_interval_s=POLL_S)
    assert [r.city for r in rerun.results] == prompts
    assert batch_prompts(gemini_server)[5:] == ["q1", "q3"]  # the second job holds only the failed two
    assert (rerun.stats.cache_hits, rerun.stats.requests_submitted) == (3, 2)


def test_the_key_never_reaches_the_state_file_the_cache_or_the_output(gemini_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_API_KEY)
    gemini_server.responder = lambda request: http(400, f"key {FAKE_API_KEY} is odd") if request.prompt == "b" \
        else echo_city(request)
    gemini_server.batch_polls_before_done = 10_000
    client = GeminiClient("gemini-3.5-flash", base_url=gemini_server.base_url, cache_path=tmp_path / "c.jsonl")
    pending = run_batch(client, ["a", "b"], Capital, poll_interval_s=POLL_S, max_wait_s=0)
    state_text = pending.state_path.read_text()
    gemini_server.batch_polls_before_done = 0
    done = run_batch(client, ["a", "b"], Capital, poll_interval_s=POLL_S)
    assert gemini_server.keys_seen == 1
    assert all(r.had_api_key for r in gemini_server.batch_creates + gemini_server.batch_gets)
    texts = [state_text, (tmp_path / "c.jsonl").read_text(), repr(done.results), repr(pending.results),
             json.dumps(done.stats.to_dict()), repr(GeminiBatch(client)), *capsys.readouterr()]
    assert not any(gemini_server.leaks_key(t) for t in texts)
    assert done.results[1].reason == "bad_request" and "***" in done.results[1].message


def test_a_refused_create_stops_with_the_reason_and_leaves_no_job_behind(gemini_server, tmp_path):
    gemini_server.batch_create_reply = http(403, "Batch API is not enabled for this project")
    outcome = run_batch(make_client(gemini_server, tmp_path), ["a", "b"], Capital, poll_interval_s=POLL_S)
    assert [r.reason for r in outcome.results] == ["auth", "auth"]
    assert outcome.stats.stop_reason == "auth" and "GOOGLE_API_KEY" in outcome.stats.stopped
    assert not outcome.state_path.exists() and gemini_server.batch_gets == []


def test_big_batches_are_split_into_jobs_under_the_inline_size_limit(gemini_server, tmp_path):
    gemini_server.responder = echo_city
    prompts = [f"prompt number {i} " + "x" * 200 for i in range(6)]
    schema_bytes = len(json.dumps(Capital.model_json_schema()))
    per_request = 220 + schema_bytes + 300
    outcome = run_batch(make_client(gemini_server, tmp_path), prompts, Capital, poll_interval_s=POLL_S,
                        max_job_bytes=2 * per_request)
    assert [r.city for r in outcome.results] == prompts
    assert [len(job.items) for job in gemini_server.batches.values()] == [2, 2, 2]
    assert (outcome.stats.jobs_created, outcome.stats.jobs_read) == (3, 3)


def test_a_job_google_no_longer_knows_is_dropped_and_resubmitted_next_run(gemini_server, tmp_path):
    gemini_server.responder = echo_city
    client = make_client(gemini_server, tmp_path)
    state_path = default_state_path(client.cache.path)
    state_path.write_text(json.dumps({"format": 1, "jobs": [
        {"name": "batches/gone", "keys": [client.cache_key("a", Capital)]}]}))
    outcome = run_batch(client, ["a"], Capital, poll_interval_s=POLL_S)
    assert outcome.results[0].reason == "batch_not_found" and not state_path.exists()
    assert run_batch(client, ["a"], Capital, poll_interval_s=POLL_S).results[0].city == "a"


def test_a_model_id_builds_its_own_client_and_an_unreadable_state_file_is_not_ignored(gemini_server, tmp_path):
    gemini_server.responder = echo_city
    outcome = run_batch("gemini-3.5-flash", ["a"], Capital, cache_path=tmp_path / "m.jsonl", api_key=FAKE_API_KEY,
                        base_url=gemini_server.base_url, poll_interval_s=POLL_S)
    assert outcome.results[0].city == "a" and outcome.state_path == tmp_path / "m.jsonl.batch.json"
    outcome.state_path.write_text("{torn")
    with pytest.raises(ValueError, match="unreadable.*submitted again"):
        run_batch("gemini-3.5-flash", ["b"], Capital, cache_path=tmp_path / "m.jsonl", api_key=FAKE_API_KEY,
                  base_url=gemini_server.base_url)
    with pytest.raises(ValueError, match="cache_path"):
        run_batch(make_client(gemini_server, tmp_path, cache_path=None), ["a"], Capital)


# -- online or batch ------------------------------------------------------------------------------
def test_small_runs_that_fit_today_stay_online():
    choice = choose_mode(15, 20, rows=15, left_today=18)
    assert choice.mode == "online" and "fit today's online budget (18 of 20/day left)" in choice.reason
    assert choose_mode(0, 20).mode == "online"


def test_more_calls_than_today_allows_go_to_batch_with_the_days_online_would_take():
    choice = choose_mode(50, 20, rows=50, left_today=10)
    # online: 10 today, then 40 at 20/day = 2 more days -> 3 days
    assert choice.mode == "batch" and "online would take 3 days" in choice.reason
    assert "50% of the online price" in choice.reason and "own limits" in choice.reason


def test_big_runs_go_to_batch_even_when_the_budget_would_allow_them():
    choice = choose_mode(BATCH_MIN_CALLS, 10_000)
    assert choice.mode == "batch" and f"batch threshold of {BATCH_MIN_CALLS}" in choice.reason
    assert choose_mode(BATCH_MIN_CALLS - 1, 10_000).mode == "online"


def test_the_choice_is_printed_under_the_quota_plan(capsys):
    plan = quota_plan("teacher build", "gemini-3.5-flash", 120, 20, requests_per_minute=10, requests_per_day=20)
    choice = print_plan_with_mode(plan)
    out = capsys.readouterr().out
    assert out.startswith("Gemini quota plan: teacher build") and out.rstrip().endswith(choice.text())
    assert choice.mode == "batch" and "100 calls for 120 rows" in choice.reason
