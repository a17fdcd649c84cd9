"""Inpainting and outpainting through the running stack: Swagger's worked examples succeed, the
PNG keeps the init image outside the mask and its blur exactly (an outpainted one where it was on
the grown canvas) and says Mask blur as A1111 writes it, the envelope serves no mask bytes, and a
bad mask is refused at admission (422)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.examples import JOB_EXAMPLES
from tests.conftest import Stack
from tests.helpers import fetch_png, png_b64, submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]


def example(name: str = "sd15_inpaint") -> dict[str, Any]:
    value = JOB_EXAMPLES[name]["value"]
    assert isinstance(value, dict)
    return json.loads(json.dumps(value))


def picture(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), np.int16)


def test_the_inpainting_example_repaints_only_the_masked_part(stack: Stack) -> None:
    spec = example()
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope["error"]
        _, image = fetch_png(client, envelope["images"][0]["url"])
    assert envelope["spec"]["mask"] == ""  # kept apart, as init images are
    assert envelope["trace"][0]["input"] == "init_image"
    out, original = np.asarray(image.convert("RGB"), np.int16), picture(spec["init_image"])
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(spec["mask"])))) > 0
    ys, xs = np.nonzero(mask)
    reach = 10  # mask_blur 4: A1111's kernel reaches 10 pixels (workers.stages.masks.reach)
    far = np.ones_like(mask)
    far[
        max(ys.min() - reach, 0) : ys.max() + reach + 1,
        max(xs.min() - reach, 0) : xs.max() + reach + 1,
    ] = False
    assert (out[far] == original[far]).all()
    assert np.abs(out[mask] - original[mask]).mean() > 5
    parameters = image.text["parameters"]  # type: ignore[attr-defined]
    assert "Denoising strength: 0.9, Mask blur: 4, Masked content: original" in parameters


@pytest.mark.parametrize("model", ["demo-sd15-inpainting", "demo-flux-fill"])
def test_an_inpainting_checkpoint_runs_the_example(stack: Stack, model: str) -> None:
    spec = {**example(), "stages": [{"model": model, "steps": 4}]}
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope["error"]
        _, image = fetch_png(client, envelope["images"][0]["url"])
        plain = client.post("/jobs", json={"prompt": "p", "width": 64, "height": 64,
                                           "stages": [{"model": model}]})  # fmt: skip
    out, original = np.asarray(image.convert("RGB"), np.int16), picture(spec["init_image"])
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(spec["mask"])))) > 0
    ys, xs = np.nonzero(mask)
    far = np.ones_like(mask)
    far[ys.min() - 10 : ys.max() + 11, xs.min() - 10 : xs.max() + 11] = False
    assert (out[far] == original[far]).all()
    assert plain.status_code == 422
    assert plain.json()["detail"][0]["type"] == "mask_required"


def test_the_outpainting_example_grows_the_canvas_around_the_picture(stack: Stack) -> None:
    spec = example("sd15_outpaint")
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope["error"]
        _, image = fetch_png(client, envelope["images"][0]["url"])
    assert image.size == (96, 64)
    out, original = np.asarray(image.convert("RGB"), np.int16), picture(spec["init_image"])
    reach = 10  # the default mask_blur 4
    assert (out[:, : 64 - reach] == original[:, : 64 - reach]).all()  # where it was
    stretched = np.repeat(original[:, 63:64], 32, axis=1)  # where the padding started
    assert np.abs(out[:, 64:] - stretched).mean() > 2  # painted
    assert envelope["spec"]["masked_content"] == "fill"


def test_a_mask_of_another_size_is_refused_at_admission(stack: Stack) -> None:
    spec = {**example(), "mask": png_b64(32, 32, (255, 255, 255))}
    with stack.client() as client:
        response = client.post("/jobs", json=spec)
    assert response.status_code == 422
    [item] = response.json()["detail"]
    assert (item["type"], item["loc"]) == ("mask_size_mismatch", ["body", "mask"])
    assert "mask is 32x32 but init_image is 64x64" in item["msg"]
