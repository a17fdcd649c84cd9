"""A ControlNet unit's control image, made ready for its stage: met with the stage's size as
A1111's resize modes do, then preprocessed (`canny`: edges, with no model; white on black, in
RGB, as A1111's canny preprocessor gives them).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from contract.spec import ControlNetUse, ControlResize


def _lanczos(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image.resize(size, Image.Resampling.LANCZOS)


def fitted(
    image: Image.Image,
    size: tuple[int, int],
    mode: ControlResize,
    resize: Callable[[Image.Image, tuple[int, int]], Image.Image] = _lanczos,
) -> Image.Image:
    """`image` at `size`: stretched, scaled to cover and centre-cropped, or scaled to fit and
    padded with its edge colours (A1111's Just Resize, Crop and Resize, Resize and Fill);
    scaled by `resize` (Lanczos; an upscale stage's upscaler)."""
    image = image.convert("RGB")
    width, height = size
    if mode == "just_resize" or image.size == size:
        return resize(image, size)
    scale = (max if mode == "crop_and_resize" else min)(width / image.width, height / image.height)
    cover = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    scaled = resize(image, cover)
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    if mode == "crop_and_resize":
        return scaled.crop((left, top, left + width, top + height))
    canvas = Image.new("RGB", size, scaled.getpixel((0, 0)))
    canvas.paste(scaled, (-left, -top))
    return canvas


def control_image(image: Image.Image, size: tuple[int, int], use: ControlNetUse) -> Image.Image:
    """The unit's control image for a stage of `size`."""
    ready = fitted(image, size, use.resize)
    if use.module == "canny":
        return canny(ready, use.low_threshold, use.high_threshold)
    return ready


def canny(image: Image.Image, low: int, high: int) -> Image.Image:
    """Canny edges of `image` between the `low` and `high` gradient thresholds: OpenCV's, which
    A1111's canny preprocessor calls the same way."""
    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(edges).convert("RGB")
