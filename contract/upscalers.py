"""Which upscaler a hires stage may use: built-in resamplers, or upscaler models on pictures.

An upscaler model (ESRGAN and its kin) takes a picture and returns a larger one; it has nothing to
say about latents, so it only fits a pixel handoff, like `lanczos`. The `latent-*` resamplers
interpolate latents and only fit a latent handoff.
"""

from __future__ import annotations

from contract.registry import ModelRegistry
from contract.resamplers import LATENT_RESAMPLERS, PIXEL_RESAMPLERS, Upscaler
from contract.spec import Handoff, Stage
from contract.violations import Violation

_PIXEL = ", ".join(PIXEL_RESAMPLERS)
_LATENT = ", ".join(LATENT_RESAMPLERS[:-1]) + f" or {LATENT_RESAMPLERS[-1]}"


def check_upscaler(
    i: int, stage: Stage, handoff: Handoff, registry: ModelRegistry, violations: list[Violation]
) -> Upscaler | str:
    """The stage's upscaler, defaulted by its handoff; a violation where it does not exist or
    does not fit the handoff."""
    latent = handoff is Handoff.LATENT
    chosen = stage.upscaler or (Upscaler.LATENT_BILINEAR if latent else Upscaler.LANCZOS)
    violation = upscaler_violation(i, chosen, handoff, served=sorted(registry.upscalers))
    if violation is not None:
        violations.append(violation)
    return chosen


def upscaler_violation(
    i: int, chosen: Upscaler | str, handoff: Handoff, served: list[str]
) -> Violation | None:
    """Why stage i's upscaler cannot be used with its handoff (`served`: the upscaler models
    there are), or None. The gateway and the worker both word it so."""
    latent = handoff is Handoff.LATENT
    loc = ("stages", i, "upscaler")
    if isinstance(chosen, Upscaler):
        if chosen.works_on_latents == latent:
            return None
        wanted = _LATENT if latent else f"{_PIXEL} or an upscaler model (GET /upscalers)"
        return Violation(
            "upscaler_handoff_mismatch",
            loc,
            f"upscaler {chosen.value!r} does not fit handoff {handoff.value!r}; use {wanted}",
        )
    if chosen not in served:
        return Violation(
            "unknown_upscaler",
            loc,
            f"upscaler {chosen!r} is neither a built-in one ({_PIXEL}, {_LATENT}) nor a "
            f"registered upscaler model ({', '.join(served) or 'none registered'}; GET "
            "/upscalers)",
            {"upscaler": chosen},
        )
    if latent:
        return Violation(
            "upscaler_handoff_mismatch",
            loc,
            f"upscaler {chosen!r} is a model that upscales pictures, but this stage's handoff "
            "is 'latent', which passes latents and no picture; use handoff: pixel with it, or "
            f"{_LATENT} for a latent handoff",
        )
    return None
