"""ControlNets through the running stack: the article's workflow steered on both sides of the
handoff (an SD1.5 ControlNet on the SD1.5 base, a Flux one on its Flux hires fix, fed the base's
picture), its control images kept out of the envelope, and the PNG saying what steered it."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.conftest import Stack
from tests.helpers import png_b64, submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]


def test_sd15_to_flux_hires_with_a_controlnet_of_each_architecture_succeeds(stack: Stack) -> None:
    edges = {"name": "demo-sd15-canny", "image": png_b64(64, 64, (240, 240, 240)),
             "module": "canny"}  # fmt: skip
    spec = {
        "prompt": "a lighthouse",
        "seed": 4,
        "width": 64,
        "height": 64,
        "stages": [
            {"model": "demo-sd15", "steps": 2, "controlnets": [edges]},
            {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "steps": 2,
             "controlnets": [{"name": "demo-flux-canny", "image_from": "previous"}]},
        ],
    }  # fmt: skip
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope
        png = client.get(envelope["images"][0]["url"]).content
    assert [[c["name"] for c in t["controlnets"]] for t in envelope["trace"]] == [
        ["demo-sd15-canny"], ["demo-flux-canny"]
    ]  # fmt: skip
    # The envelope serves the spec without its control images, as without an init image.
    assert envelope["spec"]["stages"][0]["controlnets"][0].get("image") is None
    assert "iVBOR" not in json.dumps(envelope)
    parameters = Image.open(io.BytesIO(png)).text["parameters"]  # type: ignore[attr-defined]
    assert 'ControlNet 0: "Module: canny, Model: demo-sd15-canny [' in parameters


def test_an_sd15_controlnet_on_the_flux_stage_is_refused_before_anything_is_queued(
    stack: Stack,
) -> None:
    unit = {"name": "demo-sd15-canny", "image_from": "previous"}
    hires = {"model": "demo-flux", "mode": "hires", "controlnets": [unit]}
    spec = {"prompt": "p", "width": 64, "height": 64, "stages": [{"model": "demo-sd15"}, hires]}
    with stack.client() as client:
        response = client.post("/jobs", json=spec)
    assert response.status_code == 422
    [item] = response.json()["detail"]
    assert (item["type"], item["loc"]) == (
        "controlnet_architecture_mismatch", ["body", "stages", 1, "controlnets", 0]
    )  # fmt: skip
