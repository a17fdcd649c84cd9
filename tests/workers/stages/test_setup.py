"""A stage's setup on the tiny models, in this process: a registered VAE in place of the model's
own changes the picture (decoding and, for img2img, encoding), the next job decodes with the
model's own to the byte, and the worker refuses a VAE of another latent space whatever the
gateway said. (Its LoRAs and sampler: tests/workers/stages/test_chain.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from contract.envelope import FailureType
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected
from tests.helpers import png_b64
from workers.models.cache import ModelCache
from workers.stages.chain import Components, run_chain
from workers.stages.outcomes import Failed, Made, Outcome


def never_stop(stage: int, step: int, steps: int) -> str | None:
    return None


def spec_of(registry: ModelRegistry, stages: list[dict[str, Any]], **fields: Any) -> JobSpec:
    body = {"prompt": "a lighthouse", "seed": 3, "width": 64, "height": 64, **fields}
    return check_job(JobSpec.model_validate({**body, "stages": stages}), registry, JobLimits()).spec


def run(spec: JobSpec, cache: ModelCache) -> Outcome:
    return run_chain(
        spec, range(len(spec.stages)), None, cache.get, never_stop, "w", Components.of(cache)
    )


def pixels(outcome: Outcome) -> bytes:
    assert isinstance(outcome, Made), outcome
    return b"".join(im.tobytes() for im in outcome.pictures)


@pytest.fixture(scope="module")
def cache(registry: ModelRegistry) -> ModelCache:
    return ModelCache(registry)


def test_a_vae_changes_the_picture_and_the_next_job_decodes_with_the_models_own(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    def job(vae: str | None) -> bytes:
        return pixels(
            run(spec_of(registry, [{"model": "demo-sd15", "steps": 2, "vae": vae}]), cache)
        )

    before = job(None)
    assert job("demo-sd15-vae") != before
    assert job(None) == before  # the model's own VAE is back, to the byte
    assert cache.get("demo-sd15").text.vae is cache.get("demo-sd15").image.vae


def test_img2img_encodes_with_the_stages_vae(registry: ModelRegistry, cache: ModelCache) -> None:
    init = png_b64(64, 64, color=(200, 40, 90))

    def job(vae: str | None) -> bytes:
        stage = {"model": "demo-sdxl", "steps": 2, "vae": vae}
        return pixels(run(spec_of(registry, [stage], init_image=init, strength=0.5), cache))

    before = job(None)
    assert job("demo-sdxl-vae") != before
    assert job(None) == before


def test_the_trace_names_the_stages_vae(registry: ModelRegistry, cache: ModelCache) -> None:
    stages = [{"model": "demo-sd15", "steps": 2, "vae": "demo-sd15-vae"},
              {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "steps": 2}]  # fmt: skip
    outcome = run(spec_of(registry, stages), cache)
    assert isinstance(outcome, Made)
    assert [t.vae for t in outcome.traces] == ["demo-sd15-vae", None]


def test_the_worker_refuses_a_vae_of_another_latent_space_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = spec_of(registry, [{"model": "demo-sdxl", "steps": 2}])
    smuggled = spec.model_copy(
        update={"stages": [spec.stages[0].model_copy(update={"vae": "demo-sd15-vae"})]}
    )
    with pytest.raises(JobRejected) as gateway:
        check_job(JobSpec.model_validate(smuggled.model_dump()), registry, JobLimits())
    [said] = gateway.value.violations
    assert said.type == "vae_latent_space_mismatch"
    # in the gateway's words, before the file is loaded
    assert run(smuggled, cache) == Failed(FailureType.INVALID_JOB, said.msg)
