"""A control image made ready for its stage: A1111's three resize modes, and the canny
preprocessor's edges (OpenCV's, as A1111's)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from contract.spec import ControlNetUse
from workers.stages.control_images import canny, control_image, fitted


def test_the_three_resize_modes_meet_the_stages_size_as_a1111s_do() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    ImageDraw.Draw(wide).rectangle((0, 0, 49, 99), fill=(0, 0, 255))  # a blue left quarter
    stretched = fitted(wide, (100, 100), "just_resize")
    cropped = fitted(wide, (100, 100), "crop_and_resize")
    padded = fitted(wide, (100, 100), "resize_and_fill")
    assert {im.size for im in (stretched, cropped, padded)} == {(100, 100)}
    assert stretched.getpixel((5, 50)) == (0, 0, 255)  # squeezed, the blue quarter kept
    assert cropped.getpixel((5, 50)) == (255, 0, 0)  # the middle half kept, blue cut away
    assert padded.getpixel((50, 5)) == (0, 0, 255)  # fitted in the middle, padded above
    assert padded.getpixel((90, 50)) == (255, 0, 0)


def test_canny_draws_white_edges_on_black_between_its_thresholds() -> None:
    picture = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(picture).rectangle((16, 16, 47, 47), fill=(255, 255, 255))
    edges = np.asarray(canny(picture, 100, 200))
    assert edges.shape == (64, 64, 3)
    assert set(np.unique(edges)) == {0, 255}
    assert edges[15, 30].all()  # on the square's edge (OpenCV marks the outer side)
    assert not edges[30, 30].any()  # not inside
    faint = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(faint).rectangle((16, 16, 47, 47), fill=(20, 20, 20))
    assert not np.asarray(canny(faint, 100, 200)).any()  # too faint for the thresholds


def test_a_unit_fits_then_preprocesses() -> None:
    picture = Image.new("RGB", (32, 32), (0, 0, 0))
    ImageDraw.Draw(picture).rectangle((8, 8, 23, 23), fill=(255, 255, 255))
    use = ControlNetUse(name="c", image="x", module="canny", resize="just_resize")
    made = control_image(picture, (64, 64), use)
    assert made.size == (64, 64)
    assert set(np.unique(np.asarray(made))) == {0, 255}
    plain = control_image(picture, (64, 64), use.model_copy(update={"module": "none"}))
    assert plain.getpixel((32, 32)) == (255, 255, 255)
