"""Free-tier quotas: the plan's arithmetic, the daily ledger, the client's own daily stop, Google's 429
bodies from the fake server, and a teacher build that resumes across days with 0 repeated calls."""

from __future__ import annotations

from collections import Counter

import pydantic
import pytest
from datasets import load_from_disk
from gemini_server import FAKE_API_KEY, FakeGeminiServer, fake_teacher_reply

import helpers.quota as quota
from helpers.config import (
    GEMINI_JUDGE_MODEL,
    GEMINI_MODEL,
    DataConfig,
    EvalConfig,
    config_for,
    free_tier_requests_per_day,
)
from helpers.data.build import build_preference_data, work_dir_for
from helpers.data.excerpts import approx_token_count
from helpers.gemini_client import GeminiCallError, GeminiClient, GeminiRunStopped, JsonlCache
from helpers.quota import UsageLedger, quota_plan

pytest_plugins = ["gemini_server"]


class Capital(pydantic.BaseModel):
    city: str


@pytest.fixture
def day(monkeypatch):
    """The client's Pacific day, moved by hand (``day["n"] += 1``) together with the fake server's."""
    state = {"n": 1}
    monkeypatch.setattr(quota, "pacific_day", lambda: f"2026-11-{19 + state['n']:02d}")
    return state


def next_day(server: FakeGeminiServer, day: dict) -> None:
    """Midnight Pacific for both sides: the server's day counters and the client's ledger."""
    server.advance_day()
    day["n"] += 1


def client_for(server, tmp_path, **kwargs) -> GeminiClient:
    options = dict(api_key=FAKE_API_KEY, base_url=server.base_url, cache_path=tmp_path / "cache.jsonl",
                   concurrency=2, requests_per_minute=10_000, timeout_s=5.0, max_attempts=2,
                   retry_initial_delay_s=0.01, retry_max_delay_s=0.02, usage_path=tmp_path / "usage.json")
    options.update(kwargs)
    return GeminiClient(GEMINI_MODEL, **options)


def reasons(results) -> list[str]:
    return [r.reason if isinstance(r, GeminiCallError) else "ok" for r in results]


# -- the plan -----------------------------------------------------------------------------------------
def test_quota_plan_numbers_for_the_colab_teacher_build(day, capsys):
    plan = quota_plan("teacher build", GEMINI_MODEL, 200, 20, requests_per_minute=10, requests_per_day=20,
                      used_today=5, limit_fields="DataConfig.requests_per_day", fewer_calls="DataConfig.max_rows")
    # needed = 200 - 20 = 180; left today = 20 - 5 = 15; today = min(180, 15) = 15 calls
    # minutes = 15 / 10 = 1.5; days = 1 (today) + ceil((180 - 15) / 20) = 1 + ceil(8.25) = 1 + 9 = 10
    assert (plan.calls_needed, plan.left_today, plan.calls_today) == (180, 15, 15)
    assert plan.minutes_today == 1.5 and plan.days == 10 and not plan.fits_today
    plan.print()
    text = capsys.readouterr().out
    for words in ("calls needed: 180 of 200 (20 already cached", "10 requests/minute, 20 requests/day",
                  "used today (2026-11-20 Pacific): 5 requests, 15 left", "today: 15 calls, at least 1.5 minutes",
                  "165 left for later days", "days: 10", "midnight Pacific", "DataConfig.requests_per_day",
                  "fewer calls: DataConfig.max_rows", "aistudio.google.com/rate-limit", "Batch API (issue #17)"):
        assert words in text, words


def test_quota_plan_that_fits_today_or_needs_nothing(day):
    # the colab judge sample: 8 items x 2 sides = 16 calls; 20/day -> fits; 16 / 10 = 1.6 minutes; 1 day
    fits = quota_plan("judge", GEMINI_MODEL, 16, 0, requests_per_minute=10, requests_per_day=20)
    assert (fits.calls_today, fits.minutes_today, fits.days, fits.fits_today) == (16, 1.6, 1, True)
    # everything cached: 0 calls, 0 days
    done = quota_plan("judge", GEMINI_MODEL, 16, 16, requests_per_minute=10, requests_per_day=20)
    assert (done.calls_needed, done.days) == (0, 0) and "nothing to send" in done.text()
    with pytest.raises(ValueError, match="cached"):
        quota_plan("x", GEMINI_MODEL, 3, 4, requests_per_minute=10, requests_per_day=20)


