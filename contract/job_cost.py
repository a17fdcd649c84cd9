"""What a job costs: the denoising steps each stage runs, and the work of the whole job in
megapixel-steps (pixels denoised × steps, summed over stages and images), which admission
bounds per deployment so that one request cannot hold a GPU for an hour."""

from __future__ import annotations

import math

from contract.spec import JobSpec, Mode
from contract.stage_sizes import stage_size
from contract.violations import JobRejected, Violation


def planned_steps(spec: JobSpec) -> list[float]:
    """Denoising steps each stage of a normalized spec will run (progress, ETA and cost)."""
    planned: list[float] = []
    for i, stage in enumerate(spec.stages):
        steps = float(stage.steps or 1)
        if stage.mode is Mode.REFINE:
            steps *= 1 - (stage.switch_at or 0)
        elif stage.mode is Mode.HIRES:
            steps *= stage.denoise or 1
        elif spec.strength is not None:
            steps *= spec.strength
        following = spec.stages[i + 1] if i + 1 < len(spec.stages) else None
        if following is not None and following.mode is Mode.REFINE:
            steps *= following.switch_at or 1
        planned.append(max(steps, 1.0))
    return planned


def megapixel_steps(spec: JobSpec) -> float:
    """The job's work: for every image, each stage's output megapixels times its steps."""
    per_image = sum(
        stage_size(spec, i)[0] * stage_size(spec, i)[1] / 1e6 * steps
        for i, steps in enumerate(planned_steps(spec))
    )
    return per_image * spec.num_images


def check_cost(spec: JobSpec, max_megapixel_steps: float) -> None:
    """Refuse (JobRejected) a normalized spec with a stage that would run no denoising step, or
    whose work is over the deployment's budget."""
    _check_denoising_steps(spec)
    cost = megapixel_steps(spec)
    if cost > max_megapixel_steps:
        raise JobRejected(
            [
                Violation(
                    "job_too_costly",
                    ("stages",),
                    f"this job is {cost:.0f} megapixel-steps (each stage's output megapixels × "
                    f"its steps, × {spec.num_images} images); this deployment takes at most "
                    f"{max_megapixel_steps:g}. Ask for fewer images, steps or pixels, or "
                    "split it into several jobs",
                    {"megapixel_steps": round(cost, 1), "le": max_megapixel_steps},
                )
            ]
        )


def _check_denoising_steps(spec: JobSpec) -> None:
    """A stage that starts from a picture re-runs int(steps × strength) denoising steps (a
    hires stage's `denoise`, an img2img first stage's `strength`): zero fails deep in the model
    ("cannot reshape tensor of 0 elements") after the job was queued. A refiner's share is
    counted in timesteps past `switch_at`, which diffusers rounds up: always at least one."""
    violations = []
    for i, stage in enumerate(spec.stages):
        assert stage.steps is not None  # normalized
        if stage.mode is Mode.HIRES:
            assert stage.denoise is not None  # normalized
            name, share = "denoise", stage.denoise
        elif i == 0 and spec.strength is not None:
            name, share = "strength", spec.strength
        else:
            continue
        if int(stage.steps * share + 1e-9) < 1:
            least = math.ceil(1 / share - 1e-9)
            violations.append(
                Violation(
                    "too_few_steps",
                    ("stages", i, "steps"),
                    f"stage {i} would run no denoising step: steps {stage.steps} × {name} "
                    f"{share:g} is below 1; ask for at least {least} steps",
                    {"steps": stage.steps, name: share, "min_steps": least},
                )
            )
    if violations:
        raise JobRejected(violations)
