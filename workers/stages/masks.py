"""A masked first stage, done as A1111 does it: the mask's edge blurred, the masked part
repainted (by the family's inpainting pipeline, which keeps the rest of the latents the init
image's at every step), and the init image pasted back over everything the blurred mask keeps.

The paste-back is what makes the promise exact: a VAE does not give back the pixels it encoded,
so without it the kept part would come back close to the input, not equal to it. Pixels farther
than `reach(blur)` from the mask are the input's, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image, ImageFilter, ImageOps

from contract.checked import CheckedSpec
from contract.spec import ControlResize, Outpaint
from workers.stages.control_images import fitted

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


def crop_region(soft_mask: Image.Image, padding: int, size: tuple[int, int]) -> Box:
    """A1111's "only masked" region: the blurred mask's bounding box grown by `padding`, then
    grown to the stage's aspect ratio (a 128x32 mask worked at 512x512 takes a 128x128 region),
    kept inside the picture (`masking.get_crop_region_v2` and `expand_crop_region`)."""
    width, height = soft_mask.size
    box = soft_mask.getbbox()
    assert box is not None, "an empty mask was refused at admission"
    x1, y1, x2, y2 = box
    x1, y1 = max(x1 - padding, 0), max(y1 - padding, 0)
    x2, y2 = min(x2 + padding, width), min(y2 + padding, height)
    target = size[0] / size[1]
    if (x2 - x1) / (y2 - y1) > target:
        y1, y2 = _grown(y1, y2, int((x2 - x1) / target - (y2 - y1)), height)
    else:
        x1, x2 = _grown(x1, x2, int((y2 - y1) * target - (x2 - x1)), width)
    return x1, y1, x2, y2


def _grown(low: int, high: int, by: int, limit: int) -> tuple[int, int]:
    low, high = low - by // 2, high + by - by // 2
    if high >= limit:
        low, high = low - (high - limit), limit
    if low < 0:
        low, high = 0, high - low
    return low, min(high, limit)


Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Inpainting:
    """One masked stage's pipeline arguments, and how each picture it makes is finished."""

    kwargs: dict[str, Any]
    soft_mask: Image.Image  # at the stage's size: where the made picture shows
    region: Box | None  # "only masked": where the made picture goes, scaled down

    def finished(self, made: Image.Image, original: Image.Image) -> Image.Image:
        """The made picture in place (its region's, when it was made from one) and the init
        picture pasted back over everything the blurred mask keeps."""
        if self.region is not None:
            x1, y1, x2, y2 = self.region
            placed = original.convert("RGB")  # a copy
            placed.paste(made.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
            made = placed
        return pasted_back(made, original, self.soft_mask)


def inpaint_input(
    spec: CheckedSpec, mask: Image.Image, images: list[Image.Image], size: tuple[int, int]
) -> Inpainting:
    """The inpainting pipeline's arguments for the init pictures `images` (at the stage's size).
    With `inpaint_area: masked` the pipeline works on the mask's region only, scaled up to the
    stage's size (more pixels for a small mask), as A1111's "only masked"."""
    # Met with the first stage's size as the init image was, then scaled to this stage's (a
    # mask stays repaint-or-keep).
    mode = spec.init_resize or "just_resize"
    assert mode != "latent_upscale", "the rules keep a mask from a latent upscale"
    first = fitted_mask(mask, spec.size_of(0), mode)
    sharp = first.resize(size, Image.Resampling.NEAREST)
    soft = blurred(sharp, spec.mask_blur or 0)
    start = [filled(im, sharp) for im in images] if spec.masked_content == "fill" else images
    width, height = size
    region = None
    pipeline_mask = soft
    if spec.inpaint_area == "masked":
        region = crop_region(soft, spec.inpaint_padding or 0, size)
        start = [im.crop(region).resize(size, Image.Resampling.LANCZOS) for im in start]
        pipeline_mask = soft.crop(region).resize(size, Image.Resampling.LANCZOS)
    kwargs = {"image": start, "mask_image": pipeline_mask, "height": height, "width": width}
    return Inpainting(kwargs, soft, region)


def outpaint_canvas(image: Image.Image, outpaint: Outpaint) -> Image.Image:
    """The init picture on its grown canvas, the padding its edge pixels repeated outwards: a
    start whose colours continue the picture's (noise would show through wherever the stage
    denoises less than all of it), for `masked_content: fill` to blur further."""
    values = np.asarray(image.convert("RGB"))
    pad = ((outpaint.top, outpaint.bottom), (outpaint.left, outpaint.right), (0, 0))
    return Image.fromarray(np.pad(values, pad, mode="edge"))


# A1111's latent masked-content modes: the masked part of the encoded picture replaced.
LATENT_CONTENT = ("latent_noise", "latent_nothing")


def latent_start(
    pipe: DiffusionPipeline,
    images: list[Image.Image],
    masks: list[Image.Image],
    content: str,
    generators: list[torch.Generator],
    masked_picture: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The init pictures as the inpainting pipeline's starting latents (encoded by the stage's
    VAE, scaled as the pipeline scales its own), each picture's masked part (`masks`: one per
    picture) replaced by its own noise (`latent_noise`) or by zeros (`latent_nothing`), as A1111
    does; the pipeline then noises them to its strength as it would its own. Also the masked
    picture's latents, which an inpainting UNet takes beside them (what the pipeline makes itself
    from pixels); without `masked_picture` (an ordinary model reads none) the start stands in
    for them, unencoded."""
    width, height = images[0].size
    pixels = pipe.image_processor.preprocess(images, height=height, width=width)
    pixels = pixels.to(device=pipe.vae.device, dtype=pipe.vae.dtype)

    def repainted(size: tuple[int, int]) -> torch.Tensor:
        """Each picture's mask at `size`, as (pictures, 1, rows, cols): true where it repaints."""
        rows = [np.asarray(m.convert("L").resize(size)) >= 128 for m in masks]
        return torch.from_numpy(np.stack(rows))[:, None].to(pixels.device)

    with torch.no_grad():
        latents = pipe._encode_vae_image(image=pixels, generator=generators)
        masked = None
        if masked_picture:
            kept = pixels * ~repainted((width, height))
            masked = pipe._encode_vae_image(image=kept, generator=generators)
    rows, cols = latents.shape[-2:]
    if content == "latent_noise":
        fresh = torch.stack(
            [torch.randn(latents.shape[1:], generator=g, dtype=torch.float32) for g in generators]
        ).to(latents)
    else:
        fresh = torch.zeros_like(latents)
    start = torch.where(repainted((cols, rows)).to(latents.device), fresh, latents)
    return start, start if masked is None else masked


def fitted_mask(mask: Image.Image, size: tuple[int, int], mode: ControlResize) -> Image.Image:
    """The mask at the first stage's size, met with it as the init image is (`fitted`), still
    repaint-or-keep (a stretched one by nearest pixels; a cropped or padded one rounded)."""
    if mode == "just_resize":
        return mask.resize(size, Image.Resampling.NEAREST)
    met = fitted(mask.convert("RGB"), size, mode).convert("L")
    return met.point(lambda v: 255 if v > 127 else 0)
