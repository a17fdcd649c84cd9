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


EDGES = png_b64(64, 64, color=(250, 250, 250))


@pytest.mark.parametrize("model", ["demo-sd15", "demo-sdxl", "demo-flux"])
def test_a_controlnet_changes_the_picture_weight_0_does_not_and_nothing_after_it(
    registry: ModelRegistry, cache: ModelCache, model: str
) -> None:
    def job(units: list[dict[str, Any]]) -> Made:
        stages = [{"model": model, "steps": 2, "controlnets": units or None}]
        outcome = run(spec_of(registry, stages, num_images=2), cache)
        assert isinstance(outcome, Made), outcome
        return outcome

    unit = {"name": f"{model}-canny", "image": png_b64(64, 64, color=(30, 200, 90))}
    before = pixels(job([]))
    steered = job([unit])
    assert pixels(steered) != before
    [trace] = steered.traces[0].controlnets
    assert (trace.name, trace.weight) == (f"{model}-canny", 1.0)
    assert pixels(job([{**unit, "weight": 0}])) == before  # weight 0 is no ControlNet, to the byte
    # no part of the schedule is none either
    assert pixels(job([{**unit, "guidance_start": 0.5, "guidance_end": 0.5}])) == before
    assert pixels(job([])) == before  # the next job sees the model as before


@pytest.mark.parametrize(("model", "pictures"), [("demo-sd15", 1), ("demo-flux", 2)])
def test_several_controlnets_and_the_previous_stages_picture_steer_one_stage(
    registry: ModelRegistry, cache: ModelCache, model: str, pictures: int
) -> None:
    # SD1.5's img2img takes one image per ControlNet for all pictures (the rule refuses more:
    # tests/contract/test_controlnets.py); Flux's takes each picture's own.
    canny = {"name": f"{model}-canny", "image": EDGES, "module": "canny", "weight": 0.8}
    previous = {"name": f"{model}-canny", "image_from": "previous", "resize": "just_resize"}
    base = {"model": model, "steps": 2, "controlnets": [canny]}
    hires = {"model": model, "mode": "hires", "steps": 2, "controlnets": [canny, previous]}
    outcome = run(spec_of(registry, [base, hires], num_images=pictures), cache)
    assert isinstance(outcome, Made), outcome
    assert [len(t.controlnets) for t in outcome.traces] == [1, 2]
    assert [c.module for c in outcome.traces[1].controlnets] == ["canny", "none"]
    one = {**hires, "controlnets": [canny]}
    alone = run(spec_of(registry, [base, one], num_images=pictures), cache)
    assert pixels(outcome) != pixels(alone)  # the second one acted


