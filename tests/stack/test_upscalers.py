"""Upscaler models through the running stack: an SD1.5 picture upscaled by ESRGAN into a Flux
hires stage, said in the trace and the PNG as A1111 says it; refused on a latent handoff before
anything is queued."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import Stack
from tests.helpers import submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]


def test_an_sd15_to_flux_job_with_an_upscaler_model_succeeds(stack: Stack) -> None:
    spec = {
        "prompt": "a lighthouse",
        "seed": 5,
        "width": 64,
        "height": 64,
        "stages": [
            {"model": "demo-sd15", "steps": 2},
            {"model": "demo-flux", "mode": "hires", "steps": 2, "upscaler": "esrgan-4x"},
        ],
    }
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope
        png = client.get(envelope["images"][0]["url"]).content
    assert [t["upscaler"] for t in envelope["trace"]] == [None, "esrgan-4x"]
    image = Image.open(io.BytesIO(png))
    assert image.size == (128, 128)
    assert "Hires upscaler: esrgan-4x" in image.text["parameters"]  # type: ignore[attr-defined]


def test_an_upscaler_model_on_a_latent_handoff_is_refused_at_admission(stack: Stack) -> None:
    spec = {
        "prompt": "p",
        "width": 64,
        "height": 64,
        "stages": [
            {"model": "demo-sdxl"},
            {"model": "demo-sdxl", "mode": "hires", "handoff": "latent", "upscaler": "esrgan-4x"},
        ],
    }
    with stack.client() as client:
        response = client.post("/jobs", json=spec)
    assert response.status_code == 422
    [item] = response.json()["detail"]
    assert (item["type"], item["loc"]) == (
        "upscaler_handoff_mismatch",
        ["body", "stages", 1, "upscaler"],
    )
