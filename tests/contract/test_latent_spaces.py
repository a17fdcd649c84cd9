"""Latent spaces: identity decides a latent handoff, never the tensor's shape."""

from __future__ import annotations

from contract.latent_spaces import LATENT_SPACES, LatentSpace, can_hand_off_latents


def test_only_the_same_latent_space_may_hand_off_latents() -> None:
    sd1, sdxl, flux = LATENT_SPACES["sd1"], LATENT_SPACES["sdxl"], LATENT_SPACES["flux"]
    assert can_hand_off_latents(sdxl, sdxl)
    assert not can_hand_off_latents(sd1, sdxl)  # both 4-channel, other VAE scaling
    assert not can_hand_off_latents(sd1, flux)
    assert sd1.channels == sdxl.channels


def test_a_space_with_the_same_shape_but_another_vae_is_another_space() -> None:
    # SD3 would be 16-channel like Flux: its latents must still be refused by Flux.
    sd3 = LatentSpace(
        "sd3", channels=16, vae_downscale=8, scaling_factor=1.5305, shift_factor=0.0609
    )
    assert not can_hand_off_latents(sd3, LATENT_SPACES["flux"])


def test_description_and_context_name_channels_and_packing() -> None:
    flux = LATENT_SPACES["flux"]
    assert flux.describe() == "flux (16 channels, packed 2x2)"
    assert LATENT_SPACES["sd1"].describe() == "sd1 (4 channels)"
    assert flux.as_ctx() == {
        "name": "flux",
        "channels": 16,
        "vae_downscale": 8,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
        "packed_2x2": True,
    }
