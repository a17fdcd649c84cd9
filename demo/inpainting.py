"""Tiny inpainting checkpoints: demo-sd15's and demo-sdxl's pipelines with a UNet of 9 input
channels (the noisy latents, the mask and the masked picture's latents, as SD1.5's and SDXL's
inpainting UNets take them), random weights. `make run`'s registry serves them as
`variant: inpainting`, from `demo-inpainting/sd15` and `demo-inpainting/sdxl`."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel


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
