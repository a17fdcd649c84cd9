"""What a stage sets on a model's shared pipeline for one call, and puts back after: its LoRAs,
its VAE, the embeddings its prompts name, its IP-Adapter and its sampler; and what it asks of the
call: its Clip skip, its ControlNets. The next job sees the model as registered."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import diffusers
import torch
from diffusers import DiffusionPipeline
from PIL.Image import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from contract.architectures import ArchitectureName
from contract.controlnets import controlnet_violation
from contract.embedding_files import spelled
from contract.embeddings import embedding_violations, embeddings_of
from contract.envelope import FailureType
from contract.images import InitImageRejected, decode_init_image
from contract.ip_adapters import ip_adapter_violation
from contract.job_rules import clip_skip_violation
from contract.loras import lora_violation
from contract.registry import (
    ControlNetEntry,
    EmbeddingEntry,
    IpAdapterEntry,
    LoraEntry,
    VaeEntry,
)
from contract.samplers import AUTOMATIC, sampler_name, samplers_for
from contract.spec import ControlNetUse, IpAdapterUse, JobSpec, Stage
from contract.vaes import vae_violation
from workers.families import ControlNetPipelines, pipelines_for
from workers.models.cache import LoadedModel, ModelCache, ModelUnavailable
from workers.models.controlnets import LoadedControlNet
from workers.models.embeddings import LoadedEmbedding, lent
from workers.models.ip_adapters import LoadedIpAdapter
from workers.models.ip_adapters import lent as lent_ip_adapter
from workers.models.upscalers import LoadedUpscaler
from workers.models.vaes import LoadedVae
from workers.stages.errors import StageError


@contextlib.contextmanager
def stage_loras(
    model: LoadedModel, stage_index: int, stage: Stage, loras: Mapping[str, LoraEntry]
) -> Iterator[None]:
    """The stage's LoRAs active on the model for this stage only. Each file is loaded once per
    model (PEFT adapters on its shared modules, kept for later jobs while the memory budget
    allows, least recently used deleted first) and activated with its weight; afterwards the
    adapters are disabled, so the next job sees the base weights exactly. The architecture rule
    is checked again here, whatever the gateway said, in the gateway's words."""
    uses = stage.loras or []
    if not uses:
        yield
        return
    pipe = model.text
    for j, use in enumerate(uses):
        misfit = lora_violation(stage_index, j, use, model.entry, loras)
        if misfit is not None:
            raise StageError.refusing(misfit, FailureType.INVALID_JOB)
        lora = loras[use.name]
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


VaeLookup = Callable[[str, LoadedModel], LoadedVae]
UpscalerLookup = Callable[[str], LoadedUpscaler]
EmbeddingLookup = Callable[[str], LoadedEmbedding]
# (name, the model it steers, the names the stage needs) -> the ControlNet on its device
ControlNetLookup = Callable[[str, LoadedModel, set[str]], LoadedControlNet]
IpAdapterLookup = Callable[[str, LoadedModel], LoadedIpAdapter]
# Stage pictures (control images, IP-Adapter pictures) were held to the pixel budget at
# admission; the worker decodes what it checked.
NO_PIXEL_LIMIT = 2**31


@dataclass(frozen=True)
class Components:
    """What a job's stages may load beside their models: the registry's entries, to check each
    use against its rule, and the worker's loaders, where it has them (`Components.of` a
    ModelCache)."""

    loras: Mapping[str, LoraEntry] = field(default_factory=dict)
    vaes: Mapping[str, VaeEntry] = field(default_factory=dict)
    embeddings: Mapping[str, EmbeddingEntry] = field(default_factory=dict)
    controlnets: Mapping[str, ControlNetEntry] = field(default_factory=dict)
    ip_adapters: Mapping[str, IpAdapterEntry] = field(default_factory=dict)
    upscaler: UpscalerLookup | None = None
    vae: VaeLookup | None = None
    embedding: EmbeddingLookup | None = None
    controlnet: ControlNetLookup | None = None
    ip_adapter: IpAdapterLookup | None = None

    @classmethod
    def of(cls, cache: ModelCache) -> Components:
        r = cache.registry
        return cls(
            r.loras, r.vaes, r.embeddings, r.controlnets, r.ip_adapters,
            cache.upscaler, cache.vae, cache.embedding, cache.controlnet, cache.ip_adapter,
        )  # fmt: skip


