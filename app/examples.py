"""Worked examples shown in Swagger UI; each runs as it is on the demo registry."""

from __future__ import annotations

import base64
import io
from typing import Any

from fastapi.openapi.models import Example
from PIL import Image, ImageDraw


def _png(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode()


def _scene() -> Image.Image:
    """A 64x64 picture to inpaint: sky over a field, a grey block where the door goes."""
    scene = Image.new("RGB", (64, 64), (120, 170, 230))
    draw = ImageDraw.Draw(scene)
    draw.rectangle((0, 40, 63, 63), fill=(70, 140, 60))
    draw.rectangle((24, 20, 39, 47), fill=(128, 128, 128))
    return scene


def _door_mask() -> Image.Image:
    """White over the grey block: what the job repaints."""
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((22, 18, 41, 49), fill=255)
    return mask


JOB_EXAMPLES: dict[str, Example] = {
    "sd15_txt2img": Example(
        summary="SD1.5 text-to-image",
        value={
            "prompt": "a lighthouse at dusk, oil painting",
            "negative_prompt": "blurry",
            "seed": 42,
            "width": 256,
            "height": 256,
            "stages": [{"model": "demo-sd15", "steps": 20, "guidance_scale": 7.0}],
        },
    ),
    "sdxl_refiner": Example(
        summary="SDXL base → SDXL refiner (latent handoff at 0.8)",
        description="Both models share the SDXL latent space, so the refiner continues the "
        "base's half-denoised latents (ensemble of experts).",
        value={
            "prompt": "a red fox in fresh snow, detailed fur",
            "seed": 7,
            "width": 256,
            "height": 256,
            "stages": [
                {"model": "demo-sdxl", "steps": 20},
                {
                    "model": "demo-sdxl-refiner",
                    "mode": "refine",
                    "handoff": "latent",
                    "switch_at": 0.8,
                },
            ],
        },
    ),
    "sd15_flux_hires": Example(
        summary="SD1.5 → Flux hires fix (pixel handoff, 2×)",
        description="SD1.5 and Flux latents are incompatible (4 vs 16 channels, packed), so the "
        "SD1.5 picture is decoded, resized 2× with Lanczos and encoded by Flux's VAE.",
        value={
            "prompt": "a castle on a hill, morning light",
            "seed": 3,
            "width": 256,
            "height": 256,
            "stages": [
                {"model": "demo-sd15", "steps": 20},
                {
                    "model": "demo-flux",
                    "mode": "hires",
                    "handoff": "pixel",
                    "scale": 2,
                    "denoise": 0.5,
                    "upscaler": "lanczos",
                    "steps": 8,
                },
            ],
        },
    ),
    "flux_latent_hires": Example(
        summary="Flux → Flux latent hires fix",
        description="Same latent space: the latents are unpacked, interpolated 2× and repacked.",
        value={
            "prompt": "a glass greenhouse full of ferns",
            "seed": 11,
            "width": 256,
            "height": 256,
            "stages": [
                {"model": "demo-flux", "steps": 8},
                {
                    "model": "demo-flux",
                    "mode": "hires",
                    "handoff": "latent",
                    "scale": 2,
                    "upscaler": "latent-bilinear",
                    "denoise": 0.6,
                    "steps": 8,
                },
            ],
        },
    ),
    "sd15_inpaint": Example(
        summary="SD1.5 inpainting (a mask on the init image)",
        description="White in `mask` repaints, black keeps; outside the mask and its 4-pixel "
        "blur the result is `init_image`, pixel for pixel (the init image is pasted back, as "
        "A1111 does).",
        value={
            "prompt": "a red wooden door",
            "seed": 11,
            "width": 64,
            "height": 64,
            "init_image": _png(_scene()),
            "mask": _png(_door_mask()),
            "strength": 0.9,
            "mask_blur": 4,
            "masked_content": "original",
            "stages": [{"model": "demo-sd15", "steps": 12}],
        },
    ),
    "sd15_outpaint": Example(
        summary="SD1.5 outpainting (the canvas grown 32 pixels to the right)",
        description="The init image keeps its pixels where they were; the padding is the mask "
        "(no mask is sent), started from the picture's edge colours (masked_content fill). "
        "width and height are the grown canvas's: 64 + 32 by 64.",
        value={
            "prompt": "a field under a blue sky",
            "seed": 5,
            "width": 96,
            "height": 64,
            "init_image": _png(_scene()),
            "outpaint": {"right": 32},
            "strength": 1.0,
            "stages": [{"model": "demo-sd15", "steps": 12}],
        },
    ),
    "upscale": Example(
        summary="Upscale a picture (no model: an upscaler alone, as A1111's Extras)",
        description="The only stage upscales `init_image` by `scale` with a built-in resampler "
        "or an upscaler model (GET /upscalers); width and height are the picture's. No prompt, "
        "no model, no steps.",
        value={
            "width": 64,
            "height": 64,
            "init_image": _png(_scene()),
            "stages": [{"mode": "upscale", "upscaler": "lanczos", "scale": 2}],
        },
    ),
    "refused_latent_mismatch": Example(
        summary="Refused: SD1.5 latents into Flux (422)",
        description="Answered 422 `latent_space_mismatch` before anything is queued; change "
        "`handoff` to `pixel` to make it run.",
        value={
            "prompt": "a castle on a hill",
            "width": 256,
            "height": 256,
            "stages": [
                {"model": "demo-sd15"},
                {"model": "demo-flux", "mode": "hires", "handoff": "latent", "scale": 2},
            ],
        },
    ),
}

LATENT_MISMATCH_RESPONSE: dict[str, Any] = {
    "detail": [
        {
            "type": "latent_space_mismatch",
            "loc": ["body", "stages", 1, "handoff"],
            "msg": "stage 1 cannot take latents from stage 0: 'demo-sd15' (sd15) makes latents in "
            "latent space sd1 (4 channels), but 'demo-flux' (flux) works in latent space flux "
            "(16 channels, packed 2x2). Latents are only meaningful to the VAE that made them. "
            "Use handoff: pixel (decode with 'demo-sd15', resize, encode with 'demo-flux').",
            "ctx": {
                "from_latent_space": {
                    "name": "sd1",
                    "channels": 4,
                    "vae_downscale": 8,
                    "scaling_factor": 0.18215,
                    "shift_factor": None,
                    "packed_2x2": False,
                },
                "to_latent_space": {
                    "name": "flux",
                    "channels": 16,
                    "vae_downscale": 8,
                    "scaling_factor": 0.3611,
                    "shift_factor": 0.1159,
                    "packed_2x2": True,
                },
            },
        }
    ]
}
