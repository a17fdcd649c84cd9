"""Latent spaces: what a latent tensor means, and which models can pass one to each other.

A latent tensor is only meaningful to the VAE that made it. Two models may exchange latents when
they share one latent space, which is a property of the VAE (channels, scaling and shift), not of
the tensor's shape: SD1.5 and SDXL latents are both 4-channel, yet the SDXL refiner would decode
SD1.5 latents with the wrong scaling without any error. So the rule compares latent-space identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

LatentSpaceName = Literal["sd1", "sdxl", "flux", "sd3"]


@dataclass(frozen=True)
class LatentSpace:
    name: LatentSpaceName
    channels: int
    vae_downscale: int
    scaling_factor: float
    shift_factor: float | None = None
    # Flux's transformer reads latents as 2x2 patches packed into tokens (16 ch -> 64 features).
    packed_2x2: bool = False

    def describe(self) -> str:
        packing = ", packed 2x2" if self.packed_2x2 else ""
        return f"{self.name} ({self.channels} channels{packing})"

    def as_ctx(self) -> dict[str, Any]:
        return asdict(self)


LATENT_SPACES: dict[str, LatentSpace] = {
    space.name: space
    for space in (
        LatentSpace("sd1", channels=4, vae_downscale=8, scaling_factor=0.18215),
        LatentSpace("sdxl", channels=4, vae_downscale=8, scaling_factor=0.13025),
        LatentSpace(
            "flux",
            channels=16,
            vae_downscale=8,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            packed_2x2=True,
        ),
        # SD3/3.5's VAE: 16 channels like Flux's, but other weights, scaling and shift; its
        # transformer patches latents itself, so they stay spatial between stages.
        LatentSpace(
            "sd3", channels=16, vae_downscale=8, scaling_factor=1.5305, shift_factor=0.0609
        ),
    )
}


def can_hand_off_latents(source: LatentSpace, target: LatentSpace) -> bool:
    """A latent handoff is sound only inside one latent space (one VAE)."""
    return source.name == target.name
