"""A preset through the running stack from each face: one model string gets the article's SD1.5
→ Flux hires chain, from POST /jobs, from the openai SDK and from webuiapi."""

from __future__ import annotations

import base64
import io

import pytest
from openai import OpenAI
from PIL import Image
from webuiapi import WebUIApi

from tests.conftest import Stack
from tests.helpers import submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]
PRESET = "sd15-flux-hires"  # tests/conftest.py's registry: demo-sd15, then demo-flux by pixels


def test_a_job_naming_a_preset_runs_its_chain(stack: Stack) -> None:
    spec = {"prompt": "a lighthouse", "seed": 2, "width": 64, "height": 64,
            "stages": [{"model": PRESET, "steps": 2}]}  # fmt: skip
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope
        assert [p["name"] for p in client.get("/presets").json()] == [PRESET]
    assert [t["model"] for t in envelope["trace"]] == ["demo-sd15", "demo-flux"]
    assert envelope["trace"][1]["input"] == "pixels"
    assert envelope["spec"]["stages"][0]["steps"] == 2  # the naming stage's own field


def test_the_openai_sdk_and_webuiapi_name_a_preset_as_a_model(stack: Stack) -> None:
    with OpenAI(base_url=f"{stack.url}/v1", api_key="sk-any", max_retries=0) as sdk:
        assert PRESET in [m.id for m in sdk.models.list()]
        made = sdk.images.generate(model=PRESET, prompt="a lighthouse", size="64x64",
                                   extra_body={"steps": 2})  # fmt: skip
    [item] = made.data or []
    assert item.b64_json is not None
    assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (128, 128)
    api = WebUIApi(host="127.0.0.1", port=stack.port, sampler="Euler", steps=2)
    try:
        assert PRESET in [m["title"] for m in api.get_sd_models()]
        drawn = api.txt2img(prompt="a lighthouse", width=64, height=64,
                            override_settings={"sd_model_checkpoint": PRESET})  # fmt: skip
    finally:
        api.session.close()
    assert drawn.images[0].size == (128, 128)
    assert "Hires checkpoint: demo-flux" in str(drawn.images[0].info["parameters"])
