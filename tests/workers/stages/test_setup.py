"""A stage's setup on the tiny models, in this process: a registered VAE in place of the model's
own, and embeddings named in prompts, change the picture; the next job sees the model as before,
to the byte; the worker refuses a VAE of another latent space, or an embedding of another
architecture, whatever the gateway said. (Its LoRAs and sampler:
tests/workers/stages/test_chain.py.)"""

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


@pytest.mark.parametrize("model", ["demo-sd15", "demo-sdxl"])
def test_an_embedding_named_in_the_prompt_changes_the_picture_and_nothing_after_it(
    registry: ModelRegistry, cache: ModelCache, model: str
) -> None:
    def job(prompt: str, negative: str | None = None) -> Made:
        stages = [{"model": model, "steps": 2}]
        outcome = run(spec_of(registry, stages, prompt=prompt, negative_prompt=negative), cache)
        assert isinstance(outcome, Made), outcome
        return outcome

    word = f"{model}-emb"
    before = pixels(job("a lighthouse, at dusk"))
    named = job(f"a lighthouse, {word.upper()}")  # any case, as A1111's prompts name them
    assert pixels(named) != before
    assert named.traces[0].embeddings == [word]
    assert pixels(job("a lighthouse", negative=word)) != pixels(job("a lighthouse"))
    assert pixels(job("a lighthouse, at dusk")) == before  # the model reads prompts as before


def test_members_of_one_call_each_get_their_own_embeddings(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    from workers.stages.chain import Member, run_group

    def member(prompt: str) -> Member:
        spec = spec_of(registry, [{"model": "demo-sd15", "steps": 2}], prompt=prompt)
        return Member(prompt, spec, never_stop)

    alone = [member("a castle, demo-sd15-emb"), member("a castle")]
    for m in alone:
        run_group([m], range(1), cache.get, "w", Components.of(cache))
    together = [member("a castle, demo-sd15-emb"), member("a castle")]
    run_group(together, range(1), cache.get, "w", Components.of(cache))
    assert [t.embeddings for m in together for t in m.traces] == [["demo-sd15-emb"], []]
    for one, both in zip(alone, together, strict=True):
        assert isinstance(one.outcome, Made)
        assert isinstance(both.outcome, Made)
        diff = [abs(a - b) for a, b in zip(pixels(one.outcome), pixels(both.outcome), strict=True)]
        assert max(diff) <= 1  # batched pictures equal lone ones, within rounding


def test_the_worker_refuses_an_embedding_of_another_architecture_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = spec_of(registry, [{"model": "demo-sdxl", "steps": 2}])
    smuggled = spec.model_copy(update={"prompt": "a castle, demo-sd15-emb"})
    with pytest.raises(JobRejected) as gateway:
        check_job(JobSpec.model_validate(smuggled.model_dump()), registry, JobLimits())
    [said] = gateway.value.violations
    assert said.type == "embedding_architecture_mismatch"
    assert run(smuggled, cache) == Failed(FailureType.INVALID_JOB, said.msg)
