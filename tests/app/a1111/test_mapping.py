"""A1111 requests as job specs: stages, sizes, samplers, upscalers, and refusals in A1111's
field names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.exceptions import RequestValidationError

from app.a1111.mapping import (
    img2img_spec,
    in_a1111_terms,
    resolve_checkpoint,
    txt2img_spec,
)
from app.a1111.schemas import Img2ImgRequest, Txt2ImgRequest
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected


@pytest.fixture
def registry(registry_file: Path) -> ModelRegistry:
    return ModelRegistry.load(registry_file)


def spec_of(registry: ModelRegistry, **request: Any) -> JobSpec:
    return txt2img_spec(
        Txt2ImgRequest(**{"width": 64, "height": 64, **request}), "demo-sd15", registry
    )


def test_checkpoints_are_found_by_name_title_or_file_name(registry: ModelRegistry) -> None:
    for name in (
        "demo-sdxl",
        "demo-sdxl [31e35c80fc]",
        "demo-sdxl.safetensors",
        "demo-sdxl.ckpt",
    ):
        assert resolve_checkpoint(name, registry) == "demo-sdxl"
    assert resolve_checkpoint("v1-5-pruned", registry) is None
    # a name with a path in it is no name here: nothing is looked up by path
    for pathed in ("../../demo-sdxl", "x/demo-sdxl.ckpt", "..\\demo-sdxl", "demo-sdxl/.."):
        assert resolve_checkpoint(pathed, registry) is None


def test_a_plain_request_is_one_stage_with_a1111s_defaults(registry: ModelRegistry) -> None:
    spec = spec_of(registry, prompt="p", seed=-1, batch_size=2, n_iter=2, sampler_name="Euler a")
    [stage] = spec.stages
    assert (spec.seed, spec.num_images) == (None, 4)  # -1: random
    assert (stage.steps, stage.guidance_scale, stage.sampler, stage.scheduler) == (
        50, 7.0, "Euler a", "automatic",
    )  # fmt: skip


def test_hires_and_refiner_become_stages_in_a1111s_order(registry: ModelRegistry) -> None:
    spec = txt2img_spec(
        Txt2ImgRequest(
            prompt="p", width=64, height=64, steps=10, enable_hr=True, hr_upscaler="Lanczos",
            hr_resize_x=96, refiner_checkpoint="demo-sdxl-refiner", refiner_switch_at=0.6,
            hr_prompt="sharper",
        ),
        "demo-sdxl",
        registry,
    )  # fmt: skip
    _, refine, hires = spec.stages
    assert (refine.mode, refine.handoff, refine.switch_at) == ("refine", "latent", 0.6)
    assert (hires.model, hires.handoff, hires.upscaler) == ("demo-sdxl", "pixel", "lanczos")
    assert (hires.width, hires.height, hires.steps, hires.prompt) == (96, 96, 10, "sharper")


def test_a1111s_latent_upscalers_are_latent_handoffs(registry: ModelRegistry) -> None:
    [_, hires] = spec_of(registry, prompt="p", enable_hr=True).stages  # default: "Latent"
    assert (hires.handoff, hires.upscaler) == ("latent", "latent-bilinear")
    [_, hires] = spec_of(
        registry, prompt="p", enable_hr=True, hr_upscaler="Latent (bicubic)"
    ).stages
    assert hires.upscaler == "latent-bicubic"
    # each of A1111's names is its own mode, so the picture and its PNG say what was asked
    for name, ours in (("Latent (antialiased)", "latent-bilinear-antialiased"),
                       ("Latent (bicubic antialiased)", "latent-bicubic-antialiased"),
                       ("Latent (nearest-exact)", "latent-nearest-exact")):  # fmt: skip
        [_, hires] = spec_of(registry, prompt="p", enable_hr=True, hr_upscaler=name).stages
        assert hires.upscaler == ours
    [_, hires] = spec_of(registry, prompt="p", enable_hr=True, hr_upscaler="None").stages
    assert (hires.handoff, hires.upscaler) == ("pixel", "none")


def test_a_latent_upscaler_to_another_latent_space_is_refused_at_hr_upscaler(
    registry: ModelRegistry,
) -> None:
    spec = spec_of(registry, prompt="p", enable_hr=True, hr_checkpoint_name="demo-flux")
    with pytest.raises(JobRejected) as rejected:
        check_job(spec, registry, JobLimits())
    [violation] = in_a1111_terms(rejected.value, spec).violations
    assert (violation.type, violation.loc) == ("latent_space_mismatch", ("hr_upscaler",))
    assert "pick a pixel upscaler for hr_upscaler (Lanczos, Nearest or None)" in violation.msg


@pytest.mark.parametrize(
    ("request_fields", "loc"),
    [
        ({"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, ["body", "hr_upscaler"]),
        ({"batch_size": 4, "n_iter": 2}, ["body", "batch_size"]),
        ({"enable_hr": True, "hr_checkpoint_name": "nope"}, None),
        ({"width": 10000}, ["body", "width"]),  # A1111 takes it; the job spec does not
    ],
)
def test_bad_requests_name_a1111s_field(
    registry: ModelRegistry, request_fields: dict[str, Any], loc: list[Any] | None
) -> None:
    with pytest.raises((RequestValidationError, JobRejected)) as refused:
        spec_of(registry, prompt="p", **request_fields)
    if isinstance(refused.value, JobRejected):
        [violation] = refused.value.violations
        assert violation.loc == ("hr_checkpoint_name",)
        assert "sd-models" in violation.msg
    else:
        [error] = refused.value.errors()
        assert list(error["loc"]) == loc


def test_img2img_takes_one_picture_and_its_strength(registry: ModelRegistry) -> None:
    request = Img2ImgRequest(
        prompt="p", width=64, height=64, init_images=["aGk="], denoising_strength=0.3
    )
    spec = img2img_spec(request, "demo-sd15", registry)
    assert (spec.init_image, spec.strength, spec.init_resize) == ("aGk=", 0.3, None)
    cropped = img2img_spec(request.model_copy(update={"resize_mode": 1}), "demo-sd15", registry)
    assert cropped.init_resize == "crop_and_resize"
    latent = img2img_spec(request.model_copy(update={"resize_mode": 3}), "demo-sd15", registry)
    assert latent.init_resize == "latent_upscale"


def test_img2img_with_a_mask_inpaints_as_a1111_means_its_fields(registry: ModelRegistry) -> None:
    request = Img2ImgRequest(prompt="p", width=64, height=64, init_images=["aGk="], mask="bWFzaw==")
    spec = img2img_spec(request, "demo-sd15", registry)  # webuiapi's defaults
    assert (spec.mask, spec.mask_blur, spec.invert_mask, spec.masked_content) == (
        "bWFzaw==", 4, False, "fill",
    )  # fmt: skip
    assert (spec.inpaint_area, spec.inpaint_padding) == ("masked", 0)
    whole = img2img_spec(
        request.model_copy(update={"inpaint_full_res": False, "inpainting_fill": 1,
                                   "inpainting_mask_invert": 1, "mask_blur": 9}),
        "demo-sd15", registry,
    )  # fmt: skip
    assert (whole.inpaint_area, whole.inpaint_padding, whole.masked_content) == (
        "whole",
        None,
        "original",
    )
    assert (whole.invert_mask, whole.mask_blur) == (True, 9)
    latent = img2img_spec(request.model_copy(update={"inpainting_fill": 3}), "demo-sd15", registry)
    assert latent.masked_content == "latent_nothing"
    for field, value in (("mask_blur_y", 7), ("mask_round", False),
                         ("initial_noise_multiplier", 0.5), ("latent_mask", "aGk=")):  # fmt: skip
        with pytest.raises(RequestValidationError) as refused:
            img2img_spec(request.model_copy(update={field: value}), "demo-sd15", registry)
        assert refused.value.errors()[0]["loc"] == ("body", field)


def test_every_field_a1111_clients_send_by_default_is_accepted() -> None:
    # webuiapi's txt2img payload with its defaults, as it sends it.
    defaults = yaml.safe_load(DEFAULT_PAYLOAD)
    Txt2ImgRequest.model_validate(defaults)


DEFAULT_PAYLOAD = """
{enable_hr: false, hr_scale: 2, hr_upscaler: Latent, hr_second_pass_steps: 0, hr_resize_x: 0,
 hr_resize_y: 0, hr_checkpoint_name: null, hr_sampler_name: null, hr_scheduler: null,
 hr_prompt: '', hr_negative_prompt: '', denoising_strength: 0.7, firstphase_width: 0,
 firstphase_height: 0, prompt: '', styles: [], seed: -1, subseed: -1, subseed_strength: 0.0,
 seed_resize_from_h: 0, seed_resize_from_w: 0, batch_size: 1, n_iter: 1, steps: 20,
 cfg_scale: 7.0, width: 512, height: 512, restore_faces: false, tiling: false,
 do_not_save_samples: false, do_not_save_grid: false, negative_prompt: '', eta: 1.0,
 s_churn: 0, s_tmax: 0, s_tmin: 0, s_noise: 1, override_settings: {},
 override_settings_restore_afterwards: true, sampler_name: Euler a, scheduler: automatic,
 sampler_index: Euler a, script_name: null, script_args: [], send_images: true,
 save_images: false, alwayson_scripts: {}}
