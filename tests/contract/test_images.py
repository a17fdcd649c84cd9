"""Init images are decoded without trusting them: the size is read from the header and refused
before anything is decompressed."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from contract.images import InitImageRejected, decode_init_image
from tests.helpers import bomb_png_b64, png_b64, truncated_png_b64


def rejection(data: str, max_pixels: int = 1024 * 1024) -> str:
    with pytest.raises(InitImageRejected) as rejected:
        decode_init_image(data, max_pixels)
    assert rejected.value.violation.loc == ("init_image",)
    return rejected.value.violation.type


def test_png_jpeg_and_data_urls_decode_to_rgb() -> None:
    assert decode_init_image(png_b64(64, 32), 10_000).size == (64, 32)
    jpeg = io.BytesIO()
    Image.new("L", (16, 16)).save(jpeg, format="JPEG")
    decoded = decode_init_image(
        "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode(), 10_000
    )
    assert decoded.mode == "RGB"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ("@@not base64@@", "invalid_base64"),
        (base64.b64encode(b"GIF89a....").decode(), "unsupported_image"),
        (truncated_png_b64(), "invalid_image"),
        (png_b64(1100, 1000), "image_too_large"),
    ],
)
def test_bad_pictures_are_refused_with_a_reason(data: str, kind: str) -> None:
    assert rejection(data) == kind


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    # 20000x20000 declared: refused before the 400 MB of pixels are inflated.
    assert rejection(bomb_png_b64()) == "image_too_large"
