"""Decoding client pictures (init images) without trusting them."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, ImageOps

from contract.violations import RuleType, Violation


class InitImageRejected(Exception):
    def __init__(self, violation: Violation) -> None:
        super().__init__(violation.msg)
        self.violation = violation


_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}

# A JPEG's decoding time is its pixels times its scans, and nothing bounds the scans: a 49 KB
# 2048² file that repeats one scan 1,500 times took 3 s of CPU. Encoders write one scan
# (baseline) or about ten (progressive: libjpeg's default script has 10, mozjpeg's about as
# many), so past 100 a file is built to cost, not to be looked at.
MAX_JPEG_SCANS = 100


def jpeg_scans(raw: bytes) -> int:
    """The scans (SOS markers) of a JPEG, read from its marker structure up to its end marker:
    what its header segments carry (an EXIF thumbnail) and what follows it (a Motion Photo's
    video) are skipped, as a decoder skips them. Stops counting past MAX_JPEG_SCANS."""
    scans, pos, end = 0, 2, len(raw)
    while pos + 4 <= end and scans <= MAX_JPEG_SCANS:
        if raw[pos] != 0xFF:
            return scans  # not a marker where one must be: the decoder will say it is corrupt
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return scans
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            pos += 2
            continue
        pos += 2 + int.from_bytes(raw[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # SOS: its entropy-coded data runs to the next real marker
            scans += 1
            while (pos := raw.find(b"\xff", pos)) != -1 and pos + 1 < end:
                following = raw[pos + 1]
                if following != 0x00 and not 0xD0 <= following <= 0xD7:
                    break
                pos += 2
            else:
                return scans
    return scans


def decode_init_image(
    data: str,
    max_pixels: int,
    loc: tuple[str | int, ...] = ("init_image",),
    what: str = "init_image",
) -> Image.Image:
    """Decode a base64 PNG/JPEG, refusing anything over `max_pixels` before it is decompressed;
    in RGB, a transparent one composited on white."""
    return to_rgb(decode_picture(data, max_pixels, loc, what))


def decode_picture(
    data: str,
    max_pixels: int,
    loc: tuple[str | int, ...] = ("init_image",),
    what: str = "init_image",
) -> Image.Image:
    """`decode_init_image`, in the file's own mode (a mask's alpha kept)."""

    def reject(kind: RuleType, msg: str, **ctx: object) -> Violation:
        return Violation(kind, loc, msg, dict(ctx))

    if data.startswith("data:"):  # accept data URLs as browsers produce them
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InitImageRejected(
            reject(
                "invalid_base64",
                f"{what} is not valid base64; send the PNG or JPEG file's bytes base64-encoded",
            )
        ) from None
    fmt = next((f for magic, f in _MAGIC.items() if raw.startswith(magic)), None)
    if fmt is None:
        raise InitImageRejected(reject("unsupported_image", f"{what} must be a PNG or JPEG file"))
    scans = jpeg_scans(raw) if fmt == "JPEG" else 0
    if scans > MAX_JPEG_SCANS:
        raise InitImageRejected(
            reject(
                "image_too_costly",
                f"{what} is a JPEG of more than {MAX_JPEG_SCANS} scans (baseline "
                "files have one, progressive ones about ten). Save it again as PNG or as an "
                "ordinary JPEG.",
                max_scans=MAX_JPEG_SCANS,
            )
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=[fmt])
            # The header alone gives the size: refuse bombs before decompressing anything.
            width, height = image.size
            if width * height > max_pixels:
                raise InitImageRejected(
                    reject(
                        "image_too_large",
                        f"{what} is {width}x{height} = {width * height} pixels; the limit is "
                        f"{max_pixels} pixels. Downscale it first.",
                        width=width,
                        height=height,
                        max_pixels=max_pixels,
                    )
                )
            image.load()
    except InitImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fired on the header (far beyond any sane budget).
        raise InitImageRejected(
            reject(
                "image_too_large",
                f"{what} declares far more than the limit of {max_pixels} pixels; "
                "downscale it first",
                max_pixels=max_pixels,
            )
        ) from None
    except (OSError, ValueError, SyntaxError):
        raise InitImageRejected(
            reject(
                "invalid_image",
                f"{what} could not be decoded as {fmt}; it is truncated or corrupt",
            )
        ) from None
    return image


# Where an init image is transparent, it is composited on white, as A1111 does by default
# (its `img2img_background_color`); docs/api.md says so.
BACKGROUND = (255, 255, 255)


def has_alpha(image: Image.Image) -> bool:
    """Whether the picture carries transparency (an alpha channel, or a palette's)."""
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """The picture as the client sees it, in 8-bit RGB: turned upright by its EXIF orientation,
    16-bit samples scaled (not clipped) to 8 bits, transparency composited on `BACKGROUND`.
    A plain `convert("RGB")` turned 16-bit grayscale solid white, ignored the orientation a
    phone camera writes and dropped alpha to whatever colour hid under it."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale (PNG): scale 0..65535 to 0..255.
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if has_alpha(image):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")
