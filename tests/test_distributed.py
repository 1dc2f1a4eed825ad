"""Training under ``accelerate launch``: two CPU processes (DDP over gloo) through the real CLI, and an FSDP run.

The two-process runs are ``gemma-facts train`` on the smoke profile, unchanged, started as

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --mixed_precision no --dynamo_backend no --main_process_port 0 -m helpers.cli train --max-steps 2

(``--cpu`` would start one process: accelerate runs several CPU processes only under mpirun;
``--multi_gpu`` starts them through torchrun and ``ACCELERATE_USE_CPU`` makes each a CPU rank over gloo.)
``tests/ddp_probe/sitecustomize.py`` records in every rank what it wrote under the output root and
the LoRA weights it holds after training, so "only rank 0 writes" and "the ranks agree" are checked
on what each process did, not on what the code intends.

The Trainer cannot run FSDP on a CPU (accelerate has no FSDP for CPU ranks), so the FSDP test launches
``configs/accelerate_fsdp.yaml`` and checks the arguments each rank would train with, then shards the
loader's 4-bit model + LoRA with torch's FSDP2 itself over gloo and compares a step with the unsharded one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "ddp_probe"
ACCELERATE = Path(sys.executable).with_name("accelerate")
DDP_FLAGS = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
             "--dynamo_backend", "no", "--main_process_port", "0"]
#: What a rank other than 0 may write under the output root: its own RNG state in each checkpoint
#: (the Trainer restores every rank's generator on resume), and that checkpoint's folder when it gets
#: there first.
RANK1_MAY_WRITE = re.compile(r"write\tcheckpoints/checkpoint-\d+/rng_state_1\.pth|mkdir\tcheckpoints/checkpoint-\d+")


#: A gloo rank can abort at interpreter exit, after its work is done, with this libstdc++ message (a C++
#: thread still joinable when static objects are destroyed). Seen in about one fresh-clone CI run in six, in the
#: training launch and in the FSDP launch; calling ``destroy_process_group()`` at the end of training made the
#: launch hang instead (reverted, ad79edb).
EXIT_ABORT = "terminate called without an active exception"


def launch(out: Path, probe: Path, args: list[str], flags: list[str] = DDP_FLAGS,
           env_extra: dict[str, str] | None = None, finished: list[Path] | None = None) -> subprocess.CompletedProcess:
    """Run ``accelerate launch``; it must exit 0, except for the known abort at exit when every file in
    ``finished`` (what each rank writes once its work is done) is there: the work is then checked as usual
    by the tests, which is what they are about, and the abort is printed rather than failing them."""
    probe.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GEMMA_FACTS_PROFILE": "smoke", "GEMMA_FACTS_OUTPUT": str(out), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "DDP_PROBE_DIR": str(probe),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), str(ROOT), os.environ.get("PYTHONPATH")])),
           **(env_extra or {})}
    proc = subprocess.run([str(ACCELERATE), "launch", *flags, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0 and finished and EXIT_ABORT in proc.stderr and all(p.exists() for p in finished):
        print(f"known abort at exit after the work was done (exit {proc.returncode}): {EXIT_ABORT}")
        return proc
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def writes(probe: Path, rank: int) -> set[str]:
    """``kind<TAB>path`` lines a rank's probe recorded (paths relative to the output root)."""
    assert not (probe / f"rank{rank}-errors.txt").exists(), (probe / f"rank{rank}-errors.txt").read_text()
    path = probe / f"rank{rank}-writes.txt"
    return set(path.read_text().splitlines()) if path.exists() else set()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, contract_pairs):
    """Two 2-process runs of ``gemma-facts train``: to step 2 (checkpoint-2), then on to step 4 (resuming)."""
    from datasets import Dataset, DatasetDict

    from helpers.config import TINY_GEMMA2
    from helpers.models import resolve_model_path

    resolve_model_path(TINY_GEMMA2)  # built once here, not twice at once by the two ranks on a cold cache
    work = tmp_path_factory.mktemp("ddp")
    out = work / "outputs"
    # 3 documents x 3 pairs; the smoke preset holds 1 document out as dev (eval_dev_documents=1): 6 train pairs,
    # 3 per rank, per-device batch 2 → 2 optimizer steps per epoch of 4 pairs each
    DatasetDict({"train": Dataset.from_list(contract_pairs), "test": Dataset.from_list(contract_pairs[:3])}
                ).save_to_disk(str(out / "pairs"))
    train = ["-m", "helpers.cli", "train", "--set", "train.save_steps=2", "--set", "train.eval_steps=2",
             "--set", "train.measure_16bit_footprint=false"]
    runs = {}
    for name, steps in (("first", 2), ("resumed", 4)):
        proc = launch(out, work / name, [*train, "--max-steps", str(steps)], env_extra={"ACCELERATE_USE_CPU": "true"},
                      finished=[work / name / f"rank{k}.json" for k in (0, 1)])  # written when Trainer.train returns
        runs[name] = {"proc": proc, "probe": work / name,
                      "report": json.loads((out / "train_report.json").read_text()),
                      "ranks": [json.loads((work / name / f"rank{k}.json").read_text()) for k in (0, 1)],
                      "weights": [torch.load(work / name / f"rank{k}.pt") for k in (0, 1)]}
    return {"out": out, **runs}


