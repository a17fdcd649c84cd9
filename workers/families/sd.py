"""Stable Diffusion 1.5, SDXL and the SDXL refiner: UNets with classifier-free guidance. Their
single files load with diffusers' own reader; SD1.5's and SDXL's ControlNets are UNet encoders."""

from __future__ import annotations

from diffusers import (
    ControlNetModel,
    DiffusionPipeline,
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

from contract.registry import ModelEntry
from workers.families import ArchitectureMismatch, ControlNetPipelines, Pipelines


def check_inpainting(entry: ModelEntry, pipe: DiffusionPipeline) -> None:
    """The registry's `variant: inpainting` against the UNet: 9 input channels (latents, mask,
    masked picture) or 4."""
    channels = pipe.unet.config.in_channels
    if entry.inpainting and channels != 9:
        raise ArchitectureMismatch(
            f"the registry says {entry.name!r} is an inpainting checkpoint, but its UNet takes "
            f"{channels} channels, not 9; drop variant: inpainting"
        )
    if not entry.inpainting and channels == 9:
        raise ArchitectureMismatch(
            f"{entry.name!r}'s UNet takes 9 channels: it is an inpainting checkpoint; register "
            "it with variant: inpainting (it runs as a masked first stage)"
        )


PIPELINES = {
    "sd15": Pipelines(
        StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, UNet2DConditionModel, "unet",
        guidance="halves", inpaint=StableDiffusionInpaintPipeline, check_weights=check_inpainting,
        controlnet=ControlNetPipelines(
            StableDiffusionControlNetPipeline, StableDiffusionControlNetImg2ImgPipeline,
            ControlNetModel, MultiControlNetModel, several_text="per_picture",
            several_image="shared",
        ),
    ),
    "sdxl": Pipelines(
        StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel, "unet",
        guidance="halves", inpaint=StableDiffusionXLInpaintPipeline,
        check_weights=check_inpainting,
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
