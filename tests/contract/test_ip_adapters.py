"""The IP-Adapter rule, called directly: an IP-Adapter of each served architecture on a stage of
each, refused where they differ (a hand-written table), located at the adapter; its picture
checked at admission."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from contract.architectures import ARCHITECTURES
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation
from tests.helpers import png_b64

SERVED = ("sd15", "sdxl")  # by hand: the architectures whose IP-Adapters are served
REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            f"m-{arch}": {"architecture": arch, "source": {"folder": f"/models/{arch}"}}
            for arch in ARCHITECTURES
        },
        "ip_adapters": {
            f"ip-{arch}": {
                "architecture": arch, "file": f"/ip/{arch}.safetensors",
                "image_encoder": "/ip/image_encoder",
            }
            for arch in SERVED
        },
    }
)  # fmt: skip
IMAGE = png_b64(64, 64)


def check(*stages: dict[str, Any], **job: Any) -> list[Violation]:
    body = {"prompt": "a castle", "width": 256, "height": 256, "stages": list(stages), **job}
    try:
        check_job(JobSpec.model_validate(body), REGISTRY, JobLimits(max_pixels=1024 * 1024))
    except JobRejected as rejected:
        return rejected.violations
    return []


@pytest.mark.parametrize(("made_for", "arch"), list(itertools.product(SERVED, ARCHITECTURES)))
def test_an_ip_adapter_steers_only_its_own_architecture(made_for: str, arch: str) -> None:
    adapter = {"name": f"ip-{made_for}", "image": IMAGE}
    violations = check({"model": "m-sdxl"}, {"model": f"m-{arch}", "mode": "hires",
                                             "ip_adapters": [adapter]})  # fmt: skip
    if made_for == arch:
        assert violations == []
        return
    [violation] = violations
    assert (violation.type, violation.loc) == (
        "ip_adapter_architecture_mismatch", ("stages", 1, "ip_adapters", 0)
    )  # fmt: skip
    assert f"IP-Adapter 'ip-{made_for}' was made for {made_for}" in violation.msg
    fits = f"ip-{arch}" if arch in SERVED else "none"
    assert f"{arch} IP-Adapters here: {fits}" in violation.msg


def test_each_stage_takes_the_ip_adapter_of_its_own_architecture() -> None:
    sd15 = {"model": "m-sd15", "ip_adapters": [{"name": "ip-sd15", "image": IMAGE}]}
    sdxl = {"model": "m-sdxl", "mode": "hires", "ip_adapters": [{"name": "ip-sdxl",
                                                                   "image": IMAGE}]}  # fmt: skip
    assert check(sd15, sdxl) == []


def test_an_unknown_ip_adapter_lists_the_registered_ones() -> None:
    [violation] = check({"model": "m-sd15", "ip_adapters": [{"name": "nope", "image": IMAGE}]})
    assert (violation.type, violation.loc) == (
        "unknown_ip_adapter", ("stages", 0, "ip_adapters", 0, "name")
    )  # fmt: skip
    assert "registered IP-Adapters: ip-sd15, ip-sdxl (GET /ip-adapters)" in violation.msg


def test_the_picture_is_checked_at_admission() -> None:
    [bad] = check({"model": "m-sd15", "ip_adapters": [{"name": "ip-sd15", "image": "%%"}]})
    assert (bad.type, bad.loc) == ("invalid_base64", ("stages", 0, "ip_adapters", 0, "image"))
    huge = png_b64(2048, 1024)
    [big] = check({"model": "m-sd15", "ip_adapters": [{"name": "ip-sd15", "image": huge}]})
    assert (big.type, big.loc) == ("image_too_large", ("stages", 0, "ip_adapters", 0, "image"))


def test_a_stage_takes_one_ip_adapter() -> None:
    two = [{"name": "ip-sd15", "image": IMAGE}] * 2
    with pytest.raises(ValidationError, match="at most 1 item"):
        JobSpec.model_validate({"prompt": "p", "width": 64, "height": 64,
                                "stages": [{"model": "m-sd15", "ip_adapters": two}]})  # fmt: skip
