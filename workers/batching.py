"""Several queued jobs' text-to-image stages as one pipeline call.

A GPU runs a batch of 8 latents in little more time than one, so jobs that want the same model,
size, steps, sampler and guidance make more pictures per second together. Each keeps its own
prompt, negative prompt, seeds (one generator per picture, so its noise is what it would be
alone), progress and cancel: a member canceled mid-batch ends `canceled` at once and its
pictures are dropped while the others denoise on.

Which jobs qualify (`batch_key`): a first segment of one stage, text to image, no init image.
Guidance is part of the key: diffusers applies one guidance scale to a whole call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from contract.envelope import StageTrace
from contract.registry import LoraEntry
from contract.segments import Segment
from contract.spec import JobSpec
from workers.chain import negative_prompt_of, seed_of, stage_loras, stage_sampler
from workers.finite import finite_pictures
from workers.runtime import LoadedModel
from workers.stage_errors import StageError

log = logging.getLogger("imagegen.worker")

# (stage, step, steps) -> a reason to stop this member, or None
Monitor = Callable[[int, int, int], str | None]


@dataclass(frozen=True)
class BatchKey:
    model: str
    width: int
    height: int
    steps: int
    sampler: str | None
    scheduler: str | None
    guidance: float
    loras: tuple[tuple[str, float], ...]
    # SDXL encodes "no negative prompt" as zeros, an empty one as text: they cannot share a call
    negative: bool


def batch_key(spec: JobSpec, segments: list[Segment]) -> BatchKey | None:
    """What a job's first segment must share with others to run in one call; None if it
    cannot run batched."""
    if spec.strength is not None or segments[0].end != 1:
        return None
    stage = spec.stages[0]
    assert stage.steps is not None, "spec not normalized"
    assert stage.guidance_scale is not None, "spec not normalized"
    negative = negative_prompt_of(spec, stage)
    return BatchKey(
        stage.model,
        spec.width,
        spec.height,
        stage.steps,
        stage.sampler,
        stage.scheduler,
        stage.guidance_scale,
        tuple((u.name, u.weight) for u in stage.loras or ()),
        bool(negative),
    )


@dataclass(frozen=True)
class Batching:
    """How a worker batches: the pool whose queue it gathers from, how long a job waits for
    companions, and how many pictures one call may make."""

    pool: str
    window_s: float
    max_images: int = 8
    max_megapixels: float = 8.0  # pictures × their pixels per call: a bound on activations

    def capacity(self, key: BatchKey) -> int:
        by_pixels = int(self.max_megapixels * 1e6 // (key.width * key.height))
        return max(1, min(self.max_images, by_pixels))


@dataclass
class Member:
    job_id: str
    spec: JobSpec  # normalized
    monitor: Monitor
    stopped: str | None = None  # "canceled" or "timeout", once its monitor said so
    pictures: list[Image.Image] = field(default_factory=list)
    trace: StageTrace | None = None
    error: StageError | None = None


def run_text_batch(
    members: list[Member], model: LoadedModel, loras: Mapping[str, LoraEntry], worker: str
) -> None:
    """One call for every member's pictures; fills each member's pictures and trace, or its
    `stopped` reason or `error` (a non-finite picture fails that member alone)."""
    first = members[0].spec
    stage = first.stages[0]
    prompts, negatives, generators = [], [], []
    for member in members:
        spec = member.spec
        s = spec.stages[0]
        negative = negative_prompt_of(spec, s)
        for k in range(spec.num_images):
            prompts.append(s.prompt or spec.prompt)
            negatives.append(negative or "")
            generators.append(torch.Generator("cpu").manual_seed(seed_of(spec, k)))
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "num_inference_steps": stage.steps,
        "guidance_scale": stage.guidance_scale,
        "generator": generators,
        "height": first.height,
        "width": first.width,
        "output_type": "pt",
    }
    if model.entry.arch.negative_prompt and any(negatives):
        kwargs["negative_prompt"] = negatives
    stamps: list[float] = []
    last: list[torch.Tensor] = []

    def on_step_end(pipe: Any, step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        stamps.append(time.perf_counter())
        if "latents" in tensors:
            last[:] = [tensors["latents"]]
        for member in members:
            if member.stopped is None:
                member.stopped = member.monitor(0, step + 1, pipe.num_timesteps)
        if all(m.stopped is not None for m in members):
            pipe._interrupt = True
        return tensors

    kwargs["callback_on_step_end"] = on_step_end
    started = time.perf_counter()
    pipe = model.text
    with (
        stage_loras(model, stage, loras),
        stage_sampler(pipe, stage, model.entry.arch.name) as sampler,
    ):
        output = pipe(**kwargs).images
    seconds = time.perf_counter() - started
    step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    latents = last[-1] if last else None  # packed for Flux: finite_pictures unpacks them
    start = 0
    for member in members:
        count = member.spec.num_images
        rows = slice(start, start + count)
        start += count
        if member.stopped is not None:
            continue
        try:
            member.pictures, again = finite_pictures(
                pipe,
                output[rows],
                None if latents is None else latents[rows],
                0,
                model,
                (first.width, first.height),
            )
        except StageError as error:
            member.error = error
            continue
        member.trace = StageTrace(
            stage=0,
            model=stage.model,
            worker=worker,
            sampler=sampler,
            input="text",
            width=first.width,
            height=first.height,
            seconds=round(seconds, 4),
            step_seconds=None if step is None else round(step, 5),
            decoded_again_in_fp32=again,
            loras=stage.loras or [],
            batch_size=len(prompts),
        )
    log.info("ran %d jobs (%d pictures) in one call", len(members), len(prompts))
