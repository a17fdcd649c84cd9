"""The size of every stage's output, and the checks that sizes suit the models that see them.

Every size must be a multiple of the model's size multiple (the VAE downscale, times two where
Flux packs latents 2x2) and within the deployment's pixel budget.
"""

from __future__ import annotations

import math

from contract.registry import ModelEntry
from contract.spec import Stage
from contract.violations import Violation

DEFAULT_SCALE = 2.0


def hires_size(
    i: int, stage: Stage, size: tuple[int, int], violations: list[Violation]
) -> tuple[int, int]:
    if (stage.width is None) != (stage.height is None):
        missing = "height" if stage.height is None else "width"
        violations.append(
            Violation(
                "missing",
                ("stages", i, missing),
                "give both width and height, or neither (use scale)",
            )
        )
        return size
    if stage.width is not None and stage.height is not None:
        # Both may be given (a normalized spec has both) as long as they agree.
        if stage.scale is not None and (stage.width, stage.height) != _scaled(size, stage.scale):
            violations.append(
                Violation(
                    "field_not_allowed",
                    ("stages", i, "scale"),
                    f"scale {stage.scale} of {size[0]}x{size[1]} is not "
                    f"{stage.width}x{stage.height}; "
                    "give either scale or an explicit width and height",
                )
            )
        return stage.width, stage.height
    return _scaled(size, stage.scale or DEFAULT_SCALE)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return round(size[0] * scale), round(size[1] * scale)


def hires_size_locs(i: int, stage: Stage) -> tuple[tuple[str | int, ...], tuple[str | int, ...]]:
    if stage.width is not None:
        return ("stages", i, "width"), ("stages", i, "height")
    return ("stages", i, "scale"), ("stages", i, "scale")


def check_size(
    size: tuple[int, int],
    entry: ModelEntry,
    max_pixels: int,
    width_loc: tuple[str | int, ...],
    height_loc: tuple[str | int, ...],
    violations: list[Violation],
) -> None:
    multiple = entry.arch.size_multiple
    for value, loc, name in ((size[0], width_loc, "width"), (size[1], height_loc, "height")):
        if value % multiple:
            lower, upper = value // multiple * multiple, (value // multiple + 1) * multiple
            violations.append(
                Violation(
                    "size_not_multiple",
                    loc,
                    f"{name} {value} does not suit {entry.name!r} ({entry.architecture}), "
                    "which needs "
                    f"multiples of {multiple}; use {lower or multiple} or {upper}",
                    {"multiple_of": multiple, "value": value},
                )
            )
            return
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        side = math.isqrt(max_pixels) // multiple * multiple
        violations.append(
            Violation(
                "pixel_budget_exceeded",
                width_loc,
                f"{size[0]}x{size[1]} = {pixels} pixels exceeds this deployment's budget of "
                f"{max_pixels} pixels per stage (e.g. {side}x{side}); "
                "ask for a smaller size",
                {"max_pixels": max_pixels, "pixels": pixels},
            )
        )
