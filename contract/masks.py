"""Inpainting masks as clients send them, read as A1111 reads them: white repaints, black keeps.

A mask arrives as a PNG (or JPEG) of the init image's size, drawn in a paint tool (grayscale,
or RGB with white strokes) or cut out of a layer (transparent where nothing is to change: the
Krita and Photoshop plugins send those). A mask that is not fully opaque is read by its alpha,
one that is by its gray; either is rounded to repaint or keep (A1111's `mask_round`, on by
default), so a JPEG's ringing does not leave a faint halo repainted. The blur that softens the
edge is the worker's (`workers.stages.masks`); here the mask is read, and the job's mask fields
checked (`check_masks`, called by `contract.job_rules.check_job`).
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageOps

from contract.images import InitImageRejected, decode_picture, has_alpha, to_rgb
from contract.registry import ModelEntry
from contract.spec import Handoff, JobSpec, Mode, Outpaint
from contract.violations import Violation

REPAINT, KEEP = 255, 0
DEFAULT_MASK_BLUR = 4  # pixels, A1111's default
DEFAULT_INPAINT_PADDING = 32  # pixels around an "only masked" region, A1111's UI default
# Rounding thresholds: a gray above 127 repaints (A1111's mask_round); an alpha above 128.
_GRAY_ABOVE, _ALPHA_ABOVE = 127, 128


def read_mask(image: Image.Image, invert: bool = False) -> Image.Image:
    """The mask as an L picture, REPAINT where the stage repaints and KEEP where it keeps."""
    image = ImageOps.exif_transpose(image)
    alpha = None
    if has_alpha(image):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] == 255:  # fully opaque: its alpha says nothing
            alpha = None
    if alpha is not None:
        mask = alpha.point(lambda v: REPAINT if v > _ALPHA_ABOVE else KEEP)
    else:
        gray = to_rgb(image).convert("L")
        mask = gray.point(lambda v: REPAINT if v > _GRAY_ABOVE else KEEP)
    return ImageOps.invert(mask) if invert else mask


def decode_mask(
    data: str, max_pixels: int, init_size: tuple[int, int], invert: bool = False
) -> Image.Image:
    """The job's mask decoded and read (`read_mask`), or `InitImageRejected` naming what is wrong
    with it: not a picture, another size than the init image, nothing to repaint."""
    mask = read_mask(decode_picture(data, max_pixels, ("mask",), "mask"), invert)
    if mask.size != init_size:
        (width, height), (init_width, init_height) = mask.size, init_size
        raise InitImageRejected(
            Violation(
                "mask_size_mismatch",
                ("mask",),
                f"mask is {width}x{height} but init_image is {init_width}x{init_height}; send a "
                "mask of the init image's size (white where it is repainted, black elsewhere)",
                {
                    "width": width,
                    "height": height,
                    "init_width": init_width,
                    "init_height": init_height,
                },
            )
        )
    if mask.getextrema()[1] == KEEP:
        inverted = ", once inverted (invert_mask)," if invert else ""
        raise InitImageRejected(
            Violation(
                "mask_empty",
                ("mask",),
                f"mask{inverted} repaints nothing: no pixel of it is white (or, with "
                "transparency, opaque). Paint white what the stage repaints, or send no mask to "
                "repaint the whole picture",
            )
        )
    return mask


def canvas_size(init_size: tuple[int, int], outpaint: Outpaint) -> tuple[int, int]:
    width, height = init_size
    return width + outpaint.left + outpaint.right, height + outpaint.top + outpaint.bottom


def outpaint_mask(init_size: tuple[int, int], outpaint: Outpaint) -> Image.Image:
    """The grown canvas's mask: the padding repaints, the picture keeps."""
    mask = Image.new("L", canvas_size(init_size, outpaint), REPAINT)
    width, height = init_size
    box = (outpaint.left, outpaint.top, outpaint.left + width - 1, outpaint.top + height - 1)
    ImageDraw.Draw(mask).rectangle(box, fill=KEEP)
    return mask


