"""Tiny LoRA files for the demo models, made as trainers make them: PEFT adapters on the
attention projections of the demo UNet, saved in diffusers' LoRA layout (random weights)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict


def make_sd15_lora(demo_models: Path, out: Path, seed: int = 0) -> Path:
    """A LoRA for demo-sd15, written to `out` (a .safetensors path)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(demo_models / "demo-sd15" / "unet")
    unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,  # random, so that it changes the picture
        )
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        out.parent, unet_lora_layers=layers, weight_name=out.name
    )
    return out
