"""Tiny inpainting checkpoints: demo-sd15's and demo-sdxl's pipelines with a UNet of 9 input
channels (the noisy latents, the mask and the masked picture's latents, as SD1.5's and SDXL's
inpainting UNets take them), and demo-flux's with a FLUX.1 Fill transformer (the packed
latents, the masked picture's packed latents and the mask, one value per pixel under each
latent, packed too), random weights. `make run`'s registry serves them as `variant:
inpainting` (`fill` for Flux), from `demo-inpainting/{sd15,sdxl,flux}`."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FluxTransformer2DModel, UNet2DConditionModel


def build_demo_inpainting(demo_models: Path, out: Path) -> None:
    for seed, (name, folder) in enumerate((("sd15", "demo-sd15"), ("sdxl", "demo-sdxl"))):
        pipe = DiffusionPipeline.from_pretrained(demo_models / folder, local_files_only=True)
        config = dict(pipe.unet.config)
        config["in_channels"] = 9
        with torch.random.fork_rng():
            torch.manual_seed(900 + seed)
            unet = UNet2DConditionModel.from_config(config)
        pipe.register_modules(unet=unet)
        pipe.save_pretrained(out / name)
    pipe = DiffusionPipeline.from_pretrained(demo_models / "demo-flux", local_files_only=True)
    config = dict(pipe.transformer.config)
    packed = config["in_channels"]  # 16 latent channels, 2x2-packed
    mask = 4 * pipe.vae_scale_factor**2  # the mask at pixel resolution, folded under each latent
    config.update(in_channels=2 * packed + mask, out_channels=packed)
    with torch.random.fork_rng():
        torch.manual_seed(902)
        transformer = FluxTransformer2DModel.from_config(config)
    pipe.register_modules(transformer=transformer)
    pipe.save_pretrained(out / "flux")
