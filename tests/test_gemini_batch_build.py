"""Batch mode in the teacher (stage 01) and the judge (stage 03), against the fake Gemini server (real SDK).

The headline check: a build of the 232 bundled real FACTS rows through one batch job gives exactly the pairs
of the same build sent online, each prompt sent once per mode, and a rerun of either sends nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from datasets import load_from_disk
from gemini_server import FAKE_API_KEY, fake_teacher_reply, http

from helpers.config import DataConfig, EvalConfig, config_for
from helpers.data.build import build_preference_data, work_dir_for
from helpers.data.excerpts import approx_token_count
from helpers.data.teachers import GeminiTeacher
from helpers.evaluate.judges import GeminiJudge, Verdict
from helpers.gemini_batch import default_state_path, read_state
from helpers.gemini_client import BASE_URL_ENV, GeminiCallError, GeminiRunStopped, JsonlCache

pytest_plugins = ["gemini_server"]

POLL_S = 0.02


@pytest.fixture
def keyed(gemini_server, monkeypatch):
    """The fake server answers teacher prompts; the key and endpoint come from the environment (as on Colab)."""
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv(BASE_URL_ENV, gemini_server.base_url)
    gemini_server.responder = fake_teacher_reply  # a pure function of the prompt: both modes get the same replies
    return gemini_server


def facts_cfg(out: Path, mode: str) -> DataConfig:
    """The local profile's real FACTS rows (232), with limits that never stop the online run."""
    return config_for(DataConfig, "local", input="bundled-facts", teacher="gemini", gemini_mode=mode,
                      pairs_dir=str(out / "pairs"), requests_per_day=100_000, requests_per_minute=100_000,
                      concurrency=8)


def smoke_cfg(out: Path, **overrides) -> DataConfig:
    return config_for(DataConfig, "smoke", teacher="gemini", pairs_dir=str(out / "pairs"), **overrides)


def build(cfg: DataConfig, teacher=None) -> dict:
    return build_preference_data(cfg, tokenizer=approx_token_count, prompt_format="plain", teacher=teacher)


def saved_pairs(cfg: DataConfig) -> dict[str, list[dict]]:
    data = load_from_disk(cfg.pairs_dir)
    return {split: data[split].to_list() for split in ("train", "test")}


def batch_teacher(cfg: DataConfig, server, mode: str = "batch", **options) -> GeminiTeacher:
    """What ``make_teacher`` builds, with a short poll interval (and the options of the test)."""
    return GeminiTeacher(cfg.gemini_model, cache_path=work_dir_for(cfg.pairs_dir) / "gemini_cache.jsonl",
                         requests_per_minute=10_000, requests_per_day=cfg.requests_per_day,
                         answer_words=max(12, int(cfg.answer_budget * 0.6)), mode=mode, batch_poll_interval_s=POLL_S,
                         api_key=FAKE_API_KEY, base_url=server.base_url, **options)


# -- the teacher ------------------------------------------------------------------------------------------
def test_a_batch_build_of_the_real_facts_rows_equals_the_online_build(keyed, tmp_path, capsys):
    server = keyed
    batch_cfg, online_cfg = facts_cfg(tmp_path / "batch", "batch"), facts_cfg(tmp_path / "online", "online")

    batch_report = build(batch_cfg)
    assert batch_report["valid_rows"] == batch_report["seed_rows"] == 232
    batch_prompts = [item.prompt for item in server.batch_items]
    assert server.requests == [] and server.route_counts["batches.create"] == 1  # one job, no online call
    assert len(batch_prompts) == len(set(batch_prompts)) == 232  # every row's prompt sent once
    teacher = batch_report["teacher"]
    assert teacher["used"] == "gemini" and teacher["mode"] == "batch" and teacher["failed_rows"] == 0
    assert (teacher["batch"]["jobs_created"], teacher["batch"]["requests_submitted"], teacher["api_calls"]) == \
        (1, 232, 232)
    assert not default_state_path(work_dir_for(batch_cfg.pairs_dir) / "gemini_cache.jsonl").exists()

    online_report = build(online_cfg)
    online_prompts = [request.prompt for request in server.requests]
    assert Counter(online_prompts) == Counter(batch_prompts)  # the same 232 prompts, each once
    assert server.route_counts["batches.create"] == 1 and online_report["teacher"]["mode"] == "online"
    assert online_report["teacher"]["api_calls"] == 232 and "batch" not in online_report["teacher"]

    batch_pairs, online_pairs = saved_pairs(batch_cfg), saved_pairs(online_cfg)
    assert batch_report["pairs"]["by_source"].get("teacher", 0) > 0 and batch_pairs["test"]
    for split in ("train", "test"):
        assert len(batch_pairs[split]) == len(online_pairs[split])
        for n, (got, want) in enumerate(zip(batch_pairs[split], online_pairs[split], strict=True)):
            assert got == want, f"{split} pair {n} differs"
    assert batch_report["pairs"] == online_report["pairs"] and batch_report["split"] == online_report["split"]
    out = capsys.readouterr().out
    assert "mode: batch: set by DataConfig.gemini_mode (auto would choose online)" in out
    assert "mode: online: set by DataConfig.gemini_mode (auto would choose online)" in out

    routes = dict(server.route_counts)
    for cfg in (batch_cfg, online_cfg):  # reruns: every row is taught already, nothing is sent (no model GET)
        assert build(cfg)["teacher"]["api_calls"] == 0
    assert dict(server.route_counts) == routes
    assert saved_pairs(batch_cfg) == batch_pairs and saved_pairs(online_cfg) == online_pairs