def job_mask(spec: JobSpec, init_size: tuple[int, int], max_pixels: int) -> Image.Image | None:
    """The job's mask once its init image is decoded: the one it sent, read, or an outpainted
    canvas's padding; `InitImageRejected` naming what is wrong."""
    if spec.mask:
        return decode_mask(spec.mask, max_pixels, init_size, bool(spec.invert_mask))
    if spec.outpaint is None:
        return None
    canvas = canvas_size(init_size, spec.outpaint)
    if canvas != (spec.width, spec.height):
        raise InitImageRejected(_canvas_violation(spec, init_size, canvas))
    return outpaint_mask(init_size, spec.outpaint)


def check_masks(spec: JobSpec, entries: list[ModelEntry], violations: list[Violation]) -> None:
    """The mask fields where they stand, and where an inpainting checkpoint may run."""
    violations += _inpainting_checkpoints(spec, entries)
    _check_mask_fields(spec, entries, violations)


def masked(spec: JobSpec) -> bool:
    """Whether the first stage inpaints: a mask sent, or the padding of an outpainted canvas."""
    return bool(spec.mask) or spec.outpaint is not None


def mask_defaults(spec: JobSpec) -> dict[str, object]:
    """A masked (or outpainted) job's mask settings with their defaults filled in (none
    without one). An outpainted canvas's padding starts as the picture's edge, spread by fill."""
    if not masked(spec):
        return {}
    return {
        "mask_blur": DEFAULT_MASK_BLUR if spec.mask_blur is None else spec.mask_blur,
        "invert_mask": bool(spec.invert_mask),
        "masked_content": spec.masked_content or ("fill" if spec.outpaint else "original"),
        "inpaint_area": spec.inpaint_area or "whole",
        "inpaint_padding": (
            (DEFAULT_INPAINT_PADDING if spec.inpaint_padding is None else spec.inpaint_padding)
            if spec.inpaint_area == "masked"
            else None
        ),
    }


def _canvas_violation(
    spec: JobSpec, init_size: tuple[int, int], canvas: tuple[int, int]
) -> Violation:
    """An outpaint whose grown canvas is not the job's size, at the side to change."""
    assert spec.outpaint is not None
    (init_width, init_height), pad = init_size, spec.outpaint
    if canvas[0] != spec.width:
        side, sides, grown, asked = "width", "left or right", canvas[0], spec.width
        parts = f"init_image's {init_width} + left {pad.left} + right {pad.right}"
    else:
        side, sides, grown, asked = "height", "top or bottom", canvas[1], spec.height
        parts = f"init_image's {init_height} + top {pad.top} + bottom {pad.bottom}"
    return Violation(
        "outpaint_size_mismatch",
        ("outpaint",),
        f"the outpainted canvas's {side} is {parts} = {grown}, but the job's {side} is {asked}; "
        f"send {side} {grown}, or change {sides}",
        {"canvas_width": canvas[0], "canvas_height": canvas[1]},
    )


def _inpainting_checkpoints(spec: JobSpec, entries: list[ModelEntry]) -> list[Violation]:
    """An inpainting checkpoint (a 9-channel UNet) runs only as a masked first stage: its
    denoiser takes the masked picture and the mask, which only that stage has."""
    found = []
    for i, entry in enumerate(entries):
        if not entry.inpainting or (masked(spec) and (i == 0 or spec.stages[i].masked)):
            continue
        where = "the first stage with init_image and mask (or outpaint), or a masked hires stage"
        found.append(
            Violation(
                "mask_required",
                ("stages", i, "model"),
                f"{entry.name!r} is an inpainting checkpoint: it repaints the masked part of a "
                f"picture, so it runs only as {where}; "
                + ("send them" if i == 0 else "use an ordinary model for this stage"),
                {"model": entry.name},
            )
        )
    return found