def test_two_processes_train_as_one_ddp_run_and_the_report_records_the_effective_batch(ddp_runs):
    for run in ("first", "resumed"):
        for rank, info in enumerate(ddp_runs[run]["ranks"]):
            assert info["rank"] == info["process_index"] == rank and info["world_size"] == 2
            assert info["wrapped"] == "DistributedDataParallel" and "MULTI_CPU" in info["distributed_type"]
            assert info["is_world_process_zero"] == (rank == 0)
    report = ddp_runs["first"]["report"]
    assert report["effective_batch"] == {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                                         "processes": 2, "pairs_per_step": 4}
    assert report["data"]["train"]["pairs"] == 6 and report["data"]["dev"]["documents"] == 1
    # 6 pairs in steps of 4: an epoch is 2 steps (a single process would need 3)
    assert [e["epoch"] for e in report["log_history"] if "loss" in e] == [0.5, 1.0]


def test_both_ranks_hold_identical_lora_weights_and_the_adapter_is_them(ddp_runs):
    from safetensors.torch import load_file

    for run in ("first", "resumed"):
        rank0, rank1 = ddp_runs[run]["weights"]
        assert rank0.keys() == rank1.keys() and len(rank0) == 2 * 2 * 4  # 2 layers x q/k/v/o x A, B
        for name in rank0:
            assert torch.equal(rank0[name], rank1[name]), f"{run}: {name} differs between the ranks"
        assert any(rank0[n].abs().max() > 0 for n in rank0 if "lora_B" in n)  # trained: B left zero
    saved = load_file(str(ddp_runs["out"] / "adapter" / "adapter_model.safetensors"))
    final = {n.replace(".default", ""): w for n, w in ddp_runs["resumed"]["weights"][0].items()}
    assert saved.keys() == final.keys()
    assert all(torch.equal(saved[n], final[n]) for n in saved)
    # the ranks trained on different halves of the data: their shared-prompt forwards saw different tokens
    stats = [info["shared_prompt"] for info in ddp_runs["first"]["ranks"]]
    assert stats[0]["two_row_tokens"] != stats[1]["two_row_tokens"]


def test_only_rank_0_writes_the_adapter_model_card_and_report(ddp_runs):
    out = ddp_runs["out"]
    for run in ("first", "resumed"):
        probe = ddp_runs[run]["probe"]
        rank0 = {line.split("\t", 1)[1] for line in writes(probe, 0)}
        # the probe saw rank 0 write each artefact, whichever library wrote it (Python, safetensors, tokenizers)
        assert {"train_report.json", "adapter/README.md", "adapter/adapter_model.safetensors",
                "adapter/adapter_config.json", "adapter/gemma_facts_adapter.json", "adapter/tokenizer.json",
                "checkpoints/gemma_facts_run.json"} <= rank0, sorted(rank0)
        rank1 = writes(probe, 1)
        assert sorted(line for line in rank1 if not RANK1_MAY_WRITE.fullmatch(line)) == [], f"{run}: rank 1 wrote"
        assert any(line.endswith("rng_state_1.pth") for line in rank1)  # the probe sees rank 1's writes too
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja",
        "gemma_facts_adapter.json", "tokenizer.json", "tokenizer_config.json"]
    assert not list(out.rglob("*.partial"))
    stdout = ddp_runs["first"]["proc"].stdout
    assert stdout.count('"profile": "smoke"') == 1  # one headline: rank 0's


