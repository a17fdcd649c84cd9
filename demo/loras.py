"""Tiny LoRAs for the demo models, made as trainers make them: PEFT adapters on the denoiser's
attention projections (random weights, so they change the picture), saved in diffusers' LoRA
layout. Their 32-wide keys show no real architecture, so registries name it.

`python -m demo.models build` makes one for demo-sd15 and one for demo-flux (the demo
registry's `demo-sd15-lora` and `demo-flux-lora`), into its `demo-loras` folder."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)


def build_demo_loras(demo_models: Path, out: Path) -> None:
    """The demo registry's LoRAs, into `out`, from the demo models built under `demo_models`."""
    build_sd15_lora(demo_models, out / "demo-sd15-lora.safetensors")
    build_flux_lora(demo_models, out / "demo-flux-lora.safetensors")


def build_sd15_lora(demo_models: Path, out: Path, seed: int = 0) -> Path:
    """A tiny LoRA for demo-sd15 written to `out`, made as trainers make them: PEFT adapters on
    the demo UNet's attention projections (random weights, so it changes the picture), saved in
    diffusers' LoRA layout."""
    return _build_lora(demo_models / "demo-sd15", out, seed)


def build_flux_lora(demo_models: Path, out: Path, seed: int = 0) -> Path:
    """The same for demo-flux: adapters on its transformer's attention projections."""
    return _build_lora(demo_models / "demo-flux", out, seed)


def _build_lora(folder: Path, out: Path, seed: int) -> Path:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    flux = (folder / "transformer").is_dir()
    denoiser = (
        FluxTransformer2DModel.from_pretrained(folder / "transformer")
        if flux
        else UNet2DConditionModel.from_pretrained(folder / "unet")
    )
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    config = LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False)
    denoiser.add_adapter(config)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))
    out.parent.mkdir(parents=True, exist_ok=True)
    if flux:
        FluxPipeline.save_lora_weights(
            out.parent, transformer_lora_layers=layers, weight_name=out.name
        )
    else:
        StableDiffusionPipeline.save_lora_weights(
            out.parent, unet_lora_layers=layers, weight_name=out.name
        )
    return out
