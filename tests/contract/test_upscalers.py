"""Which upscaler a hires stage may use: resamplers by handoff, upscaler models on pictures only."""

from __future__ import annotations

from typing import Any

import pytest

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.resamplers import Upscaler
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation

REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            name: {"architecture": arch, "source": {"folder": f"/m/{name}"}}
            for name, arch in (("sd", "sd15"), ("sd-too", "sd15"), ("flux", "flux"))
        },
        "upscalers": {"4x-ultrasharp": {"file": "/u/4x-UltraSharp.pth"}},
    }
)


def hires(target: str, **fields: Any) -> dict[str, Any]:
    body = {
        "prompt": "p",
        "width": 64,
        "height": 64,
        "stages": [{"model": "sd"}, {"model": target, "mode": "hires", **fields}],
    }
    return body


def check(body: dict[str, Any]) -> JobSpec:
    return check_job(JobSpec.model_validate(body), REGISTRY, JobLimits()).spec


def refused(body: dict[str, Any]) -> Violation:
    with pytest.raises(JobRejected) as rejected:
        check(body)
    [violation] = rejected.value.violations
    return violation


def test_an_upscaler_model_serves_a_pixel_hires_stage_into_flux() -> None:
    spec = check(hires("flux", upscaler="4x-ultrasharp"))
    assert spec.stages[1].upscaler == "4x-ultrasharp"
    assert spec.stages[1].handoff == "pixel"


def test_an_upscaler_model_on_a_latent_handoff_is_refused_naming_the_field() -> None:
    violation = refused(hires("sd-too", handoff="latent", upscaler="4x-ultrasharp"))
    assert violation.type == "upscaler_handoff_mismatch"
    assert violation.loc == ("stages", 1, "upscaler")
    assert "is a model that upscales pictures" in violation.msg
    assert "use handoff: pixel" in violation.msg


def test_an_unknown_upscaler_is_refused_listing_what_there_is() -> None:
    violation = refused(hires("flux", upscaler="4x-missing"))
    assert violation.type == "unknown_upscaler"
    assert violation.loc == ("stages", 1, "upscaler")
    assert "lanczos" in violation.msg
    assert "4x-ultrasharp" in violation.msg


def test_resamplers_still_follow_their_handoff() -> None:
    assert check(hires("flux")).stages[1].upscaler is Upscaler.LANCZOS
    assert check(hires("sd-too", handoff="latent")).stages[1].upscaler is Upscaler.LATENT_BILINEAR
    violation = refused(hires("flux", upscaler="latent-bicubic"))
    assert (violation.type, violation.loc) == (
        "upscaler_handoff_mismatch",
        ("stages", 1, "upscaler"),
    )


def test_an_upscaler_may_not_take_a_resampler_name() -> None:
    with pytest.raises(ValueError, match="built-in upscaler's name"):
        ModelRegistry.model_validate({"models": {}, "upscalers": {"lanczos": {"file": "/u/x.pth"}}})