@dataclass(frozen=True)
class Steering:
    """The ControlNets a stage's call runs with: those that act (weight above 0, for some of the
    schedule), loaded, with their units."""

    classes: ControlNetPipelines
    modules: list[torch.nn.Module]
    units: list[int]  # each one's index in the stage's `controlnets`
    uses: list[ControlNetUse]


def stage_controlnets(
    model: LoadedModel, stage_index: int, stage: Stage, components: Components
) -> Steering | None:
    """The stage's ControlNets, checked again against the rule (whatever the gateway said, in
    its words) and loaded; None where none acts: weight 0, or no part of the schedule, is no
    ControlNet at all, so the call is the model's own, to the byte."""
    uses = stage.controlnets or []
    for j, use in enumerate(uses):
        misfit = controlnet_violation(stage_index, j, use, model.entry, components.controlnets)
        if misfit is not None:
            raise StageError.refusing(misfit, FailureType.INVALID_JOB)
    acting = [(j, u) for j, u in enumerate(uses) if u.acts]
    if not acting:
        return None
    classes = pipelines_for(model.entry.architecture).controlnet
    if classes is None or components.controlnet is None:
        raise StageError(
            FailureType.INVALID_JOB,
            f"{model.entry.architecture} ControlNets are not served here",
        )
    needed = {u.name for _, u in acting}
    try:
        modules = [components.controlnet(u.name, model, needed).module for _, u in acting]
    except ModelUnavailable as unavailable:
        raise StageError(FailureType.MODEL_UNAVAILABLE, str(unavailable)) from unavailable
    return Steering(classes, modules, [j for j, _ in acting], [u for _, u in acting])


@dataclass(frozen=True)
class ImagePrompt:
    """The IP-Adapter a stage's call runs with, and its picture (one for all the call's rows:
    jobs batch only with the same one, workers.segments.batching)."""

    use: IpAdapterUse
    picture: Image


@contextlib.contextmanager
def stage_ip_adapter(
    model: LoadedModel, stage_index: int, stage: Stage, components: Components
) -> Iterator[ImagePrompt | None]:
    """The stage's IP-Adapter lent to the model's UNet for this stage only, checked again
    against the rule first (whatever the gateway said, in its words). Yields it with its
    picture, or None where none acts: weight 0 is no IP-Adapter at all, so the call is the
    model's own, to the byte."""
    uses = stage.ip_adapters or []
    for j, use in enumerate(uses):
        misfit = ip_adapter_violation(stage_index, j, use, model.entry, components.ip_adapters)
        if misfit is not None:
            raise StageError.refusing(misfit, FailureType.INVALID_JOB)
    acting = [u for u in uses if u.weight > 0]
    if not acting:
        yield None
        return
    [use] = acting  # the spec takes one (contract.spec)
    if components.ip_adapter is None:
        raise StageError(FailureType.INVALID_JOB, f"IP-Adapter {use.name!r} is not served here")
    try:
        loaded = components.ip_adapter(use.name, model)
    except ModelUnavailable as unavailable:
        raise StageError(FailureType.MODEL_UNAVAILABLE, str(unavailable)) from unavailable
    try:
        picture = decode_init_image(use.image, NO_PIXEL_LIMIT, what="the IP-Adapter's picture")
    except InitImageRejected as rejected:  # the gateway decoded it: only a record changed since
        raise StageError(FailureType.INVALID_JOB, rejected.violation.msg) from rejected
    unet = pipelines_for(model.entry.architecture).denoiser_of(model.text)
    with lent_ip_adapter(model.pipelines, unet, loaded, use.weight):
        yield ImagePrompt(use, picture)