def test_a_batch_build_stopped_while_the_job_runs_resumes_the_same_job(keyed, tmp_path, capsys):
    server = keyed
    server.batch_polls_before_done = 10_000  # the job is still running when the wait is over
    cfg = smoke_cfg(tmp_path, requests_per_day=1000)
    work = work_dir_for(cfg.pairs_dir)
    with pytest.raises(GeminiRunStopped, match=r"(?s)batch_pending.*still RUNNING.*No pairs were written") as stop:
        build(cfg, batch_teacher(cfg, server, batch_max_wait_s=0))
    assert stop.value.reason == "batch_pending"
    assert "Progress: 0 of 8 rows taught" in str(stop.value)
    assert not Path(cfg.pairs_dir).exists() and len(JsonlCache(work / "teacher_outputs.jsonl")) == 0
    [job] = read_state(default_state_path(work / "gemini_cache.jsonl"))["jobs"]
    assert job["name"] == "batches/fake-1" and len(job["keys"]) == 8
    assert server.route_counts["batches.create"] == 1 and server.requests == []

    server.batch_polls_before_done = 0  # finished meanwhile; "auto" would send 8 calls online, the job wins
    capsys.readouterr()
    report = build(cfg, batch_teacher(cfg, server, mode="auto"))
    assert "mode: batch: 8 of these rows are in a batch job submitted earlier" in capsys.readouterr().out
    assert server.route_counts["batches.create"] == 1 and server.requests == []  # no second create, nothing online
    assert (report["teacher"]["batch"]["jobs_resumed"], report["teacher"]["batch"]["create_calls"]) == (1, 0)
    assert report["teacher"]["failed_rows"] == 0 and Path(cfg.pairs_dir).is_dir()
    assert not default_state_path(work / "gemini_cache.jsonl").exists()

    reference = smoke_cfg(tmp_path / "online", requests_per_day=1000, gemini_mode="online")
    build(reference)  # the same rows online, in one go
    assert saved_pairs(cfg) == saved_pairs(reference)


def test_a_failed_batch_job_stops_the_build_clearly_and_a_rerun_submits_again(keyed, tmp_path):
    server = keyed
    server.batch_final_state = "FAILED"
    cfg = smoke_cfg(tmp_path, gemini_mode="batch")  # through make_teacher: the job ends at the first poll
    with pytest.raises(GeminiRunStopped, match=r"(?s)batch_failed.*failed at Google.*No pairs were written") as stop:
        build(cfg)
    assert stop.value.reason == "batch_failed" and "a rerun submits its 8 prompts again" in str(stop.value)
    work = work_dir_for(cfg.pairs_dir)
    assert not Path(cfg.pairs_dir).exists() and len(JsonlCache(work / "teacher_outputs.jsonl")) == 0
    assert not default_state_path(work / "gemini_cache.jsonl").exists()  # the dead job is forgotten

    server.batch_final_state = "SUCCEEDED"
    report = build(cfg)
    assert server.route_counts["batches.create"] == 2 and report["teacher"]["failed_rows"] == 0
    assert Path(cfg.pairs_dir).is_dir()


def test_auto_picks_batch_past_the_days_budget_and_a_refused_create_says_to_stay_online(keyed, tmp_path, capsys):
    server = keyed
    server.batch_create_reply = http(403, "Batch API is not enabled for this project")
    cfg = smoke_cfg(tmp_path, requests_per_day=3)  # 8 rows, 3 requests a day: auto picks batch
    assert cfg.gemini_mode == "auto"
    with pytest.raises(GeminiRunStopped, match=r"(?s)creating a batch job failed.*gemini_mode='online'") as stop:
        build(cfg)
    assert stop.value.reason == "auth" and not Path(cfg.pairs_dir).exists() and server.requests == []
    out = capsys.readouterr().out
    plan = out[out.index("Gemini quota plan: teacher build"):]
    assert "mode: batch: 8 calls for 8 rows exceed today's online budget (3 of 3/day left" in plan
    assert "online would take 3 days" in plan and "50% of the online price" in plan

    online = smoke_cfg(tmp_path, requests_per_day=3, gemini_mode="online")  # the advice, followed
    with pytest.raises(GeminiRunStopped, match="midnight Pacific"):
        build(online)
    assert len(server.requests) == 3 and server.route_counts["batches.create"] == 1
    assert "mode: online: set by DataConfig.gemini_mode (auto would choose batch)" in capsys.readouterr().out


