"""What a job costs: the denoising steps each stage runs, and the work of the whole job in
megapixel-steps (pixels denoised × steps, summed over stages and images), which admission
bounds per deployment so that one request cannot hold a GPU for an hour."""

from __future__ import annotations

import math

from contract.checked import CheckedSpec, HiresStage, RefineStage, UpscaleStage
from contract.spec import MAX_STEPS
from contract.violations import JobRejected, Violation


def planned_steps(spec: CheckedSpec) -> list[float]:
    """Denoising steps each stage will run (progress, ETA and cost)."""
    planned: list[float] = []
    for i, stage in enumerate(spec.stages):
        if isinstance(stage, UpscaleStage):  # no denoising: one unit of progress
            planned.append(1.0)
            continue
        steps = float(stage.steps)
        if isinstance(stage, RefineStage):
            steps *= 1 - stage.switch_at
        elif isinstance(stage, HiresStage):
            steps *= stage.denoise
        elif spec.strength is not None:
            steps *= spec.strength
        following = spec.stages[i + 1] if i + 1 < len(spec.stages) else None
        if isinstance(following, RefineStage):
            steps *= following.switch_at
        planned.append(max(steps, 1.0))
    return planned


def megapixel_steps(spec: CheckedSpec) -> float:
    """The job's work: for every image, each stage's output megapixels times its steps."""
    per_image = sum(
        spec.size_of(i)[0] * spec.size_of(i)[1] / 1e6 * steps
        for i, steps in enumerate(planned_steps(spec))
    )
    return per_image * spec.num_images


def check_cost(spec: CheckedSpec, max_megapixel_steps: float) -> None:
    """Refuse (JobRejected) a checked spec with a stage that would run no denoising step, or
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


def _check_denoising_steps(spec: CheckedSpec) -> None:
    """A stage that starts from a picture re-runs int(steps × strength) denoising steps (a
    hires stage's `denoise`, an img2img first stage's `strength`): zero fails deep in the model
    ("cannot reshape tensor of 0 elements") after the job was queued. A refiner's share is
    counted in timesteps past `switch_at`, which diffusers rounds up: always at least one."""
    violations = []
    for i, stage in enumerate(spec.stages):
        share_at: tuple[str | int, ...]
        if isinstance(stage, UpscaleStage):
            continue  # no denoising
        if isinstance(stage, HiresStage):
            name, share, share_at = "denoise", stage.denoise, ("stages", i, "denoise")
        elif i == 0 and spec.strength is not None:
            name, share, share_at = "strength", spec.strength, ("strength",)
        else:
            continue
        if int(stage.steps * share + 1e-9) < 1:
            # A share so small that no step count the spec allows is enough (1 / 5e-324 is
            # infinite): the share is what to raise.
            least = math.ceil(1 / share - 1e-9) if share * MAX_STEPS >= 1 else None
            fix = (
                f"ask for at least {least} steps"
                if least is not None
                else f"raise {name} to at least {1 / stage.steps:.3g}"
            )
            violations.append(
                Violation(
                    "too_few_steps",
                    ("stages", i, "steps") if least is not None else share_at,
                    f"stage {i} would run no denoising step: steps {stage.steps} × {name} "
                    f"{share:g} is below 1; {fix}",
                    {"steps": stage.steps, name: share, "min_steps": least},
                )
            )
    if violations:
        raise JobRejected(violations)
