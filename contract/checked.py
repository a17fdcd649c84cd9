"""A job once the rules have passed it: every default filled in, every stage's kind and size
known, so nothing downstream asks "is this set?" again.

`contract.job_rules.check_job` is the only maker of these. The gateway stores the checked spec,
the envelope serves it, the worker re-checks what it reads back into one and runs it, the PNG
writer and the A1111 face read it. Picture k's seed lives here, and only here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from contract.resamplers import Upscaler
from contract.spec import (
    MAX_SEED,
    MAX_STAGES,
    MAX_STEPS,
    Handoff,
    JobSpec,
    Mode,
    ModelName,
    Size,
    Stage,
    UpscalerModelName,
)

Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Guidance = Annotated[float, Field(ge=0, le=30, allow_inf_nan=False)]


class FirstStage(Stage):
    """Stage 0: from text, or from the init image; it takes over from nothing."""

    model: ModelName
    steps: Steps
    guidance_scale: Guidance
    mode: None = None
    handoff: None = None


class RefineStage(Stage):
    """Continues the previous stage's latents from `switch_at` of its schedule (SDXL)."""

    model: ModelName
    steps: Steps
    guidance_scale: Guidance
    mode: Literal[Mode.REFINE]
    handoff: Literal[Handoff.LATENT]
    switch_at: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]


class HiresStage(Stage):
    """Upscales the previous stage's output to width x height and re-runs `denoise` of its
    schedule on it."""

    model: ModelName
    steps: Steps
    guidance_scale: Guidance
    mode: Literal[Mode.HIRES]
    handoff: Handoff
    width: Size
    height: Size
    denoise: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    upscaler: Annotated[Upscaler | UpscalerModelName, Field(union_mode="left_to_right")]


class UpscaleStage(Stage):
    """A job's only stage: its init image upscaled by `upscaler` to width x height (scaled to
    cover it and centre-cropped); no model, no steps."""

    model: None = None
    mode: Literal[Mode.UPSCALE]
    width: Size
    height: Size
    upscaler: Annotated[Upscaler | UpscalerModelName, Field(union_mode="left_to_right")]


def _kind(stage: Any) -> str:
    mode = stage.get("mode") if isinstance(stage, dict) else getattr(stage, "mode", None)
    return "first" if mode is None else str(mode)


CheckedStage = Annotated[
    Annotated[FirstStage, Tag("first")]
    | Annotated[RefineStage, Tag("refine")]
    | Annotated[HiresStage, Tag("hires")]
    | Annotated[UpscaleStage, Tag("upscale")],
    Discriminator(_kind),
]


class CheckedSpec(JobSpec):
    """A job spec as the rules normalized it (what Redis keeps and the envelope serves)."""

    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]
    timeout_s: Annotated[int, Field(ge=1, le=86400)]
    # Each stage validated into its kind. (mypy holds list[Stage] invariant; these lists are
    # never appended to, and a Sequence in JobSpec would change the request's error types.)
    stages: Annotated[  # type: ignore[assignment]
        list[CheckedStage], Field(min_length=1, max_length=MAX_STAGES)
    ]

    @model_validator(mode="after")
    def _first_stage_first(self) -> CheckedSpec:
        if self.upscales:
            if len(self.stages) > 1:
                raise ValueError("an upscale stage is its job's only one")
            return self
        kinds = [isinstance(stage, FirstStage) for stage in self.stages]
        if kinds != [True] + [False] * (len(kinds) - 1):
            raise ValueError("the first stage and only the first has no mode")
        return self

    @property
    def upscales(self) -> bool:
        """An upscale job: its init image upscaled, no model run."""
        return isinstance(self.stages[0], UpscaleStage)

    @property
    def has_init_image(self) -> bool:
        """Whether the job starts from an init image (kept apart from the spec in the store)."""
        return self.strength is not None or self.upscales

    def seed_of(self, k: int) -> int:
        """Picture k's seed: the job's seed plus k."""
        return self.seed + k

    @property
    def seeds(self) -> list[int]:
        return [self.seed_of(k) for k in range(self.num_images)]

    def size_of(self, index: int) -> tuple[int, int]:
        """The output size of stage `index`: the job's, until a hires stage sets its own."""
        width, height = self.width, self.height
        for stage in self.stages[: index + 1]:
            if isinstance(stage, HiresStage | UpscaleStage):
                width, height = stage.width, stage.height
        return width, height

    def prompt_of(self, stage: Stage) -> str:
        """The stage's own prompt, else the job's."""
        return stage.prompt or self.prompt

    def negative_prompt_of(self, stage: Stage) -> str | None:
        """The stage's own negative prompt, else the job's."""
        return stage.negative_prompt if stage.negative_prompt is not None else self.negative_prompt
