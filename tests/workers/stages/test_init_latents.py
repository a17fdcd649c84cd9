"""A1111's "Just resize (latent upscale)" on every architecture, by the worker's own chain on the
tiny models: each init picture encoded at its own size by the stage's VAE, its latents stretched
to the job's size, denoised into a finite picture of that size that is not the one a stretch in
pixels gives."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from workers.models.cache import ModelCache
from workers.stages.chain import Member, run_group
from workers.stages.init_latents import latent_upscaled
from workers.stages.outcomes import Made


@pytest.fixture(scope="module")
def cache(registry: ModelRegistry) -> ModelCache:
    return ModelCache(registry)


def picture(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize("model", ["demo-sd15", "demo-flux"])
def test_each_picture_is_encoded_at_its_own_size_and_its_latents_stretched(
    cache: ModelCache, model: str
) -> None:
    loaded = cache.get(model)
    pictures = [picture(32, 48, 1), picture(48, 32, 2)]
    made = latent_upscaled(
        loaded.inpaint, pictures, (64, 64), 8, [torch.Generator().manual_seed(k) for k in (5, 6)]
    )
    channels = loaded.text.vae.config.latent_channels
    assert made.shape == (2, channels, 8, 8)  # unpacked, at the job's size over 8
    for k, (image, seed) in enumerate(zip(pictures, (5, 6), strict=True)):
        own = latent_upscaled(
            loaded.inpaint, [image], (image.width, image.height), 8,
            [torch.Generator().manual_seed(seed)],
        )  # fmt: skip
        assert own.shape[-2:] == (image.height // 8, image.width // 8)
        stretched = F.interpolate(own, size=(8, 8), mode="bilinear")
        assert torch.allclose(made[k : k + 1], stretched, atol=1e-5)


def job(registry: ModelRegistry, model: str, **fields: Any) -> Member:
    body = {
        "prompt": "a red door", "seed": 7, "width": 64, "height": 64, "strength": 0.6,
        "init_image": png(picture(32, 48, 3)), "stages": [{"model": model, "steps": 3}], **fields,
    }  # fmt: skip
    checked = check_job(JobSpec.model_validate(body), registry, JobLimits())
    return Member.first("job", checked, lambda *_: None)


@pytest.mark.parametrize(
    "model",
    ["demo-sd15", "demo-sdxl", "demo-sdxl-refiner", "demo-sd35", "demo-flux", "demo-chroma"],
)
def test_a_latent_upscale_job_draws_a_finite_picture_of_the_jobs_size(
    registry: ModelRegistry, cache: ModelCache, model: str
) -> None:
    made = {}
    for mode in ("latent_upscale", "just_resize"):
        member = job(registry, model, init_resize=mode)
        run_group([member], range(1), cache.get, "test-worker")
        assert isinstance(member.outcome, Made), member.outcome
        [out] = member.outcome.pictures
        assert out.size == (64, 64)
        made[mode] = np.asarray(out, dtype=np.int16)
    assert np.abs(made["latent_upscale"] - made["just_resize"]).mean() > 1
