"""The simulated Colab free-tier run: the three notebooks, each in its own runtime, sharing only Drive.

What a Colab user does, on the CPU: open each notebook from GitHub in a fresh runtime (its own
kernel and its own ``/content``), keep secrets in the key panel, and let the setup cell clone the
repo and mount Google Drive. The ``colab`` preset runs with only its sizes shrunk
(``GEMMA_FACTS_CONFIG``): the model id ``google/gemma-2-2b-it`` resolves from an offline Hub cache
holding a tiny random Gemma 2, FACTS rows come from the offline ``datasets`` cache under their Hub
id, and the Gemini teacher and judge talk to the fake Gemini REST server with free-tier limits.
``tests/colab_sim/`` has the stand-in ``google.colab`` and the world builder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "colab_sim"))

import world  # noqa: E402
from gemini_server import FakeGeminiServer, fake_teacher_reply  # noqa: E402

from helpers.config import GEMINI_MODEL, REFUSAL, DataConfig, ModelConfig, config_for  # noqa: E402

pytest.importorskip("nbclient")

NOTEBOOKS = world.REPO / "notebooks"
HF_TOKEN = "gf-sim-hf-token-7e11ab"  # not shaped like a real token, on purpose
GEMINI_KEY = "gf-sim-gemini-key-3c0ffee"
#: The colab preset with only sizes shrunk, so three runtimes fit a CI minute or two.
SHRINK = {
    "model": {"max_length": 256, "lora_r": 4, "lora_alpha": 8},
    "data": {"max_rows": 6, "answer_budget": 48, "passage_words": 60},
    "train": {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
              "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "max_train_pairs": 8, "max_eval_pairs": 4},
    "eval": {"max_examples": 2, "max_new_tokens": 8, "batch_size": 4, "latency_prompts": 1, "n_examples": 2,
             "heldout_max_rows": 2, "gemini_judge_sample": 2},
}


class Colab:
    """The shared world (remote, Hub caches, Drive, Gemini server) and a factory of fresh runtimes."""

    def __init__(self, root: Path, server: FakeGeminiServer) -> None:
        from helpers.data.rows import read_raw_rows
        from helpers.models import build_tiny_gemma2

        self.root, self.server = root, server
        self.remote = world.make_remote(root / "github")
        self.drive = root / "drive"
        (self.drive / "MyDrive").mkdir(parents=True)
        self.hub_cache, self.datasets_cache = root / "hf-hub", root / "hf-datasets"
        model_id = config_for(ModelConfig, "colab").model_id
        world.make_hub_model_cache(self.hub_cache, model_id, build_tiny_gemma2(root / "tiny-gemma2"))
        data_cfg = config_for(DataConfig, "colab")
        facts = Path(__file__).resolve().parents[1] / "helpers" / "resources" / "facts_grounding"
        rows = read_raw_rows(str(facts / "facts_grounding_short.jsonl"))
        world.make_hub_dataset_cache(self.datasets_cache, data_cfg.input, data_cfg.hf_config, data_cfg.hf_split, rows)
        self.config_file = root / "shrink.json"
        self.config_file.write_text(json.dumps(SHRINK))
        self.runtimes = 0

    def runtime(self, secrets: dict[str, tuple[str, bool]]) -> tuple[dict[str, str], Path]:
        """A fresh runtime: its own /content, HOME and secrets panel; returns (kernel env, /content)."""
        self.runtimes += 1
        base = self.root / f"runtime-{self.runtimes}"
        content, home = base / "content", base / "home"
        home.mkdir(parents=True)
        secrets_file = world.write_secrets(base / "secrets.json", secrets)
        env = world.kernel_env(content=content, remote=self.remote, drive=self.drive, secrets=secrets_file,
                               hub_cache=self.hub_cache, datasets_cache=self.datasets_cache,
                               gemini_url=self.server.base_url, config_file=self.config_file, home=home)
        return env, content

    def next_day(self) -> None:
        """Midnight Pacific passes: Google's per-day counters restart, and the usage ledger on Drive, which
        counts today's requests, now holds yesterday's date (what the clock does to it overnight)."""
        import datetime

        self.server.advance_day()
        for ledger in self.drive.rglob("gemini_usage.json"):
            data = json.loads(ledger.read_text())
            data["day"] = str(datetime.date.fromisoformat(data["day"]) - datetime.timedelta(days=1))
            ledger.write_text(json.dumps(data))

    def run(self, notebook: str, secrets: dict[str, tuple[str, bool]], **kwargs):
        env, content = self.runtime(secrets)
        return world.execute(NOTEBOOKS / notebook, env, content, **kwargs), content


ALL_SECRETS = {"HF_TOKEN": (HF_TOKEN, True), "GOOGLE_API_KEY": (GEMINI_KEY, True)}


def _gemini_reply(request):
    """The teacher's reply, or (for a judge prompt) a judgement: refusals refuse, anything else is unsupported."""
    if "<response>" not in request.prompt:
        return fake_teacher_reply(request)
    response = request.prompt.split("<response>", 1)[1].split("</response>", 1)[0].strip()
    refused = REFUSAL in response
    return {"refused": refused, "sentences": [{"sentence": response or ".", "label": "no_rad" if refused else
                                               "unsupported", "rationale": "simulated"}]}


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    with FakeGeminiServer(responder=_gemini_reply) as server:
        yield Colab(tmp_path_factory.mktemp("colab"), server)