def _check_mask_fields(
    spec: JobSpec, entries: list[ModelEntry], violations: list[Violation]
) -> None:
    """A mask needs an init image; its settings need a mask; the first stage's ControlNets and
    IP-Adapters do not meet one yet (their pipelines are not the inpainting ones)."""
    if spec.mask and spec.init_image is None:
        violations.append(
            Violation(
                "field_not_allowed",
                ("mask",),
                "a mask says which part of init_image to repaint; send the init_image too",
            )
        )
    if spec.outpaint is not None:
        if spec.init_image is None:
            violations.append(
                Violation(
                    "field_not_allowed",
                    ("outpaint",),
                    "outpaint grows init_image's canvas; send the init_image too",
                )
            )
        for name in ("mask", "invert_mask"):
            if getattr(spec, name):
                violations.append(
                    Violation(
                        "field_not_allowed",
                        (name,),
                        f"outpaint makes its own mask (the padding); drop {name}, or outpaint",
                    )
                )
    if spec.init_resize == "latent_upscale" and masked(spec):
        violations.append(
            Violation(
                "mask_unsupported",
                ("init_resize",),
                "latent_upscale stretches init_image's latents, and a mask pastes the picture "
                "back at the job's size in pixels; use just_resize (the same stretch, in "
                "pixels) with a mask or outpaint",
            )
        )
    for i, stage in enumerate(spec.stages):
        if stage.masked is None:
            continue
        if i == 0 or not masked(spec):
            where = "the first stage is masked by mask itself" if i == 0 else "no mask is sent"
            violations.append(
                Violation(
                    "field_not_allowed",
                    ("stages", i, "masked"),
                    f"masked keeps a hires stage to the job's mask, and {where}; drop it",
                )
            )
        elif stage.masked and (stage.handoff is Handoff.LATENT or stage.mode is not Mode.HIRES):
            violations.append(
                Violation(
                    "mask_unsupported",
                    ("stages", i, "masked"),
                    "a masked stage pastes pictures back: it must be a hires stage with "
                    "handoff: pixel",
                )
            )
        elif stage.masked and (stage.controlnets or stage.ip_adapters):
            violations.append(
                Violation(
                    "mask_unsupported",
                    ("stages", i, "masked"),
                    "a masked stage takes no ControlNets or IP-Adapter yet; drop them, or masked",
                )
            )
    if not masked(spec):
        for name in (
            "mask_blur",
            "invert_mask",
            "masked_content",
            "inpaint_area",
            "inpaint_padding",
        ):
            if getattr(spec, name) is not None:
                violations.append(
                    Violation(
                        "field_not_allowed", (name,), f"{name} applies to mask; send one or drop it"
                    )
                )
        return
    if spec.inpaint_padding is not None and spec.inpaint_area != "masked":
        violations.append(
            Violation(
                "field_not_allowed",
                ("inpaint_padding",),
                "inpaint_padding is the context around the mask with inpaint_area: masked; set "
                "that, or drop inpaint_padding",
            )
        )
    if len(spec.stages) > 1:
        second = spec.stages[1]
        if second.handoff is Handoff.LATENT or (
            second.handoff is None and second.mode is Mode.REFINE
        ):
            violations.append(
                Violation(
                    "mask_unsupported",
                    ("stages", 1, "handoff"),
                    "a masked first stage hands on pictures, the init image pasted back where "
                    "the mask keeps it, not latents; use handoff: pixel (mode hires), or drop "
                    "the mask",
                )
            )
    first = spec.stages[0]
    if spec.masked_content in ("latent_noise", "latent_nothing"):
        for i, entry in enumerate(entries):
            variant = entry.arch.variant(entry.variant)
            if (
                variant is not None
                and not variant.latent_start
                and (i == 0 or spec.stages[i].masked)
            ):
                violations.append(
                    Violation(
                        "mask_unsupported",
                        ("masked_content",),
                        f"{entry.name!r} ({entry.architecture} {variant.name}) inpaints from "
                        "pixels, not from a latent start; use original or fill",
                    )
                )
    for name in ("controlnets", "ip_adapters"):
        if getattr(first, name):
            violations.append(
                Violation(
                    "mask_unsupported",
                    ("stages", 0, name),
                    f"a masked first stage takes no {name} yet; drop them, or the mask (a later "
                    "stage may use them on the inpainted picture)",
                )
            )
