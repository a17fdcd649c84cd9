"""The rules a job must pass before it is queued, and again before a worker runs it.

`check_job` reads the model registry and the architecture table, fills in defaults and the size
of every stage, and either returns the checked job (`contract.checked`: a spec with nothing left
to fill in) or raises `JobRejected` with every broken rule, each located in the request body.
Admission and the worker's re-check both call it: one wording per rule. The rule at the heart of
the service is `latent_handoff_violation`: latents pass only between models of one latent space.
"""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from PIL.Image import Image
from pydantic import ValidationError

from contract.architectures import ARCHITECTURES
from contract.checked import CheckedSpec
from contract.controlnets import check_controlnets
from contract.embeddings import embedding_violations
from contract.images import InitImageRejected, decode_init_image
from contract.ip_adapters import check_ip_adapters
from contract.job_cost import check_cost
from contract.latent_spaces import can_hand_off_latents
from contract.loras import check_loras
from contract.masks import check_masks, job_mask, mask_defaults
from contract.presets import with_presets
from contract.registry import ModelEntry, ModelRegistry
from contract.samplers import check_sampler
from contract.spec import MAX_SEED, Handoff, JobSpec, Mode, Stage
from contract.stage_images import stage_pictures
from contract.stage_sizes import DEFAULT_SCALE, check_size, hires_size, hires_size_locs
from contract.upscale_jobs import check_upscale_job, upscale_job
from contract.upscalers import check_upscaler
from contract.vaes import vae_violation
from contract.violations import JobRejected, Violation

DEFAULT_SWITCH_AT = 0.8
DEFAULT_DENOISE = 0.5
DEFAULT_STRENGTH = 0.75

_HIRES_FIELDS = ("scale", "width", "height", "denoise", "upscaler")
_STAGE_KINDS = ("first", "refine", "hires", "upscale")
_REFINE_FIELDS = ("switch_at",)


@dataclass(frozen=True)
class JobLimits:
    max_pixels: int = 2048 * 2048
    default_timeout_s: int = 600
    max_timeout_s: int = 3600
    max_megapixel_steps: float = 1000.0  # see contract.job_cost


@dataclass(frozen=True)
class CheckedJob:
    spec: CheckedSpec  # seed, defaults, every stage's kind and size filled in
    init_image: Image | None
    mask: Image | None = None  # read (contract.masks): L, 255 repaints, inverted if asked


def check_job(
    spec: JobSpec,
    registry: ModelRegistry,
    limits: JobLimits,
    decoding: AbstractContextManager[object] | None = None,
) -> CheckedJob:
    """Normalize `spec` and decode its init image, or raise `JobRejected` with every violation.
    A preset its only stage names is expanded first (`contract.presets`). The pictures are
    decoded last, inside `decoding` (the gateway's bound on decodes at once)."""
    spec = with_presets(spec, registry)
    violations: list[Violation] = []
    if upscale_job(spec):
        stages = check_upscale_job(spec, registry, limits.max_pixels, violations)
    else:
        stages = _check_stages(spec, registry, limits, violations)
    if spec.timeout_s is not None and spec.timeout_s > limits.max_timeout_s:
        violations.append(
            Violation(
                "timeout_over_limit",
                ("timeout_s",),
                f"timeout_s {spec.timeout_s} exceeds this deployment's limit of "
                f"{limits.max_timeout_s} s; ask for less",
                {"le": limits.max_timeout_s},
            )
        )
    if violations:
        raise JobRejected(violations)

    normalized = spec.model_copy(
        update={
            "seed": secrets.randbelow(MAX_SEED + 1) if spec.seed is None else spec.seed,
            "strength": (spec.strength or DEFAULT_STRENGTH)
            if spec.init_image and not upscale_job(spec)
            else None,
            **mask_defaults(spec),
            "stages": stages,
            "timeout_s": spec.timeout_s or limits.default_timeout_s,
        }
    )
    checked = _as_checked(spec, normalized)
    check_cost(checked, limits.max_megapixel_steps)
    with decoding or nullcontext():
        return CheckedJob(checked, *decode_pictures(spec, limits.max_pixels))