def test_the_shared_prompt_forward_runs_under_ddp(ddp_runs):
    report = ddp_runs["first"]["report"]
    assert report["shared_prompt"]["packed_calls"] > 0 and report["shared_prompt"]["fallback_calls"] == 0
    for info in ddp_runs["first"]["ranks"]:  # under DDP's wrapper, in every rank
        stats = info["shared_prompt"]
        assert stats["packed_calls"] > 0 and stats["fallback_calls"] == 0
        assert stats["packed_tokens"] < stats["two_row_tokens"]


def test_a_resumed_two_process_run_continues_the_global_step(ddp_runs):
    report, proc = ddp_runs["resumed"]["report"], ddp_runs["resumed"]["proc"]
    assert report["steps"] == 4 and report["resumed_from_step"] == 2
    assert [info["global_step"] for info in ddp_runs["resumed"]["ranks"]] == [4, 4]
    assert [e["step"] for e in report["log_history"] if "loss" in e] == [1, 2, 3, 4]
    resumed = re.findall(r"Resuming from (\S+) \(step (\d+)\)", proc.stdout)
    assert len(resumed) == 1 and resumed[0][0].endswith("checkpoint-2") and resumed[0][1] == "2"  # rank 0 says it
    assert (ddp_runs["out"] / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()


def test_an_fsdp_launch_loads_4bit_without_device_map_and_checkpoints_once(tmp_path):
    """``configs/accelerate_fsdp.yaml`` through accelerate's launcher: what each rank would train the 9B with."""
    probe = tmp_path / "probe"
    launch(tmp_path / "outputs", probe, ["-m", "fsdp_args"],
           flags=["--config_file", str(ROOT / "configs" / "accelerate_fsdp.yaml"), "--num_processes", "2",
                  "--main_process_port", "0"],
           finished=[probe / f"rank{k}-fsdp_args.json" for k in (0, 1)])  # each rank's last act
    ranks = sorted((json.loads(p.read_text()) for p in probe.glob("rank*-fsdp_args.json")), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["env"]["ACCELERATE_USE_FSDP"] == "true" and r["env"]["FSDP_VERSION"] == "2"
        assert r["env"]["ACCELERATE_MIXED_PRECISION"] == "bf16"
        assert r["plugin"]["fsdp_version"] == 2 and r["plugin"]["activation_checkpointing"] is True
        assert r["plugin"]["transformer_cls_names_to_wrap"] == ["Gemma2DecoderLayer"]
        assert r["plugin"]["state_dict_type"].endswith("SHARDED_STATE_DICT")
        assert r["helpers"] == {"fsdp_launch": True, "fsdp_activation_checkpointing": True}
        nine = r["gemma2_9b"]
        assert nine["model_id"] == "google/gemma-2-9b-it" and nine["device_map"] == "absent"
        assert nine["quant_storage"] == nine["compute_dtype"] == nine["dtype"] == "torch.bfloat16"
        assert nine["quant_type"] == "nf4"
        # FSDP checkpoints each decoder layer; the model's own stays off although ModelConfig asks for it
        assert nine["model_gradient_checkpointing"] is True
        assert nine["activation_checkpointing"] is False and nine["gradient_checkpointing"] is False
        assert nine["gpu_precision"] == {"fp16": False, "bf16": True}
        smoke = r["smoke_model"]  # the loader's FSDP mode on the CPU: 4-bit, storage = the compute dtype
        assert smoke["is_loaded_in_4bit"] and smoke["params4bit"] == 14
        assert smoke["params4bit_dtypes"] == [smoke["compute_dtype"]] == ["torch.float32"]
        assert smoke["checkpointing_after_prepare"] is False
        # torch's FSDP2 itself runs on the CPU: the 4-bit weights (float storage) are sharded over the two
        # ranks, and a forward + backward through them gives the unsharded model's loss and LoRA gradients
        fsdp2 = r["fsdp2_on_cpu"]
        assert fsdp2["q_proj_4bit"]["type"] == "DTensor"
        assert fsdp2["q_proj_4bit"]["local_shape"][0] * 2 == fsdp2["q_proj_4bit"]["global_shape"][0]
        assert fsdp2["loss_sharded"] == fsdp2["loss_unsharded"] and fsdp2["lora_grads"] == 16
        assert fsdp2["max_lora_grad_diff"] <= 1e-6


def test_outside_fsdp_the_loader_keeps_its_device_map_and_the_model_checkpoints(monkeypatch, smoke_model_cfg):
    from helpers.config import TrainConfig, config_for
    from helpers.models import model_load_kwargs
    from helpers.train.dpo import build_dpo_config, model_checkpointing

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert model_load_kwargs(smoke_model_cfg)["device_map"] == {"": "cpu"}
    assert model_checkpointing(smoke_model_cfg) is True
    assert build_dpo_config(smoke_model_cfg, config_for(TrainConfig, "smoke")).activation_checkpointing is True
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # FSDP without its own checkpointing: the model's
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "false")
    assert "device_map" not in model_load_kwargs(smoke_model_cfg) and model_checkpointing(smoke_model_cfg)


def test_the_memory_estimate_counts_the_loaders_4bit_weights_and_shards_under_fsdp(smoke_model):
    """``bench/gpu_memory.py``'s formula: its weight terms match the tiny model as loaded; FSDP divides the rest."""
    import importlib.util

    from bitsandbytes.nn import Params4bit

    spec = importlib.util.spec_from_file_location("gpu_memory", ROOT / "bench" / "gpu_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, _ = smoke_model
    config = model.config.to_dict()
    est = bench.estimate_qlora_memory(config, seq_len=128, lora_r=4)
    four_bit = [p for p in model.parameters() if isinstance(p, Params4bit)]
    assert est["bytes"]["base_nf4_packed"] == sum(p.numel() * p.element_size() for p in four_bit)
    absmax = sum(p.quant_state.absmax.numel() * p.quant_state.absmax.element_size() for p in four_bit)
    assert absmax == est["params"]["linear_nf4"] // 64  # one 8-bit absmax per 64 weights (double quantisation)
    other = sum(p.numel() for p in model.parameters() if not isinstance(p, Params4bit))
    assert est["params"]["other"] == other
    nine = bench.estimate_for_config(ROOT / "configs" / "gemma2_9b_fsdp.json", [1, 2, 4])["per_gpu"]
    assert [r["gpus"] for r in nine] == [1, 2, 4]
    assert nine[0]["total_gib"] > nine[1]["total_gib"] > nine[2]["total_gib"]
    assert nine[0]["params"]["lora"] == 42 * 16 * (2 * (3584 + 4096) + 2 * (3584 + 2048))  # q, o + k, v
    doc = (ROOT / "docs" / "scale_out.md").read_text(encoding="utf-8")  # the table there is this function's
    assert re.findall(r"^\| (\d) \|.*\*\*([\d.]+) GiB\*\* \|$", doc, re.M) == \
        [(str(r["gpus"]), f"{r['peak_gib']:.1f}") for r in nine]
    assert bench.GEMMA2_SIZES["google/gemma-2-2b-it"].items() <= __import__("transformers").Gemma2Config().to_dict().items()


def test_only_the_known_exit_abort_after_finished_work_is_tolerated(tmp_path, monkeypatch):
    """The tolerance in ``launch`` is narrow: the abort message, a nonzero exit and every rank's done-file."""
    import tests.test_distributed as here

    def fake_run(stderr: str, rc: int):
        return lambda *a, **k: subprocess.CompletedProcess(a, rc, stdout="", stderr=stderr)

    done = [tmp_path / "rank0.json", tmp_path / "rank1.json"]
    done[0].write_text("{}")
    monkeypatch.setattr(here.subprocess, "run", fake_run(f"... {EXIT_ABORT}\nAborted", -6))
    with pytest.raises(AssertionError):  # rank 1 never finished: a real failure
        launch(tmp_path, tmp_path / "probe", [], finished=done)
    done[1].write_text("{}")
    assert launch(tmp_path, tmp_path / "probe", [], finished=done).returncode == -6
    with pytest.raises(AssertionError):  # no done-files given: never tolerated
        launch(tmp_path, tmp_path / "probe", [])
    monkeypatch.setattr(here.subprocess, "run", fake_run("RuntimeError: boom", 1))
    with pytest.raises(AssertionError):  # any other failure fails, finished or not
        launch(tmp_path, tmp_path / "probe", [], finished=done)
