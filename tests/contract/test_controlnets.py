"""The ControlNet rule, called directly: a ControlNet of each architecture on a stage of each,
refused where they differ (a hand-written table), located at the unit; each unit's control image
checked at admission; the stored spec keeps control images apart."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from contract.architectures import ARCHITECTURES
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation
from tests.helpers import png_b64

SERVED = ("sd15", "sdxl", "flux")  # by hand: the architectures whose ControlNets are served
REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            f"m-{arch}": {"architecture": arch, "source": {"folder": f"/models/{arch}"}}
            for arch in ARCHITECTURES
        },
        "controlnets": {
            f"cn-{arch}": {"architecture": arch, "file": f"/cn/{arch}"} for arch in SERVED
        },
    }
)
IMAGE = png_b64(64, 64)


def check(*stages: dict[str, Any], **job: Any) -> list[Violation]:
    body = {"prompt": "a castle", "width": 256, "height": 256, "stages": list(stages), **job}
    try:
        check_job(JobSpec.model_validate(body), REGISTRY, JobLimits(max_pixels=1024 * 1024))
    except JobRejected as rejected:
        return rejected.violations
    return []


@pytest.mark.parametrize(("made_for", "arch"), list(itertools.product(SERVED, ARCHITECTURES)))
def test_a_controlnet_steers_only_its_own_architecture(made_for: str, arch: str) -> None:
    unit = {"name": f"cn-{made_for}", "image": IMAGE}
    violations = check({"model": "m-sdxl"}, {"model": f"m-{arch}", "mode": "hires",
                                             "controlnets": [unit]})  # fmt: skip
    if made_for == arch:
        assert violations == []
        return
    [violation] = violations
    assert (violation.type, violation.loc) == (
        "controlnet_architecture_mismatch", ("stages", 1, "controlnets", 0)
    )  # fmt: skip
    assert f"ControlNet 'cn-{made_for}' was made for {made_for}" in violation.msg
    fits = f"cn-{arch}" if arch in SERVED else "none"
    assert f"{arch} ControlNets here: {fits}" in violation.msg


def test_an_sd15_controlnet_on_the_base_and_a_flux_one_on_its_flux_hires_stage_pass() -> None:
    sd15 = {"name": "cn-sd15", "image": IMAGE, "module": "canny"}
    flux = {"name": "cn-flux", "image_from": "previous"}
    base = {"model": "m-sd15", "controlnets": [sd15]}
    assert check(base, {"model": "m-flux", "mode": "hires", "controlnets": [flux]}) == []


@pytest.mark.parametrize(
    ("stages", "loc", "kind"),
    [
        ([{"model": "m-sd15", "controlnets": [{"name": "cn-sd15"}]}],
         ("stages", 0, "controlnets", 0, "image"), "missing"),
        ([{"model": "m-sd15", "controlnets": [{"name": "cn-sd15", "image": "not base64!"}]}],
         ("stages", 0, "controlnets", 0, "image"), "invalid_base64"),
        ([{"model": "m-sd15", "controlnets": [{"name": "cn-sd15", "image_from": "previous"}]}],
         ("stages", 0, "controlnets", 0, "image_from"), "field_not_allowed"),
        ([{"model": "m-sd15", "controlnets": [{"name": "cn-sd15", "image": IMAGE,
                                               "image_from": "previous"}]}],
         ("stages", 0, "controlnets", 0, "image_from"), "field_not_allowed"),
        ([{"model": "m-sd15"}, {"model": "m-sd15", "mode": "hires", "handoff": "latent",
                                "controlnets": [{"name": "cn-sd15", "image_from": "previous"}]}],
         ("stages", 1, "controlnets", 0, "image_from"), "field_not_allowed"),
        ([{"model": "m-sdxl"}, {"model": "m-sdxl", "mode": "refine",
                                "controlnets": [{"name": "cn-sdxl", "image": IMAGE}]}],
         ("stages", 1, "controlnets"), "controlnet_unsupported"),
        ([{"model": "m-sd15", "controlnets": [{"name": "nope", "image": IMAGE}]}],
         ("stages", 0, "controlnets", 0, "name"), "unknown_controlnet"),
    ],
)  # fmt: skip
def test_each_units_image_is_checked_at_admission(
    stages: list[dict[str, Any]], loc: tuple[Any, ...], kind: str
) -> None:
    [violation] = check(*stages)
    assert (violation.type, violation.loc) == (kind, loc)


def test_several_controlnets_with_each_pictures_own_image_only_where_the_pipeline_takes_them() -> (
    None
):
    canny = {"name": "cn-sd15", "image": IMAGE}
    previous = {"name": "cn-sd15", "image_from": "previous"}
    hires = {"model": "m-sd15", "mode": "hires", "controlnets": [canny, previous]}
    [violation] = check({"model": "m-sd15"}, hires, num_images=2)
    assert (violation.type, violation.loc) == (
        "controlnet_unsupported",
        ("stages", 1, "controlnets"),
    )
    assert "ask for num_images 1, or send image" in violation.msg
    assert check({"model": "m-sd15"}, hires, num_images=1) == []
    units = [{**canny, "name": "cn-flux"}, {**previous, "name": "cn-flux"}]
    flux = {"model": "m-flux", "mode": "hires", "controlnets": units}
    assert check({"model": "m-sd15"}, flux, num_images=2) == []


def test_a_latent_upscale_does_not_meet_a_controlnet_which_takes_a_picture() -> None:
    unit = {"name": "cn-flux", "image": IMAGE}
    stage = {"model": "m-flux", "controlnets": [unit]}
    picture = {"init_image": png_b64(128, 128)}
    assert check(stage, **picture, init_resize="just_resize") == []
    [violation] = check(stage, **picture, init_resize="latent_upscale")
    assert (violation.type, violation.loc) == ("field_not_allowed", ("init_resize",))
    assert "use just_resize" in violation.msg
