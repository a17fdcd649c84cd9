"""The checked job: what the rules make of a spec says by its type what it holds, survives the
trip through Redis unchanged, and owns picture k's seed and every stage's size."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contract.checked import CheckedSpec, FirstStage, HiresStage, RefineStage
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec

REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            name: {"architecture": arch, "source": {"folder": f"/m/{name}"}}
            for name, arch in (("xl", "sdxl"), ("refiner", "sdxl-refiner"), ("flux", "flux"))
        }
    }
)


def checked(**body: object) -> CheckedSpec:
    spec = {"prompt": "a lighthouse", "width": 256, "height": 128, **body}
    return check_job(JobSpec.model_validate(spec), REGISTRY, JobLimits()).spec


def test_each_stage_is_of_its_kind_with_everything_filled_in() -> None:
    spec = checked(
        stages=[
            {"model": "xl"},
            {"model": "refiner", "mode": "refine"},
            {"model": "flux", "mode": "hires", "scale": 2},
        ]
    )
    first, refine, hires = spec.stages
    assert isinstance(first, FirstStage)
    assert isinstance(refine, RefineStage)
    assert isinstance(hires, HiresStage)
    assert (first.steps, first.guidance_scale, refine.switch_at) == (30, 7.0, 0.8)
    assert (hires.width, hires.height, hires.denoise, hires.upscaler) == (512, 256, 0.5, "lanczos")
    assert [spec.size_of(i) for i in range(3)] == [(256, 128), (256, 128), (512, 256)]
    assert spec.seed >= 0
    assert spec.timeout_s == JobLimits().default_timeout_s


def test_picture_k_has_the_seed_plus_k() -> None:
    spec = checked(seed=41, num_images=3, stages=[{"model": "xl"}])
    assert [spec.seed_of(k) for k in range(3)] == spec.seeds == [41, 42, 43]


def test_what_redis_keeps_reads_back_as_the_same_checked_spec() -> None:
    spec = checked(stages=[{"model": "xl"}, {"model": "flux", "mode": "hires"}])
    again = CheckedSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert isinstance(again.stages[1], HiresStage)


def test_a_spec_the_rules_did_not_fill_in_is_no_checked_spec() -> None:
    # What a client sends (no seed, no stage defaults) cannot pass for a checked one.
    with pytest.raises(ValidationError):
        CheckedSpec.model_validate(
            {"prompt": "p", "width": 64, "height": 64, "stages": [{"model": "xl"}]}
        )
    spec = checked(stages=[{"model": "xl"}])
    hires_first = {**spec.model_dump(), "stages": [{"model": "flux", "mode": "hires"}]}
    with pytest.raises(ValidationError):
        CheckedSpec.model_validate(hires_first)