def test_quota_plan_after_a_per_day_429_today_starts_tomorrow(day, tmp_path):
    ledger = UsageLedger(tmp_path / "usage.json")
    ledger.add(GEMINI_MODEL, 7)
    ledger.mark_exhausted(GEMINI_MODEL)  # Google said "per day" after 7 requests
    plan = quota_plan("build", GEMINI_MODEL, 30, 0, requests_per_minute=10, requests_per_day=20, ledger=ledger)
    # left today = 0 (exhausted); days = 1 + ceil(30 / 20) = 3 (today sends nothing)
    assert (plan.used_today, plan.left_today, plan.calls_today, plan.days) == (7, 0, 0, 3)


def test_ledger_counts_per_model_and_day_and_a_new_pacific_day_starts_at_zero(day, tmp_path):
    ledger = UsageLedger(tmp_path / "usage.json")
    assert [ledger.try_reserve(GEMINI_MODEL, 2) for _ in range(3)] == [True, True, False]
    assert ledger.used("gemini-3.5-flash-lite") == 0 and ledger.left(GEMINI_MODEL, 2) == 0
    assert UsageLedger(tmp_path / "usage.json").used(GEMINI_MODEL) == 2  # on disk: a restart keeps it
    day["n"] += 1
    assert ledger.used(GEMINI_MODEL) == 0 and ledger.try_reserve(GEMINI_MODEL, 2)


def test_free_tier_defaults_and_the_colab_preset():
    data, judge = config_for(DataConfig, "colab"), config_for(EvalConfig, "colab")
    assert data.gemini_model == GEMINI_MODEL == "gemini-3.5-flash"
    assert judge.gemini_model == GEMINI_JUDGE_MODEL == "gemini-3.5-flash-lite"  # a daily bucket of its own
    assert data.max_rows <= data.requests_per_day  # notebook 01's teacher calls (one per row) fit one day
    assert (data.requests_per_minute, data.concurrency, data.requests_per_day) == (10, 2, 20)
    assert (judge.gemini_requests_per_minute, judge.gemini_concurrency, judge.gemini_requests_per_day) == (10, 2, 100)
    # the judge sample fits one assumed free-tier day: 8 items x 2 sides = 16 <= 20
    assert 2 * judge.gemini_judge_sample <= judge.gemini_requests_per_day
    assert free_tier_requests_per_day("gemini-3.5-flash-lite") > free_tier_requests_per_day(GEMINI_MODEL)
    assert config_for(EvalConfig, "colab", gemini_model="gemini-3.5-flash-lite").gemini_requests_per_day == 100
    with pytest.raises(ValueError, match="DataConfig.requests_per_day"):
        config_for(DataConfig, "smoke", requests_per_day=0)
    with pytest.raises(ValueError, match="EvalConfig.gemini_judge_sample"):
        config_for(EvalConfig, "smoke", gemini_judge_sample=0)


# -- the client against the free-tier fake server -------------------------------------------------------
def test_client_stops_at_its_own_daily_budget_without_a_429(gemini_server, tmp_path, day):
    gemini_server.responder = lambda request: {"city": request.prompt}
    prompts = [f"q{i}" for i in range(5)]
    first = client_for(gemini_server, tmp_path, requests_per_day=3)
    assert reasons(first.generate_json_many(prompts, Capital)) == ["ok"] * 3 + ["not_attempted"] * 2
    assert len(gemini_server.requests) == 3 and all(r.status == 200 for r in gemini_server.requests)
    assert first.stats.stop_reason == "daily_budget" and "rerun after midnight Pacific" in first.stats.stopped
    assert "requests_per_day" in first.stats.stopped  # says which field changes the budget
    again = client_for(gemini_server, tmp_path, requests_per_day=3)  # a restarted runtime, same day
    assert reasons(again.generate_json_many(prompts, Capital)) == ["ok"] * 3 + ["not_attempted"] * 2
    assert len(gemini_server.requests) == 3 and again.stats.cache_hits == 3  # 0 requests sent
    next_day(gemini_server, day)
    last = client_for(gemini_server, tmp_path, requests_per_day=3)
    assert reasons(last.generate_json_many(prompts, Capital)) == ["ok"] * 5
    assert sorted(r.prompt for r in gemini_server.requests) == prompts  # each prompt sent exactly once