def test_members_of_one_call_each_get_their_own_control_image(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    from workers.stages.chain import Member, run_group

    def member(color: tuple[int, int, int]) -> Member:
        unit = {"name": "demo-sdxl-canny", "image": png_b64(64, 64, color=color)}
        spec = spec_of(registry, [{"model": "demo-sdxl", "steps": 2, "controlnets": [unit]}])
        return Member(str(color), spec, never_stop)

    colors = [(250, 10, 10), (10, 10, 250)]
    alone = [member(c) for c in colors]
    for m in alone:
        run_group([m], range(1), cache.get, "w", Components.of(cache))
    together = [member(c) for c in colors]
    run_group(together, range(1), cache.get, "w", Components.of(cache))
    made = [m.outcome for m in (*alone, *together)]
    assert all(isinstance(o, Made) for o in made), made
    one, two, both_one, both_two = (pixels(o) for o in made)  # type: ignore[arg-type]
    assert one != two
    for lone, batched in ((one, both_one), (two, both_two)):
        assert max(abs(a - b) for a, b in zip(lone, batched, strict=True)) <= 1


def test_the_worker_refuses_a_controlnet_of_another_architecture_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    unit = {"name": "demo-sd15-canny", "image": EDGES}
    spec = spec_of(registry, [{"model": "demo-sdxl", "steps": 2}])
    smuggled = JobSpec.model_validate(
        {**spec.model_dump(), "stages": [{**spec.stages[0].model_dump(), "controlnets": [unit]}]}
    )
    with pytest.raises(JobRejected) as gateway:
        check_job(smuggled, registry, JobLimits())
    [said] = gateway.value.violations
    assert said.type == "controlnet_architecture_mismatch"
    checked = spec.model_copy(update={"stages": [spec.stages[0].model_copy(
        update={"controlnets": smuggled.stages[0].controlnets})]})  # fmt: skip
    assert run(checked, cache) == Failed(FailureType.INVALID_JOB, said.msg)


LOOK = png_b64(48, 40, color=(200, 40, 160))


@pytest.mark.parametrize("model", ["demo-sd15", "demo-sdxl"])
def test_an_ip_adapter_changes_the_picture_weight_0_does_not_and_nothing_after_it(
    registry: ModelRegistry, cache: ModelCache, model: str
) -> None:
    def job(adapters: list[dict[str, Any]], **fields: Any) -> Made:
        stages = [{"model": model, "steps": 2, "ip_adapters": adapters or None}]
        outcome = run(spec_of(registry, stages, num_images=2, **fields), cache)
        assert isinstance(outcome, Made), outcome
        return outcome

    unet = cache.get(model).text.unet
    own = dict(unet.attn_processors)
    before = pixels(job([]))
    steered = job([{"name": f"{model}-ip", "image": LOOK}])
    assert pixels(steered) != before
    assert [(t.name, t.weight) for t in steered.traces[0].ip_adapters] == [(f"{model}-ip", 1.0)]
    other = job([{"name": f"{model}-ip", "image": png_b64(48, 40, color=(10, 220, 30))}])
    assert pixels(other) != pixels(steered)  # the picture steers, not the adapter alone
    zero = job([{"name": f"{model}-ip", "image": LOOK, "weight": 0}])
    assert pixels(zero) == before  # weight 0 is no IP-Adapter, to the byte
    assert zero.traces[0].ip_adapters == []
    assert pixels(job([])) == before  # the next job sees the model as before
    # the model's own modules, not fresh copies
    assert all(unet.attn_processors[n] is p for n, p in own.items())
    assert unet.encoder_hid_proj is None
    assert cache.get(model).text.image_encoder is None


def test_an_ip_adapter_steers_a_hires_stage_and_a_controlnet_beside_it(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    adapter = {"name": "demo-sd15-ip", "image": LOOK}
    canny = {"name": "demo-sd15-canny", "image": EDGES, "module": "canny"}
    base = {"model": "demo-sd15", "steps": 2, "controlnets": [canny], "ip_adapters": [adapter]}
    hires = {"model": "demo-sd15", "mode": "hires", "steps": 2, "ip_adapters": [adapter]}
    outcome = run(spec_of(registry, [base, hires]), cache)
    assert isinstance(outcome, Made), outcome
    assert [len(t.ip_adapters) for t in outcome.traces] == [1, 1]
    assert len(outcome.traces[0].controlnets) == 1
    plain = run(spec_of(registry, [{**base, "ip_adapters": None}, hires]), cache)
    assert pixels(outcome) != pixels(plain)


def test_the_worker_refuses_an_ip_adapter_of_another_architecture_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    adapter = {"name": "demo-sd15-ip", "image": LOOK}
    spec = spec_of(registry, [{"model": "demo-sdxl", "steps": 2}])
    smuggled = JobSpec.model_validate(
        {**spec.model_dump(), "stages": [{**spec.stages[0].model_dump(), "ip_adapters": [adapter]}]}
    )
    with pytest.raises(JobRejected) as gateway:
        check_job(smuggled, registry, JobLimits())
    [said] = gateway.value.violations
    assert (said.type, said.loc) == (
        "ip_adapter_architecture_mismatch",
        ("stages", 0, "ip_adapters", 0),
    )
    checked = spec.model_copy(update={"stages": [spec.stages[0].model_copy(
        update={"ip_adapters": smuggled.stages[0].ip_adapters})]})  # fmt: skip
    assert run(checked, cache) == Failed(FailureType.INVALID_JOB, said.msg)


def test_members_of_one_call_share_their_ip_adapter_picture_as_each_alone(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    from workers.stages.chain import Member, run_group

    def member(seed: int) -> Member:
        adapter = {"name": "demo-sdxl-ip", "image": LOOK}
        stages = [{"model": "demo-sdxl", "steps": 2, "ip_adapters": [adapter]}]
        return Member(str(seed), spec_of(registry, stages, seed=seed), never_stop)

    alone = [member(s) for s in (1, 2)]
    for m in alone:
        run_group([m], range(1), cache.get, "w", Components.of(cache))
    together = [member(s) for s in (1, 2)]
    run_group(together, range(1), cache.get, "w", Components.of(cache))
    made = [m.outcome for m in (*alone, *together)]
    assert all(isinstance(o, Made) for o in made), made
    one, two, both_one, both_two = (pixels(o) for o in made)  # type: ignore[arg-type]
    for lone, batched in ((one, both_one), (two, both_two)):
        assert max(abs(a - b) for a, b in zip(lone, batched, strict=True)) <= 1
