"""IP-Adapters through the running stack: an SD1.5 adapter on the SD1.5 base and an SDXL one on
its SDXL hires fix (a pixel handoff: each stage's own architecture), the pictures kept out of
the envelope, the PNG writing the base's as sd-webui-controlnet does; one of another
architecture refused before anything is queued."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.conftest import Stack
from tests.helpers import png_b64, submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]
LOOK = png_b64(40, 48, (200, 30, 150))


def test_sd15_to_sdxl_hires_with_an_ip_adapter_of_each_architecture_succeeds(
    stack: Stack,
) -> None:
    spec = {
        "prompt": "a lighthouse",
        "seed": 4,
        "width": 64,
        "height": 64,
        "stages": [
            {"model": "demo-sd15", "steps": 2,
             "ip_adapters": [{"name": "demo-sd15-ip", "image": LOOK, "weight": 0.7}]},
            {"model": "demo-sdxl", "mode": "hires", "handoff": "pixel", "steps": 2,
             "ip_adapters": [{"name": "demo-sdxl-ip", "image": LOOK}]},
        ],
    }  # fmt: skip
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope
        png = client.get(envelope["images"][0]["url"]).content
    assert [t["ip_adapters"] for t in envelope["trace"]] == [
        [{"name": "demo-sd15-ip", "weight": 0.7}], [{"name": "demo-sdxl-ip", "weight": 1.0}]
    ]  # fmt: skip
    # The envelope serves the spec without the pictures, as without an init image.
    assert envelope["spec"]["stages"][1]["ip_adapters"][0]["image"] == ""
    assert "iVBOR" not in json.dumps(envelope)
    parameters = Image.open(io.BytesIO(png)).text["parameters"]  # type: ignore[attr-defined]
    assert 'ControlNet 0: "Module: ip-adapter-auto, Model: demo-sd15-ip [' in parameters


def test_an_sd15_ip_adapter_on_the_sdxl_stage_is_refused_before_anything_is_queued(
    stack: Stack,
) -> None:
    hires = {"model": "demo-sdxl", "mode": "hires",
             "ip_adapters": [{"name": "demo-sd15-ip", "image": LOOK}]}  # fmt: skip
    spec = {"prompt": "p", "width": 64, "height": 64, "stages": [{"model": "demo-sd15"}, hires]}
    with stack.client() as client:
        response = client.post("/jobs", json=spec)
    assert response.status_code == 422
    [item] = response.json()["detail"]
    assert (item["type"], item["loc"]) == (
        "ip_adapter_architecture_mismatch", ["body", "stages", 1, "ip_adapters", 0]
    )  # fmt: skip
    assert "demo-sdxl-ip" in item["msg"]  # what fits
