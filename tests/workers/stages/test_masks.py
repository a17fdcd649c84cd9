"""A masked first stage on every architecture's ordinary model, run by the worker's own chain on
the tiny models: only the masked part changes (every pixel farther than the blur's reach from it
is the init image's, exactly), invert_mask flips which part, `fill` starts from other pixels
than `original`, and a hires stage after it takes the inpainted picture; masked jobs batched in
one call each keep their own picture outside their own mask."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from contract.job_rules import CheckedJob, JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from workers.models.cache import ModelCache, ModelUnavailable
from workers.stages.chain import Member, run_chain, run_group
from workers.stages.control_images import fitted
from workers.stages.masks import (
    blurred,
    crop_region,
    filled,
    fitted_mask,
    outpaint_canvas,
    pasted_back,
    reach,
)
from workers.stages.outcomes import Made

SIZE = 64
BLUR = 4


@pytest.fixture(scope="module")
def cache(registry: ModelRegistry) -> ModelCache:
    return ModelCache(registry)


def png(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def init_picture() -> Image.Image:
    """A picture with structure everywhere, so that any change of a kept pixel shows."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def square_mask() -> Image.Image:
    """White repaints: a square in the middle."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 39, 39), fill=255)
    return mask


def checked(registry: ModelRegistry, model: str, **fields: Any) -> CheckedJob:
    body = {
        "prompt": "a red door", "seed": 7, "width": SIZE, "height": SIZE,
        "init_image": png(init_picture()), "mask": png(square_mask()), "strength": 0.9,
        "mask_blur": BLUR, "stages": [{"model": model, "steps": 4}], **fields,
    }  # fmt: skip
    return check_job(JobSpec.model_validate(body), registry, JobLimits())


def inpainted(registry: ModelRegistry, cache: ModelCache, model: str, **fields: Any) -> np.ndarray:
    job = checked(registry, model, **fields)
    assert job.init_image is not None
    outcome = run_chain(
        job.spec, range(len(job.spec.stages)), [job.init_image], cache.get,
        lambda *_: None, "test-worker", mask=job.mask,
    )  # fmt: skip
    assert isinstance(outcome, Made), outcome
    return np.asarray(outcome.pictures[0].convert("RGB"), dtype=np.int16)


def near(mask: Image.Image, distance: int) -> np.ndarray:
    """Where a pixel is within `distance` (Chebyshev) of the mask's white."""
    white = np.asarray(mask) > 0
    grown = white.copy()
    for dy in range(-distance, distance + 1):
        for dx in range(-distance, distance + 1):
            grown |= np.roll(np.roll(white, dy, axis=0), dx, axis=1)
    return grown


@pytest.mark.parametrize(
    "model",
    ["demo-sd15", "demo-sdxl", "demo-sdxl-refiner", "demo-sd35", "demo-flux", "demo-chroma"],
)
def test_a_masked_job_changes_only_the_masked_part(
    registry: ModelRegistry, cache: ModelCache, model: str
) -> None:
    original = np.asarray(init_picture(), dtype=np.int16)
    out = inpainted(registry, cache, model)
    affected = near(square_mask(), reach(BLUR))
    assert (out[~affected] == original[~affected]).all()  # kept: the input's, bit for bit
    inside = np.asarray(square_mask()) > 0
    assert np.abs(out[inside] - original[inside]).mean() > 5  # repainted

    flipped = inpainted(registry, cache, model, invert_mask=True)
    # Inverted, the square is what stays: exactly, away from its edge.
    core = ~near(Image.fromarray(255 - np.asarray(square_mask())), reach(BLUR))
    assert (flipped[core] == original[core]).all()
    assert np.abs(flipped[~affected] - original[~affected]).mean() > 5