def test_per_day_429_stops_and_a_same_day_rerun_sends_nothing(gemini_server, tmp_path, day):
    gemini_server.responder = lambda request: {"city": request.prompt}
    gemini_server.free_tier(per_day=2)
    client = client_for(gemini_server, tmp_path, concurrency=1, requests_per_day=100)
    results = client.generate_json_many([f"q{i}" for i in range(4)], Capital)
    assert reasons(results) == ["ok", "ok", "quota_exhausted", "not_attempted"]
    assert gemini_server.requests[-1].status == 429
    assert client.stats.stop_reason == "quota_exhausted" and "midnight Pacific" in client.stats.stopped
    sent = len(gemini_server.requests)  # 2 answered + 2 attempts (the SDK retries 429) of q2
    assert sent == 4 and UsageLedger(tmp_path / "usage.json").exhausted(GEMINI_MODEL)
    rerun = client_for(gemini_server, tmp_path, concurrency=1, requests_per_day=100)
    assert reasons(rerun.generate_json_many([f"q{i}" for i in range(4)], Capital))[2:] == ["not_attempted"] * 2
    assert len(gemini_server.requests) == sent and "daily quota" in rerun.stats.stopped
    next_day(gemini_server, day)
    final = client_for(gemini_server, tmp_path, concurrency=1, requests_per_day=100)
    assert reasons(final.generate_json_many([f"q{i}" for i in range(4)], Capital)) == ["ok"] * 4
    answered = Counter(r.prompt for r in gemini_server.answered())
    assert answered == {"q0": 1, "q1": 1, "q2": 1, "q3": 1}


def test_free_tier_per_minute_limit_is_met_by_the_limiter_and_its_429_is_no_stop(gemini_server, tmp_path):
    gemini_server.responder = lambda request: {"city": request.prompt}
    gemini_server.free_tier(per_minute=3, minute_s=0.45)  # "a minute" shrunk to 0.45 s
    paced = client_for(gemini_server, tmp_path, requests_per_minute=3, cache_path=None)
    paced.rate_window_s = 0.5  # the client's minute a little longer than the server's: no edge races
    assert reasons(paced.generate_json_many([f"a{i}" for i in range(7)], Capital)) == ["ok"] * 7
    assert all(r.status == 200 for r in gemini_server.requests)  # the limiter never let a 429 happen
    # a client that ignores the limit gets Google's per-minute 429: retried, then counted, never a stop
    gemini_server.free_tier(per_minute=2, minute_s=30)
    eager = client_for(gemini_server, tmp_path, concurrency=1, max_attempts=1, cache_path=None)
    results = eager.generate_json_many([f"b{i}" for i in range(4)], Capital)
    assert reasons(results) == ["ok", "ok", "rate_limited", "rate_limited"]
    assert eager.stats.stopped == "" and "limit: 2" in results[2].message


# -- a teacher build over several free-tier days -----------------------------------------------------------
def _teacher_build(cfg, server):
    """The smoke build with the Gemini teacher, retries shortened (the SDK's 1 s backoff would dominate)."""
    from helpers.data.teachers import GeminiTeacher

    teacher = GeminiTeacher(cfg.gemini_model, cache_path=work_dir_for(cfg.pairs_dir) / "gemini_cache.jsonl",
                            concurrency=cfg.concurrency, requests_per_minute=10_000,
                            requests_per_day=cfg.requests_per_day, answer_words=max(12, int(cfg.answer_budget * 0.6)),
                            api_key=FAKE_API_KEY, base_url=server.base_url, max_attempts=2,
                            retry_initial_delay_s=0.01, retry_max_delay_s=0.02)
    return build_preference_data(cfg, tokenizer=approx_token_count, teacher=teacher)


