"""Running a job's stages in order, handing latents or pictures from one stage to the next.

A stage hands *latents* on only inside one latent space (checked again here, whatever the gateway
said: a job can reach Redis by other paths); otherwise it hands on decoded *pictures*, which the
next model's img2img encodes with its own VAE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, FluxPipeline
from PIL import Image

from contract.checked import CheckedSpec, RefineStage, UpscaleStage
from contract.embeddings import embeddings_of
from contract.envelope import ControlNetTrace, FailureType, IpAdapterTrace, StageTrace
from contract.images import InitImageRejected, decode_init_image
from contract.job_rules import CheckedJob, latent_handoff_violation
from contract.latent_spaces import LatentSpace
from contract.registry import ModelEntry
from contract.resamplers import Upscaler
from contract.spec import ControlNetUse, Handoff, Mode, Stage
from contract.upscalers import upscaler_violation
from jobs.disclosure import public_worker_name
from jobs.outage import REDIS_ERRORS
from workers.families import pipelines_for
from workers.models.cache import LoadedModel
from workers.models.upscalers import NonFiniteUpscale, upscale
from workers.stages.control_images import control_image, fitted
from workers.stages.errors import StageError
from workers.stages.finite import finite_pictures, non_finite
from workers.stages.guidance import per_picture_guidance
from workers.stages.init_latents import latent_upscaled
from workers.stages.masks import (
    LATENT_CONTENT,
    Inpainting,
    inpaint_input,
    latent_start,
    outpaint_canvas,
)
from workers.stages.outcomes import Failed, Made, Outcome, Stopped, StopReason
from workers.stages.setup import (
    NO_PIXEL_LIMIT,
    Components,
    ImagePrompt,
    Steering,
    UpscalerLookup,
    stage_clip_skip,
    stage_controlnets,
    stage_embeddings,
    stage_ip_adapter,
    stage_loras,
    stage_sampler,
    stage_vae,
)

log = logging.getLogger("imagegen.worker")
__all__ = ["Components", "Member", "run_chain", "run_group"]


@dataclass
class Latents:
    tensor: torch.Tensor  # (batch, channels, h, w), unpacked, scaled as the VAE encodes
    made_by: ModelEntry  # whose latent space they are in
    ends_at: float | None  # the fraction of the schedule where the making stage stopped

    @property
    def space(self) -> LatentSpace:
        return self.made_by.latent_space


@dataclass
class Pictures:
    images: list[Image.Image]
    decoded_again_in_fp32: bool = False


Carry = Latents | Pictures


# (stage index, steps done, steps in this stage) -> a reason to stop, or None
StepMonitor = Callable[[int, int, int], StopReason | None]
ModelLookup = Callable[[str], LoadedModel]


@dataclass
class Member:
    """One job in a group whose stages run as shared pipeline calls (one job alone is a group of
    one; workers.segments.batching gathers bigger ones). Its pictures keep their own prompt,
    negative prompt and seeds; it leaves the group when its monitor says stop or its pictures
    fail, and ends with an outcome whatever happens (workers.stages.outcomes)."""

    job_id: str
    spec: CheckedSpec  # the group's members share every stage but their prompts
    monitor: StepMonitor
    carry: Carry | None = None  # what its last stage handed on (None: text to image)
    mask: Image.Image | None = None  # its first stage's (contract.masks): that stage inpaints
    traces: list[StageTrace] = field(default_factory=list)
    outcome: Outcome | None = None  # None while it runs
    start: Carry | None = field(init=False)  # what the segment started from, to start again

    def __post_init__(self) -> None:
        self.start = self.carry

    @classmethod
    def first(cls, job_id: str, checked: CheckedJob, monitor: StepMonitor) -> Member:
        """A job at its first segment: from text, or from its init image (on its grown canvas
        when it outpaints), once per picture, with its mask."""
        init = checked.init_image
        if init is not None and checked.spec.outpaint is not None:
            init = outpaint_canvas(init, checked.spec.outpaint)
        carry = None if init is None else Pictures([init] * checked.spec.num_images)
        return cls(job_id, checked.spec, monitor, carry, mask=checked.mask)

    @property
    def running(self) -> bool:
        return self.outcome is None

    def again(self) -> None:
        """Back to the start of the segment, to run it again (a batch split after running out of
        memory): no outcome, only what it started from carried, nothing traced."""
        self.outcome, self.carry, self.traces = None, self.start, []

    @property
    def pictures(self) -> list[Image.Image]:
        # A segment ends where the pool changes, which only a pixel handoff may do.
        assert isinstance(self.carry, Pictures), "a segment must end in pictures"
        return self.carry.images


def run_chain(
    spec: CheckedSpec,
    stages: range,
    pictures: list[Image.Image] | None,
    models: ModelLookup,
    monitor: StepMonitor,
    worker: str,
    components: Components | None = None,
    mask: Image.Image | None = None,
) -> Outcome:
    """Run `stages` of a normalized spec, starting from `pictures` (an init image or what the
    previous segment handed over) or from text, for one job alone; return how they ended.
    `components` are the registry's LoRAs, VAEs and upscaler models, for stages that name some,
    with the loaders of those that load apart from a model; `mask`, the job's read mask."""
    carry = Pictures(pictures) if pictures is not None else None
    member = Member("", spec, monitor, carry, mask=mask)
    run_group([member], stages, models, worker, components)
    assert member.outcome is not None  # run_group ends every member
    return member.outcome