def _check_stages(
    spec: JobSpec, registry: ModelRegistry, limits: JobLimits, violations: list[Violation]
) -> list[Stage]:
    """Every stage of a job that runs models checked (each stage's model, size, handoff,
    conditioning, sampler, LoRAs, VAE, embeddings, ControlNets, IP-Adapters, the mask fields)
    and normalized; JobRejected at once where a model is not registered."""
    entries: list[ModelEntry] = []
    unknown = []
    for i, stage in enumerate(spec.stages):
        entry = None if stage.model is None else registry.get(stage.model)
        if stage.model is None:
            unknown.append(
                Violation(
                    "missing",
                    ("stages", i, "model"),
                    "name the stage's model (GET /models lists them); only an upscale stage "
                    "runs none",
                )
            )
        elif entry is None:
            unknown.append(
                Violation(
                    "unknown_model",
                    ("stages", i, "model"),
                    f"model {stage.model!r} is not registered; registered models: "
                    f"{', '.join(registry.names())} (GET /models lists them)",
                    {"model": stage.model},
                )
            )
        else:
            entries.append(entry)
    if unknown:
        raise JobRejected(unknown)

    if not spec.prompt:
        violations.append(
            Violation("missing", ("prompt",), "give a prompt: what to draw (a space for none)")
        )
    check_masks(spec, entries, violations)
    stages = [_check_first_stage(spec, entries[0], limits, violations)]
    width, height = spec.width, spec.height
    for i in range(1, len(spec.stages)):
        stage, size = _check_later_stage(
            i,
            spec.stages[i],
            spec.stages[i - 1],
            entries[i - 1],
            entries[i],
            (width, height),
            registry,
            limits,
            violations,
        )
        stages.append(stage)
        width, height = size
    for i, (stage, entry) in enumerate(zip(spec.stages, entries, strict=True)):
        _check_stage_conditioning(i, stage, entry, violations)
        clip_skip = clip_skip_violation(i, stage.clip_skip, entry)
        if clip_skip is not None:
            violations.append(clip_skip)
        elif stage.clip_skip == 1:  # the last layer: what no clip_skip reads, batched alike
            stages[i] = stages[i].model_copy(update={"clip_skip": None})
        stages[i] = check_sampler(i, stages[i], entry, violations)
        check_loras(i, stage, entry, registry, violations)
        vae = vae_violation(i, stage.vae, entry, registry.vaes)
        if vae is not None:
            violations.append(vae)
        violations += embedding_violations(i, spec, stage, entry, registry.embeddings)
        check_controlnets(i, spec, entry, registry.controlnets, violations)
        check_ip_adapters(i, stage, entry, registry.ip_adapters, violations)
    return stages


def decode_pictures(spec: JobSpec, max_pixels: int) -> tuple[Image | None, Image | None]:
    """Decode the job's pictures (returning its init image and its mask, read), last: decoding is
    the one check that costs real CPU, so a job any cheap check refuses never gets this far."""
    violations = []
    init_image = mask = None
    if spec.init_image is not None:
        try:
            init_image = decode_init_image(spec.init_image, max_pixels)
        except InitImageRejected as rejected:
            violations.append(rejected.violation)
    if init_image is not None:
        try:
            mask = job_mask(spec, init_image.size, max_pixels)
        except InitImageRejected as rejected:
            violations.append(rejected.violation)
    for loc, data, what in stage_pictures(spec):
        try:
            decode_init_image(data, max_pixels, loc, what=what)
        except InitImageRejected as rejected:
            violations.append(rejected.violation)
    if violations:
        raise JobRejected(violations)
    return init_image, mask


def _as_checked(request: JobSpec, normalized: JobSpec) -> CheckedSpec:
    """The normalized spec as a checked one: what the envelope serves and what Redis keeps.
    `model_copy` does not validate, and a computed value (a hires stage's size from its scale)
    can leave the bounds a client could have asked for."""
    try:
        return CheckedSpec.model_validate(normalized.model_dump())
    except ValidationError as invalid:
        violations = []
        for error in invalid.errors():
            # A stage's errors name its kind (first, refine, hires) after its index.
            loc = tuple(part for part in error["loc"] if part not in _STAGE_KINDS)
            if loc[:1] == ("stages",) and loc[-1] in ("width", "height"):
                stage = request.stages[int(loc[1])]
                if stage.width is None:  # computed from scale: that is what the client set
                    loc = (*loc[:-1], "scale")
            violations.append(
                Violation(
                    "computed_value_out_of_range",
                    loc,
                    f"this stage would be {error['loc'][-1]} {error['input']}, and "
                    f"{error['msg'].lower()}; ask for a smaller scale or size",
                )
            )
        raise JobRejected(violations) from None


