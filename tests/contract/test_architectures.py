"""The architecture table agrees with the facts of each model family."""

from __future__ import annotations

import pytest

from contract.architectures import ARCHITECTURES

# Denoisers that read latents as 2x2 patches: Flux's latents are packed so between stages too;
# SD3's MMDiT patches them itself (patch_size 2). Either way a side is a multiple of 2 latents.
PATCHED_2X2 = {"flux", "sd35"}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_size_multiple_is_the_vae_downscale_times_the_patching(name: str) -> None:
    arch = ARCHITECTURES[name]
    patching = 2 if name in PATCHED_2X2 else 1
    assert arch.size_multiple == arch.latent_space.vae_downscale * patching
    assert arch.latent_space.packed_2x2 == (name == "flux")


def test_sdxl_base_and_refiner_share_a_latent_space_and_only_they_hand_over_mid_schedule() -> None:
    assert ARCHITECTURES["sdxl"].latent_space is ARCHITECTURES["sdxl-refiner"].latent_space
    assert {n for n, a in ARCHITECTURES.items() if a.mid_schedule_handoff} == {
        "sdxl",
        "sdxl-refiner",
    }
    assert not ARCHITECTURES["sdxl-refiner"].text_to_image


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_defaults_lie_inside_the_ranges(name: str) -> None:
    arch = ARCHITECTURES[name]
    low, high = arch.guidance_range
    assert low <= arch.default_guidance <= high
    assert arch.default_steps >= 1
