"""An A1111 request as a job spec, and the job's rules spoken back in A1111's vocabulary.

txt2img is a base stage, then a `refine` stage if `refiner_checkpoint` is set, then a `hires`
stage if `enable_hr`. A1111's latent upscalers (`Latent`, `Latent (bicubic)`, …, and its default
when `hr_upscaler` is absent) are latent handoffs; `Lanczos`, `Nearest`, `None` and the registered
upscaler models (ESRGAN and kin, by their registry names) decode the picture and hand it over as
pixels. So `hr_checkpoint_name` of another latent space with a latent
upscaler is the article's mistake, refused by the same rule as `POST /jobs`, here with
`loc: ["body", "hr_upscaler"]` and a message that says to pick a pixel upscaler.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.a1111.controlnet import a1111_unit_loc, with_controlnets
from app.a1111.schemas import Img2ImgRequest, Txt2ImgRequest
from contract.registry import ModelRegistry
from contract.resamplers import Upscaler
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation

# A1111's names -> ours. Its default latent upscale mode is "Latent" (bilinear).
LATENT_UPSCALERS = {
    "Latent": Upscaler.LATENT_BILINEAR,
    "Latent (antialiased)": Upscaler.LATENT_BILINEAR_ANTIALIASED,
    "Latent (bicubic)": Upscaler.LATENT_BICUBIC,
    "Latent (bicubic antialiased)": Upscaler.LATENT_BICUBIC_ANTIALIASED,
    "Latent (nearest)": Upscaler.LATENT_NEAREST,
    "Latent (nearest-exact)": Upscaler.LATENT_NEAREST_EXACT,
}
# "None" is A1111's plain resize, which is Lanczos (kept apart, so the PNG says None).
PIXEL_UPSCALERS = {
    "None": Upscaler.NONE,
    "Lanczos": Upscaler.LANCZOS,
    "Nearest": Upscaler.NEAREST,
}
SAME_CHECKPOINT = ("", "Use same checkpoint", "None")
SAME_SAMPLER = ("", "Use same sampler")
MAX_IMAGES = 4

# A1111's Clip skip: a setting of the whole generation, sent as an override.
_CLIP_SKIP = ("override_settings", "CLIP_stop_at_last_layers")
# A1111's VAE setting. "Automatic" looks for a VAE file named like the checkpoint, else takes
# the checkpoint's own; "None" the checkpoint's own. Here both mean the model's own VAE.
VAE_SETTING = ("override_settings", "sd_vae")
OWN_VAE = ("", "Automatic", "None")
# Where a job-spec field of each stage role is in an A1111 request.
_STAGE_FIELDS: dict[str, dict[str, tuple[str | int, ...]]] = {
    "base": {
        "model": ("override_settings", "sd_model_checkpoint"),
        "sampler": ("sampler_name",),
        "scheduler": ("scheduler",),
        "steps": ("steps",),
        "guidance_scale": ("cfg_scale",),
        "prompt": ("prompt",),
        "negative_prompt": ("negative_prompt",),
        "loras": ("prompt",),  # from its <lora:name:weight> tags
        "clip_skip": _CLIP_SKIP,
        "vae": VAE_SETTING,
    },
    "refine": {
        "model": ("refiner_checkpoint",),
        "mode": ("refiner_checkpoint",),
        "handoff": ("refiner_checkpoint",),
        "switch_at": ("refiner_switch_at",),
        "clip_skip": _CLIP_SKIP,
        "vae": VAE_SETTING,
    },
    "hires": {
        "model": ("hr_checkpoint_name",),
        "handoff": ("hr_upscaler",),
        "upscaler": ("hr_upscaler",),
        "sampler": ("hr_sampler_name",),
        "scheduler": ("hr_scheduler",),
        "steps": ("hr_second_pass_steps",),
        "denoise": ("denoising_strength",),
        "scale": ("hr_scale",),
        "width": ("hr_resize_x",),
        "height": ("hr_resize_y",),
        "prompt": ("hr_prompt",),
        "negative_prompt": ("hr_negative_prompt",),
        "guidance_scale": ("hr_cfg",),
        "loras": ("prompt",),
        "clip_skip": _CLIP_SKIP,
        "vae": VAE_SETTING,
    },
}
_TOP_FIELDS: dict[str, tuple[str | int, ...]] = {
    "width": ("width",),
    "height": ("height",),
    "num_images": ("batch_size",),
    "seed": ("seed",),
    "init_image": ("init_images", 0),
    "strength": ("denoising_strength",),
    "init_resize": ("resize_mode",),
    "mask": ("mask",),
    "mask_blur": ("mask_blur",),
    "invert_mask": ("inpainting_mask_invert",),
    "masked_content": ("inpainting_fill",),
    "inpaint_area": ("inpaint_full_res",),
    "inpaint_padding": ("inpaint_full_res_padding",),
    "prompt": ("prompt",),
    "negative_prompt": ("negative_prompt",),
}


def resolve_checkpoint(name: str, registry: ModelRegistry) -> str | None:
    """The registered model (or preset: a chain of stages under one name) a client means: its
    name, an A1111 title (`name [hash]`) or a file name (`name.safetensors`). A name with a path
    in it means none: nothing is looked up by path."""
    if "/" in name or "\\" in name or ".." in name:
        return None
    candidates = [name, name.rsplit(" [", 1)[0]]
    for candidate in list(candidates):
        for suffix in (".safetensors", ".ckpt", ".sft", ".pt"):
            candidates.append(candidate.removesuffix(suffix))
    return next(
        (c for c in candidates if registry.get(c) is not None or c in registry.presets), None
    )


# A1111's LoRA syntax in prompts: <lora:name> or <lora:name:weight>.
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::\s*([-+]?[0-9]*\.?[0-9]+))?\s*>")


def lora_tags(prompt: str) -> tuple[str, list[dict[str, Any]]]:
    """The prompt without its `<lora:…>` tags, and the LoRAs they name (existing A1111 prompts
    keep working; the tags come back in the PNG's parameters)."""
    uses = [
        {"name": m.group(1).strip(), "weight": float(m.group(2) or 1.0)}
        for m in _LORA_TAG.finditer(prompt)
    ]
    return " ".join(_LORA_TAG.sub(" ", prompt).split()), uses


def resolve_vae(name: str, registry: ModelRegistry) -> str | None:
    """The registered VAE a client means: its registry name, or its file's name with or without
    the extension (A1111 lists VAEs by file name)."""
    if name in registry.vaes:
        return name
    return next(
        (n for n, v in sorted(registry.vaes.items()) if name in (v.file.name, v.file.stem)), None
    )


def chosen_vae(name: str, registry: ModelRegistry, loc: tuple[str, ...]) -> str | None:
    """The VAE an `sd_vae` value names (None: the model's own), or a 422 at `loc` listing them."""
    if name in OWN_VAE:
        return None
    found = resolve_vae(name, registry)
    if found is None:
        known = ", ".join(["Automatic", "None", *sorted(registry.vaes)])
        raise JobRejected(
            [
                Violation(
                    "unknown_vae",
                    loc,
                    f"sd_vae {name!r} is not registered; GET /sdapi/v1/sd-vae lists them: {known}",
                    {"vae": name},
                )
            ]
        )
    return found


def txt2img_spec(
    request: Txt2ImgRequest, checkpoint: str, registry: ModelRegistry, stored_vae: str | None = None
) -> JobSpec:
    stages: list[dict[str, Any]] = [_base_stage(request, checkpoint)]
    roles = ["base"]
    if request.refiner_checkpoint not in (None, *SAME_CHECKPOINT):
        assert request.refiner_checkpoint is not None
        refiner = _checkpoint(request.refiner_checkpoint, registry, ("refiner_checkpoint",))
        refine: dict[str, Any] = {"model": refiner, "mode": "refine", "handoff": "latent"}
        if request.refiner_switch_at is not None:
            refine["switch_at"] = request.refiner_switch_at
        stages.append(refine)
        roles.append("refine")
    if request.enable_hr:
        hires = _hires_stage(request, checkpoint, registry)
        if hires["model"] == checkpoint and "loras" in stages[0]:
            hires["loras"] = stages[0]["loras"]  # A1111 applies them to the hires pass too
        stages.append(hires)
        roles.append("hires")
    _with_clip_skip(request, stages, registry)
    _with_vae(request, stages, registry, stored_vae)
    with_controlnets(request, stages, roles, registry, None)
    return _spec(request, stages, roles, {})


def img2img_spec(
    request: Img2ImgRequest, checkpoint: str, registry: ModelRegistry, stored_vae: str | None = None
) -> JobSpec:
    if len(request.init_images) != 1:
        _refuse(("init_images",), "send exactly one picture in init_images")
    top = {"init_image": request.init_images[0], "strength": request.denoising_strength or 0.75}
    if request.resize_mode:
        top["init_resize"] = _RESIZE_MODES[request.resize_mode]
    if request.mask is not None:
        top.update(_inpainting(request))
    stages = [_base_stage(request, checkpoint)]
    _with_clip_skip(request, stages, registry)
    _with_vae(request, stages, registry, stored_vae)
    with_controlnets(request, stages, ["base"], registry, request.init_images[0])
    return _spec(request, stages, ["base"], top)


# A1111's img2img resize_mode, by number.
_RESIZE_MODES = {0: "just_resize", 1: "crop_and_resize", 2: "resize_and_fill", 3: "latent_upscale"}
# A1111's inpainting_fill, by number.
_MASKED_CONTENT = {0: "fill", 1: "original", 2: "latent_noise", 3: "latent_nothing"}


def _inpainting(request: Img2ImgRequest) -> dict[str, Any]:
    """A1111's mask fields as the job's (`mask`, `mask_blur`, …), or the field's 422."""
    blur = request.mask_blur
    if blur is None:
        if request.mask_blur_x != request.mask_blur_y:
            _refuse(("mask_blur_y",), "a blur of its own along y is not served; send mask_blur")
        blur = request.mask_blur_x
    content = _MASKED_CONTENT[request.inpainting_fill]  # 0-3, by its schema
    if not request.mask_round:
        _refuse(("mask_round",), "masks are always rounded here (white repaints); send true")
    if request.initial_noise_multiplier not in (None, 1, 1.0):
        _refuse(("initial_noise_multiplier",), "only 1 (A1111's default) is served")
    if request.latent_mask is not None:
        _refuse(("latent_mask",), "a second mask for the latents is not served; send none")
    fields: dict[str, Any] = {
        "mask": request.mask,
        "mask_blur": blur,
        "invert_mask": bool(request.inpainting_mask_invert),
        "masked_content": content,
        "inpaint_area": "masked" if request.inpaint_full_res else "whole",
    }
    if request.inpaint_full_res:
        fields["inpaint_padding"] = request.inpaint_full_res_padding
    return fields


def _with_vae(
    request: Txt2ImgRequest | Img2ImgRequest,
    stages: list[dict[str, Any]],
    registry: ModelRegistry,
    stored: str | None,
) -> None:
    """A1111's VAE (`override_settings.sd_vae`, else the key's `options` choice) on each stage
    whose model works in its latent space. One the request names goes on the base stage
    whatever it is, so that a VAE of another latent space is refused there (the rule's 422, at
    `override_settings.sd_vae`); the key's stored choice stays off the stages it does not fit,
    as A1111 keeps a checkpoint's own VAE where a VAE preference does not apply."""
    wanted = (request.override_settings or {}).get(VAE_SETTING[1])
    name = stored if wanted is None else chosen_vae(str(wanted), registry, VAE_SETTING)
    if name is None or name not in registry.vaes:
        return
    space = registry.vaes[name].latent_space
    for k, stage in enumerate(stages):
        entry = registry.get(stage["model"])
        fits = entry is not None and entry.latent_space.name == space
        if fits or (k == 0 and wanted is not None):
            stage["vae"] = name


def _with_clip_skip(
    request: Txt2ImgRequest | Img2ImgRequest, stages: list[dict[str, Any]], registry: ModelRegistry
) -> None:
    """A1111's Clip skip (`override_settings.CLIP_stop_at_last_layers`, which SillyTavern and
    others send with every request) on each stage whose model reads CLIP layers. On the others
    (Flux, Chroma) it means nothing, and is ignored as Forge ignores it; `POST /jobs` refuses a
    clip_skip named for such a stage."""
    skip = (request.override_settings or {}).get(_CLIP_SKIP[1])
    if skip is None or skip == 1:
        return
    for stage in stages:
        entry = registry.get(stage["model"])
        if entry is not None and entry.arch.clip_skip:
            stage["clip_skip"] = skip  # the spec's bounds check it, located here


def _base_stage(request: Txt2ImgRequest | Img2ImgRequest, checkpoint: str) -> dict[str, Any]:
    stage: dict[str, Any] = {
        "model": checkpoint,
        "steps": request.steps,
        "guidance_scale": request.cfg_scale,
    }
    sampler = request.sampler_name or request.sampler_index
    if sampler:
        stage["sampler"] = sampler
        stage["scheduler"] = request.scheduler or "automatic"
    _, loras = lora_tags(request.prompt)
    if loras:
        stage["loras"] = loras
    return stage


def _hires_stage(request: Txt2ImgRequest, base: str, registry: ModelRegistry) -> dict[str, Any]:
    model = base
    if request.hr_checkpoint_name not in (None, *SAME_CHECKPOINT):
        assert request.hr_checkpoint_name is not None
        model = _checkpoint(request.hr_checkpoint_name, registry, ("hr_checkpoint_name",))
    name = request.hr_upscaler or "Latent"
    stage: dict[str, Any] = {"model": model, "mode": "hires", "denoise": 0.7}
    if name in LATENT_UPSCALERS:
        stage.update(handoff="latent", upscaler=LATENT_UPSCALERS[name])
    elif name in PIXEL_UPSCALERS:
        stage.update(handoff="pixel", upscaler=PIXEL_UPSCALERS[name])
    elif name in registry.upscalers:  # an upscaler model works on the decoded picture
        stage.update(handoff="pixel", upscaler=name)
    else:
        known = ", ".join([*LATENT_UPSCALERS, *PIXEL_UPSCALERS, *sorted(registry.upscalers)])
        _refuse(("hr_upscaler",), f"hr_upscaler {name!r} is not available here; use one of {known}")
    if request.denoising_strength is not None:
        stage["denoise"] = request.denoising_strength
    width, height = _hires_size(request)
    if width:
        stage.update(width=width, height=height)
    else:
        stage["scale"] = request.hr_scale
    stage["steps"] = request.hr_second_pass_steps or request.steps
    sampler = request.hr_sampler_name
    if sampler not in (None, *SAME_SAMPLER):
        stage["sampler"] = sampler
        stage["scheduler"] = request.hr_scheduler or "automatic"
    if request.hr_prompt and request.hr_prompt != request.prompt:
        stage["prompt"] = request.hr_prompt
    if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
        stage["negative_prompt"] = request.hr_negative_prompt
    if request.hr_cfg is not None:
        stage["guidance_scale"] = request.hr_cfg
    return stage


def _hires_size(request: Txt2ImgRequest) -> tuple[int, int]:
    """A1111's hr_resize_x/y: either alone keeps the aspect ratio (to a multiple of 8)."""
    x, y = request.hr_resize_x, request.hr_resize_y
    if not x and not y:
        return 0, 0
    if not y:
        y = round(x * request.height / request.width / 8) * 8
    if not x:
        x = round(y * request.width / request.height / 8) * 8
    return x, y


def _spec(
    request: Txt2ImgRequest | Img2ImgRequest,
    stages: list[dict[str, Any]],
    roles: list[str],
    top: dict[str, Any],
) -> JobSpec:
    images = request.batch_size * request.n_iter
    if images > MAX_IMAGES:
        _refuse(("batch_size",), f"batch_size × n_iter is {images}; at most {MAX_IMAGES} a request")
    body: dict[str, Any] = {
        # A1111 takes an empty prompt; our spec wants one.
        "prompt": lora_tags(request.prompt)[0] or " ",
        "width": request.width,
        "height": request.height,
        "num_images": images,
        "stages": stages,
        **top,
    }
    if request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    if request.seed >= 0:
        body["seed"] = request.seed
    try:
        return JobSpec.model_validate(body)
    except ValidationError as invalid:
        errors = []
        for error in invalid.errors():
            loc = a1111_loc(tuple(error["loc"]), roles, request)
            errors.append({**error, "loc": ("body", *loc)})
        raise RequestValidationError(errors) from None


def a1111_loc(
    loc: tuple[Any, ...], roles: list[str], request: Txt2ImgRequest | Img2ImgRequest | None = None
) -> tuple[str | int, ...]:
    """Where a job-spec location is in the A1111 request."""
    unit = None if request is None else a1111_unit_loc(loc, request, roles)
    if unit is not None:
        return unit
    if len(loc) >= 3 and loc[0] == "stages" and isinstance(loc[1], int) and loc[1] < len(roles):
        return _STAGE_FIELDS[roles[loc[1]]].get(str(loc[2]), ())
    if loc and str(loc[0]) in _TOP_FIELDS:
        return _TOP_FIELDS[str(loc[0])]
    return ()


def in_a1111_terms(
    rejected: JobRejected, spec: JobSpec, request: Txt2ImgRequest | Img2ImgRequest | None = None
) -> JobRejected:
    """The job's violations, pointing at A1111's fields (a ControlNet's at its unit); a latent
    hires upscaler across latent spaces says to pick a pixel upscaler."""
    roles = ["base"] + [str(s.mode.value) if s.mode else "base" for s in spec.stages[1:]]
    violations = []
    for v in rejected.violations:
        loc = a1111_loc(v.loc, roles, request)
        msg = v.msg
        if v.type == "latent_space_mismatch" and loc == ("hr_upscaler",):
            msg = (
                f"{msg.split('. Latents', 1)[0]}. A1111's latent upscalers keep the latents, "
                "which only the VAE that made them can read: pick a pixel upscaler for "
                "hr_upscaler (Lanczos, Nearest or None); the picture is then decoded, resized "
                "and encoded by the hires checkpoint."
            )
        violations.append(Violation(v.type, loc, msg, v.ctx))
    return JobRejected(violations)


def _checkpoint(name: str, registry: ModelRegistry, loc: tuple[str, ...]) -> str:
    found = resolve_checkpoint(name, registry)
    if found is None:
        known = ", ".join(registry.names())
        raise JobRejected(
            [
                Violation(
                    "unknown_model",
                    loc,
                    f"checkpoint {name!r} is not registered; GET /sdapi/v1/sd-models lists "
                    f"them: {known}",
                    {"model": name},
                )
            ]
        )
    return found


def _refuse(loc: tuple[str, ...], msg: str) -> None:
    raise RequestValidationError(
        [{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}]
    )
