"""Masks read as A1111 reads them, and checked at admission where they stand: white repaints,
black keeps; transparency by its alpha; another size than the init image, nothing to repaint, a
mask without an init image, its settings without a mask, a ControlNet or a latent handoff with
one: each a 422 naming the field."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image, ImageDraw

from contract.job_rules import JobLimits, check_job
from contract.masks import KEEP, REPAINT, decode_mask, read_mask
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    models = {
        f"demo-{arch}": {"architecture": arch, "source": {"folder": f"/models/{arch}"}}
        for arch in ("sd15", "sdxl", "sdxl-refiner")
    }
    models["demo-sd15-inpainting"] = {
        "architecture": "sd15", "variant": "inpainting", "source": {"folder": "/models/i"},
    }  # fmt: skip
    models["demo-flux-fill"] = {
        "architecture": "flux", "variant": "fill", "source": {"folder": "/models/f"},
    }  # fmt: skip
    controlnets = {"demo-sd15-canny": {"architecture": "sd15", "file": "/cn/sd15"}}
    return ModelRegistry.model_validate({"models": models, "controlnets": controlnets})


def png(image: Image.Image, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return base64.b64encode(out.getvalue()).decode()


def painted(size: tuple[int, int] = (64, 64), mode: str = "L") -> Image.Image:
    """A square painted white (or opaque) in the middle, the rest black (or transparent)."""
    if mode == "RGBA":
        mask = Image.new("RGBA", size, (0, 0, 0, 0))
        ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=(255, 0, 0, 255))
        return mask
    mask = Image.new(mode, size, 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255 if mode == "L" else (255,) * 3)
    return mask


def test_white_repaints_and_black_keeps_in_any_mode() -> None:
    for mode in ("L", "RGB", "RGBA"):
        mask = read_mask(painted(mode=mode))
        assert mask.mode == "L"
        assert mask.getpixel((32, 32)) == REPAINT
        assert mask.getpixel((2, 2)) == KEEP
    # A transparent cut-out is read by its alpha: its colour under transparency says nothing.
    assert read_mask(painted(mode="RGBA")).getpixel((32, 32)) == REPAINT
    assert read_mask(painted(), invert=True).getpixel((32, 32)) == KEEP


def test_gray_is_rounded_to_repaint_or_keep() -> None:
    gray = Image.new("L", (8, 8), 127)
    gray.putpixel((0, 0), 128)
    mask = read_mask(gray)
    assert sorted(c for _, c in mask.getcolors()) == [KEEP, REPAINT]
    assert mask.getpixel((0, 0)) == REPAINT


def test_a_mask_of_another_size_or_with_nothing_to_repaint_is_named() -> None:
    with pytest.raises(Exception, match="mask is 32x32 but init_image is 64x64") as wrong:
        decode_mask(png(painted((32, 32))), 2**20, (64, 64))
    assert wrong.value.violation.type == "mask_size_mismatch"  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="repaints nothing") as empty:
        decode_mask(png(Image.new("L", (64, 64), 0)), 2**20, (64, 64))
    assert empty.value.violation.type == "mask_empty"  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="once inverted"):
        decode_mask(png(Image.new("L", (64, 64), 255)), 2**20, (64, 64), invert=True)


def job(**fields: Any) -> dict[str, Any]:
    return {
        "prompt": "a door", "width": 64, "height": 64,
        "init_image": png(Image.new("RGB", (64, 64), (90, 90, 90))), "mask": png(painted()),
        "stages": [{"model": "demo-sd15"}], **fields,
    }  # fmt: skip


def refusals(registry: ModelRegistry, body: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
    with pytest.raises(JobRejected) as refused:
        check_job(JobSpec.model_validate(body), registry, JobLimits())
    return [(v.type, v.loc) for v in refused.value.violations]


def test_a_masked_job_is_checked_and_its_settings_filled_in(registry: ModelRegistry) -> None:
    checked = check_job(JobSpec.model_validate(job()), registry, JobLimits())
    assert (checked.spec.mask_blur, checked.spec.invert_mask, checked.spec.masked_content) == (
        4, False, "original",
    )  # fmt: skip
    assert checked.mask is not None
    assert checked.mask.getpixel((32, 32)) == REPAINT


def test_every_mask_field_is_refused_where_it_stands(registry: ModelRegistry) -> None:
    no_init = {k: v for k, v in job().items() if k != "init_image"}
    assert refusals(registry, no_init) == [("field_not_allowed", ("mask",))]
    no_mask = {**{k: v for k, v in job().items() if k != "mask"}, "mask_blur": 8,
               "invert_mask": True, "masked_content": "fill"}  # fmt: skip
    assert refusals(registry, no_mask) == [
        ("field_not_allowed", ("mask_blur",)),
        ("field_not_allowed", ("invert_mask",)),
        ("field_not_allowed", ("masked_content",)),
    ]
    assert refusals(registry, job(mask=png(painted((32, 32))))) == [
        ("mask_size_mismatch", ("mask",))
    ]
    assert refusals(registry, job(mask=png(Image.new("L", (64, 64))))) == [
        ("mask_empty", ("mask",))
    ]


def test_a_masked_first_stage_takes_no_controlnet_and_hands_on_no_latents(
    registry: ModelRegistry,
) -> None:
    control = {"name": "demo-sd15-canny", "image": png(Image.new("RGB", (64, 64)))}
    steered = job(stages=[{"model": "demo-sd15", "controlnets": [control]}])
    assert ("mask_unsupported", ("stages", 0, "controlnets")) in refusals(registry, steered)
    refined = job(stages=[{"model": "demo-sdxl"},
                          {"model": "demo-sdxl-refiner", "mode": "refine"}])  # fmt: skip
    assert ("mask_unsupported", ("stages", 1, "handoff")) in refusals(registry, refined)


def test_an_outpaint_is_checked_against_the_jobs_size_naming_the_side(
    registry: ModelRegistry,
) -> None:
    body = {k: v for k, v in job().items() if k != "mask"}
    grown = check_job(
        JobSpec.model_validate({**body, "width": 96, "outpaint": {"left": 32}}), registry,
        JobLimits(),
    )  # fmt: skip
    assert grown.mask is not None
    assert grown.mask.size == (96, 64)
    assert (grown.mask.getpixel((0, 0)), grown.mask.getpixel((40, 10))) == (REPAINT, KEEP)
    [(kind, loc)] = refusals(registry, {**body, "outpaint": {"left": 32}})
    assert (kind, loc) == ("outpaint_size_mismatch", ("outpaint",))
    with pytest.raises(JobRejected, match=r"64 \+ left 32 \+ right 0 = 96.*send width 96"):
        check_job(JobSpec.model_validate({**body, "outpaint": {"left": 32}}), registry,
                  JobLimits())  # fmt: skip
    assert refusals(registry, {**job(), "width": 96, "outpaint": {"left": 32}}) == [
        ("field_not_allowed", ("mask",))
    ]
    no_init = {k: v for k, v in body.items() if k != "init_image"}
    assert ("field_not_allowed", ("outpaint",)) in refusals(
        registry, {**no_init, "outpaint": {"top": 8}}
    )
    with pytest.raises(ValueError, match="outpaint adds nothing"):
        JobSpec.model_validate({**body, "outpaint": {}})


def test_an_inpainting_checkpoint_runs_only_as_a_masked_first_stage(
    registry: ModelRegistry,
) -> None:
    assert registry.models["demo-sd15-inpainting"].text_to_image is False
    masked = check_job(
        JobSpec.model_validate(job(stages=[{"model": "demo-sd15-inpainting"}])), registry,
        JobLimits(),
    )  # fmt: skip
    assert masked.mask is not None
    plain = {k: v for k, v in job(stages=[{"model": "demo-sd15-inpainting"}]).items()
             if k not in ("init_image", "mask")}  # fmt: skip
    assert refusals(registry, plain) == [("mask_required", ("stages", 0, "model"))]
    later = job(stages=[{"model": "demo-sd15"},
                        {"model": "demo-sd15-inpainting", "mode": "hires"}])  # fmt: skip
    assert ("mask_required", ("stages", 1, "model")) in refusals(registry, later)


def test_a_hires_stage_may_keep_to_the_mask_with_pictures_only(registry: ModelRegistry) -> None:
    hires = {"model": "demo-sd15", "mode": "hires", "masked": True}
    checked = check_job(
        JobSpec.model_validate(job(stages=[{"model": "demo-sd15"}, hires])), registry, JobLimits()
    )
    assert checked.spec.stages[1].masked is True
    # An inpainting checkpoint may run such a stage.
    inpainting_hires = {**hires, "model": "demo-sd15-inpainting"}
    check_job(JobSpec.model_validate(job(stages=[{"model": "demo-sd15"}, inpainting_hires])),
              registry, JobLimits())  # fmt: skip
    unmasked = {k: v for k, v in job(stages=[{"model": "demo-sd15"}, hires]).items() if k != "mask"}
    assert refusals(registry, unmasked) == [("field_not_allowed", ("stages", 1, "masked"))]
    latent = job(stages=[{"model": "demo-sd15"}, {**hires, "handoff": "latent"}])
    assert ("mask_unsupported", ("stages", 1, "masked")) in refusals(registry, latent)
    first = job(stages=[{"model": "demo-sd15", "masked": True}])
    assert refusals(registry, first) == [("field_not_allowed", ("stages", 0, "masked"))]


def test_flux_fill_inpaints_from_pixels_only(registry: ModelRegistry) -> None:
    fill = job(stages=[{"model": "demo-flux-fill"}])
    checked = check_job(JobSpec.model_validate(fill), registry, JobLimits())
    assert checked.mask is not None
    # FLUX.1 Fill's typical guidance (30) is its own, past ordinary Flux's range (10), and the
    # normalized spec passes the rules again (the worker checks it so).
    assert checked.spec.stages[0].guidance_scale == 30.0
    check_job(JobSpec.model_validate(checked.spec.model_dump()), registry, JobLimits())
    assert refusals(registry, {**fill, "masked_content": "latent_noise"}) == [
        ("mask_unsupported", ("masked_content",))
    ]
    assert registry.models["demo-flux-fill"].text_to_image is False


def test_init_resize_applies_to_an_init_image(registry: ModelRegistry) -> None:
    no_init = {k: v for k, v in job().items() if k not in ("init_image", "mask")}
    assert refusals(registry, {**no_init, "init_resize": "crop_and_resize"}) == [
        ("field_not_allowed", ("init_resize",))
    ]
    cropped = check_job(
        JobSpec.model_validate(job(init_resize="resize_and_fill")), registry, JobLimits()
    )
    assert cropped.spec.init_resize == "resize_and_fill"
    # Stretched latents have no picture at the job's size for a mask to paste back onto.
    assert refusals(registry, job(init_resize="latent_upscale")) == [
        ("mask_unsupported", ("init_resize",))
    ]
    unmasked = {k: v for k, v in job().items() if k != "mask"}
    latent = check_job(
        JobSpec.model_validate({**unmasked, "init_resize": "latent_upscale"}), registry, JobLimits()
    )
    assert latent.spec.init_resize == "latent_upscale"
