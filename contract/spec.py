"""The job spec a client submits: a prompt and one to four stages run in order.

Field types and ranges live here; rules that need the model registry or the deployment's limits
(which model is which architecture, latent-space compatibility, size multiples, the pixel budget)
live in `job_rules`, so that the worker can run the same checks on what it takes from Redis.
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    UrlConstraints,
    model_validator,
)

from contract.names import MODEL_NAME_PATTERN
from contract.resamplers import Upscaler

MAX_SEED = 2**32 - 1
MAX_STAGES = 4
MAX_STEPS = 150  # a stage's
MAX_PROMPT_CHARS = 4000
# Base64 of a ~24 MB file; the decoded picture is further capped by the pixel budget.
MAX_INIT_IMAGE_CHARS = 32_000_000


class Mode(StrEnum):
    # The previous stage stops at `switch_at` of its schedule; this one denoises on (SDXL only).
    REFINE = "refine"
    # The previous stage finishes; its output is upscaled and partly re-noised for this stage.
    HIRES = "hires"
    # No model, no diffusion: the job's init image upscaled by an upscaler alone (A1111's
    # Extras tab). Such a stage is its job's only one.
    UPSCALE = "upscale"


class Handoff(StrEnum):
    LATENT = "latent"
    PIXEL = "pixel"


WebhookEvent = Literal["completed", "failed", "canceled"]
WebhookUrl = Annotated[
    AnyUrl, UrlConstraints(allowed_schemes=["http", "https"], max_length=2048, host_required=True)
]


UpscalerModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]


def _printable(text: str) -> str:
    """Refuse control characters (other than tab and newlines): they only confuse tokenizers
    and logs."""
    for position, char in enumerate(text):
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            raise ValueError(
                f"contains the control character U+{ord(char):04X} at position {position}; "
                "remove it"
            )
    return text


Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS), AfterValidator(_printable)]
Size = Annotated[int, Field(ge=64, le=4096, description="Pixels; a multiple of 8 (16 for Flux).")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraUse(_Strict):
    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN, description="GET /loras lists them.")]
    weight: Annotated[float, Field(ge=-4, le=4, allow_inf_nan=False)] = 1.0


# The preprocessors a ControlNet unit may ask for: "none" (the image is a ready control map, as
# Krita and most API callers send) and "canny" (edges, computed in the worker with no model).
ControlModule = Literal["none", "canny"]
# How a control image meets the stage's size, as A1111's resize modes do.
ControlResize = Literal["just_resize", "crop_and_resize", "resize_and_fill"]
# How an init image meets the job's size: A1111's img2img resize modes 0-3 (the last stretches
# its latents, not its pixels).
InitResize = Literal["just_resize", "crop_and_resize", "resize_and_fill", "latent_upscale"]
MAX_CONTROLNETS = 4


class ControlNetUse(_Strict):
    name: Annotated[
        str, Field(pattern=MODEL_NAME_PATTERN, description="GET /controlnets lists them.")
    ]
    image: Annotated[str | None, Field(max_length=MAX_INIT_IMAGE_CHARS)] = Field(
        None,
        description="Base64 PNG or JPEG: the control map (with module canny, the picture to "
        "take edges from). Or set image_from.",
    )
    image_from: Literal["previous"] | None = Field(
        None,
        description="`previous`: the previous stage's picture (a stage after the first, with a "
        "pixel handoff), instead of image.",
    )
    module: ControlModule = Field("none", description="`none`: image is the control map.")
    weight: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = Field(
        1.0, description="Its residuals' scale; 0 is no ControlNet."
    )
    guidance_start: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = Field(
        0.0, description="Fraction of the stage's steps where it starts to act."
    )
    guidance_end: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = Field(
        1.0, description="Fraction of the stage's steps where it stops."
    )
    resize: ControlResize = Field(
        "crop_and_resize",
        description="How the image meets the stage's size: stretched (just_resize), scaled to "
        "cover and cropped, or scaled to fit and padded (resize_and_fill).",
    )
    low_threshold: Annotated[int, Field(ge=1, le=255)] = Field(100, description="canny only.")
    high_threshold: Annotated[int, Field(ge=1, le=255)] = Field(200, description="canny only.")

    @property
    def acts(self) -> bool:
        """Whether it steers at all: weight 0, or no part of the schedule, is no ControlNet."""
        return self.weight > 0 and self.guidance_end > self.guidance_start

    @model_validator(mode="after")
    def _ordered(self) -> ControlNetUse:
        if self.guidance_end < self.guidance_start:
            raise ValueError("guidance_end is before guidance_start; swap them")
        if self.high_threshold < self.low_threshold:
            raise ValueError("high_threshold is below low_threshold; swap them")
        return self


class IpAdapterUse(_Strict):
    name: Annotated[
        str, Field(pattern=MODEL_NAME_PATTERN, description="GET /ip-adapters lists them.")
    ]
    image: Annotated[str, Field(max_length=MAX_INIT_IMAGE_CHARS)] = Field(
        description="Base64 PNG or JPEG: the picture whose look (subject, style) steers the stage."
    )
    weight: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = Field(
        1.0, description="The picture's attention scale; 0 is no IP-Adapter."
    )


class Outpaint(_Strict):
    """Pixels added on each side of the init image, for the first stage to paint."""

    left: Annotated[int, Field(ge=0, le=2048)] = 0
    right: Annotated[int, Field(ge=0, le=2048)] = 0
    top: Annotated[int, Field(ge=0, le=2048)] = 0
    bottom: Annotated[int, Field(ge=0, le=2048)] = 0

    @model_validator(mode="after")
    def _grows(self) -> Outpaint:
        if not (self.left or self.right or self.top or self.bottom):
            raise ValueError("outpaint adds nothing; give left, right, top or bottom pixels")
        return self


class Stage(_Strict):
    model: ModelName | None = Field(
        None,
        description="A registered model (see GET /models); every stage but an upscale one "
        "names one.",
    )
    steps: Annotated[int | None, Field(ge=1, le=MAX_STEPS)] = None
    guidance_scale: Annotated[float | None, Field(ge=0, le=30, allow_inf_nan=False)] = None
    prompt: Prompt | None = Field(None, description="Overrides the job's prompt for this stage.")
    negative_prompt: Prompt | None = None
    mode: Mode | None = Field(
        None,
        description="Required on every stage after the first. `upscale`: the job's only stage, "
        "which upscales its init_image with `upscaler` and runs no model.",
    )
    handoff: Handoff | None = Field(
        None,
        description="What this stage receives from the previous one. `latent` only between models "
        "of one latent space; `pixel` works between any two. Default: latent for refine, pixel "
        "for hires.",
    )
    switch_at: Annotated[float | None, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        None, description="refine: fraction of the schedule where this stage takes over (0.8)."
    )
    scale: Annotated[float | None, Field(ge=1, le=4, allow_inf_nan=False)] = Field(
        None, description="hires, upscale: factor (default 2) unless width/height are given."
    )
    width: Size | None = Field(
        None,
        description="hires: explicit target width; upscale: the picture is scaled to cover "
        "width x height and centre-cropped to it.",
    )
    height: Size | None = Field(None, description="hires, upscale: explicit target height.")
    denoise: Annotated[float | None, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        None, description="hires: how much of the schedule is re-run (default 0.5)."
    )
    upscaler: Annotated[Upscaler | UpscalerModelName | None, Field(union_mode="left_to_right")] = (
        Field(
            None,
            description="hires: lanczos/bicubic/nearest or a registered upscaler model (GET "
            "/upscalers) for pixel handoffs (none: A1111's plain Lanczos resize); latent-* for "
            "latent handoffs. upscale: required, one of the pixel ones.",
        )
    )
    loras: Annotated[list[LoraUse] | None, Field(max_length=8)] = Field(
        None, description="LoRAs for this stage's model; each must be of its architecture."
    )
    sampler: Annotated[str | None, Field(max_length=40)] = Field(
        None,
        description="A1111's sampler name (`Euler a`, `DPM++ 2M`, …; GET /models lists each "
        "model's). Default: the scheduler the model ships with.",
    )
    scheduler: Annotated[str | None, Field(max_length=40)] = Field(
        None,
        description="The sigma schedule, as A1111's `scheduler`: `automatic` (default), "
        "`uniform`, `normal`, `sgm_uniform`, `simple`, `ddim`, and `karras`, `exponential` where "
        "the sampler takes them (GET /models lists each sampler's).",
    )
    clip_skip: Annotated[int | None, Field(ge=1, le=12)] = Field(
        None,
        description="A1111's Clip skip: which of the CLIP text encoder's last layers reads the "
        "prompt; 1 is the last (the default), 2 the one before it (what many SD1.5 anime "
        "models were trained with). Models whose prompt is not read from CLIP layers (Flux, "
        "Chroma) take none.",
    )
    controlnets: Annotated[list[ControlNetUse] | None, Field(max_length=MAX_CONTROLNETS)] = Field(
        None,
        description="ControlNets steering this stage, each with its control image; each must "
        "be of the stage model's architecture.",
    )
    vae: Annotated[str | None, Field(pattern=MODEL_NAME_PATTERN)] = Field(
        None,
        description="A registered VAE (GET /vaes) to decode (and encode) this stage's pictures "
        "in place of its model's own; it must be of the model's latent space.",
    )
    masked: bool | None = Field(
        None,
        description="hires, after a masked first stage (mask or outpaint): repaint only the "
        "mask (scaled to this stage's size) and keep the rest of the upscaled picture exactly, "
        "as the first stage did (A1111 keeps the mask through its hires pass).",
    )
    # One: diffusers takes several only with one picture encoder for all, which h94's SD1.5
    # and SDXL adapters do not share.
    ip_adapters: Annotated[list[IpAdapterUse] | None, Field(max_length=1)] = Field(
        None,
        description="An IP-Adapter steering this stage with a picture; it must be of the stage "
        "model's architecture.",
    )

    @property
    def label(self) -> str:
        """What runs it, for metrics and logs: its model, or an upscale stage's upscaler."""
        return self.model or str(self.upscaler)


