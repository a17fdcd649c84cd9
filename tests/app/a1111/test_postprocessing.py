"""A1111's Extras fields as an upscale job: the factor or the size (cropped or not), A1111's
upscaler names, and a 422 at the field for what is not served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from app.a1111.postprocessing import ExtrasSingleImageRequest, upscale_spec
from contract.registry import ModelRegistry
from tests.helpers import bomb_png_b64, png_b64


@pytest.fixture
def registry(registry_file: Path) -> ModelRegistry:
    return ModelRegistry.load(registry_file)


def spec_of(registry: ModelRegistry, **fields: Any) -> dict[str, Any]:
    request = ExtrasSingleImageRequest(image=png_b64(80, 64), **fields)
    return upscale_spec(request.image, ("image",), request, registry).model_dump(
        exclude_none=True, exclude={"init_image"}
    )


def refused_at(registry: ModelRegistry, image: str | None = None, **fields: Any) -> list[Any]:
    request = ExtrasSingleImageRequest(image=image or png_b64(80, 64), **fields)
    with pytest.raises(RequestValidationError) as refused:
        upscale_spec(request.image, ("image",), request, registry)
    return [list(e["loc"]) for e in refused.value.errors()]


def test_a_factor_a_cropped_size_or_a_covering_factor(registry: ModelRegistry) -> None:
    by_two = spec_of(registry, upscaler_1="esrgan-4x")
    assert (by_two["width"], by_two["height"]) == (80, 64)  # the picture's own
    assert by_two["stages"] == [{"mode": "upscale", "upscaler": "esrgan-4x", "scale": 2.0}]
    cropped = spec_of(registry, resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=200)
    assert cropped["stages"] == [
        {"mode": "upscale", "upscaler": "none", "width": 100, "height": 200}
    ]  # fmt: skip
    covering = spec_of(
        registry, resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=200,
        upscaling_crop=False, upscaler_1="Lanczos",
    )  # fmt: skip
    assert covering["stages"] == [{"mode": "upscale", "upscaler": "lanczos", "scale": 200 / 64}]


def test_what_the_extras_tab_does_and_this_service_does_not_is_refused_at_its_field(
    registry: ModelRegistry,
) -> None:
    assert refused_at(registry, gfpgan_visibility=0.4) == [["body", "gfpgan_visibility"]]
    assert refused_at(registry, codeformer_visibility=1.0) == [["body", "codeformer_visibility"]]
    assert refused_at(
        registry, upscaler_2="esrgan-4x", extras_upscaler_2_visibility=0.5
    ) == [["body", "extras_upscaler_2_visibility"]]  # fmt: skip
    assert refused_at(registry, upscaler_1="R-ESRGAN 4x+") == [["body", "upscaler_1"]]
    assert refused_at(registry, upscaling_resize=6.0) == [["body", "upscaling_resize"]]
    assert refused_at(registry, image=png_b64(32, 32)) == [["body", "image"]]
    # A second upscaler at visibility 0 does nothing: as A1111, not refused.
    assert spec_of(registry, upscaler_2="esrgan-4x")["stages"][0]["upscaler"] == "none"


def test_a_header_that_claims_a_huge_picture_is_left_to_admission_not_a_crash(
    registry: ModelRegistry,
) -> None:
    # PIL refuses to open it (a decompression bomb); admission's decoder names the fault.
    request = ExtrasSingleImageRequest(image=bomb_png_b64())
    spec = upscale_spec(request.image, ("image",), request, registry)
    assert (spec.width, spec.height) == (64, 64)
