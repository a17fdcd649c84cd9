"""Chroma, the architecture added through the one-row seam: its own job, latent handoffs with
Flux (one latent space, two architectures) and refusals from SD3.5 and SD1.5 (other spaces, one
of them with the same 16 channels), pixel handoffs both ways, on the tiny demo Chroma."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.resamplers import Upscaler
from contract.spec import Handoff, JobSpec
from contract.violations import JobRejected
from workers.families import pipelines_for
from workers.models.cache import ModelCache
from workers.models.checkpoint_probe import probe_architecture
from workers.stages.chain import run_chain
from workers.stages.outcomes import Failed, Made, Outcome


@pytest.fixture(scope="module")
def cache(registry: ModelRegistry) -> ModelCache:
    return ModelCache(registry)


def body(stages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"prompt": "a lighthouse", "seed": 3, "width": 64, "height": 64, **fields,
            "stages": stages}  # fmt: skip


def checked(registry: ModelRegistry, stages: list[dict[str, Any]], **fields: Any) -> JobSpec:
    return check_job(JobSpec.model_validate(body(stages, **fields)), registry, JobLimits()).spec


def chain(spec: JobSpec, cache: ModelCache) -> Outcome:
    return run_chain(spec, range(len(spec.stages)), None, cache.get, lambda *_: None, "w")


def run(spec: JobSpec, cache: ModelCache) -> tuple[list[Any], list[Any]]:
    made = chain(spec, cache)
    assert isinstance(made, Made), made
    return made.pictures, made.traces


def test_a_chroma_job_draws_and_its_negative_prompt_counts(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = checked(registry, [{"model": "demo-chroma", "steps": 3}], num_images=2)
    assert (spec.stages[0].steps, spec.stages[0].guidance_scale) == (3, 5.0)  # its row's guidance
    images, traces = run(spec, cache)
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert (traces[0].input, traces[0].sampler) == ("text", "Euler")  # flow matching
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))  # seed, seed + 1
    negative = checked(registry, [{"model": "demo-chroma", "steps": 3}], negative_prompt="fog")
    again, _ = run(negative, cache)
    assert not np.array_equal(np.asarray(again[0]), np.asarray(images[0]))


@pytest.mark.parametrize(("first", "second"), [("demo-flux", "demo-chroma"),
                                               ("demo-chroma", "demo-flux")])  # fmt: skip
def test_flux_and_chroma_hand_latents_to_each_other(
    registry: ModelRegistry, cache: ModelCache, first: str, second: str
) -> None:
    # Two architectures, one VAE: the rule is about latent spaces.
    hires = {"model": second, "mode": "hires", "handoff": "latent", "steps": 2}
    images, traces = run(checked(registry, [{"model": first, "steps": 2}, hires]), cache)
    assert images[0].size == (128, 128)
    assert (traces[1].input, traces[1].input_latent_space) == ("latents", "flux")
    assert traces[1].input_shape == [1, 16, 8, 8]  # unpacked between the stages


@pytest.mark.parametrize("source", ["demo-sd35", "demo-sd15"])
def test_latents_of_another_space_are_refused_at_admission_naming_the_fix(
    registry: ModelRegistry, source: str
) -> None:
    hires = {"model": "demo-chroma", "mode": "hires", "handoff": "latent"}
    with pytest.raises(JobRejected) as refused:
        checked(registry, [{"model": source}, hires])
    [violation] = refused.value.violations
    assert (violation.type, violation.loc) == ("latent_space_mismatch", ("stages", 1, "handoff"))
    assert "Use handoff: pixel" in violation.msg
    # and the other way round
    with pytest.raises(JobRejected):
        checked(registry, [{"model": "demo-chroma"}, {**hires, "model": source}])


def test_the_worker_refuses_sd35_latents_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    valid = checked(
        registry, [{"model": "demo-sd35", "steps": 2}, {"model": "demo-chroma", "mode": "hires"}]
    )
    latent = valid.stages[1].model_copy(
        update={"handoff": Handoff.LATENT, "upscaler": Upscaler.LATENT_BILINEAR}
    )
    refused = chain(valid.model_copy(update={"stages": [valid.stages[0], latent]}), cache)
    assert isinstance(refused, Failed)
    assert refused.type == "latent_space_mismatch"


@pytest.mark.parametrize(("first", "second"), [("demo-sd15", "demo-chroma"),
                                               ("demo-chroma", "demo-sd15")])  # fmt: skip
def test_pixel_handoffs_work_both_ways(
    registry: ModelRegistry, cache: ModelCache, first: str, second: str
) -> None:
    hires = {"model": second, "mode": "hires", "handoff": "pixel", "steps": 2}
    images, traces = run(checked(registry, [{"model": first, "steps": 2}, hires]), cache)
    assert images[0].size == (128, 128)
    assert [t.input for t in traces] == ["text", "pixels"]


def test_a_chroma_file_is_told_from_a_flux_file_though_it_carries_fluxs_names(
    cache: ModelCache, tmp_path: Any
) -> None:
    transformer = cache.get("demo-chroma").text.transformer
    weights = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    # A Flux marker beside Chroma's own, as a Chroma file in BFL's layout has both.
    weights["double_blocks.0.img_attn.norm.key_norm.scale"] = torch.ones(1)
    path = tmp_path / "chroma.safetensors"
    save_file(weights, path)
    assert probe_architecture(path) == "chroma"
    assert pipelines_for("chroma").guidance == "two_calls"
