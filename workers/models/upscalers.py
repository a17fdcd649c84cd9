"""Upscaler models for pixel hires stages, loaded with spandrel and run tile by tile.

spandrel reads an upscaler file's architecture and hyperparameters from its weights (ESRGAN,
Real-ESRGAN and its Compact variant, SwinIR, HAT, DAT, SPAN, … in `.pth` or `.safetensors`), the
same way ComfyUI and chaiNNer load them. A picture is upscaled in overlapping tiles, so that a
large one fits in memory, and the result is then resized to the stage's exact size: the model's
factor (2x, 4x) rarely equals the stage's.
"""

from __future__ import annotations

import enum
import logging
import sys
import time
import types
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from contract.registry import UpscalerEntry

if TYPE_CHECKING:
    from spandrel import ImageModelDescriptor

log = logging.getLogger("imagegen.worker")

TILE = 512  # input pixels per tile side; ESRGAN at 4x makes 2048² outputs of these
OVERLAP = 32  # input pixels each tile reads beyond the part of it that is kept


@dataclass
class LoadedUpscaler:
    entry: UpscalerEntry
    model: ImageModelDescriptor[Any]
    param_bytes: int
    last_used: float = field(default_factory=time.monotonic)

    @property
    def scale(self) -> int:
        return int(self.model.scale)

    @property
    def architecture(self) -> str:
        return str(self.model.architecture.name)


def load_upscaler(entry: UpscalerEntry, device: str) -> LoadedUpscaler:
    """The file's model on `device`, in fp16 on a GPU where the architecture supports it."""
    spandrel = _spandrel()
    model = spandrel.ModelLoader().load_from_file(str(entry.file))
    if not isinstance(model, spandrel.ImageModelDescriptor) or model.purpose != "SR":
        raise ValueError(
            f"{entry.file.name} is a {model.architecture.name} model for {model.purpose}, not an "
            "upscaler (super-resolution)"
        )
    model.to(device)
    if device != "cpu" and model.supports_half:
        model.half()
    model.eval()
    size = sum(t.numel() * t.element_size() for t in model.model.state_dict().values())
    return LoadedUpscaler(entry, model, size)


class NonFiniteUpscale(Exception):
    """The upscaler model gave NaN or infinite pixels: no picture to give."""


def upscale(
    images: list[Image.Image], size: tuple[int, int], upscaler: LoadedUpscaler
) -> list[Image.Image]:
    """Each picture through the model, then resized to `size` (width, height)."""
    return [_one(image, size, upscaler) for image in images]


def _one(image: Image.Image, size: tuple[int, int], upscaler: LoadedUpscaler) -> Image.Image:
    model = upscaler.model
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    batch = pixels.permute(2, 0, 1)[None].to(model.device, model.dtype)
    with torch.inference_mode():
        out = tiled(model, batch, upscaler.scale)
    if not torch.isfinite(out).all():  # clamped and cast, NaN would pass as black
        raise NonFiniteUpscale(
            f"upscaler {upscaler.entry.name!r} produced NaN or infinite pixels; its weights may "
            "be broken or overflow at half precision (run it on device cpu to compare)"
        )
    array = out[0].float().clamp(0, 1).permute(1, 2, 0).mul(255).round().byte().cpu().numpy()
    upscaled = Image.fromarray(array)
    if upscaled.size == size:
        return upscaled
    return upscaled.resize(size, Image.Resampling.LANCZOS)


def tiled(
    model: Any, batch: torch.Tensor, scale: int, tile: int = TILE, overlap: int = OVERLAP
) -> torch.Tensor:
    """`model(batch)`, computed in tiles of at most `tile` input pixels a side. Each tile reads
    `overlap` pixels of context on every side and keeps only its own part, so for a model that
    sees no further than `overlap` pixels the seams vanish."""
    _, channels, height, width = batch.shape
    if height <= tile and width <= tile:
        return model(batch)
    step = tile - 2 * overlap
    out = batch.new_zeros(batch.shape[0], channels, height * scale, width * scale)
    for top in range(0, height, step):
        for left in range(0, width, step):
            bottom, right = min(top + step, height), min(left + step, width)
            t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
            t1, l1 = min(bottom + overlap, height), min(right + overlap, width)
            part = model(batch[:, :, t0:t1, l0:l1])
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = part[
                :,
                :,
                (top - t0) * scale : (bottom - t0) * scale,
                (left - l0) * scale : (right - l0) * scale,
            ]
    return out


def _spandrel() -> types.ModuleType:
    """spandrel, imported.

    spandrel imports torchvision for two architectures that are not upscalers (LaMa inpainting,
    RestoreFormer face restoration). The torchvision wheel on PyPI is a CUDA build; beside a
    CPU-only torch its import fails ("operator torchvision::nms does not exist"), and spandrel's
    with it. There, those two architectures get a stand-in for the three torchvision names they
    import, which fails if they are ever used; every upscaler architecture is spandrel's own.
    """
    if "spandrel" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except (ImportError, RuntimeError, OSError) as exc:
            _stand_in_for_torchvision(exc)
    import spandrel

    return spandrel


def _stand_in_for_torchvision(cause: BaseException) -> None:
    log.info("torchvision cannot be imported (%s); upscalers do not need it", cause)
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    def unavailable(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"torchvision cannot be imported here ({cause})")

    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    functional.rotate = functional.normalize = unavailable  # type: ignore[attr-defined]
    package.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    sys.modules.update(
        {
            "torchvision": package,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )
