"""Samplers by A1111's names, per architecture: checked at admission, named canonically."""

from __future__ import annotations

from typing import Any

import pytest

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.samplers import sampler_named, samplers_for, schedule_named
from contract.spec import JobSpec
from contract.violations import JobRejected

REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            name: {"architecture": name.removeprefix("demo-"), "source": {"folder": f"/m/{name}"}}
            for name in ("demo-sd15", "demo-flux")
        }
    }
)


@pytest.fixture
def registry() -> ModelRegistry:
    return REGISTRY


def check(registry: ModelRegistry, *stages: dict[str, Any]) -> JobSpec:
    body = {"prompt": "p", "seed": 1, "width": 64, "height": 64, "stages": list(stages)}
    return check_job(JobSpec.model_validate(body), registry, JobLimits()).spec


def refusal(registry: ModelRegistry, *stages: dict[str, Any]) -> tuple[str, tuple[Any, ...], str]:
    with pytest.raises(JobRejected) as rejected:
        check(registry, *stages)
    [violation] = rejected.value.violations
    return violation.type, violation.loc, violation.msg


def test_names_are_matched_as_a1111_matches_them() -> None:
    assert sampler_named("sd15", "euler A") is samplers_for("sd15")["Euler a"]
    assert sampler_named("flux", "DPM++ 2M") is None
    assert (schedule_named("Karras"), schedule_named("automatic")) == ("karras", "automatic")
    assert schedule_named("Polyexponential") is None


def test_admission_names_samplers_canonically(registry: ModelRegistry) -> None:
    [stage] = check(
        registry, {"model": "demo-sd15", "sampler": "dpm++ 2m sde", "scheduler": "KARRAS"}
    ).stages
    assert (stage.sampler, stage.scheduler) == ("DPM++ 2M SDE", "karras")


def test_an_unknown_sampler_is_refused_naming_the_stage_and_the_valid_ones(
    registry: ModelRegistry,
) -> None:
    kind, loc, msg = refusal(
        registry,
        {"model": "demo-sd15"},
        {"model": "demo-flux", "mode": "hires", "sampler": "DPM++ 2M"},
    )
    assert (kind, loc) == ("unknown_sampler", ("stages", 1, "sampler"))
    assert "flux" in msg
    assert msg.endswith("its samplers: Euler")


def test_a_schedule_the_sampler_does_not_take_is_refused(registry: ModelRegistry) -> None:
    kind, loc, msg = refusal(
        registry, {"model": "demo-sd15", "sampler": "DDIM", "scheduler": "karras"}
    )
    assert (kind, loc) == ("unknown_schedule", ("stages", 0, "scheduler"))
    assert "automatic" in msg
