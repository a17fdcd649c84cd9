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


def test_a1111s_legacy_combined_names_and_aliases_are_split_as_a1111_does(
    registry: ModelRegistry,
) -> None:
    def named(sampler: str, scheduler: str | None = None) -> tuple[str | None, str | None]:
        stage = {"model": "demo-sd15", "sampler": sampler}
        if scheduler is not None:
            stage["scheduler"] = scheduler
        [checked] = check(registry, stage).stages
        return checked.sampler, checked.scheduler

    assert named("DPM++ 2M Karras") == ("DPM++ 2M", "karras")
    assert named("DPM++ 2M SDE Exponential") == ("DPM++ 2M SDE", "exponential")
    assert named("k_euler_a") == ("Euler a", "automatic")
    assert named("euler_a") == ("Euler a", "automatic")
    assert named("DPM++ 2M Karras", "exponential") == ("DPM++ 2M", "exponential")  # asked apart
    kind, _, _ = refusal(registry, {"model": "demo-sd15", "sampler": "DDIM Karras"})
    assert kind == "unknown_schedule"  # DDIM takes no Karras sigmas


@pytest.mark.parametrize(
    ("schedule", "options"),
    [
        ("normal", {"timestep_spacing": "linspace"}),
        ("uniform", {"timestep_spacing": "linspace"}),
        ("sgm_uniform", {"timestep_spacing": "trailing"}),
        ("simple", {"timestep_spacing": "trailing"}),
        ("ddim", {"timestep_spacing": "leading"}),
        ("karras", {"use_karras_sigmas": True}),
    ],
)
def test_every_a1111_schedule_served_maps_to_diffusers(
    registry: ModelRegistry, schedule: str, options: dict[str, Any]
) -> None:
    [stage] = check(
        registry, {"model": "demo-sd15", "sampler": "Euler", "scheduler": schedule}
    ).stages
    assert stage.scheduler == schedule
    assert samplers_for("sd15")["Euler"].scheduler_options(schedule) == options


def test_a_flow_matching_euler_takes_the_names_of_its_own_schedule(
    registry: ModelRegistry,
) -> None:
    # SillyTavern sends scheduler "normal" whatever the checkpoint
    [stage] = check(
        registry, {"model": "demo-flux", "sampler": "Euler", "scheduler": "normal"}
    ).stages
    assert stage.scheduler == "normal"
    assert samplers_for("flux")["Euler"].scheduler_options("normal") == {}
    kind, _, _ = refusal(
        registry, {"model": "demo-flux", "sampler": "Euler", "scheduler": "karras"}
    )
    assert kind == "unknown_schedule"


def test_a1111_schedules_with_no_equivalent_are_refused_saying_so(registry: ModelRegistry) -> None:
    kind, loc, msg = refusal(
        registry, {"model": "demo-sd15", "sampler": "Euler", "scheduler": "beta"}
    )
    assert (kind, loc) == ("unknown_schedule", ("stages", 0, "scheduler"))
    assert "'beta' has no equivalent here" in msg
    assert "sgm_uniform" in msg  # the list of what it takes


def test_a_schedule_the_sampler_does_not_take_is_refused(registry: ModelRegistry) -> None:
    kind, loc, msg = refusal(
        registry, {"model": "demo-sd15", "sampler": "DDIM", "scheduler": "karras"}
    )
    assert (kind, loc) == ("unknown_schedule", ("stages", 0, "scheduler"))
    assert "automatic" in msg
