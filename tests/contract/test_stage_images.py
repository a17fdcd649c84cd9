"""The pictures stages carry are kept apart from the stored spec and put back as they were."""

from __future__ import annotations

from contract.job_rules import JobLimits, check_job
from contract.spec import JobSpec
from contract.stage_images import has_stage_images, with_stage_images, without_stage_images
from tests.contract.test_controlnets import REGISTRY as CONTROLNETS
from tests.contract.test_ip_adapters import REGISTRY as IP_ADAPTERS
from tests.helpers import png_b64

REGISTRY = CONTROLNETS.model_copy(update={"ip_adapters": IP_ADAPTERS.ip_adapters})


def test_the_stored_spec_keeps_stage_pictures_apart_and_gets_them_back() -> None:
    control, look = png_b64(64, 64, color=(1, 2, 3)), png_b64(32, 32, color=(9, 8, 7))
    stages = [
        {"model": "m-sd15", "controlnets": [{"name": "cn-sd15", "image": control}],
         "ip_adapters": [{"name": "ip-sd15", "image": look}]},
        {"model": "m-sdxl", "mode": "hires", "ip_adapters": [{"name": "ip-sdxl", "image": look}]},
    ]  # fmt: skip
    body = {"prompt": "p", "width": 64, "height": 64, "stages": stages}
    spec = check_job(JobSpec.model_validate(body), REGISTRY, JobLimits()).spec
    assert has_stage_images(spec)
    stored, images = without_stage_images(spec)
    assert (stored.stages[0].controlnets or [])[0].image is None
    assert [(u.name, u.image) for u in stored.stages[1].ip_adapters or []] == [("ip-sdxl", "")]
    assert sorted(images) == ["0.0", "ip.0.0", "ip.1.0"]
    assert with_stage_images(stored, images) == spec


def test_a_spec_without_stage_pictures_is_stored_as_it_is() -> None:
    body = {"prompt": "p", "width": 64, "height": 64, "stages": [{"model": "m-sd15"}]}
    spec = check_job(JobSpec.model_validate(body), REGISTRY, JobLimits()).spec
    assert not has_stage_images(spec)
    assert without_stage_images(spec) == (spec, {})