def run_group(
    members: list[Member],
    stages: range,
    models: ModelLookup,
    worker: str,
    components: Components | None = None,
    left: Callable[[Member], None] | None = None,
) -> None:
    """Run `stages` for every member, one pipeline call per stage for all of them, and end each
    with an outcome: `Made` (its pictures and traces), `Stopped` or `Failed`. `left` hears of a
    member that stopped or failed as soon as its stage's call returns. What no one member owns
    (a model that cannot load, a call out of memory) fails every member still running; losing
    Redis is raised, for the segment to run again once it is back."""
    try:
        _run_stages(members, stages, models, worker, components or Components(), left)
    except REDIS_ERRORS:
        raise
    except Exception as exc:  # a model that raises must not take the worker down
        failure = Failed.of(exc)
        for member in members:
            if member.running:
                member.outcome = failure
        return
    for member in members:
        if member.running:
            member.outcome = Made(member.pictures, member.traces)
    if len(members) > 1:
        log.info("ran %d jobs' stages %s together", len(members), list(stages))


def _run_stages(
    members: list[Member],
    stages: range,
    models: ModelLookup,
    worker: str,
    components: Components,
    left: Callable[[Member], None] | None,
) -> None:
    for i in stages:
        group = [m for m in members if m.running]
        if not group:
            return
        stage = group[0].spec.stages[i]
        started = time.perf_counter()
        if isinstance(stage, UpscaleStage):
            _upscale_stage(i, group, stage, components.upscaler, worker)
            continue
        model = models(stage.model)
        received = [_describe(m.carry, i) for m in group]
        with (
            stage_loras(model, i, stage, components.loras),
            stage_vae(model, i, stage, components.vaes, components.vae),
            stage_embeddings(model, i, [m.spec for m in group], components) as spell,
            stage_ip_adapter(model, i, stage, components) as image_prompt,
        ):
            steering = stage_controlnets(model, i, stage, components)
            step_seconds, sampler = _run_stage(
                i, group, model, components.upscaler, spell, steering, image_prompt
            )
        for member in group:
            if not member.running and left is not None:
                left(member)
        width, height = group[0].spec.size_of(i)
        seconds = round(time.perf_counter() - started, 4)
        made_together = sum(m.spec.num_images for m in group)
        for member, (source, space, shape) in zip(group, received, strict=True):
            if not member.running:
                continue
            member.traces.append(
                StageTrace(
                    stage=i,
                    model=stage.model,
                    worker=public_worker_name(worker),  # no host, no pid (jobs.disclosure)
                    sampler=sampler,
                    input=source,
                    input_latent_space=space,
                    input_shape=shape,
                    width=width,
                    height=height,
                    seconds=seconds,
                    step_seconds=None if step_seconds is None else round(step_seconds, 5),
                    decoded_again_in_fp32=isinstance(member.carry, Pictures)
                    and member.carry.decoded_again_in_fp32,
                    loras=stage.loras or [],
                    upscaler=None if stage.upscaler is None else str(stage.upscaler),
                    clip_skip=stage.clip_skip,
                    vae=stage.vae,
                    embeddings=embeddings_of(
                        member.spec, member.spec.stages[i], components.embeddings
                    ),
                    controlnets=[ControlNetTrace.of(u) for u in steering.uses] if steering else [],
                    ip_adapters=[IpAdapterTrace.of(image_prompt.use)] if image_prompt else [],
                    batch_size=made_together,
                )
            )


