"""An init image met with the job's size in latent space, as A1111's "Just resize (latent
upscale)" (img2img resize mode 3): encoded at its own size by the stage's VAE, its latents
stretched (bilinearly, as A1111 does) to the job's size; the img2img pipeline then noises and
denoises them as it would latents it encoded itself. Unlike a stretch in pixels, the VAE sees the
picture as it was drawn, and the denoiser fills in the detail the stretch lacks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from PIL import Image


def latent_upscaled(
    encoder: DiffusionPipeline,
    images: list[Image.Image],
    size: tuple[int, int],
    factor: int,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """Each picture's latents (one generator per picture draws its encoding) at `size` over the
    VAE's downscale `factor`, scaled as the family's pipelines scale their own. `encoder` is a
    pipeline of the stage's model whose `_encode_vae_image` encodes so (its inpainting one:
    every family has one)."""
    width, height = size
    rows = []
    for image, generator in zip(images, generators, strict=True):
        # At its own size, less what the VAE's grid cannot hold (a few pixels at most).
        pixels = encoder.image_processor.preprocess(image, height=image.height, width=image.width)
        pixels = pixels.to(device=encoder.vae.device, dtype=encoder.vae.dtype)
        with torch.no_grad():
            latents = encoder._encode_vae_image(image=pixels, generator=generator)
        rows.append(
            F.interpolate(latents, size=(height // factor, width // factor), mode="bilinear")
        )
    return torch.cat(rows)
