"""Inpainting masks as clients send them, read as A1111 reads them: white repaints, black keeps.

A mask arrives as a PNG (or JPEG) of the init image's size, drawn in a paint tool (grayscale,
or RGB with white strokes) or cut out of a layer (transparent where nothing is to change: the
Krita and Photoshop plugins send those). A mask that is not fully opaque is read by its alpha,
one that is by its gray; either is rounded to repaint or keep (A1111's `mask_round`, on by
default), so a JPEG's ringing does not leave a faint halo repainted. The blur that softens the
edge is the worker's (`workers.stages.masks`); here the mask is only read and checked.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageOps

from contract.images import InitImageRejected, decode_picture, has_alpha, to_rgb
from contract.spec import Outpaint
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
