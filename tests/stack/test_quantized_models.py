"""Quantized files through the running stack (demo/quantized.py: demo-flux's transformer as a
Q8_0 GGUF file (also beside a Q8_0 GGUF T5 encoder), a plain fp8 file and a Forge NF4 file,
demo-sd35's as a Q8_0 GGUF file and a ComfyUI scaled-fp8 file, their other components from the
demo folders): jobs on them succeed with finite pictures, a hires stage after SD1.5 runs on one,
and GET /models says how each worker holds them."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import Stack
from tests.helpers import fetch_png, submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]


QUANTIZED = [
    "demo-flux-q8", "demo-flux-fp8", "demo-flux-nf4", "demo-flux-q8-t5q8", "demo-sd35-q8",
    "demo-sd35-fp8-scaled",
]  # fmt: skip


@pytest.mark.parametrize("model", QUANTIZED)
def test_a_job_on_a_quantized_file_draws_a_picture(stack: Stack, model: str) -> None:
    spec = {"prompt": "a harbour at dusk", "seed": 11, "width": 64, "height": 64,
            "stages": [{"model": model, "steps": 2}]}  # fmt: skip
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope
        _, image = fetch_png(client, envelope["images"][0]["url"])
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert image.size == (64, 64)
    assert pixels.std() > 1  # a picture, not a flat (black) field


def test_a_gguf_flux_file_serves_as_hires_fix_for_an_sd15_picture(stack: Stack) -> None:
    spec = {"prompt": "a lighthouse", "seed": 4, "width": 64, "height": 64,
            "stages": [{"model": "demo-sd15", "steps": 2},
                       {"model": "demo-flux-q8", "mode": "hires", "steps": 2}]}  # fmt: skip
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
    assert envelope["status"] == "succeeded", envelope
    assert [t["model"] for t in envelope["trace"]] == ["demo-sd15", "demo-flux-q8"]


def test_models_say_how_each_worker_holds_a_quantized_file(stack: Stack) -> None:
    with stack.client() as client:
        models = {m["name"]: m for m in client.get("/models").json()}
    held = {
        name: next(iter(models[name]["held_on"].values()))
        for name in ("demo-flux", *QUANTIZED, "demo-sd35")
    }
    assert held["demo-flux"]["transformer"]["storage"] == ["float32"]
    # Matrices quantized or in fp8, norms and biases in the model's dtype (fp32 on this CPU).
    assert held["demo-flux-q8"]["transformer"]["storage"] == ["Q8_0", "float32"]
    assert held["demo-flux-fp8"]["transformer"]["storage"] == ["float32", "float8_e4m3fn"]
    assert held["demo-flux-nf4"]["transformer"]["storage"] == ["float32", "nf4"]
    # Its T5 from its own GGUF file: quantized too (but its feed-forward output, wide).
    assert held["demo-flux-q8-t5q8"]["text_encoder_2"]["storage"] == ["Q8_0", "float32"]
    assert held["demo-flux-q8"]["text_encoder_2"]["storage"] == ["float32"]
    full = held["demo-flux"]["transformer"]["mib"]
    for name in ("demo-flux-q8", "demo-flux-fp8", "demo-flux-nf4"):
        assert held[name]["transformer"]["mib"] < 0.35 * full  # measured: 0.28, 0.27, 0.14
        assert held[name]["vae"] == held["demo-flux"]["vae"]  # the config folder's, as loaded
    assert held["demo-sd35-q8"]["transformer"]["storage"] == ["Q8_0", "float32"]
    assert held["demo-sd35-fp8-scaled"]["transformer"]["storage"] == ["float32", "float8_e4m3fn"]
    full_sd35 = held["demo-sd35"]["transformer"]["mib"]
    for name in ("demo-sd35-q8", "demo-sd35-fp8-scaled"):
        assert held[name]["transformer"]["mib"] < 0.35 * full_sd35  # measured: 0.30 and 0.29
