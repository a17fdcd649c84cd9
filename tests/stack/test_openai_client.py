"""The OpenAI Images API face through the running stack, driven by the unmodified `openai` SDK
from PyPI: generate (b64_json, url, jpeg), edit a picture, list models, and its refusals read as
the SDK's own exceptions, at the field."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI
from PIL import Image, ImageDraw

from tests.conftest import Stack
from tests.helpers import png_b64

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]
FAST = {"steps": 2, "seed": 5}  # the extension fields local servers take


@pytest.fixture
def client(stack: Stack) -> Iterator[OpenAI]:
    # Open mode: any key passes; the SDK insists on one.
    with OpenAI(base_url=f"{stack.url}/v1", api_key="sk-anything", max_retries=0) as sdk:
        yield sdk


def picture(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_answers_each_picture_in_base64(client: OpenAI) -> None:
    made = client.images.generate(model="demo-sd15", prompt="a lighthouse", n=2, size="64x64",
                                  response_format="b64_json", extra_body=FAST)  # fmt: skip
    assert [picture(d.b64_json).size for d in made.data or []] == [(64, 64), (64, 64)]
    assert made.size == "64x64"
    first = picture((made.data or [])[0].b64_json)
    assert "parameters" in first.info  # the job's own PNG, A1111's text and all
    jpeg = client.images.generate(model="demo-sd15", prompt="a lighthouse", size="64x64",
                                  output_format="jpeg", extra_body=FAST)  # fmt: skip
    assert picture((jpeg.data or [])[0].b64_json).format == "JPEG"


def test_url_answers_point_at_the_jobs_png(client: OpenAI, stack: Stack) -> None:
    made = client.images.generate(model="demo-sdxl", prompt="a lighthouse", size="64x64",
                                  response_format="url", extra_body=FAST)  # fmt: skip
    [item] = made.data or []
    assert item.url is not None
    assert item.url.startswith(stack.url)
    png = httpx.get(item.url, headers={"Authorization": "Bearer sk-anything"}, timeout=30)
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)


def test_edit_redraws_the_picture_it_is_sent(client: OpenAI) -> None:
    source = base64.b64decode(png_b64(99, 64, (20, 120, 220)))
    edited = client.images.edit(model="demo-sd15", image=("in.png", source, "image/png"),
                                prompt="night", extra_body={**FAST, "strength": 0.5})  # fmt: skip
    [item] = edited.data or []
    assert picture(item.b64_json).size == (96, 64)  # its own size, to the model's multiple
    # a list of one goes as image[], as the SDK (and Open WebUI) send it
    listed = client.images.edit(model="demo-sd15", image=[("in.png", source, "image/png")],
                                prompt="night", size="64x64", extra_body=FAST)  # fmt: skip
    assert picture((listed.data or [])[0].b64_json).size == (64, 64)


def test_an_edit_with_a_mask_redraws_only_its_transparent_part(client: OpenAI) -> None:
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))  # opaque: kept
    ImageDraw.Draw(mask).rectangle((24, 24, 39, 39), fill=(0, 0, 0, 0))  # transparent: re-drawn
    edited = client.images.edit(
        model="demo-sd15", image=("in.png", encoded(source), "image/png"), prompt="a window",
        mask=("mask.png", encoded(mask), "image/png"), extra_body={**FAST, "strength": 0.9},
    )  # fmt: skip
    out = np.asarray(picture((edited.data or [])[0].b64_json).convert("RGB"), np.int16)
    original = np.asarray(source, np.int16)
    far = np.ones((64, 64), bool)
    far[24 - 10 : 40 + 10, 24 - 10 : 40 + 10] = False  # the square and its blur's reach
    assert (out[far] == original[far]).all()
    assert np.abs(out[24:40, 24:40] - original[24:40, 24:40]).mean() > 5


def encoded(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_refusals_are_the_sdks_bad_requests_naming_the_field(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as odd:
        client.images.generate(model="demo-sd15", prompt="p", size="65x64")
    error = odd.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("size_not_multiple", "size")
    with pytest.raises(openai.BadRequestError) as unknown:
        client.images.generate(model="midjourney", prompt="p")
    assert "model 'midjourney' is not served here; GET /v1/models lists:" in unknown.value.message


def test_models_lists_what_draws_from_text(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "demo-sd15" in ids
    assert "demo-flux" in ids
    assert "demo-sdxl-refiner" not in ids  # a refiner does not draw from text
