"""Stable Diffusion 1.5, SDXL and the SDXL refiner: UNets with classifier-free guidance. Their
single files load with diffusers' own reader."""

from __future__ import annotations

from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

from workers.families import Pipelines

PIPELINES = {
    "sd15": Pipelines(
        StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, UNet2DConditionModel, "unet",
        guidance="halves",
    ),
    "sdxl": Pipelines(
        StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel, "unet",
        guidance="halves",
    ),
    # The refiner starts from a picture or latents: its text pipeline is its img2img.
    "sdxl-refiner": Pipelines(
        StableDiffusionXLImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel,
        "unet", guidance="halves",
    ),
}  # fmt: skip