def test_a_small_build_in_auto_mode_stays_online_and_says_why(keyed, tmp_path, capsys):
    report = build(smoke_cfg(tmp_path, requests_per_day=1000))
    assert report["teacher"]["mode"] == "online" and report["teacher"]["api_calls"] == 8
    assert keyed.route_counts["batches.create"] == 0
    out = capsys.readouterr().out
    assert "mode: online: 8 calls for 8 rows fit today's online budget (1000 of 1000/day left)" in out
    assert out.index("Gemini quota plan") < out.index("mode: online") < out.index("Gemini model OK")


def test_gemini_mode_is_validated():
    with pytest.raises(ValueError, match=r"DataConfig.gemini_mode must be one of"):
        config_for(DataConfig, "smoke", gemini_mode="bulk")
    with pytest.raises(ValueError, match=r"EvalConfig.gemini_mode must be one of"):
        config_for(EvalConfig, "smoke", gemini_mode="offline")
    assert config_for(DataConfig, "smoke").gemini_mode == config_for(EvalConfig, "smoke").gemini_mode == "auto"
    with pytest.raises(ValueError, match="mode must be one of"):
        GeminiTeacher(mode="bulk", api_key=FAKE_API_KEY)


# -- the judge --------------------------------------------------------------------------------------------
DOC = "Water boils at 100 degrees Celsius at sea level."
REQUEST = "At what temperature does water boil?"
ANSWERS = ["Water boils at 100 degrees Celsius.", "Water boils at 50 degrees.", "It boils at 100 degrees."]


def judgement(request) -> dict:
    """Supported when the response says 100, contradictory otherwise (a function of the prompt)."""
    response = request.prompt.split("<response>\n", 1)[1].split("\n</response>", 1)[0]
    label = "supported" if "100" in response else "contradictory"
    return {"refused": False, "sentences": [{"sentence": response, "label": label}]}


def items(answers=ANSWERS) -> list[dict]:
    return [{"answer": a, "document": DOC, "request": REQUEST, "answerable": True} for a in answers]


def make_judge(server, tmp_path, **options) -> GeminiJudge:
    return GeminiJudge("gemini-3.5-flash", api_key=FAKE_API_KEY, base_url=server.base_url,
                       cache_path=str(tmp_path / "judge_cache.jsonl"), requests_per_minute=10_000,
                       batch_poll_interval_s=POLL_S, **options)


def test_the_judge_in_batch_mode_judges_through_one_job_and_an_online_rerun_sends_nothing(gemini_server, tmp_path,
                                                                                         capsys):
    gemini_server.responder = judgement
    judge = make_judge(gemini_server, tmp_path, mode="batch")
    verdicts = judge.judge_many(items())
    assert all(isinstance(v, Verdict) for v in verdicts)
    assert [v.grounded_correct for v in verdicts] == [True, False, True]
    assert gemini_server.requests == [] and len(gemini_server.batch_items) == 3
    stats = judge.stats.to_dict()
    assert stats["batch"]["jobs_created"] == 1 and stats["api_calls"] == 3 and stats["mode"] == ["batch"]
    out = capsys.readouterr().out
    assert "Gemini quota plan: Gemini judge (notebook 03)" in out
    assert "mode: batch: set by EvalConfig.gemini_mode (auto would choose online)" in out

    again = make_judge(gemini_server, tmp_path)  # online: every judgement is cached by the batch run
    assert again.judge_many(items()) == verdicts
    assert gemini_server.requests == [] and again.stats.cache_hits == 3 and again.stats.api_calls == 0


def test_a_failed_judge_batch_stops_the_judge_and_sends_nothing_more(gemini_server, tmp_path):
    gemini_server.responder = judgement
    gemini_server.batch_final_state = "FAILED"
    judge = make_judge(gemini_server, tmp_path, mode="batch")
    results = judge.judge_many(items())
    assert all(isinstance(r, GeminiCallError) and r.reason == "batch_failed" for r in results)
    assert judge.stats.stop_reason == "batch_failed" and "failed at Google" in judge.stats.stopped
    later = judge.judge_many(items(["Water is wet."]))  # as after an online stop: not attempted, not sent
    assert [r.reason for r in later] == ["not_attempted"] and gemini_server.route_counts["batches.create"] == 1
    assert judge.stats.to_dict()["failures"] == {"batch_failed": 3}


def test_the_evaluation_config_mode_reaches_the_judge(gemini_server, monkeypatch):
    from helpers.evaluate.run import gemini_judge

    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv(BASE_URL_ENV, gemini_server.base_url)
    assert gemini_judge(config_for(EvalConfig, "smoke", judge="gemini", gemini_mode="batch")).mode == "batch"
    assert gemini_judge(config_for(EvalConfig, "smoke", judge="gemini")).mode == "auto"


def test_the_judge_in_auto_mode_batches_past_the_days_budget(gemini_server, tmp_path, capsys):
    gemini_server.responder = judgement
    judge = make_judge(gemini_server, tmp_path, mode="auto", requests_per_day=2)
    verdicts = judge.judge_many(items())
    assert all(isinstance(v, Verdict) for v in verdicts) and gemini_server.requests == []
    assert "mode: batch: 3 calls for 3 rows exceed today's online budget (2 of 2/day left" in capsys.readouterr().out
    assert judge.stats.to_dict()["mode"] == ["batch"]