def _setup_error(colab: Colab, secrets: dict[str, tuple[str, bool]]) -> str:
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError) as caught:
        colab.run("01_build_preference_pairs.ipynb", secrets, cells=2)
    return str(caught.value)


def test_without_an_hf_token_the_setup_cell_stops_with_the_licence_steps(colab):
    message = _setup_error(colab, {"GOOGLE_API_KEY": (GEMINI_KEY, True)})
    assert "GatedModelError" in message and "google/gemma-2-2b-it is gated" in message
    assert "accept the Gemma licence" in message and "HF_TOKEN" in message
    assert "no Colab secret of that name" in message


def test_a_token_without_notebook_access_is_named_as_such(colab):
    message = _setup_error(colab, {"HF_TOKEN": (HF_TOKEN, False)})
    assert "'Notebook access' is off" in message
    assert HF_TOKEN not in message


def test_a_retired_gemini_model_stops_at_the_check_cell(colab):
    """The user kept last year's id at the top of notebook 01: one cheap call refuses it, no row is sent."""
    from nbclient.exceptions import CellExecutionError

    colab.server.retired_models.add("gemini-2.5-flash")
    sent = len(colab.server.requests)
    with pytest.raises(CellExecutionError) as caught:
        colab.run("01_build_preference_pairs.ipynb", ALL_SECRETS,
                  edit={f'GEMINI_MODEL = "{GEMINI_MODEL}"': 'GEMINI_MODEL = "gemini-2.5-flash"'})
    message = str(caught.value)
    assert "check_gemini_model" in message and "gemini-2.5-flash" in message and GEMINI_MODEL in message
    assert len(colab.server.requests) == sent  # no generate call was made
    assert GEMINI_KEY not in message


def test_three_runtimes_share_only_drive_and_resume_across_days(colab):
    """01 (stopped by the day's quota, finished the next day), 02 and 03: each in a fresh runtime."""
    from nbclient.exceptions import CellExecutionError

    server = colab.server
    server.free_tier(per_minute=10, per_day=4)  # day 1: 4 requests for 6 rows
    with pytest.raises(CellExecutionError) as caught:
        colab.run("01_build_preference_pairs.ipynb", ALL_SECRETS)
    assert "midnight Pacific" in str(caught.value)
    day1 = [r.prompt for r in server.answered()]
    assert len(day1) == 4
    outputs = colab.drive / "MyDrive" / "gemma-facts" / "outputs"
    assert not (outputs / "pairs").exists()  # no half-built pairs for notebook 02 to pick up

    colab.next_day()  # the user opens notebook 01 again the next day: a new runtime
    nb01, content01 = colab.run("01_build_preference_pairs.ipynb", ALL_SECRETS)
    teacher_prompts = [r.prompt for r in server.answered()]
    assert len(teacher_prompts) == 6 and len(set(teacher_prompts)) == 6  # each row sent once, over two days
    text01 = world.outputs_text(nb01)
    assert "Gemini quota plan" in text01 and "2 of 6 (4 already cached" in text01
    assert (outputs / "pairs").is_dir() and (outputs / "data_report.json").is_file()

    server.free_tier(per_minute=10, per_day=40)
    nb02, content02 = colab.run("02_dpo_training.ipynb", {"HF_TOKEN": (HF_TOKEN, True)})
    assert (outputs / "adapter" / "adapter_config.json").is_file() and (outputs / "train_report.json").is_file()

    nb03, content03 = colab.run("03_evaluation.ipynb", ALL_SECRETS)
    metrics = json.loads((outputs / "metrics.json").read_text())
    assert metrics["profile"] == "colab" and metrics["gemini_judge"]["sample"] == 2
    judged = [r for r in server.answered() if "<response>" in r.prompt]
    assert 0 < len(judged) <= 2 * 2 * 2  # a sample of 2 prompts per side and set: never the whole split

    for nb, content in ((nb01, content01), (nb02, content02), (nb03, content03)):
        text = world.outputs_text(nb)
        assert f"repo: {content / 'gemma-facts'}" in text  # helpers came from this runtime's own clone
        assert not (content / "gemma-facts" / "outputs").exists()  # nothing was written beside the clone
        assert HF_TOKEN not in text and GEMINI_KEY not in text
    for path in colab.drive.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert HF_TOKEN.encode() not in data and GEMINI_KEY.encode() not in data, path