def _masked(i: int, member: Member) -> Image.Image | None:
    """The mask stage i inpaints with (as read, at the init image's size): the job's, on its
    first stage from its init image, and on each hires stage marked `masked` (handed
    pictures); `inpaint_input` meets it with the stage's size."""
    if member.mask is None or not isinstance(member.carry, Pictures):
        return None
    if i != 0 and not member.spec.stages[i].masked:
        return None
    return member.mask


def _rows(group: list[Member]) -> Iterator[tuple[Member, slice]]:
    """Each member with its rows of the group's call (its pictures, in member order)."""
    start = 0
    for member in group:
        rows = slice(start, start + member.spec.num_images)
        start = rows.stop
        yield member, rows


def _describe(carry: Carry | None, index: int) -> tuple[str, str | None, list[int] | None]:
    if carry is None:
        return "text", None, None
    if isinstance(carry, Latents):
        return "latents", carry.space.name, list(carry.tensor.shape)
    return ("init_image" if index == 0 else "pixels"), None, None


def _run_stage(
    i: int,
    group: list[Member],
    model: LoadedModel,
    upscalers: UpscalerLookup | None,
    spell: Callable[[str], str],
    steering: Steering | None,
    image_prompt: ImagePrompt | None,
) -> tuple[float | None, str]:
    """Run stage i for the group in one call: each member's carry becomes what the stage hands
    on, or the member stops or fails. Returns the mean denoising step time and the sampler."""
    spec = group[0].spec  # the stage's settings; prompts and seeds are each member's
    stage = spec.stages[i]
    following = spec.stages[i + 1] if i + 1 < len(spec.stages) else None
    arch = model.entry.arch
    classes = pipelines_for(arch.name)
    width, height = spec.size_of(i)
    want_latents = following is not None and following.handoff is Handoff.LATENT
    ends_at = following.switch_at if isinstance(following, RefineStage) else None

    # One row per picture: its member's prompt, negative prompt and guidance, its seed's noise.
    prompts, negatives, scales, generators = [], [], [], []
    for member in group:
        s = member.spec.stages[i]
        assert not isinstance(s, UpscaleStage), "an upscale stage runs no pipeline"
        for k in range(member.spec.num_images):
            # Embedding names become the tokens lent for them (workers.models.embeddings).
            prompts.append(spell(member.spec.prompt_of(s)))
            negatives.append(spell(member.spec.negative_prompt_of(s) or ""))
            scales.append(s.guidance_scale)
            generators.append(torch.Generator("cpu").manual_seed(member.spec.seed_of(k)))
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "num_inference_steps": stage.steps,
        "generator": generators,
        # Pictures as float tensors, where NaN survives, not as PIL, where it turns black.
        "output_type": "latent" if want_latents else "pt",
    }
    if image_prompt is not None:
        kwargs["ip_adapter_image"] = [image_prompt.picture]  # one per adapter
    # SDXL reads "no negative prompt" as zeros: pass one only where the stage has one (members
    # share that: workers.segments.batching keys on it).
    if arch.negative_prompt and any(negatives):
        kwargs["negative_prompt"] = negatives
    if ends_at is not None:
        kwargs["denoising_end"] = ends_at
    if stage.clip_skip is not None:
        kwargs["clip_skip"] = stage_clip_skip(model.text, i, stage, model)

    carries = [m.carry for m in group]
    if carries[0] is None:
        pipe = model.text
        kwargs.update(height=height, width=width)
        if len(group) == 1 and steering is None:
            # One job's prompt encoded once and repeated, as diffusers does for one prompt.
            n = spec.num_images
            kwargs.update(prompt=prompts[0], num_images_per_prompt=n)
            if "negative_prompt" in kwargs:
                kwargs["negative_prompt"] = negatives[0]
    else:
        pipe = model.image
        carry = _together(carries)
        kwargs.update(
            _image_input(i, stage, model, carry, (width, height), spec, upscalers, generators)
        )
        if classes.image_takes_size:
            # Without an explicit size it resizes its input to its default sample size.
            kwargs.update(height=height, width=width)

    inpaintings: list[Inpainting] = []
    originals: list[Image.Image] = []  # each row's init picture at the stage's size
    if _masked(i, group[0]) is not None:
        if want_latents:  # the rules keep a masked stage from a latent handoff
            raise StageError(FailureType.INVALID_JOB, "a masked stage hands on pixels")
        pipe, originals = model.inpaint, kwargs["image"]
        # Each member's own mask on its own pictures (the batch key shares how they are met).
        start, masks = [], []
        for member, rows in _rows(group):
            mask = _masked(i, member)
            assert mask is not None, "a batch's members are all masked or none"
            inpainting = inpaint_input(member.spec, mask, originals[rows], (width, height))
            inpaintings.append(inpainting)
            start += inpainting.kwargs["image"]
            masks += [inpainting.kwargs["mask_image"]] * member.spec.num_images
        kwargs.update(image=start, mask_image=masks, height=height, width=width)
        if spec.masked_content in LATENT_CONTENT:  # the start is latents, the mask in them
            encoded, masked = latent_start(
                pipe, start, masks, spec.masked_content, generators,
                masked_picture=model.entry.inpainting,
            )  # fmt: skip
            kwargs.update(image=encoded, masked_image_latents=masked)
    if steering is not None:
        pipe, control = _steered(i, group, model, steering, carries, (width, height))
        kwargs.update(control)

    stamps: list[float] = []
    last: list[torch.Tensor] = []  # the latents after the last step, for a decode in fp32
    kwargs["callback_on_step_end"] = _step_callback(i, group, stamps, last)
    with (
        stage_sampler(pipe, stage, arch.name) as sampler,
        per_picture_guidance(pipe, classes, scales) as guidance,
    ):
        output = pipe(**kwargs, guidance_scale=guidance).images
    step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    if want_latents:
        output = unpacked(model, output, width, height, pipe.vae_scale_factor)
    at_end = last[-1] if last else None  # packed for Flux: finite_pictures unpacks them
    for m, (member, rows) in enumerate(_rows(group)):
        if not member.running:
            continue  # stopped in this call: its pictures are dropped
        try:
            if want_latents:
                if not torch.isfinite(output[rows]).all():
                    raise non_finite(i, model, "latents")
                member.carry = Latents(output[rows], model.entry, ends_at)
            else:
                pictures, again = finite_pictures(
                    pipe, output[rows], None if at_end is None else at_end[rows], i, model,
                    (width, height),
                )  # fmt: skip
                if inpaintings:  # the init image back wherever the member's mask keeps it
                    pictures = [
                        inpaintings[m].finished(made, original)
                        for made, original in zip(pictures, originals[rows], strict=True)
                    ]
                member.carry = Pictures(pictures, again)
        except StageError as error:
            member.outcome = Failed.of(error)  # fails this member alone
    return step, sampler