"""


def test_lora_tags_in_a1111_prompts_become_the_stages_loras(registry: ModelRegistry) -> None:
    spec = spec_of(
        registry,
        prompt="a cat <lora:detail-sd15:0.6> on a mat <lora:detail-sd15>",
        enable_hr=True,
        hr_upscaler="Lanczos",
    )
    assert spec.prompt == "a cat on a mat"
    base, hires = spec.stages
    assert [(u.name, u.weight) for u in base.loras or ()] == [
        ("detail-sd15", 0.6),
        ("detail-sd15", 1.0),
    ]
    assert hires.loras == base.loras  # the same checkpoint: A1111 applies them to both passes


def test_a_lora_tag_of_another_architecture_is_refused_at_the_prompt(
    registry: ModelRegistry,
) -> None:
    request = Txt2ImgRequest(prompt="x <lora:detail-sd15:1>", width=64, height=64)
    spec = txt2img_spec(request, "demo-sdxl", registry)
    with pytest.raises(JobRejected) as rejected:
        check_job(spec, registry, JobLimits())
    [violation] = in_a1111_terms(rejected.value, spec).violations
    assert (violation.type, violation.loc) == ("lora_architecture_mismatch", ("prompt",))


def test_a_registered_upscaler_model_is_a_pixel_hires_upscaler(registry: ModelRegistry) -> None:
    spec = spec_of(
        registry,
        prompt="p",
        enable_hr=True,
        hr_checkpoint_name="demo-flux",
        hr_upscaler="esrgan-4x",
    )
    hires = spec.stages[-1]
    assert (hires.handoff, hires.upscaler) == ("pixel", "esrgan-4x")
    with pytest.raises(RequestValidationError) as refused:
        spec_of(registry, prompt="p", enable_hr=True, hr_upscaler="4x-missing")
    [error] = refused.value.errors()
    assert error["loc"] == ("body", "hr_upscaler")
    assert "esrgan-4x" in error["msg"]


def test_clip_skip_comes_from_a1111s_setting_and_skips_only_where_there_are_clip_layers(
    registry: ModelRegistry,
) -> None:
    skip = {"sd_model_checkpoint": "demo-sd15", "CLIP_stop_at_last_layers": 2}
    base, hires = spec_of(
        registry, prompt="p", override_settings=skip, enable_hr=True,
        hr_checkpoint_name="demo-flux", hr_upscaler="Lanczos",
    ).stages  # fmt: skip
    # SillyTavern sends the setting with every request: Flux reads no CLIP layers, as in Forge
    assert (base.clip_skip, hires.clip_skip) == (2, None)
    [last] = spec_of(registry, prompt="p", override_settings={"CLIP_stop_at_last_layers": 1}).stages
    assert last.clip_skip is None
    with pytest.raises(RequestValidationError) as refused:
        spec_of(registry, prompt="p", override_settings={"CLIP_stop_at_last_layers": 13})
    [error] = refused.value.errors()
    assert list(error["loc"]) == ["body", "override_settings", "CLIP_stop_at_last_layers"]


def test_sd_vae_names_a_registered_vae_by_name_or_file_and_automatic_is_the_models_own(
    registry: ModelRegistry,
) -> None:
    for name in ("demo-sd15-vae", "demo-sd15-vae.safetensors"):
        [base] = spec_of(registry, prompt="p", override_settings={"sd_vae": name}).stages
        assert base.vae == "demo-sd15-vae"
    for own in ("Automatic", "None"):
        [base] = spec_of(registry, prompt="p", override_settings={"sd_vae": own}).stages
        assert base.vae is None
    with pytest.raises(JobRejected) as unknown:
        spec_of(registry, prompt="p", override_settings={"sd_vae": "vae-ft-mse.ckpt"})
    [violation] = unknown.value.violations
    assert (violation.type, violation.loc) == ("unknown_vae", ("override_settings", "sd_vae"))
    assert "Automatic, None, demo-sd15-vae, demo-sdxl-vae" in violation.msg


def test_sd_vae_goes_on_the_stages_of_its_latent_space_and_is_refused_on_the_checkpoint(
    registry: ModelRegistry,
) -> None:
    base, hires = spec_of(
        registry, prompt="p", override_settings={"sd_vae": "demo-sd15-vae"}, enable_hr=True,
        hr_checkpoint_name="demo-flux", hr_upscaler="Lanczos",
    ).stages  # fmt: skip
    assert (base.vae, hires.vae) == ("demo-sd15-vae", None)  # Flux keeps its own
    request = Txt2ImgRequest(prompt="p", width=64, height=64,
                             override_settings={"sd_vae": "demo-sd15-vae"})  # fmt: skip
    spec = txt2img_spec(request, "demo-sdxl", registry)
    with pytest.raises(JobRejected) as rejected:
        check_job(spec, registry, JobLimits())
    [violation] = in_a1111_terms(rejected.value, spec).violations
    assert violation.type == "vae_latent_space_mismatch"
    assert violation.loc == ("override_settings", "sd_vae")
    # A key's stored choice stays off a checkpoint it does not fit.
    [own] = txt2img_spec(request.model_copy(update={"override_settings": None}), "demo-sdxl",
                         registry, stored_vae="demo-sd15-vae").stages  # fmt: skip
    assert own.vae is None
