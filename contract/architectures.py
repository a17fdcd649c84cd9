"""What each model architecture can do, as one table.

Every architecture rule the gateway and the workers enforce reads this table; adding an
architecture (say SD3, latent space `sd3`, 16 channels) is one row here and one in
`latent_spaces.LATENT_SPACES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from contract.latent_spaces import LATENT_SPACES, LatentSpace

# The architectures' names, as clients see them (an enum in the OpenAPI document).
ArchitectureName = Literal["sd15", "sdxl", "sdxl-refiner", "flux", "sd35"]


@dataclass(frozen=True)
class Architecture:
    name: ArchitectureName
    latent_space: LatentSpace
    # Pixel sizes must be multiples of this (VAE downscale, times 2 where latents are packed 2x2).
    size_multiple: int
    # False for refiner-only models: they need a picture or latents to start from.
    text_to_image: bool
    # Takes denoising_end / denoising_start, i.e. can hand over mid-schedule (ensemble of experts).
    mid_schedule_handoff: bool
    negative_prompt: bool
    guidance_range: tuple[float, float]
    default_guidance: float
    default_steps: int


# fmt: off
ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "sd15", LATENT_SPACES["sd1"], size_multiple=8, text_to_image=True,
            mid_schedule_handoff=False, negative_prompt=True, guidance_range=(0.0, 30.0),
            default_guidance=7.0, default_steps=25,
        ),
        Architecture(
            "sdxl", LATENT_SPACES["sdxl"], size_multiple=8, text_to_image=True,
            mid_schedule_handoff=True, negative_prompt=True, guidance_range=(0.0, 30.0),
            default_guidance=7.0, default_steps=30,
        ),
        Architecture(
            "sdxl-refiner", LATENT_SPACES["sdxl"], size_multiple=8, text_to_image=False,
            mid_schedule_handoff=True, negative_prompt=True, guidance_range=(0.0, 30.0),
            default_guidance=7.0, default_steps=30,
        ),
        Architecture(
            "flux", LATENT_SPACES["flux"], size_multiple=16, text_to_image=True,
            mid_schedule_handoff=False, negative_prompt=False, guidance_range=(0.0, 10.0),
            default_guidance=3.5, default_steps=28,
        ),
        # SD3.5 Medium/Large: MMDiT on 2x2 patches (sizes multiples of 16), flow matching.
        Architecture(
            "sd35", LATENT_SPACES["sd3"], size_multiple=16, text_to_image=True,
            mid_schedule_handoff=False, negative_prompt=True, guidance_range=(0.0, 30.0),
            default_guidance=4.5, default_steps=28,
        ),
    )
}
# fmt: on
