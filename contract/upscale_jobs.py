"""Upscale jobs: a job whose only stage is `mode: upscale` upscales its init image with an
upscaler (a resampler, or an upscaler model: GET /upscalers) and runs no model, as A1111's
Extras tab does (`/sdapi/v1/extra-single-image`). It is queued, run by a worker and stored like
any other job. What only a diffusion stage takes (a model, steps, prompts, LoRAs, a mask, …) it
refuses, naming the field: ignoring it would promise what the job does not do.
"""

from __future__ import annotations

from contract.registry import ModelRegistry
from contract.resamplers import PIXEL_RESAMPLERS, Upscaler
from contract.spec import Handoff, JobSpec, Mode, Stage
from contract.stage_sizes import hires_size, hires_size_locs
from contract.upscalers import upscaler_violation
from contract.violations import Violation

# What a stage has only where a model runs.
_MODEL_FIELDS = (
    "model", "steps", "guidance_scale", "prompt", "negative_prompt", "handoff", "switch_at",
    "denoise", "loras", "sampler", "scheduler", "clip_skip", "controlnets", "vae", "masked",
    "ip_adapters",
)  # fmt: skip
# What a job has only where its first stage denoises.
_DENOISING_FIELDS = (
    "negative_prompt", "strength", "mask", "mask_blur", "invert_mask", "outpaint",
    "inpaint_area", "inpaint_padding", "masked_content",
)  # fmt: skip


def upscale_job(spec: JobSpec) -> bool:
    """Whether any stage upscales (then it must be the job's only one)."""
    return any(stage.mode is Mode.UPSCALE for stage in spec.stages)


def check_upscale_job(
    spec: JobSpec, registry: ModelRegistry, max_pixels: int, violations: list[Violation]
) -> list[Stage]:
    """The upscale stage normalized (its size and upscaler filled in), or violations."""
    if len(spec.stages) > 1:
        i = next(i for i, s in enumerate(spec.stages) if s.mode is Mode.UPSCALE)
        violations.append(
            Violation(
                "field_not_allowed",
                ("stages", i, "mode"),
                "an upscale stage is its job's only one: it upscales init_image; to upscale a "
                "generated picture, use a hires stage (its denoise redraws the detail), or "
                "send the picture to an upscale job of its own",
            )
        )
        return list(spec.stages)
    stage = spec.stages[0]
    for name in _MODEL_FIELDS:
        if getattr(stage, name) is not None:
            violations.append(
                Violation(
                    "field_not_allowed",
                    ("stages", 0, name),
                    f"an upscale stage runs no model, so it takes no {name}; remove it",
                )
            )
    for name in ("prompt", *_DENOISING_FIELDS):
        if getattr(spec, name):
            violations.append(
                Violation(
                    "field_not_allowed",
                    (name,),
                    f"an upscale job draws nothing, so it takes no {name}; remove it",
                )
            )
    if spec.num_images != 1:
        violations.append(
            Violation(
                "field_not_allowed",
                ("num_images",),
                "an upscale job makes one picture, from its init_image; send num_images 1",
            )
        )
    if spec.init_image is None:
        violations.append(
            Violation(
                "missing", ("init_image",), "an upscale job upscales its init_image; send one"
            )
        )
    if spec.init_resize == "latent_upscale":
        violations.append(
            Violation(
                "field_not_allowed",
                ("init_resize",),
                "latent_upscale needs a model's VAE, and an upscale job runs none; use "
                "just_resize, crop_and_resize or resize_and_fill",
            )
        )
    upscaler = _upscaler(stage, registry, violations)
    width, height = hires_size(0, stage, (spec.width, spec.height), violations)
    if width * height > max_pixels:
        loc, _ = hires_size_locs(0, stage)
        violations.append(
            Violation(
                "pixel_budget_exceeded",
                loc,
                f"the upscaled picture would be {width}x{height} = {width * height} pixels, "
                f"over this deployment's budget of {max_pixels} pixels; ask for a smaller "
                "scale or size",
                {"max_pixels": max_pixels, "pixels": width * height},
            )
        )
    return [stage.model_copy(update={"width": width, "height": height, "upscaler": upscaler})]


def _upscaler(
    stage: Stage, registry: ModelRegistry, violations: list[Violation]
) -> Upscaler | str | None:
    loc = ("stages", 0, "upscaler")
    served = sorted(registry.upscalers)
    pixel = ", ".join([*PIXEL_RESAMPLERS, *served])
    if stage.upscaler is None:
        violations.append(
            Violation("missing", loc, f"name the upscale stage's upscaler: one of {pixel}")
        )
        return None
    if isinstance(stage.upscaler, Upscaler) and stage.upscaler.works_on_latents:
        violations.append(
            Violation(
                "upscaler_handoff_mismatch",
                loc,
                f"upscaler {stage.upscaler.value!r} works on latents, and an upscale job has a "
                f"picture; use one of {pixel}",
            )
        )
        return stage.upscaler
    misfit = upscaler_violation(0, stage.upscaler, Handoff.PIXEL, served)
    if misfit is not None:
        violations.append(misfit)
    return stage.upscaler
