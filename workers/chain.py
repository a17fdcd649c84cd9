"""Running a job's stages in order, handing latents or pictures from one stage to the next.

A stage hands *latents* on only inside one latent space (checked again here, whatever the gateway
said: a job can reach Redis by other paths); otherwise it hands on decoded *pictures*, which the
next model's img2img encodes with its own VAE.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from diffusers import (
    DiffusionPipeline,
    FluxImg2ImgPipeline,
    FluxPipeline,
    StableDiffusion3Img2ImgPipeline,
)
from PIL import Image

from contract.architectures import ArchitectureName
from contract.envelope import FailureType, StageTrace
from contract.latent_spaces import LatentSpace, can_hand_off_latents
from contract.registry import LoraEntry
from contract.samplers import AUTOMATIC, sampler_name, samplers_for
from contract.spec import Handoff, JobSpec, Mode, Stage
from contract.stage_sizes import stage_size
from workers.finite import finite_pictures, non_finite
from workers.runtime import LoadedModel
from workers.stage_errors import StageError, Stopped
from workers.upscalers import LoadedUpscaler, upscale

log = logging.getLogger("imagegen.worker")
__all__ = ["StageError", "Stopped", "run_chain"]

_RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_LATENT_MODES = {
    "latent-bilinear": "bilinear",
    "latent-bicubic": "bicubic",
    "latent-nearest": "nearest",
}


@dataclass
class Latents:
    tensor: torch.Tensor  # (batch, channels, h, w), unpacked, scaled as the VAE encodes
    space: LatentSpace
    ends_at: float | None  # the fraction of the schedule where the making stage stopped


@dataclass
class Pictures:
    images: list[Image.Image]
    decoded_again_in_fp32: bool = False


Carry = Latents | Pictures


# (stage index, steps done, steps in this stage) -> a reason to stop, or None
StepMonitor = Callable[[int, int, int], str | None]
ModelLookup = Callable[[str], LoadedModel]
UpscalerLookup = Callable[[str], LoadedUpscaler]


def run_chain(
    spec: JobSpec,
    stages: range,
    pictures: list[Image.Image] | None,
    models: ModelLookup,
    monitor: StepMonitor,
    worker: str,
    loras: Mapping[str, LoraEntry] | None = None,
    upscalers: UpscalerLookup | None = None,
) -> tuple[list[Image.Image], list[StageTrace]]:
    """Run `stages` of a normalized spec, starting from `pictures` (an init image or what the
    previous segment handed over) or from text; return the pictures and a trace per stage.
    `loras` are the registry's, for stages that name some; `upscalers` loads upscaler models
    for hires stages that name one."""
    carry: Carry | None = Pictures(pictures) if pictures is not None else None
    traces = []
    for i in stages:
        stage = spec.stages[i]
        following = spec.stages[i + 1] if i + 1 < len(spec.stages) else None
        started = time.perf_counter()
        model = models(stage.model)
        received, space, shape = _describe(carry, i)
        with stage_loras(model, stage, loras or {}):
            carry, step_seconds, sampler = _run_stage(
                spec, i, stage, following, model, carry, monitor, upscalers
            )
        width, height = stage_size(spec, i)
        traces.append(
            StageTrace(
                stage=i,
                model=stage.model,
                worker=worker,
                sampler=sampler,
                input=received,
                input_latent_space=space,
                input_shape=shape,
                width=width,
                height=height,
                seconds=round(time.perf_counter() - started, 4),
                step_seconds=None if step_seconds is None else round(step_seconds, 5),
                decoded_again_in_fp32=isinstance(carry, Pictures) and carry.decoded_again_in_fp32,
                loras=stage.loras or [],
                upscaler=None if stage.upscaler is None else str(stage.upscaler),
            )
        )
    # A segment ends where the pool changes, which only a pixel handoff may do.
    assert isinstance(carry, Pictures), "a segment must end in pictures"
    return carry.images, traces


def _describe(carry: Carry | None, index: int) -> tuple[str, str | None, list[int] | None]:
    if carry is None:
        return "text", None, None
    if isinstance(carry, Latents):
        return "latents", carry.space.name, list(carry.tensor.shape)
    return ("init_image" if index == 0 else "pixels"), None, None


def _run_stage(
    spec: JobSpec,
    i: int,
    stage: Stage,
    following: Stage | None,
    model: LoadedModel,
    carry: Carry | None,
    monitor: StepMonitor,
    upscalers: UpscalerLookup | None,
) -> tuple[Carry, float | None, str]:
    """Run one stage; return what it hands on, its mean denoising step time and its sampler."""
    arch = model.entry.arch
    width, height = stage_size(spec, i)
    n = spec.num_images
    want_latents = following is not None and following.handoff is Handoff.LATENT
    ends_at = (
        following.switch_at if following is not None and following.mode is Mode.REFINE else None
    )

    prompt = stage.prompt or spec.prompt
    kwargs: dict[str, Any] = {
        "num_inference_steps": stage.steps,
        "guidance_scale": stage.guidance_scale,
        "generator": [torch.Generator("cpu").manual_seed(seed_of(spec, k)) for k in range(n)],
        # Pictures as float tensors, where NaN survives, not as PIL, where it turns black.
        "output_type": "latent" if want_latents else "pt",
    }
    if arch.negative_prompt:
        negative = negative_prompt_of(spec, stage)
        if negative:
            kwargs["negative_prompt"] = negative
    if ends_at is not None:
        kwargs["denoising_end"] = ends_at

    if carry is None:
        pipe = model.text
        kwargs.update(prompt=prompt, num_images_per_prompt=n, height=height, width=width)
    else:
        pipe = model.image
        # One picture per image in the batch, so prompts are per image too.
        kwargs["prompt"] = [prompt] * n
        if "negative_prompt" in kwargs:
            kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * n
        kwargs.update(_image_input(i, stage, model, carry, (width, height), spec, upscalers))
        if isinstance(pipe, (FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline)):
            # Without an explicit size these resize their input to their default sample size.
            kwargs.update(height=height, width=width)

    stop: list[str] = []
    stamps: list[float] = []
    last: list[torch.Tensor] = []  # the latents after the last step, for a decode in fp32
    kwargs["callback_on_step_end"] = _step_callback(i, monitor, stop, stamps, last)
    with stage_sampler(pipe, stage, arch.name) as sampler:
        output = pipe(**kwargs).images
    if stop:
        raise Stopped(stop[0])
    step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    if want_latents:
        if not torch.isfinite(output).all():
            raise non_finite(i, model, "latents")
        latents = _unpack(pipe, output, width, height)
        return Latents(latents, model.entry.latent_space, ends_at), step, sampler
    latents_at_end = last[-1] if last else None
    pictures, again = finite_pictures(pipe, output, latents_at_end, i, model, (width, height))
    return Pictures(pictures, again), step, sampler


@contextlib.contextmanager
def stage_loras(model: LoadedModel, stage: Stage, loras: Mapping[str, LoraEntry]) -> Iterator[None]:
    """The stage's LoRAs active on the model for this stage only. Each file is loaded once per
    model (PEFT adapters on its shared modules, kept for later jobs while the memory budget
    allows, least recently used deleted first) and activated with its weight; afterwards the
    adapters are disabled, so the next job sees the base weights exactly. The architecture rule
    is checked again here, whatever the gateway said."""
    uses = stage.loras or []
    if not uses:
        yield
        return
    pipe = model.text
    for use in uses:
        lora = loras.get(use.name)
        if lora is None or lora.architecture != model.entry.architecture:
            what = "is not registered here" if lora is None else f"is {lora.architecture}"
            raise StageError(
                FailureType.INVALID_JOB,
                f"LoRA {use.name!r} {what}; {model.entry.name!r} is {model.entry.architecture}",
            )
        try:
            model.use_adapter(use.name, lora.file, keep={u.name for u in uses})
        except Exception as exc:  # a bad file fails this job, not the worker
            raise StageError(
                FailureType.MODEL_UNAVAILABLE,
                f"LoRA {use.name!r} ({lora.file.name}) could not be loaded into "
                f"{model.entry.name!r}: {type(exc).__name__}: {str(exc)[:200]}",
            ) from exc
    pipe.enable_lora()
    pipe.set_adapters([u.name for u in uses], [u.weight for u in uses])
    try:
        yield
    finally:
        pipe.disable_lora()


@contextlib.contextmanager
def stage_sampler(
    pipe: DiffusionPipeline, stage: Stage, architecture: ArchitectureName
) -> Iterator[str]:
    """The stage's sampler on `pipe` for one call (a checked name, `contract.samplers`), built
    from the model's own scheduler config so that its training settings carry over; the model's
    own scheduler is back afterwards. Yields the sampler's name."""
    own = pipe.scheduler
    if stage.sampler is None:
        yield sampler_name(type(own).__name__)
        return
    chosen = samplers_for(architecture)[stage.sampler]
    scheduler_class = getattr(diffusers, chosen.scheduler_class)
    options = chosen.scheduler_options(stage.scheduler or AUTOMATIC)
    pipe.scheduler = scheduler_class.from_config(own.config, **options)
    try:
        yield chosen.name
    finally:
        pipe.scheduler = own