def _steered(
    i: int,
    group: list[Member],
    model: LoadedModel,
    steering: Steering,
    carries: list[Carry | None],
    size: tuple[int, int],
) -> tuple[DiffusionPipeline, dict[str, Any]]:
    """The model's pipeline steered by the stage's ControlNets (a pipeline of the family's
    ControlNet class sharing every module of the model's, made for this call), and its control
    arguments: per unit, one control image per picture in the call's row order, each member's
    own (its image, or its previous stage's picture)."""
    from_text = carries[0] is None
    classes = steering.classes
    cls = classes.text if from_text else classes.image
    one = len(steering.modules) == 1
    pipe = cls.from_pipe(
        model.text, controlnet=steering.modules[0] if one else classes.multi(steering.modules)
    )
    pipe.set_progress_bar_config(disable=True)
    images: list[list[Image.Image]] = []  # per unit, per picture
    for unit in steering.units:
        per_picture: list[Image.Image] = []
        for member, carry in zip(group, carries, strict=True):
            use = (member.spec.stages[i].controlnets or [])[unit]
            sources = _control_sources(i, member, use, carry)
            per_picture += [control_image(source, size, use) for source in sources]
        images.append(per_picture)
    control: Any = images
    several = classes.several_text if from_text else classes.several_image
    if one:
        control = images[0]
    elif several == "per_picture":
        control = [list(row) for row in zip(*images, strict=True)]
    elif several == "shared":
        if any(im.tobytes() != unit[0].tobytes() for unit in images for im in unit):
            raise StageError(
                FailureType.INVALID_JOB,
                f"stage {i}: {model.entry.architecture}'s pipeline takes one control image per "
                "ControlNet for all its pictures when it has several; give each the same image "
                "(not image_from: previous with num_images above 1)",
            )
        control = [unit[0] for unit in images]
    arg = classes.text_image_arg if from_text else "control_image"
    settings: dict[str, Any] = {
        "controlnet_conditioning_scale": [u.weight for u in steering.uses],
        "control_guidance_start": [u.guidance_start for u in steering.uses],
        "control_guidance_end": [u.guidance_end for u in steering.uses],
    }
    if one:  # one ControlNet, not in a list: its settings as plain numbers
        settings = {k: v[0] for k, v in settings.items()}
    elif classes.several_need_modes:
        settings["control_mode"] = [None] * len(steering.uses)
    return pipe, {arg: control, **settings}


