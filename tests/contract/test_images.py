"""Init images are decoded without trusting them: the size is read from the header and refused
before anything is decompressed."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from contract.images import MAX_JPEG_SCANS, InitImageRejected, decode_init_image, jpeg_scans
from tests.helpers import bomb_png_b64, many_scans_jpeg_b64, png_b64, truncated_png_b64


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


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hostile = many_scans_jpeg_b64(2048, 1500)  # 49 KB; decoding it took 3-4 s of CPU

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the file was opened for decoding")

    monkeypatch.setattr(Image, "open", never)
    with pytest.raises(InitImageRejected) as rejected:
        decode_init_image(hostile, 2048 * 2048)
    violation = rejected.value.violation
    assert violation.type == "image_too_costly"
    assert violation.ctx == {"max_scans": MAX_JPEG_SCANS}
    assert f"more than {MAX_JPEG_SCANS} scans" in violation.msg


def test_progressive_jpegs_as_encoders_write_them_decode() -> None:
    assert decode_init_image(many_scans_jpeg_b64(64, 0), 64 * 64).size == (64, 64)  # 10 scans
    at_limit = many_scans_jpeg_b64(64, MAX_JPEG_SCANS - 10)
    assert decode_init_image(at_limit, 64 * 64).size == (64, 64)
    assert rejection(many_scans_jpeg_b64(64, MAX_JPEG_SCANS - 9)) == "image_too_costly"


def test_scan_markers_outside_the_scans_do_not_count() -> None:
    # Found by review: counting every ff da pair refused a file whose metadata, or whose
    # trailer (a Motion Photo's video after the end marker), holds those bytes by chance.
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(out, "JPEG", progressive=True)
    jpeg = out.getvalue()
    noise = b"\xff\xda" * 500
    app = b"\xff\xe1" + (len(noise) + 2).to_bytes(2, "big") + noise  # an APP1 segment
    for data in (jpeg + noise, jpeg[:2] + app + jpeg[2:]):
        assert jpeg_scans(data) == jpeg_scans(jpeg) == 10  # libjpeg's progressive script
        assert decode_init_image(base64.b64encode(data).decode(), 64 * 64).size == (64, 64)


def b64(image: Image.Image, fmt: str = "PNG", **save: object) -> str:
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return base64.b64encode(out.getvalue()).decode()


# Found by a hostile pass: each of these decoded to something else than the client's picture.


def test_16_bit_grayscale_keeps_its_tones() -> None:
    gray = Image.new("I;16", (8, 8), 30000)  # 46 % gray; a plain convert("RGB") gave white
    assert decode_init_image(b64(gray), 10_000).getpixel((0, 0)) == (117, 117, 117)


def test_exif_orientation_is_applied() -> None:
    # A phone photo stored landscape with "rotate 90° clockwise to view" (orientation 6).
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 20))  # the left edge is red as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = decode_init_image(b64(stored, "JPEG", exif=exif, quality=95), 10_000)
    assert upright.size == (20, 40)
    top = upright.getpixel((10, 2))
    assert isinstance(top, tuple)
    assert top[0] > 200  # the red edge is now the top, as a viewer shows the photo
    assert top[2] < 60


def test_transparency_is_composited_on_white() -> None:
    # Fully transparent red: the colour under the alpha must not show.
    hidden = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    hidden.putpixel((0, 0), (0, 0, 0, 255))
    flat = decode_init_image(b64(hidden), 10_000)
    assert flat.getpixel((4, 4)) == (255, 255, 255)
    assert flat.getpixel((0, 0)) == (0, 0, 0)
    half = decode_init_image(b64(Image.new("LA", (4, 4), (0, 128))), 10_000)
    assert half.getpixel((0, 0)) == (127, 127, 127)