class JobSpec(_Strict):
    prompt: Prompt = Field(
        "",
        description="What to draw: every job needs one but an upscale job, which has none (a "
        "space will do for an empty one, as A1111's clients send).",
    )
    negative_prompt: Prompt | None = None
    seed: Annotated[int | None, Field(ge=0, le=MAX_SEED)] = Field(
        None, description="Random when absent; image i uses seed + i."
    )
    num_images: Annotated[int, Field(ge=1, le=4)] = 1
    width: Size
    height: Size
    init_image: Annotated[str | None, Field(max_length=MAX_INIT_IMAGE_CHARS)] = Field(
        None, description="Base64 PNG or JPEG: the first stage becomes img2img."
    )
    strength: Annotated[float | None, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        None, description="With init_image: how much of the picture is re-noised (default 0.75)."
    )
    init_resize: InitResize | None = Field(
        None,
        description="With init_image: how it meets the job's size, as A1111's resize modes: "
        "stretched (`just_resize`, the default), scaled to cover and centre-cropped "
        "(`crop_and_resize`), scaled to fit and padded with its edge colours "
        "(`resize_and_fill`), or encoded at its own size by the first stage's VAE and its "
        "latents stretched to the job's (`latent_upscale`, A1111's Just resize (latent "
        "upscale); not with a mask or outpaint). A mask meets it the same way.",
    )
    mask: Annotated[str | None, Field(max_length=MAX_INIT_IMAGE_CHARS)] = Field(
        None,
        description="With init_image: base64 PNG or JPEG of its size saying what the first stage "
        "repaints: white repaints, black keeps (a mask with transparency is read by its alpha: "
        "opaque repaints). Outside it and its blur the picture stays init_image's, pixel for "
        "pixel.",
    )
    mask_blur: Annotated[int | None, Field(ge=0, le=64)] = Field(
        None,
        description="With mask: pixels of Gaussian blur over its edge, where the repainted part "
        "fades into the kept one (default 4, as A1111's Mask blur).",
    )
    invert_mask: bool | None = Field(
        None, description="With mask: repaint the black part and keep the white (default false)."
    )
    outpaint: Outpaint | None = Field(
        None,
        description="With init_image: grow its canvas by these pixels and paint them (the "
        "padding is the mask: no mask is sent); width and height are the grown canvas's. "
        "The padding starts as the picture's edge pixels spread outwards (masked_content "
        "defaults to fill); the picture itself stays where it was, pixel for pixel.",
    )
    inpaint_area: Literal["whole", "masked"] | None = Field(
        None,
        description="With mask: `whole` (the default) works on the whole picture; `masked` on "
        "the mask's region only, scaled up to the job's size and pasted back (more pixels for a "
        "small mask), as A1111's Inpaint area: Only masked.",
    )
    inpaint_padding: Annotated[int | None, Field(ge=0, le=1024)] = Field(
        None,
        description="With inpaint_area masked: pixels of context around the mask's region "
        "(default 32, as A1111's Only masked padding).",
    )
    masked_content: Literal["original", "fill", "latent_noise", "latent_nothing"] | None = Field(
        None,
        description="With mask: what the repainted part starts from: init_image's pixels "
        "(`original`, the default), the colours around it blurred in (`fill`, for something new "
        "where something else stood; the default for outpaint), or, in latent space, noise "
        "(`latent_noise`) or zeros (`latent_nothing`), as A1111's Masked content.",
    )
    stages: Annotated[list[Stage], Field(min_length=1, max_length=MAX_STAGES)]
    timeout_s: Annotated[int | None, Field(ge=1, le=86400)] = Field(
        None, description="Stop the job after this many seconds (capped by the deployment)."
    )
    webhook_url: WebhookUrl | None = Field(
        None,
        description="POSTed the envelope when the job ends (signed; see docs/api.md, Webhooks).",
    )
    webhook_events: Annotated[list[WebhookEvent] | None, Field(min_length=1)] = Field(
        None, description="Which endings to POST; default all three."
    )