def _image_input(
    i: int,
    stage: Stage,
    model: LoadedModel,
    carry: Carry,
    size: tuple[int, int],
    spec: JobSpec,
    upscalers: UpscalerLookup | None,
) -> dict[str, Any]:
    width, height = size
    if isinstance(carry, Latents):
        _require_same_latent_space(i, carry.space, model)
        if stage.mode is Mode.REFINE:
            if carry.ends_at is None:
                raise StageError(
                    FailureType.INVALID_JOB,
                    f"stage {i} refines, but stage {i - 1} ran to "
                    "its end; refine needs a stage that stopped at switch_at",
                )
            return {"image": carry.tensor, "denoising_start": carry.ends_at}
        if str(stage.upscaler) not in _LATENT_MODES:
            raise StageError(
                FailureType.INVALID_JOB,
                f"stage {i} was handed latents, and upscaler {stage.upscaler!r} works on "
                "pictures; use handoff: pixel with it",
            )
        mode = _LATENT_MODES[str(stage.upscaler)]
        factor = model.entry.latent_space.vae_downscale
        resized = F.interpolate(carry.tensor, size=(height // factor, width // factor), mode=mode)
        return {"image": resized, "strength": stage.denoise}
    # Pixels: the init image (first stage) or the previous stage's decoded pictures.
    if i == 0:
        return {"image": [im.resize(size, Image.Resampling.LANCZOS) for im in carry.images],
                "strength": spec.strength}  # fmt: skip
    if stage.mode is Mode.REFINE:
        raise StageError(FailureType.INVALID_JOB, f"stage {i} refines but was handed pixels")
    name = str(stage.upscaler)
    if name in _RESAMPLE:
        images = [im.resize(size, _RESAMPLE[name]) for im in carry.images]
    elif upscalers is None:
        raise StageError(FailureType.INVALID_JOB, f"upscaler {name!r} is not served here")
    else:
        images = upscale(carry.images, size, upscalers(name))
    return {"image": images, "strength": stage.denoise}


def _require_same_latent_space(i: int, space: LatentSpace, model: LoadedModel) -> None:
    target = model.entry.latent_space
    if not can_hand_off_latents(space, target):
        raise StageError(
            FailureType.LATENT_SPACE_MISMATCH,
            f"stage {i} was handed latents of latent space {space.describe()}, but "
            f"{model.entry.name!r} works in {target.describe()}; use handoff: pixel",
        )


def _unpack(
    pipe: DiffusionPipeline, latents: torch.Tensor, width: int, height: int
) -> torch.Tensor:
    # Flux returns latents packed as 2x2 patches per token; keep them spatial between stages.
    if isinstance(pipe, (FluxPipeline, FluxImg2ImgPipeline)):
        return FluxPipeline._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    return latents


def _step_callback(
    stage: int,
    monitor: StepMonitor,
    stop: list[str],
    stamps: list[float],
    last: list[torch.Tensor],
) -> Callable[[DiffusionPipeline, int, Any, dict[str, Any]], dict[str, Any]]:
    def on_step_end(
        pipe: DiffusionPipeline, step: int, _t: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        stamps.append(time.perf_counter())
        if "latents" in tensors:
            last[:] = [tensors["latents"]]
        reason = monitor(stage, step + 1, pipe.num_timesteps)
        if reason is not None:
            # diffusers stops its loop at the next step; the caller discards the output.
            pipe._interrupt = True
            stop.append(reason)
        return tensors

    return on_step_end


def seed_of(spec: JobSpec, k: int) -> int:
    """Picture k's seed: the job's seed plus k."""
    assert spec.seed is not None, "spec not normalized"
    return (spec.seed + k) % 2**64


def negative_prompt_of(spec: JobSpec, stage: Stage) -> str | None:
    """The stage's own negative prompt, else the job's."""
    return stage.negative_prompt if stage.negative_prompt is not None else spec.negative_prompt
