"""What a job costs: the denoising steps each stage runs, and the work of the whole job in
megapixel-steps (pixels denoised × steps, summed over stages and images), which admission
bounds per deployment so that one request cannot hold a GPU for an hour."""

from __future__ import annotations

from contract.spec import JobSpec, Mode
from contract.stage_sizes import stage_size


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