def _check_first_stage(
    spec: JobSpec, entry: ModelEntry, limits: JobLimits, violations: list[Violation]
) -> Stage:
    stage, arch = spec.stages[0], entry.arch
    for name in ("mode", "handoff", *_REFINE_FIELDS, *_HIRES_FIELDS):
        if getattr(stage, name) is not None:
            violations.append(
                Violation(
                    "field_not_allowed",
                    ("stages", 0, name),
                    f"the first stage takes over from nothing, so it has no {name}; "
                    "remove it, or move it to a later stage",
                )
            )
    if not arch.text_to_image and spec.init_image is None:
        violations.append(
            Violation(
                "text_to_image_unsupported",
                ("stages", 0, "model"),
                f"{entry.name!r} is a {arch.name} model: it refines a picture or latents and "
                "cannot start a text-to-image job. Put a base model first (refine mode hands it "
                "the latents) "
                "or send an init_image.",
                {"architecture": arch.name},
            )
        )
    if spec.init_resize == "latent_upscale" and stage.controlnets:
        violations.append(
            Violation(
                "field_not_allowed",
                ("init_resize",),
                "latent_upscale hands the first stage latents, and its ControlNet pipelines "
                "take a picture; use just_resize (the same stretch, in pixels) with ControlNets",
            )
        )
    for name in ("strength", "init_resize"):
        if getattr(spec, name) is not None and spec.init_image is None:
            violations.append(
                Violation(
                    "field_not_allowed",
                    (name,),
                    f"{name} applies to init_image; send one or drop it",
                )
            )
    if spec.negative_prompt and not arch.negative_prompt:
        violations.append(
            Violation(
                "negative_prompt_unsupported",
                ("negative_prompt",),
                f"{entry.name!r} ({arch.name}) takes no negative prompt; remove negative_prompt",
                {"architecture": arch.name},
            )
        )
    check_size(
        (spec.width, spec.height), entry, limits.max_pixels, ("width",), ("height",), violations
    )
    return stage.model_copy(
        update={
            "steps": stage.steps or entry.default_steps,
            "guidance_scale": _default(stage.guidance_scale, entry.default_guidance),
        }
    )


def _check_later_stage(
    i: int,
    stage: Stage,
    previous: Stage,
    source: ModelEntry,
    target: ModelEntry,
    size: tuple[int, int],
    registry: ModelRegistry,
    limits: JobLimits,
    violations: list[Violation],
) -> tuple[Stage, tuple[int, int]]:
    update: dict[str, object] = {
        "steps": stage.steps or target.default_steps,
        "guidance_scale": _default(stage.guidance_scale, target.default_guidance),
    }
    if stage.mode is None:
        violations.append(
            Violation(
                "missing",
                ("stages", i, "mode"),
                "every stage after the first needs a mode: 'refine' (continue the previous stage's "
                "schedule, SDXL) or 'hires' (upscale its output and re-noise it)",
            )
        )
        return stage, size
    handoff = stage.handoff or (Handoff.LATENT if stage.mode is Mode.REFINE else Handoff.PIXEL)
    update["handoff"] = handoff
    if stage.mode is Mode.REFINE:
        _refuse_fields(i, stage, _HIRES_FIELDS, "hires", violations)
        _check_refine(i, stage, previous, source, target, handoff, violations)
        update["switch_at"] = stage.switch_at or DEFAULT_SWITCH_AT
        new_size = size
        check_size(new_size, target, limits.max_pixels, ("width",), ("height",), violations)
    else:
        _refuse_fields(i, stage, _REFINE_FIELDS, "refine", violations)
        upscaler = check_upscaler(i, stage, handoff, registry, violations)
        new_size = hires_size(i, stage, size, violations)
        check_size(new_size, target, limits.max_pixels, *hires_size_locs(i, stage), violations)
        update.update(
            upscaler=upscaler,
            denoise=stage.denoise or DEFAULT_DENOISE,
            width=new_size[0],
            height=new_size[1],
            scale=(stage.scale or DEFAULT_SCALE) if stage.width is None else stage.scale,
        )
    if handoff is Handoff.LATENT:
        mismatch = latent_handoff_violation(i, source, target)
        if mismatch is not None:
            violations.append(mismatch)
        if source.latent_space == target.latent_space and source.pool != target.pool:
            violations.append(
                Violation(
                    "handoff_across_pools",
                    ("stages", i, "handoff"),
                    f"{source.name!r} (pool {source.pool!r}) and {target.name!r} (pool "
                    f"{target.pool!r}) run on different workers, and latents never leave a "
                    "worker; use handoff: pixel, or serve both models from one pool",
                    {"from_pool": source.pool, "to_pool": target.pool},
                )
            )
    return stage.model_copy(update=update), new_size


def latent_handoff_violation(i: int, source: ModelEntry, target: ModelEntry) -> Violation | None:
    """Why stage i cannot take stage i-1's latents, or None: the rule at the heart of the
    service. The gateway and the worker both word it so."""
    src, dst = source.latent_space, target.latent_space
    if can_hand_off_latents(src, dst):
        return None
    return Violation(
        "latent_space_mismatch",
        ("stages", i, "handoff"),
        f"stage {i} cannot take latents from stage {i - 1}: "
        f"{source.name!r} ({source.architecture}) "
        f"makes latents in latent space {src.describe()}, but {target.name!r} "
        f"({target.architecture}) works in latent space {dst.describe()}. Latents are only "
        f"meaningful to the VAE that made them. Use handoff: pixel (decode with "
        f"{source.name!r}, resize, encode with {target.name!r}).",
        {"from_latent_space": src.as_ctx(), "to_latent_space": dst.as_ctx()},
    )


