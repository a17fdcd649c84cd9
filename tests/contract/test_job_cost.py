"""A job's cost: steps per stage as the pipelines run them, and megapixel-steps over stages and
images, which admission bounds (found by a hostile pass: 4 images × 4 stages × 150 steps at
2048² was admitted)."""

from __future__ import annotations

from typing import Any

import pytest

from contract.job_cost import megapixel_steps, planned_steps
from contract.job_rules import JobLimits, check_job
from contract.spec import JobSpec
from contract.violations import JobRejected
from tests.contract.test_job_rules import MODEL_OF, REGISTRY


def spec(stages: list[dict[str, Any]], **top: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"prompt": "p", "width": 1024, "height": 1024, "stages": stages, **top}
    )


SDXL_WITH_HIRES = [
    {"model": MODEL_OF["sdxl"], "steps": 20},
    {"model": MODEL_OF["sdxl-refiner"], "mode": "refine", "steps": 20, "switch_at": 0.75},
    {"model": MODEL_OF["sdxl"], "mode": "hires", "steps": 10, "denoise": 0.5, "scale": 2},
]


def test_steps_and_megapixel_steps_count_what_each_stage_runs() -> None:
    normalized = check_job(spec(SDXL_WITH_HIRES, num_images=2), REGISTRY, JobLimits()).spec
    assert planned_steps(normalized) == [15.0, 5.0, 5.0]
    one_image = 1024 * 1024 / 1e6 * (15 + 5) + 2048 * 2048 / 1e6 * 5
    assert megapixel_steps(normalized) == pytest.approx(2 * one_image)


def test_a_job_over_the_deployments_budget_is_refused_with_its_cost() -> None:
    heavy = [{"model": MODEL_OF["sd15"], "steps": 150}] + [
        {"model": MODEL_OF["sd15"], "mode": "hires", "steps": 150, "scale": 1} for _ in range(3)
    ]
    job = spec(heavy, width=2048, height=2048, num_images=4)
    with pytest.raises(JobRejected) as refused:
        check_job(job, REGISTRY, JobLimits())
    [violation] = refused.value.violations
    assert violation.type == "job_too_costly"
    assert violation.ctx["le"] == JobLimits().max_megapixel_steps
    assert violation.ctx["megapixel_steps"] > 5000
    assert "fewer images" in violation.msg
    # The everyday job is far inside the default budget.
    check_job(spec(SDXL_WITH_HIRES, num_images=4), REGISTRY, JobLimits())
