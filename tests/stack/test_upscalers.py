"""Upscaler models through the running stack: an SD1.5 picture upscaled by ESRGAN into a Flux
hires stage, said in the trace and the PNG as A1111 says it; refused on a latent handoff before
anything is queued; an upscale job (no model) upscaling its init image, by a factor or to a size
covered and cropped."""

from __future__ import annotations

import base64
import io

import numpy as np
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


def picture_b64(width: int, height: int) -> str:
    """A picture with structure: a model's upscale and a plain resize of it differ."""
    rng = np.random.default_rng(4)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_an_upscale_job_upscales_its_init_image_with_no_model(stack: Stack) -> None:
    init = picture_b64(80, 64)
    upscaled = {}
    with stack.client() as client:
        for upscaler in ("esrgan-4x", "lanczos"):
            spec = {
                "width": 80, "height": 64, "init_image": init,
                "stages": [{"mode": "upscale", "upscaler": upscaler, "scale": 2.5}],
            }  # fmt: skip
            envelope = submit_and_wait(client, spec)
            assert envelope["status"] == "succeeded", envelope
            [trace] = envelope["trace"]
            assert (trace["upscaler"], trace["input"], trace["sampler"]) == (
                upscaler, "init_image", "none"
            )  # fmt: skip
            png = client.get(envelope["images"][0]["url"]).content
            image = Image.open(io.BytesIO(png))
            assert image.size == (200, 160)
            assert "parameters" not in image.text  # type: ignore[attr-defined]
            name = "esrgan-4x" if upscaler == "esrgan-4x" else "Lanczos"
            assert image.text["postprocessing"] == (  # type: ignore[attr-defined]
                f"Postprocess upscale by: 2.5, Postprocess upscaler: {name}"
            )
            upscaled[upscaler] = np.asarray(image.convert("RGB"), dtype=np.int16)
        # Cover and crop: a square out of a 5:4 picture, from its middle.
        square = {
            "width": 80, "height": 64, "init_image": init,
            "stages": [{"mode": "upscale", "upscaler": "lanczos", "width": 96, "height": 96}],
        }  # fmt: skip
        envelope = submit_and_wait(client, square)
        assert envelope["status"] == "succeeded", envelope
        assert (envelope["images"][0]["width"], envelope["images"][0]["height"]) == (96, 96)
    assert np.abs(upscaled["esrgan-4x"] - upscaled["lanczos"]).mean() > 1


def test_an_upscale_job_refuses_what_only_a_model_takes(stack: Stack) -> None:
    spec = {
        "prompt": "sharper", "width": 64, "height": 64, "init_image": picture_b64(64, 64),
        "stages": [{"mode": "upscale", "upscaler": "latent-bicubic", "steps": 10}],
    }  # fmt: skip
    with stack.client() as client:
        response = client.post("/jobs", json=spec)
    assert response.status_code == 422
    assert {(d["type"], tuple(d["loc"])) for d in response.json()["detail"]} == {
        ("field_not_allowed", ("body", "prompt")),
        ("field_not_allowed", ("body", "stages", 0, "steps")),
        ("upscaler_handoff_mismatch", ("body", "stages", 0, "upscaler")),
    }
