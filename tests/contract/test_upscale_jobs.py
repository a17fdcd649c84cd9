"""Upscale jobs at admission: the one stage normalized (its size from a factor or given, its
upscaler), everything only a model takes refused where it stands, and the job's pool the
upscaler's."""

from __future__ import annotations

from typing import Any

import pytest

from contract.checked import UpscaleStage
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.segments import plan_segments
from contract.spec import JobSpec
from contract.violations import JobRejected
from tests.helpers import png_b64


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry.model_validate({
        "models": {"demo-sd15": {"architecture": "sd15", "source": {"folder": "/models/sd15"}}},
        "loras": {"detail-sd15": {"architecture": "sd15", "file": "/loras/detail.safetensors"}},
        "upscalers": {"esrgan-4x": {"file": "/upscalers/esrgan-4x.pth"}},
    })  # fmt: skip


def job(**fields: Any) -> dict[str, Any]:
    stage = {"mode": "upscale", "upscaler": "esrgan-4x", **fields.pop("stage", {})}
    return {"width": 80, "height": 64, "init_image": png_b64(80, 64), "stages": [stage], **fields}


def refusals(registry: ModelRegistry, body: dict[str, Any]) -> set[tuple[str, tuple[Any, ...]]]:
    with pytest.raises(JobRejected) as refused:
        check_job(JobSpec.model_validate(body), registry, JobLimits())
    return {(v.type, v.loc) for v in refused.value.violations}


def test_an_upscale_job_is_one_stage_sized_by_its_factor_or_its_size(
    registry: ModelRegistry,
) -> None:
    checked = check_job(JobSpec.model_validate(job()), registry, JobLimits())
    [stage] = checked.spec.stages
    assert isinstance(stage, UpscaleStage)
    assert (stage.width, stage.height, stage.model) == (160, 128, None)  # by 2, the default
    assert checked.spec.upscales
    assert checked.spec.has_init_image
    assert checked.spec.strength is None  # nothing is denoised
    sized = check_job(
        JobSpec.model_validate(job(stage={"width": 96, "height": 96})), registry, JobLimits()
    )
    assert sized.spec.size_of(0) == (96, 96)
    assert check_job(
        JobSpec.model_validate(job(stage={"upscaler": "lanczos", "scale": 1.5})), registry,
        JobLimits(),
    ).spec.size_of(0) == (120, 96)  # fmt: skip


def test_what_only_a_model_takes_is_refused_where_it_stands(registry: ModelRegistry) -> None:
    body = job(
        prompt="sharper", num_images=2, strength=0.5,
        stage={"model": "demo-sd15", "steps": 4, "loras": [{"name": "detail-sd15"}]},
    )  # fmt: skip
    assert refusals(registry, body) == {
        ("field_not_allowed", ("prompt",)),
        ("field_not_allowed", ("num_images",)),
        ("field_not_allowed", ("strength",)),
        ("field_not_allowed", ("stages", 0, "model")),
        ("field_not_allowed", ("stages", 0, "steps")),
        ("field_not_allowed", ("stages", 0, "loras")),
    }
    no_picture = {k: v for k, v in job().items() if k != "init_image"}
    assert refusals(registry, no_picture) == {("missing", ("init_image",))}
    assert refusals(registry, job(stage={"upscaler": None})) == {
        ("missing", ("stages", 0, "upscaler"))
    }
    assert refusals(registry, job(stage={"upscaler": "latent-bicubic"})) == {
        ("upscaler_handoff_mismatch", ("stages", 0, "upscaler"))
    }
    assert refusals(registry, job(stage={"upscaler": "nope"})) == {
        ("unknown_upscaler", ("stages", 0, "upscaler"))
    }
    assert refusals(registry, job(init_resize="latent_upscale")) == {
        ("field_not_allowed", ("init_resize",))
    }


def test_an_upscale_stage_stands_alone_and_within_the_pixel_budget(
    registry: ModelRegistry,
) -> None:
    after = job(prompt="p")
    after["stages"] = [{"model": "demo-sd15"}, after["stages"][0]]
    assert refusals(registry, after) == {("field_not_allowed", ("stages", 1, "mode"))}
    with pytest.raises(JobRejected) as refused:
        check_job(JobSpec.model_validate(job()), registry, JobLimits(max_pixels=128 * 128))
    [violation] = refused.value.violations
    assert (violation.type, violation.loc) == ("pixel_budget_exceeded", ("stages", 0, "scale"))


def test_a_generation_job_still_names_its_model_and_its_prompt(registry: ModelRegistry) -> None:
    body = {"prompt": "p", "width": 64, "height": 64, "stages": [{"steps": 2}]}
    assert refusals(registry, body) == {("missing", ("stages", 0, "model"))}
    assert refusals(registry, {**body, "prompt": "", "stages": [{"model": "demo-sd15"}]}) == {
        ("missing", ("prompt",))
    }


def test_an_upscale_job_runs_on_its_upscalers_pool() -> None:
    def model(pool: str) -> dict[str, Any]:
        return {"architecture": "sd15", "pool": pool, "source": {"folder": f"/models/{pool}"}}

    models = {"base": model("sd"), "big-gpu": model("gpu")}
    upscalers = {"big": {"file": "big.pth", "pool": "gpu"}, "small": {"file": "small.pth"}}
    registry = ModelRegistry.model_validate({"models": models, "upscalers": upscalers})
    assert registry.upscale_pool("big") == "gpu"
    # No `default` pool here: the first by name, which a worker serves.
    assert registry.upscale_pool("small") == registry.upscale_pool("lanczos") == "gpu"
    spec = JobSpec.model_validate(job(stage={"upscaler": "big"}))
    assert [s.pool for s in plan_segments(spec, registry)] == ["gpu"]
    # A pool where no model is has no worker: its upscale jobs would wait forever.
    with pytest.raises(ValueError, match="no worker serves it"):
        ModelRegistry.model_validate(
            {"models": models, "upscalers": {"lost": {"file": "x.pth", "pool": "upscale"}}}
        )
