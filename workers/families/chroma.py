"""Chroma: Flux schnell pruned, on Flux's latent space (latents packed 2x2, Flux's VAE), with T5
alone and real classifier-free guidance: the pipeline calls the transformer once for the prompt
and once for the negative prompt. Its single files (the transformer alone, in BFL's layout)
load with diffusers' reader, the rest from the config folder.

diffusers' Chroma img2img makes its image processor without the latent channel count, so it
resized latents handed to it (a latent hires stage) as if they were a picture; Flux's own has it,
and here Chroma's gets it too."""

from __future__ import annotations

from diffusers import (
    ChromaImg2ImgPipeline,
    ChromaInpaintPipeline,
    ChromaPipeline,
    ChromaTransformer2DModel,
    DiffusionPipeline,
)
from diffusers.image_processor import VaeImageProcessor

from workers.families import Pipelines


def take_latents(pipe: DiffusionPipeline) -> None:
    """Latents of Flux's space pass the image processor untouched, as in Flux's img2img. (Also
    run on the inpainting pipeline, which diffusers copied from Flux's: it reads the transformer's
    `guidance_embeds`, which Chroma's config lacks; Chroma embeds no guidance, so it is said.)"""
    pipe.image_processor = VaeImageProcessor(
        vae_scale_factor=pipe.vae_scale_factor * 2, vae_latent_channels=pipe.latent_channels
    )
    if "guidance_embeds" not in pipe.transformer.config:
        pipe.transformer.register_to_config(guidance_embeds=False)


PIPELINES = {
    "chroma": Pipelines(
        ChromaPipeline, ChromaImg2ImgPipeline, ChromaTransformer2DModel, "transformer",
        guidance="two_calls", image_takes_size=True, mend_image=take_latents,
        inpaint=ChromaInpaintPipeline,
    ),
}  # fmt: skip
