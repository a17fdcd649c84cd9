"""SD3.5: an MMDiT with three text encoders and classifier-free guidance; diffusers reads its
single files."""

from __future__ import annotations

from diffusers import (
    SD3Transformer2DModel,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3InpaintPipeline,
    StableDiffusion3Pipeline,
)

from workers.families import Pipelines

PIPELINES = {
    "sd35": Pipelines(
        StableDiffusion3Pipeline, StableDiffusion3Img2ImgPipeline, SD3Transformer2DModel,
        "transformer", guidance="halves", image_takes_size=True,
        inpaint=StableDiffusion3InpaintPipeline,
    ),
}  # fmt: skip