def test_fill_starts_from_other_pixels_than_original(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    original = inpainted(registry, cache, "demo-sd15")
    fill = inpainted(registry, cache, "demo-sd15", masked_content="fill")
    inside = np.asarray(square_mask()) > 0
    assert np.abs(fill[inside] - original[inside]).mean() > 2
    outside = ~near(square_mask(), reach(BLUR))
    assert (fill[outside] == original[outside]).all()


def test_a_hires_stage_after_a_masked_one_takes_the_inpainted_picture(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    stages = [
        {"model": "demo-sd15", "steps": 4},
        {"model": "demo-flux", "mode": "hires", "steps": 2, "scale": 2},
    ]
    out = inpainted(registry, cache, "demo-sd15", stages=stages)
    assert out.shape == (2 * SIZE, 2 * SIZE, 3)


def test_the_blur_reaches_as_far_as_a1111s_kernel() -> None:
    mask = square_mask()
    soft = np.asarray(blurred(mask, BLUR))
    assert reach(BLUR) == 10  # A1111: a kernel of 2 * int(2.5 * 4 + 0.5) + 1 = 21 pixels
    beyond = ~near(mask, reach(BLUR))
    assert (soft[beyond] == 0).all()
    assert 0 < soft[24, 24 - reach(BLUR) // 2] < 255  # soft inside its reach
    assert blurred(mask, 0) is mask


def test_fill_paints_the_masked_part_with_the_colours_around_it() -> None:
    picture = Image.new("RGB", (SIZE, SIZE), (200, 40, 40))
    ImageDraw.Draw(picture).rectangle((24, 24, 39, 39), fill=(0, 0, 255))  # under the mask
    out = np.asarray(filled(picture, square_mask()), dtype=np.int16)
    # The blue square is gone: the red around it flowed in.
    assert np.abs(out[32, 32] - np.array([200, 40, 40])).max() < 30


def test_paste_back_keeps_what_the_mask_keeps() -> None:
    made = Image.new("RGB", (SIZE, SIZE), (0, 255, 0))
    original = init_picture()
    soft = blurred(square_mask(), BLUR)
    out = np.asarray(pasted_back(made, original, soft))
    keep = np.asarray(soft) == 0
    assert (out[keep] == np.asarray(original)[keep]).all()
    # The square's middle is mostly the made picture (a 16-pixel square blurred with sigma 4 is
    # not fully white anywhere).
    green = np.asarray(soft)[32, 32] / 255
    assert green > 0.8
    assert out[32, 32, 1] >= round(green * 255) - 1


def test_only_masked_works_on_the_masks_region_at_the_stages_size(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    # A small mask in a corner of a 128x128 picture: the region around it is repainted at
    # 128x128 and scaled back into place.
    big = init_picture().resize((128, 128))
    small = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(small).rectangle((90, 20, 101, 31), fill=255)
    fields = {"width": 128, "height": 128, "init_image": png(big), "mask": png(small)}
    whole = inpainted(registry, cache, "demo-sd15", **fields)
    masked = inpainted(
        registry, cache, "demo-sd15", **fields, inpaint_area="masked", inpaint_padding=8
    )
    original = np.asarray(big, dtype=np.int16)
    outside = ~near(small, reach(BLUR))
    assert (masked[outside] == original[outside]).all()
    inside = np.asarray(small) > 0
    assert np.abs(masked[inside] - original[inside]).mean() > 5
    assert np.abs(masked[inside] - whole[inside]).mean() > 2  # made otherwise, at more pixels


def test_the_only_masked_region_is_a1111s() -> None:
    soft = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(soft).rectangle((100, 200, 227, 231), fill=255)  # 128x32
    assert crop_region(soft, 0, (512, 512)) == (100, 152, 228, 280)  # grown to 128x128
    assert crop_region(soft, 16, (512, 512)) == (84, 136, 244, 296)
    corner = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(corner).rectangle((0, 0, 63, 15), fill=255)
    assert crop_region(corner, 0, (512, 256)) == (0, 0, 64, 32)  # kept inside, the stage's 2:1


@pytest.mark.parametrize("model", ["demo-sd15", "demo-flux"])
def test_an_outpaint_grows_the_canvas_and_keeps_the_picture_where_it_was(
    registry: ModelRegistry, cache: ModelCache, model: str
) -> None:
    body = {
        "prompt": "a wide beach", "seed": 7, "width": 96, "height": 80,
        "init_image": png(init_picture()), "outpaint": {"right": 32, "top": 16},
        "stages": [{"model": model, "steps": 4}],
    }  # fmt: skip
    job = check_job(JobSpec.model_validate(body), registry, JobLimits())
    assert job.init_image is not None
    assert job.mask is not None
    assert job.spec.masked_content == "fill"  # the padding's default start
    assert job.spec.outpaint is not None
    canvas = outpaint_canvas(job.init_image, job.spec.outpaint)
    outcome = run_chain(
        job.spec, range(1), [canvas], cache.get, lambda *_: None, "test-worker", mask=job.mask
    )
    assert isinstance(outcome, Made), outcome
    out = np.asarray(outcome.pictures[0].convert("RGB"), dtype=np.int16)
    assert out.shape == (80, 96, 3)
    # The picture sits at (0, 16): exact but within the blur's reach of the padding.
    kept = ~near(job.mask, reach(BLUR))
    placed = np.asarray(canvas, dtype=np.int16)
    assert kept.sum() > 1500
    assert (out[kept] == placed[kept]).all()
    assert (out[16 + 20, 0:40] == np.asarray(init_picture(), np.int16)[20, 0:40]).all()
    padding = np.asarray(job.mask) > 0
    assert np.abs(out[padding] - placed[padding]).mean() > 5  # painted, not the stretched edge


@pytest.mark.parametrize(
    "model", ["demo-sd15", "demo-sdxl", "demo-sd35", "demo-flux", "demo-chroma"]
)
def test_the_four_masked_content_modes_start_from_different_things(
    registry: ModelRegistry, cache: ModelCache, model: str
) -> None:
    made = {
        content: inpainted(registry, cache, model, masked_content=content, strength=0.6)
        for content in ("original", "fill", "latent_noise", "latent_nothing")
    }
    inside = np.asarray(square_mask()) > 0
    outside = ~near(square_mask(), reach(BLUR))
    original = np.asarray(init_picture(), dtype=np.int16)
    for content, out in made.items():
        assert (out[outside] == original[outside]).all(), content
    contents = sorted(made)
    for k, a in enumerate(contents):
        for b in contents[k + 1 :]:
            assert np.abs(made[a][inside] - made[b][inside]).mean() > 1, (a, b)


@pytest.fixture(scope="module")
def with_inpainting(registry: ModelRegistry, demo_models: Path) -> ModelRegistry:
    """The demo registry and the tiny inpainting checkpoints (demo/inpainting.py)."""
    models = registry.model_dump(mode="json")["models"]
    for arch in ("sd15", "sdxl"):
        models[f"demo-{arch}-inpainting"] = {
            "architecture": arch, "variant": "inpainting", "device": "cpu",
            "source": {"folder": str(demo_models / "demo-inpainting" / arch)},
        }  # fmt: skip
    models["demo-flux-fill"] = {
        "architecture": "flux", "variant": "fill", "device": "cpu",
        "source": {"folder": str(demo_models / "demo-inpainting" / "flux")},
    }  # fmt: skip
    return ModelRegistry.model_validate({"models": models})


@pytest.mark.parametrize(
    "model", ["demo-sd15-inpainting", "demo-sdxl-inpainting", "demo-flux-fill"]
)
def test_an_inpainting_checkpoint_changes_only_the_masked_part(
    with_inpainting: ModelRegistry, model: str
) -> None:
    cache = ModelCache(with_inpainting)
    denoiser = cache.get(model).text.components.get("unet") or cache.get(model).text.transformer
    assert denoiser.config.in_channels in (9, 384)  # SD's 4 + 1 + 4; Fill's 64 + 64 + 256
    original = np.asarray(init_picture(), dtype=np.int16)
    affected = near(square_mask(), reach(BLUR))
    inside = np.asarray(square_mask()) > 0
    made = {}
    # FLUX.1 Fill makes its masked picture from pixels: no latent start (refused at admission).
    latent = () if model == "demo-flux-fill" else ("latent_noise", "latent_nothing")
    for content in ("original", "fill", *latent):
        out = inpainted(with_inpainting, cache, model, masked_content=content, strength=0.3)
        assert (out[~affected] == original[~affected]).all(), content
        made[content] = out
    assert np.abs(made["original"][inside] - original[inside]).mean() > 5
    contents = sorted(made)
    for k, a in enumerate(contents):
        for b in contents[k + 1 :]:
            assert np.abs(made[a][inside] - made[b][inside]).mean() > 1, (a, b)
    flipped = inpainted(with_inpainting, cache, model, invert_mask=True)
    core = ~near(Image.fromarray(255 - np.asarray(square_mask())), reach(BLUR))
    assert (flipped[core] == original[core]).all()


def test_flux_fill_is_told_from_an_ordinary_flux_by_its_transformer(
    with_inpainting: ModelRegistry,
) -> None:
    models = with_inpainting.model_dump(mode="json")["models"]
    models["claims-fill"] = {**models["demo-flux"], "variant": "fill"}
    models["claims-dev"] = {**models["demo-flux-fill"], "variant": "dev"}
    cache = ModelCache(ModelRegistry.model_validate({"models": models}))
    with pytest.raises(ModelUnavailable, match=r"is not FLUX\.1 Fill .* drop variant: fill"):
        cache.get("claims-fill")
    with pytest.raises(ModelUnavailable, match=r"is FLUX\.1 Fill.* register it with variant: fill"):
        cache.get("claims-dev")


def test_an_inpainting_checkpoint_is_told_from_an_ordinary_one_by_its_unet(
    with_inpainting: ModelRegistry, demo_models: Path
) -> None:
    models = with_inpainting.model_dump(mode="json")["models"]
    models["claims-inpainting"] = {**models["demo-sd15"], "variant": "inpainting"}
    models["claims-ordinary"] = {**models["demo-sd15-inpainting"], "variant": None}
    cache = ModelCache(ModelRegistry.model_validate({"models": models}))
    with pytest.raises(ModelUnavailable, match="takes 4 channels, not 9; drop variant"):
        cache.get("claims-inpainting")
    with pytest.raises(ModelUnavailable, match="register it with variant: inpainting"):
        cache.get("claims-ordinary")


def test_a_masked_hires_stage_keeps_the_upscaled_picture_outside_the_mask(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    first = {"model": "demo-sd15", "steps": 4}
    base = made_picture(inpainted(registry, cache, "demo-sd15", stages=[first]))
    hires = {"model": "demo-flux", "mode": "hires", "steps": 2, "scale": 2, "masked": True}
    out = inpainted(registry, cache, "demo-sd15", stages=[first, hires])
    assert out.shape == (2 * SIZE, 2 * SIZE, 3)
    upscaled = np.asarray(base.resize((2 * SIZE, 2 * SIZE), Image.Resampling.LANCZOS), np.int16)
    big_mask = square_mask().resize((2 * SIZE, 2 * SIZE), Image.Resampling.NEAREST)
    outside = ~near(big_mask, reach(BLUR))
    assert (out[outside] == upscaled[outside]).all()
    inside = np.asarray(big_mask) > 0
    assert np.abs(out[inside] - upscaled[inside]).mean() > 5


def made_picture(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.mark.parametrize("mode", ["crop_and_resize", "resize_and_fill"])
def test_the_init_image_and_its_mask_meet_the_jobs_size_alike(
    registry: ModelRegistry, cache: ModelCache, mode: str
) -> None:
    # A 128x64 picture and mask into a 64x64 job: cropped to its middle, or fitted and padded.
    wide = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 128, 3), np.uint8))
    mask = Image.new("L", (128, 64), 0)
    ImageDraw.Draw(mask).rectangle((56, 24, 71, 39), fill=255)
    out = inpainted(
        registry, cache, "demo-sd15", init_image=png(wide), mask=png(mask), init_resize=mode
    )
    start = np.asarray(fitted(wide, (SIZE, SIZE), mode), np.int16)  # what the stage starts from
    met = fitted_mask(mask, (SIZE, SIZE), mode)
    assert met.getbbox() is not None
    outside = ~near(met, reach(BLUR))
    assert (out[outside] == start[outside]).all()
    inside = np.asarray(met) > 0
    assert np.abs(out[inside] - start[inside]).mean() > 5


def corner_mask() -> Image.Image:
    """Another job's mask: a band along the top left."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 27, 15), fill=255)
    return mask


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("demo-sd15", {}),
        ("demo-sd15", {"masked_content": "latent_noise"}),
        ("demo-sdxl", {"inpaint_area": "masked"}),
        ("demo-sd35", {}),
        ("demo-flux", {"masked_content": "fill"}),
        ("demo-chroma", {}),
        ("demo-sd15-inpainting", {"masked_content": "latent_nothing"}),
        ("demo-sdxl-inpainting", {}),
        ("demo-flux-fill", {}),
    ],
)
def test_masked_jobs_in_one_call_each_keep_their_own_picture_outside_their_own_mask(
    with_inpainting: ModelRegistry, model: str, fields: dict[str, Any]
) -> None:
    cache = ModelCache(with_inpainting)
    other = Image.fromarray(np.asarray(init_picture())[::-1].copy())  # another picture
    jobs = [
        checked(with_inpainting, model, **fields),
        checked(with_inpainting, model, **fields, seed=3, num_images=2, prompt="a blue window",
                init_image=png(other), mask=png(corner_mask())),
    ]  # fmt: skip
    members = [Member.first(str(k), job, lambda *_: None) for k, job in enumerate(jobs)]
    run_group(members, range(1), cache.get, "test-worker")
    for member, job, mask in zip(members, jobs, (square_mask(), corner_mask()), strict=True):
        assert isinstance(member.outcome, Made), member.outcome
        assert [t.batch_size for t in member.outcome.traces] == [3]
        assert job.init_image is not None
        original = np.asarray(job.init_image.convert("RGB"), dtype=np.int16)
        kept = ~near(mask, reach(BLUR))
        inside = np.asarray(mask) > 0
        alone = Member.first("alone", job, lambda *_: None)
        run_group([alone], range(1), cache.get, "test-worker")
        assert isinstance(alone.outcome, Made), alone.outcome
        for made, by_itself in zip(member.outcome.pictures, alone.outcome.pictures, strict=True):
            out = np.asarray(made.convert("RGB"), dtype=np.int16)
            assert (out[kept] == original[kept]).all()
            assert np.abs(out[inside] - original[inside]).mean() > 5
            # What it would be alone, up to how batched matrix products round.
            assert np.abs(out - np.asarray(by_itself, dtype=np.int16)).max() <= 1