def _control_sources(
    i: int, member: Member, use: ControlNetUse, carry: Carry | None
) -> list[Image.Image]:
    """The unit's control image before it meets the stage's size, for each of the member's
    pictures: its own image for all of them, or each picture's previous-stage picture."""
    n = member.spec.num_images
    if use.image_from == "previous":
        if not isinstance(carry, Pictures):
            raise StageError(
                FailureType.INVALID_JOB,
                f"stage {i}'s ControlNet {use.name!r} takes the previous stage's picture, but "
                "the stage was handed latents; use handoff: pixel",
            )
        return carry.images
    if use.image is None:
        raise StageError(
            FailureType.INVALID_JOB, f"stage {i}'s ControlNet {use.name!r} has no control image"
        )
    try:
        decoded = decode_init_image(use.image, NO_PIXEL_LIMIT, what="the control image")
    except InitImageRejected as rejected:
        raise StageError(FailureType.INVALID_JOB, rejected.violation.msg) from rejected
    return [decoded] * n


def _together(carries: list[Carry | None]) -> Carry:
    """The group's carries as one input: latents stacked, pictures listed, in member order."""
    if all(isinstance(c, Latents) for c in carries):
        latents = [c for c in carries if isinstance(c, Latents)]
        first = latents[0]
        return Latents(torch.cat([c.tensor for c in latents]), first.made_by, first.ends_at)
    pictures = [c for c in carries if isinstance(c, Pictures)]
    assert len(pictures) == len(carries), "a group's members hand on alike"
    return Pictures([image for c in pictures for image in c.images])