@pytest.mark.parametrize("who_stops", ["client_budget", "server_429"])
def test_teacher_build_resumes_across_days_with_zero_repeated_calls(gemini_server, tmp_path, day, capsys,
                                                                    who_stops):
    gemini_server.responder = fake_teacher_reply
    gemini_server.free_tier(per_day=3)  # the smoke build has 8 rows: days of 3 + 3 + 2 calls
    budget = 3 if who_stops == "client_budget" else 100  # the client's own budget, or Google's 429 first
    cfg = config_for(DataConfig, "smoke", teacher="gemini", pairs_dir=str(tmp_path / "pairs"), requests_per_day=budget)
    work = work_dir_for(cfg.pairs_dir)
    taught_per_day = []
    for _ in range(3):  # day 1, day 2: a clean stop with progress on disk; then a same-day rerun sends nothing
        with pytest.raises(GeminiRunStopped, match="midnight Pacific") as stop:
            _teacher_build(cfg, gemini_server)
        assert "No pairs were written" in str(stop.value) and not (tmp_path / "pairs").exists()
        taught_per_day.append(len(JsonlCache(work / "teacher_outputs.jsonl")))
        sent = len(gemini_server.requests)
        with pytest.raises(GeminiRunStopped):
            _teacher_build(cfg, gemini_server)
        assert len(gemini_server.requests) == sent  # same day: 0 requests
        if len(taught_per_day) == 2:
            break
        next_day(gemini_server, day)
    assert taught_per_day == [3, 6]
    plan_text = capsys.readouterr().out
    # day 1: 8 calls, 3 today -> days = 1 + ceil(5 / 3) = 3 with the client's budget of 3
    assert "calls needed: 8 of 8 (0 already cached" in plan_text
    assert "calls needed: 5 of 8 (3 already cached" in plan_text
    if who_stops == "client_budget":
        assert "days: 3 (today is day 1)" in plan_text
        assert all(r.status == 200 for r in gemini_server.requests)  # the client stopped before any 429
    next_day(gemini_server, day)
    report = _teacher_build(cfg, gemini_server)  # day 3: the last 2 rows, then the pairs
    assert report["teacher"]["api_calls"] == 2 and report["pairs"]["total"] > 0
    answered = Counter(r.prompt for r in gemini_server.answered())
    assert len(answered) == 8 and set(answered.values()) == {1}  # every prompt answered exactly once
    if who_stops == "client_budget":
        assert len(gemini_server.requests) == 8  # and nothing else was ever sent

    with FakeGeminiServer(responder=fake_teacher_reply) as fresh:  # the same build in one go
        one_go = config_for(DataConfig, "smoke", teacher="gemini", pairs_dir=str(tmp_path / "one_go" / "pairs"),
                            requests_per_day=1000)
        _teacher_build(one_go, fresh)
    resumed, reference = load_from_disk(cfg.pairs_dir), load_from_disk(one_go.pairs_dir)
    for split in ("train", "test"):
        assert resumed[split].to_list() == reference[split].to_list()


def test_gemini_build_prints_the_plan_and_checks_the_model_before_the_first_call(gemini_server, tmp_path,
                                                                                 monkeypatch, capsys):
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini_server.base_url)
    order = []
    gemini_server.responder = lambda request: (order.append("generate"), fake_teacher_reply(request))[1]
    gemini_server.model_get_reply = None
    original = gemini_server._model_get

    def model_get(handler, version, model):
        order.append("model_get")
        original(handler, version, model)

    monkeypatch.setattr(gemini_server, "_model_get", model_get)
    build_preference_data(config_for(DataConfig, "smoke", teacher="gemini", pairs_dir=str(tmp_path / "pairs")),
                          tokenizer=approx_token_count)
    out = capsys.readouterr().out
    assert out.index("Gemini quota plan: teacher build") < out.index("Gemini model OK: gemini-3.5-flash")
    assert order[0] == "model_get" and order.count("model_get") == 1 and order.count("generate") == 8
    assert [g.path for g in gemini_server.model_gets] == [f"/v1beta/models/{GEMINI_MODEL}"]

