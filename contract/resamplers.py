"""The built-in upscalers of a hires stage: resamplers of pictures or of latents. The one list;
the spec, the checks, the worker and the A1111 face all name these members.

An upscaler model (ESRGAN and its kin, the registry's `upscalers:`) is named by its registry
name instead; none may take a name from this list.
"""

from __future__ import annotations

from enum import StrEnum


class Upscaler(StrEnum):
    LANCZOS = "lanczos"
    BICUBIC = "bicubic"
    NEAREST = "nearest"
    # A1111's "None": no upscaler, the picture resized to the stage's size with Lanczos.
    NONE = "none"
    LATENT_BILINEAR = "latent-bilinear"
    LATENT_BILINEAR_ANTIALIASED = "latent-bilinear-antialiased"
    LATENT_BICUBIC = "latent-bicubic"
    LATENT_BICUBIC_ANTIALIASED = "latent-bicubic-antialiased"
    LATENT_NEAREST = "latent-nearest"
    LATENT_NEAREST_EXACT = "latent-nearest-exact"

    @property
    def works_on_latents(self) -> bool:
        return self.value.startswith("latent-")

    @property
    def interpolation(self) -> str:
        """The interpolation's own name (PIL's resampling filter, or torch's interpolate mode)."""
        if self is Upscaler.NONE:
            return "lanczos"
        return self.value.removeprefix("latent-").removesuffix("-antialiased")

    @property
    def antialiased(self) -> bool:
        """Whether torch's interpolate low-pass filters first (A1111's `… antialiased` modes)."""
        return self.value.endswith("-antialiased")


PIXEL_RESAMPLERS = [u for u in Upscaler if not u.works_on_latents]
LATENT_RESAMPLERS = [u for u in Upscaler if u.works_on_latents]
