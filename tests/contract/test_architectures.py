"""The architecture table agrees with the facts of each model family."""

from __future__ import annotations

import pytest

from contract.architectures import ARCHITECTURES, most_specific_first

# Denoisers that read latents as 2x2 patches: Flux's (and Chroma's, on Flux's latent space) are
# packed so by the pipeline; SD3's MMDiT patches them itself (patch_size 2). Either way a side is
# a multiple of 2 latents.
PATCHED_2X2 = {"flux", "sd35", "chroma"}
PACKED_BY_THE_PIPELINE = {"flux", "chroma"}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_size_multiple_is_the_vae_downscale_times_the_patching(name: str) -> None:
    arch = ARCHITECTURES[name]
    patching = 2 if name in PATCHED_2X2 else 1
    assert arch.size_multiple == arch.latent_space.vae_downscale * patching
    assert arch.latent_space.packed_2x2 == (name in PACKED_BY_THE_PIPELINE)


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


def test_a_derived_architecture_is_matched_before_the_one_it_derives_from() -> None:
    # A Chroma file carries Flux's key names too: its own marks must be looked for first.
    order = [a.name for a in most_specific_first()]
    assert order.index("chroma") < order.index("flux")
    assert sorted(order) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_row_says_what_its_files_look_like(name: str) -> None:
    arch = ARCHITECTURES[name]
    keys = arch.lora_keys
    assert keys.block_names or keys.cross_attention_width or keys.second_text_encoder
    assert arch.checkpoint_keys
    assert arch.text_encoders
    assert arch.native_size[0] % arch.size_multiple == 0
