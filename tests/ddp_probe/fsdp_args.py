"""What a training process started by ``accelerate launch --config_file configs/accelerate_fsdp.yaml`` builds.

Run by ``tests/test_distributed.py`` as ``-m fsdp_args`` (this folder on PYTHONPATH). On a machine
without CUDA accelerate cannot shard (it has no FSDP for CPU processes), so instead of training each
rank writes, as one JSON file in ``DDP_PROBE_DIR``, the arguments ``gemma-facts train`` would use in that FSDP run: the
environment the launcher set, accelerate's FSDP plugin built from it, the loader's ``from_pretrained``
arguments and the DPOConfig for ``configs/gemma2_9b_fsdp.json``, and the tiny smoke model loaded and
prepared through the loader's FSDP mode. Then it shards that 4-bit model with LoRA by torch's FSDP2
itself (``fully_shard`` per decoder layer and at the root, over gloo, as accelerate's FSDP2 wraps it)
and compares one forward and backward with the unsharded model's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sharded_step(model_cfg) -> dict:
    """Loss and LoRA gradients of the 4-bit smoke model + LoRA, unsharded and then sharded by FSDP2 over all ranks."""
    import torch
    import torch.distributed as dist
    from peft import get_peft_model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from helpers.models import load_model_and_tokenizer, lora_config

    if not dist.is_initialized():  # accelerate's state has usually started it (gloo for CPU tensors)
        dist.init_process_group("gloo")
    model, tok = load_model_and_tokenizer(model_cfg)
    peft = get_peft_model(model, lora_config(model_cfg)).eval()  # eval: no LoRA dropout, the two passes comparable
    torch.manual_seed(0)
    for name, param in peft.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter matter
            param.data.normal_(0.0, 0.1)
    ids = tok(["Paris is the capital of France.", "Rome is in Italy, a country in Europe."], return_tensors="pt",
              padding=True)

    def step() -> tuple[float, dict]:
        loss = peft(**ids, labels=ids["input_ids"]).loss
        loss.backward()
        grads = {n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
                 for n, p in peft.named_parameters() if p.requires_grad}
        peft.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    whole_loss, whole_grads = step()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in peft.base_model.model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(peft, mesh=mesh)
    q_proj = peft.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    sharded_loss, sharded_grads = step()
    return {"loss_unsharded": whole_loss, "loss_sharded": sharded_loss,
            "max_lora_grad_diff": max(float((sharded_grads[n] - g).abs().max()) for n, g in whole_grads.items()),
            "lora_grads": len(whole_grads), "q_proj_4bit": {"type": type(q_proj).__name__,
                                                            "global_shape": list(q_proj.shape),
                                                            "local_shape": list(q_proj.to_local().shape)}}


def main() -> None:
    import torch
    from accelerate.utils import FullyShardedDataParallelPlugin

    from helpers.config import ModelConfig, TrainConfig, config_for
    from helpers.models import (
        fsdp_activation_checkpointing,
        fsdp_launch,
        load_model_and_tokenizer,
        model_load_kwargs,
    )
    from helpers.train.dpo import build_dpo_config, mixed_precision_flags, prepare_model

    env = {k: v for k, v in os.environ.items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    plugin = FullyShardedDataParallelPlugin()
    os.environ["GEMMA_FACTS_CONFIG"] = str(ROOT / "configs" / "gemma2_9b_fsdp.json")
    model_cfg, train_cfg = config_for(ModelConfig, "colab"), config_for(TrainConfig, "colab")
    kwargs = model_load_kwargs(model_cfg)
    quant = kwargs["quantization_config"]
    # the precision an Ampere+ GPU gets (transformers refuses bf16 in a CPU process; it is not what is checked)
    precision = mixed_precision_flags(train_cfg, cuda=True, bf16_supported=True)
    dpo = build_dpo_config(model_cfg, train_cfg, precision={"fp16": False, "bf16": False})
    del os.environ["GEMMA_FACTS_CONFIG"]

    smoke_cfg = config_for(ModelConfig, "smoke")
    model, _ = load_model_and_tokenizer(smoke_cfg)
    four_bit = [p for p in model.parameters() if type(p).__name__ == "Params4bit"]
    prepared = prepare_model(model, smoke_cfg)
    record = {
        "rank": int(os.environ["RANK"]), "env": env,
        "plugin": {"fsdp_version": plugin.fsdp_version, "activation_checkpointing": plugin.activation_checkpointing,
                   "transformer_cls_names_to_wrap": plugin.transformer_cls_names_to_wrap,
                   "state_dict_type": str(plugin.state_dict_type),
                   "cpu_ram_efficient_loading": plugin.cpu_ram_efficient_loading,
                   "reshard_after_forward": plugin.reshard_after_forward},
        "helpers": {"fsdp_launch": fsdp_launch(), "fsdp_activation_checkpointing": fsdp_activation_checkpointing()},
        "gemma2_9b": {"model_id": model_cfg.model_id, "device_map": kwargs.get("device_map", "absent"),
                      "dtype": str(kwargs["dtype"]), "quant_storage": str(quant.bnb_4bit_quant_storage),
                      "compute_dtype": str(quant.bnb_4bit_compute_dtype), "quant_type": quant.bnb_4bit_quant_type,
                      "activation_checkpointing": dpo.activation_checkpointing,
                      "gradient_checkpointing": dpo.gradient_checkpointing, "gpu_precision": precision,
                      "model_gradient_checkpointing": model_cfg.gradient_checkpointing},
        "smoke_model": {"is_loaded_in_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
                        "params4bit": len(four_bit), "params4bit_dtypes": sorted({str(p.dtype) for p in four_bit}),
                        "compute_dtype": str(torch.float32),
                        "checkpointing_after_prepare": bool(getattr(prepared, "is_gradient_checkpointing", False))},
        "fsdp2_on_cpu": sharded_step(smoke_cfg),
    }
    # one file per rank: two ranks printing to the launcher's shared stdout can interleave their lines
    out = Path(os.environ["DDP_PROBE_DIR"]) / f"rank{record['rank']}-fsdp_args.json"
    out.write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main()
