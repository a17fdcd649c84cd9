"""Result PNGs carry A1111's `parameters` text and the normalized spec."""

from __future__ import annotations

import io
import json

from PIL import Image

from contract.spec import JobSpec
from workers.png import SPEC_CHUNK, encode_png, parameters_text, sampler_name

HIRES = JobSpec.model_validate(
    {
        "prompt": "a castle",
        "negative_prompt": "blurry",
        "seed": 3,
        "width": 256,
        "height": 256,
        "stages": [
            {"model": "sd", "steps": 20, "guidance_scale": 7.0},
            {
                "model": "flux",
                "mode": "hires",
                "scale": 2.0,
                "steps": 8,
                "denoise": 0.5,
                "upscaler": "lanczos",
                "width": 512,
                "height": 512,
            },
        ],
    }
)


def test_parameters_read_as_a1111_writes_them() -> None:
    prompt, negative, settings = parameters_text(HIRES, 1, "Euler").split("\n")
    assert prompt == "a castle"
    assert negative == "Negative prompt: blurry"
    assert settings == (
        "Steps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 4, Size: 256x256, Model: sd, "
        "Denoising strength: 0.5, Hires upscale: 2.0, Hires steps: 8, Hires upscaler: lanczos, "
        "Hires checkpoint: flux"
    )


def test_the_png_carries_both_chunks_and_the_same_pixels() -> None:
    picture = Image.new("RGB", (8, 8), (10, 20, 30))
    data = encode_png(picture, "p\nSteps: 1", HIRES.model_dump_json())
    decoded = Image.open(io.BytesIO(data))
    assert decoded.text["parameters"] == "p\nSteps: 1"
    assert JobSpec.model_validate(json.loads(decoded.text[SPEC_CHUNK])) == HIRES
    assert decoded.convert("RGB").getpixel((0, 0)) == (10, 20, 30)
    assert encode_png(picture) == encode_png(picture)  # deterministic bytes


def test_schedulers_are_named_as_sd_tools_name_them() -> None:
    assert sampler_name("EulerAncestralDiscreteScheduler") == "Euler a"
    assert sampler_name("SomethingNew") == "SomethingNew"