@contextlib.contextmanager
def stage_vae(
    model: LoadedModel,
    stage_index: int,
    stage: Stage,
    vaes: Mapping[str, VaeEntry],
    load: VaeLookup | None,
) -> Iterator[LoadedVae | None]:
    """The stage's VAE in place of the model's own on both its pipelines for this stage only
    (decoding its pictures, encoding an img2img input); the model's own is back afterwards. The
    latent-space rule is checked again here, in the gateway's words, before anything loads."""
    if stage.vae is None:
        yield None
        return
    misfit = vae_violation(stage_index, stage.vae, model.entry, vaes)
    if misfit is not None:
        raise StageError.refusing(misfit, FailureType.INVALID_JOB)
    if load is None:
        raise StageError(FailureType.INVALID_JOB, f"VAE {stage.vae!r} is not served here")
    try:
        loaded = load(stage.vae, model)
    except ModelUnavailable as unavailable:
        raise StageError(FailureType.MODEL_UNAVAILABLE, str(unavailable)) from unavailable
    own = model.text.vae
    # Tiling and slicing are the model's settings (registry vae_tiling), not the file's.
    loaded.vae.use_tiling = getattr(own, "use_tiling", False)
    loaded.vae.use_slicing = getattr(own, "use_slicing", False)
    pipes = model.pipelines
    for pipe in pipes:
        pipe.vae = loaded.vae
    try:
        yield loaded
    finally:
        for pipe in pipes:
            pipe.vae = own


@contextlib.contextmanager
def stage_embeddings(
    model: LoadedModel, stage_index: int, specs: list[JobSpec], components: Components
) -> Iterator[Callable[[str], str]]:
    """The embeddings the stage's prompts name (each member's, in `specs`) lent to the model's
    text encoders for this stage only. Yields what turns a prompt's embedding names into their
    tokens. The architecture rule is checked again here, in the gateway's words, for every
    member."""
    entries = components.embeddings
    names: list[str] = []
    for spec in specs:
        stage = spec.stages[stage_index]
        misfits = embedding_violations(stage_index, spec, stage, model.entry, entries)
        if misfits:
            raise StageError.refusing(misfits[0], FailureType.INVALID_JOB)
        names += embeddings_of(spec, stage, entries)
    names = list(dict.fromkeys(names))
    if not names:
        yield lambda text: text
        return
    if components.embedding is None:
        raise StageError(FailureType.INVALID_JOB, f"embedding {names[0]!r} is not served here")
    try:
        loaded = [components.embedding(name) for name in names]
    except ModelUnavailable as unavailable:
        raise StageError(FailureType.MODEL_UNAVAILABLE, str(unavailable)) from unavailable
    try:
        with lent(model.pipelines, loaded) as tokens:
            yield lambda text: spelled(text, tokens)
    except ValueError as unfit:  # a width the registry could not check (a pickle)
        raise StageError(FailureType.MODEL_UNAVAILABLE, str(unfit)) from unfit


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


def stage_clip_skip(
    pipe: DiffusionPipeline, stage_index: int, stage: Stage, model: LoadedModel
) -> int:
    """The pipeline call's `clip_skip` for the stage's A1111 Clip skip (1 is the last layer; not
    asked for here, the checked spec drops it). diffusers counts the layers skipped past the one
    the model reads by default: A1111's 2 is diffusers' 1. SDXL and SD3.5 read their encoders'
    penultimate layer by default, so each step above 1 skips one more there. Checked against the
    rule again, whatever the gateway said, and against the encoders' depth."""
    assert stage.clip_skip is not None
    refused = clip_skip_violation(stage_index, stage.clip_skip, model.entry)
    if refused is not None:
        raise StageError.refusing(refused, FailureType.INVALID_JOB)
    encoders = [
        c for c in pipe.components.values()
        if isinstance(c, CLIPTextModel | CLIPTextModelWithProjection)
    ]  # fmt: skip
    layers = min(encoder.config.num_hidden_layers for encoder in encoders)
    if stage.clip_skip > layers:
        raise StageError(
            FailureType.INVALID_JOB,
            f"stage {stage_index} asks for clip_skip {stage.clip_skip}, but "
            f"{model.entry.name!r}'s CLIP text encoder has {layers} layers; ask for at most "
            f"{layers}",
        )
    return stage.clip_skip - 1
