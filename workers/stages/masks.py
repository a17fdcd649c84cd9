"""A masked first stage, done as A1111 does it: the mask's edge blurred, the masked part
repainted (by the family's inpainting pipeline, which keeps the rest of the latents the init
image's at every step), and the init image pasted back over everything the blurred mask keeps.

The paste-back is what makes the promise exact: a VAE does not give back the pixels it encoded,
so without it the kept part would come back close to the input, not equal to it. Pixels farther
than `reach(blur)` from the mask are the input's, bit for bit.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps

from contract.checked import CheckedSpec

# A1111's fill: the kept part's colours spread into the masked part by ever finer blurs.
_FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def reach(blur: int) -> int:
    """How far past the mask's edge its blur reaches, in pixels (half A1111's kernel)."""
    return int(2.5 * blur + 0.5) if blur > 0 else 0


def blurred(mask: Image.Image, blur: int) -> Image.Image:
    """The mask's edge softened as A1111's `mask_blur` does: a Gaussian of sigma `blur`, its
    kernel 2·reach + 1 wide, along x then y."""
    if blur <= 0:
        return mask
    size = 2 * reach(blur) + 1
    values = np.asarray(mask.convert("L"))
    values = cv2.GaussianBlur(values, (size, 1), blur)
    values = cv2.GaussianBlur(values, (1, size), blur)
    return Image.fromarray(values, mode="L")


def filled(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The picture with its masked part painted over by the colours around it (A1111's
    `masked_content: fill`), for the stage to start something new there."""
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    out = Image.new("RGBA", image.size)
    for radius, repeats in _FILL_PASSES:
        spread = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(spread)
    return out.convert("RGB")


def pasted_back(made: Image.Image, original: Image.Image, soft_mask: Image.Image) -> Image.Image:
    """`made` where the blurred mask repaints, `original` where it keeps, blended on its edge."""
    return Image.composite(made.convert("RGB"), original.convert("RGB"), soft_mask)


def inpaint_input(
    spec: CheckedSpec, mask: Image.Image, images: list[Image.Image], size: tuple[int, int]
) -> tuple[dict[str, Any], Image.Image]:
    """The inpainting pipeline's arguments for the init pictures `images` (at the stage's size),
    and the blurred mask their outputs are pasted back with."""
    sharp = mask.resize(size, Image.Resampling.NEAREST)  # a mask stays repaint-or-keep
    soft = blurred(sharp, spec.mask_blur or 0)
    start = [filled(im, sharp) for im in images] if spec.masked_content == "fill" else images
    width, height = size
    return {"image": start, "mask_image": soft, "height": height, "width": width}, soft