def _image_input(
    i: int,
    stage: Stage,
    model: LoadedModel,
    carry: Carry,
    size: tuple[int, int],
    spec: CheckedSpec,
    upscalers: UpscalerLookup | None,
    generators: list[torch.Generator],
) -> dict[str, Any]:
    width, height = size
    if isinstance(carry, Latents):
        mismatch = latent_handoff_violation(i, carry.made_by, model.entry)
        if mismatch is not None:
            raise StageError.refusing(mismatch, FailureType.LATENT_SPACE_MISMATCH)
        if stage.mode is Mode.REFINE:
            if carry.ends_at is None:
                raise StageError(
                    FailureType.INVALID_JOB,
                    f"stage {i} refines, but stage {i - 1} ran to "
                    "its end; refine needs a stage that stopped at switch_at",
                )
            return {"image": carry.tensor, "denoising_start": carry.ends_at}
        upscaler = stage.upscaler or ""  # a checked hires stage names one
        # On latents no upscaler model fits, served here or not: the rule's handoff wording.
        misfit = upscaler_violation(i, upscaler, Handoff.LATENT, served=[str(upscaler)])
        if misfit is not None:
            raise StageError.refusing(misfit, FailureType.INVALID_JOB)
        chosen = Upscaler(upscaler)  # a latent resampler, as the rule just said
        factor = model.entry.latent_space.vae_downscale
        resized = F.interpolate(
            carry.tensor, size=(height // factor, width // factor), mode=chosen.interpolation,
            antialias=chosen.antialiased,
        )  # fmt: skip
        return {"image": resized, "strength": stage.denoise}
    # Pixels: the init image (first stage) or the previous stage's decoded pictures.
    if i == 0:  # met with the stage's size as asked (A1111's resize modes)
        mode = spec.init_resize or "just_resize"
        if mode == "latent_upscale":
            factor = model.entry.latent_space.vae_downscale
            image = latent_upscaled(model.inpaint, carry.images, size, factor, generators)
            return {"image": image, "strength": spec.strength}
        return {"image": [fitted(im, size, mode) for im in carry.images],
                "strength": spec.strength}  # fmt: skip
    if stage.mode is Mode.REFINE:
        raise StageError(FailureType.INVALID_JOB, f"stage {i} refines but was handed pixels")
    assert stage.upscaler is not None, "a checked hires stage names its upscaler"
    return {"image": _resized(carry.images, size, stage.upscaler, upscalers),
            "strength": stage.denoise}  # fmt: skip


def _resized(
    images: list[Image.Image],
    size: tuple[int, int],
    upscaler: Upscaler | str,
    upscalers: UpscalerLookup | None,
) -> list[Image.Image]:
    """The pictures at `size` by a resampler or an upscaler model."""
    if isinstance(upscaler, Upscaler):
        resample = Image.Resampling[upscaler.interpolation.upper()]
        return [im.resize(size, resample) for im in images]
    if upscalers is None:
        raise StageError(FailureType.INVALID_JOB, f"upscaler {upscaler!r} is not served here")
    try:
        return upscale(images, size, upscalers(upscaler))
    except NonFiniteUpscale as broken:
        raise StageError(FailureType.NON_FINITE_OUTPUT, str(broken)) from broken


def _upscale_stage(
    i: int,
    group: list[Member],
    stage: UpscaleStage,
    upscalers: UpscalerLookup | None,
    worker: str,
) -> None:
    """An upscale job's stage, picture by picture: the init picture met with the job's size as
    asked, upscaled to cover the stage's size and centre-cropped to it (A1111's Extras crop;
    by a scale, covering is the size). No model runs."""
    size = (stage.width, stage.height)
    for member in group:
        started = time.perf_counter()
        spec, carry = member.spec, member.carry
        if not isinstance(carry, Pictures):
            raise StageError(FailureType.INVALID_JOB, "an upscale stage needs its init_image")
        mode = spec.init_resize or "just_resize"
        assert mode != "latent_upscale", "the rules keep a latent resize from an upscale job"

        def upscaled(image: Image.Image, to: tuple[int, int]) -> Image.Image:
            return _resized([image], to, stage.upscaler, upscalers)[0]

        try:
            met = [fitted(im, (spec.width, spec.height), mode) for im in carry.images]
            pictures = [fitted(im, size, "crop_and_resize", upscaled) for im in met]
        except StageError as error:
            member.outcome = Failed.of(error)
            continue
        reason = member.monitor(i, 1, 1)
        if reason is not None:
            member.outcome = Stopped(reason)
            continue
        member.carry = Pictures(pictures)
        member.traces.append(
            StageTrace(
                stage=i, model=str(stage.upscaler), worker=public_worker_name(worker),
                sampler="none", input="init_image", width=size[0], height=size[1],
                seconds=round(time.perf_counter() - started, 4), upscaler=str(stage.upscaler),
            )
        )  # fmt: skip


def unpacked(
    model: LoadedModel, latents: torch.Tensor, width: int, height: int, vae_scale_factor: int
) -> torch.Tensor:
    """Latents as (batch, channels, h, w): a latent space packed 2x2 (Flux's) comes out of the
    pipeline as 2x2 patches per token; between stages latents stay spatial."""
    if model.entry.latent_space.packed_2x2:
        return FluxPipeline._unpack_latents(latents, height, width, vae_scale_factor)
    return latents


def _step_callback(
    stage: int, group: list[Member], stamps: list[float], last: list[torch.Tensor]
) -> Callable[[DiffusionPipeline, int, Any, dict[str, Any]], dict[str, Any]]:
    def on_step_end(
        pipe: DiffusionPipeline, step: int, _t: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        stamps.append(time.perf_counter())
        if "latents" in tensors:
            last[:] = [tensors["latents"]]
        for member in group:
            if member.running:
                reason = member.monitor(stage, step + 1, pipe.num_timesteps)
                if reason is not None:
                    member.outcome = Stopped(reason)
        if not any(m.running for m in group):
            # diffusers stops its loop at the next step; the caller discards the output.
            pipe._interrupt = True
        return tensors

    return on_step_end
