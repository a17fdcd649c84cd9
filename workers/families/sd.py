"""Stable Diffusion 1.5, SDXL and the SDXL refiner: UNets with classifier-free guidance. Their
single files load with diffusers' own reader; SD1.5's and SDXL's ControlNets are UNet encoders."""

from __future__ import annotations

from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

from workers.families import ControlNetPipelines, Pipelines

PIPELINES = {
    "sd15": Pipelines(
        StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, UNet2DConditionModel, "unet",
        guidance="halves", inpaint=StableDiffusionInpaintPipeline,
        controlnet=ControlNetPipelines(
            StableDiffusionControlNetPipeline, StableDiffusionControlNetImg2ImgPipeline,
            ControlNetModel, MultiControlNetModel, several_text="per_picture",
            several_image="shared",
        ),
    ),
    "sdxl": Pipelines(
        StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel, "unet",
        guidance="halves", inpaint=StableDiffusionXLInpaintPipeline,
        controlnet=ControlNetPipelines(
            StableDiffusionXLControlNetPipeline, StableDiffusionXLControlNetImg2ImgPipeline,
            ControlNetModel, MultiControlNetModel, several_text="shared",
            several_image="shared",
        ),
    ),
    # The refiner starts from a picture or latents: its text pipeline is its img2img.
    "sdxl-refiner": Pipelines(
        StableDiffusionXLImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel,
        "unet", guidance="halves", inpaint=StableDiffusionXLInpaintPipeline,
    ),
}  # fmt: skip
