"""LoRAs through the running stack: listed, used on a stage, written into the PNG as A1111 writes
them, refused on a stage of another architecture before anything is queued."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tests.conftest import Stack
from tests.helpers import submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]


def test_a_lora_job_succeeds_and_its_png_says_so_as_a1111_does(stack: Stack) -> None:
    spec = {
        "prompt": "a lighthouse",
        "seed": 4,
        "width": 64,
        "height": 64,
        "stages": [
            {"model": "demo-sd15", "steps": 2, "loras": [{"name": "detail-sd15", "weight": 0.8}]}
        ],
    }
    with stack.client() as client:
        assert [lora["name"] for lora in client.get("/loras").json()] == ["detail-sd15"]
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope
        png = client.get(envelope["images"][0]["url"]).content
        plain = submit_and_wait(client, {**spec, "stages": [{"model": "demo-sd15", "steps": 2}]})
        plain_png = client.get(plain["images"][0]["url"]).content
    parameters = Image.open(io.BytesIO(png)).text["parameters"]  # type: ignore[attr-defined]
    assert parameters.startswith("a lighthouse <lora:detail-sd15:0.8>\n")
    # Quoted, as A1111 quotes a value holding a colon.
    assert re.search(r"Lora hashes: \"detail-sd15: [0-9a-f]{12}\"", parameters)
    assert Image.open(io.BytesIO(png)).tobytes() != Image.open(io.BytesIO(plain_png)).tobytes()


def test_an_sd15_lora_on_an_sdxl_stage_is_refused_at_admission(stack: Stack) -> None:
    spec = {
        "prompt": "p",
        "width": 64,
        "height": 64,
        "stages": [{"model": "demo-sdxl", "loras": [{"name": "detail-sd15"}]}],
    }
    with stack.client() as client:
        response = client.post("/jobs", json=spec)
    assert response.status_code == 422
    [item] = response.json()["detail"]
    assert (item["type"], item["loc"]) == (
        "lora_architecture_mismatch",
        ["body", "stages", 0, "loras", 0],
    )
