"""The LoRA rule at admission: known names only, and each LoRA on stages of its architecture."""

from __future__ import annotations

from typing import Any

import pytest

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation

REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            name: {"architecture": arch, "source": {"folder": f"/m/{name}"}}
            for name, arch in (("sd", "sd15"), ("xl", "sdxl"), ("flux", "flux"))
        },
        "loras": {
            "detail-sd15": {"architecture": "sd15", "file": "/l/detail.safetensors"},
            "realism-flux": {"architecture": "flux", "file": "/l/realism.safetensors"},
        },
    }
)


def check(*stages: dict[str, Any]) -> JobSpec:
    body = {"prompt": "p", "width": 64, "height": 64, "stages": list(stages)}
    return check_job(JobSpec.model_validate(body), REGISTRY, JobLimits()).spec


def refused(*stages: dict[str, Any]) -> Violation:
    with pytest.raises(JobRejected) as rejected:
        check(*stages)
    [violation] = rejected.value.violations
    return violation


def test_an_sd15_lora_on_an_sdxl_stage_is_refused_naming_both_architectures() -> None:
    violation = refused({"model": "xl", "loras": [{"name": "detail-sd15", "weight": 0.8}]})
    assert (violation.type, violation.loc) == (
        "lora_architecture_mismatch",
        ("stages", 0, "loras", 0),
    )
    assert "trained for sd15, but stage 0's model 'xl' is sdxl" in violation.msg


def test_an_unknown_lora_is_refused_listing_the_known_ones() -> None:
    violation = refused({"model": "sd", "loras": [{"name": "nope"}]})
    assert (violation.type, violation.loc) == ("unknown_lora", ("stages", 0, "loras", 0, "name"))
    assert "detail-sd15, realism-flux" in violation.msg


def test_each_stage_takes_loras_of_its_own_architecture() -> None:
    spec = check(
        {"model": "sd", "loras": [{"name": "detail-sd15", "weight": 0.5}]},
        {"model": "flux", "mode": "hires", "loras": [{"name": "realism-flux"}]},
    )
    assert [[u.name for u in s.loras or ()] for s in spec.stages] == [
        ["detail-sd15"],
        ["realism-flux"],
    ]
