"""Jobs with different guidance scales share a call and each picture is guided by its own: as
alone, for every architecture (classifier-free guidance in one call or, Chroma's, in two; Flux's
guidance input; a guidance-distilled UNet's guidance embedding)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from workers.families import pipelines_for
from workers.models.cache import ModelCache
from workers.stages.chain import Member, run_group
from workers.stages.guidance import per_picture_guidance


@pytest.fixture(scope="module")
def cache(registry: ModelRegistry) -> ModelCache:
    return ModelCache(registry)


def member(registry: ModelRegistry, model: str, guidance: float, **job: Any) -> Member:
    """A job of one stage of `model`; of two, SDXL's base (guidance 7) and then the refiner with
    `guidance`, for demo-sdxl-refiner."""
    stage = {"model": model, "steps": 3, "guidance_scale": guidance}
    stages = [stage]
    if model == "demo-sdxl-refiner":
        refine = {**stage, "mode": "refine", "steps": 8, "switch_at": 0.5}
        stages = [{"model": "demo-sdxl", "steps": 8}, refine]
    body = {"prompt": "a lighthouse", "width": 64, "height": 64, **job, "stages": stages}
    spec = check_job(JobSpec.model_validate(body), registry, JobLimits()).spec
    return Member(f"{model}-{guidance}", spec, lambda *_: None)


def levels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


@pytest.mark.parametrize(
    ("model", "scales"),
    [
        ("demo-sd15", (7.0, 3.0, 12.0)),
        ("demo-sdxl", (7.0, 3.0, 12.0)),
        ("demo-sdxl-refiner", (20.0, 1.5, 7.0)),
        ("demo-sd35", (7.0, 3.0, 12.0)),
        ("demo-flux", (3.5, 1.0, 8.0)),  # an input of the transformer, not a mix of two halves
        ("demo-chroma", (5.0, 3.0, 12.0)),  # the two halves come from two calls
    ],
)
def test_each_picture_of_a_shared_call_is_guided_by_its_own_scale(
    registry: ModelRegistry, cache: ModelCache, model: str, scales: tuple[float, ...]
) -> None:
    jobs = [{"seed": 3}, {"seed": 5, "num_images": 2}, {"seed": 9, "prompt": "a red barn"}]
    stages = range(2 if model == "demo-sdxl-refiner" else 1)
    together = [member(registry, model, g, **job) for g, job in zip(scales, jobs, strict=True)]
    run_group(together, stages, cache.get, "w")
    for g, job, shared in zip(scales, jobs, together, strict=True):
        alone = member(registry, model, g, **job)
        run_group([alone], stages, cache.get, "w")
        for a, b in zip(alone.pictures, shared.pictures, strict=True):
            assert np.abs(levels(a) - levels(b)).max() <= 1, f"guidance {g}"
    # and one scale for the call would show: the second job guided by the first's (random
    # weights answer guidance weakly, the demo refiner least: 5 levels between 20 and 1.5)
    other = member(registry, model, scales[0], **jobs[1])
    run_group([other], stages, cache.get, "w")
    assert np.abs(levels(other.pictures[0]) - levels(together[1].pictures[0])).max() > 3


def test_unguided_jobs_with_different_scales_share_a_call(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    # At 1 or below the pipeline does not guide at all: the scale changes nothing.
    together = [member(registry, "demo-sd15", 1.0), member(registry, "demo-sd15", 0.5, seed=4)]
    run_group(together, range(1), cache.get, "w")
    alone = member(registry, "demo-sd15", 0.5, seed=4)
    run_group([alone], range(1), cache.get, "w")
    assert np.abs(levels(alone.pictures[0]) - levels(together[1].pictures[0])).max() <= 1


def test_a_guidance_distilled_unet_takes_each_pictures_scale_as_its_embedding(
    cache: ModelCache,
) -> None:
    # An LCM-style UNet (time_cond_proj_dim): the scale is an input embedding, no CFG halves.
    base = cache.get("demo-sd15").text
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({**base.unet.config, "time_cond_proj_dim": 16})
    pipe = StableDiffusionPipeline(**{**base.components, "unet": unet})

    def draw(prompts: list[str], seeds: list[int], guidance: float) -> list[np.ndarray]:
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        out = pipe(prompts, num_inference_steps=3, height=64, width=64, guidance_scale=guidance,
                   generator=generators, output_type="np").images  # fmt: skip
        return [np.round(image * 255).astype(int) for image in out]

    with per_picture_guidance(pipe, pipelines_for("sd15"), [2.0, 9.0]) as passed:
        together = draw(["a lighthouse", "a red barn"], [1, 2], passed)
    assert np.abs(together[1] - draw(["a red barn"], [2], 9.0)[0]).max() <= 1
    assert np.abs(together[0] - draw(["a lighthouse"], [1], 2.0)[0]).max() <= 1
    assert np.abs(together[1] - draw(["a red barn"], [2], 2.0)[0]).max() > 3
