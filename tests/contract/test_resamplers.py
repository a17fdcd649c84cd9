"""The one list of built-in upscalers: every member is something the worker can run, and the
pixel ones are what a pixel handoff offers, the latent ones what a latent handoff offers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contract.resamplers import LATENT_RESAMPLERS, PIXEL_RESAMPLERS, Upscaler


@pytest.mark.parametrize("upscaler", PIXEL_RESAMPLERS)
def test_a_pixel_resampler_is_a_pil_filter(upscaler: Upscaler) -> None:
    picture = Image.new("RGB", (8, 8), "white")
    resample = Image.Resampling[upscaler.interpolation.upper()]
    assert picture.resize((16, 16), resample).size == (16, 16)


@pytest.mark.parametrize("upscaler", LATENT_RESAMPLERS)
def test_a_latent_resampler_is_a_torch_interpolation(upscaler: Upscaler) -> None:
    latents = torch.zeros(1, 4, 8, 8)
    assert F.interpolate(latents, size=(16, 16), mode=upscaler.interpolation).shape[-1] == 16


def test_the_two_lists_split_the_built_ins() -> None:
    assert sorted([*PIXEL_RESAMPLERS, *LATENT_RESAMPLERS]) == sorted(Upscaler)
    assert all(u.works_on_latents for u in LATENT_RESAMPLERS)
    assert not any(u.works_on_latents for u in PIXEL_RESAMPLERS)