def _check_refine(
    i: int,
    stage: Stage,
    previous: Stage,
    source: ModelEntry,
    target: ModelEntry,
    handoff: Handoff,
    violations: list[Violation],
) -> None:
    if handoff is not Handoff.LATENT:
        violations.append(
            Violation(
                "refine_needs_latent_handoff",
                ("stages", i, "handoff"),
                "refine continues the previous stage's half-denoised latents, so its handoff is "
                "'latent'; for a pixel handoff use mode: hires",
            )
        )
    unsupported = [e for e in (source, target) if not e.arch.mid_schedule_handoff]
    if unsupported:
        names = ", ".join(f"{e.name!r} ({e.architecture})" for e in unsupported)
        violations.append(
            Violation(
                "refine_unsupported",
                ("stages", i, "mode"),
                "refine hands over mid-schedule (denoising_end/denoising_start), which only "
                f"{_mid_schedule_architectures()} support; {names} cannot. Use mode: hires "
                "instead.",
                {"models": [e.name for e in unsupported]},
            )
        )
    elif previous.mode is Mode.REFINE:
        violations.append(
            Violation(
                "refine_unsupported",
                ("stages", i, "mode"),
                "a refine stage must follow a stage that runs to its end; this one follows another "
                "refine stage. Use mode: hires.",
            )
        )


def _check_stage_conditioning(
    i: int, stage: Stage, entry: ModelEntry, violations: list[Violation]
) -> None:
    arch = entry.arch
    low, high = entry.guidance_range
    if stage.guidance_scale is not None and not low <= stage.guidance_scale <= high:
        violations.append(
            Violation(
                "guidance_out_of_range",
                ("stages", i, "guidance_scale"),
                f"{entry.name!r} ({arch.name}) takes guidance_scale from {low} to {high}; "
                f"typical is {entry.default_guidance}",
                {"ge": low, "le": high},
            )
        )
    if stage.negative_prompt is not None and not arch.negative_prompt:
        violations.append(
            Violation(
                "negative_prompt_unsupported",
                ("stages", i, "negative_prompt"),
                f"{entry.name!r} ({arch.name}) takes no negative prompt; remove it from this stage",
                {"architecture": arch.name},
            )
        )


def clip_skip_violation(i: int, clip_skip: int | None, entry: ModelEntry) -> Violation | None:
    """Why stage i's model cannot skip CLIP layers, or None. The gateway and the worker both
    word it so."""
    if clip_skip is None or entry.arch.clip_skip:
        return None
    return Violation(
        "clip_skip_unsupported",
        ("stages", i, "clip_skip"),
        f"{entry.name!r} ({entry.arch.name}) does not read its prompt from CLIP layers, so it "
        "has no layers to skip; remove clip_skip from this stage",
        {"architecture": entry.arch.name},
    )


def _refuse_fields(
    i: int, stage: Stage, names: tuple[str, ...], mode: str, violations: list[Violation]
) -> None:
    for name in names:
        if getattr(stage, name) is not None:
            violations.append(
                Violation(
                    "field_not_allowed",
                    ("stages", i, name),
                    f"{name} belongs to mode {mode!r}; remove it or change this stage's mode",
                )
            )


def _mid_schedule_architectures() -> str:
    return ", ".join(a.name for a in ARCHITECTURES.values() if a.mid_schedule_handoff)


def _default(value: float | None, default: float) -> float:
    return default if value is None else value


# What the registry's preset check leaves to each job: sizes and budgets are the caller's and
# the deployment's, not the preset's.
_THE_CALLERS = frozenset({"pixel_budget_exceeded", "job_too_costly", "image_too_large"})


def load_registry(path: Path) -> ModelRegistry:
    """The registry file, loaded, with every preset checked by these rules (the gateway and the
    workers load it so: a preset that cannot run stops them starting)."""
    registry = ModelRegistry.load(path)
    check_presets(registry)
    return registry


def check_presets(registry: ModelRegistry) -> None:
    """Every preset checked by the job rules, at its first model's native size; ValueError
    naming the preset and what breaks."""
    for name, preset in registry.presets.items():
        entry = registry.get(preset.stages[0].model or "")
        width, height = entry.arch.native_size if entry is not None else (512, 512)
        probe = JobSpec(prompt="preset check", width=width, height=height, stages=preset.stages)
        try:
            check_job(probe, registry, JobLimits(max_pixels=2**31))
        except JobRejected as rejected:
            broken = [v for v in rejected.violations if v.type not in _THE_CALLERS]
            if broken:
                said = "; ".join(f"{'.'.join(map(str, v.loc))}: {v.msg}" for v in broken)
                raise ValueError(f"preset {name!r} cannot run: {said}") from None
