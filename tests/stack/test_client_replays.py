"""Open WebUI's and SillyTavern's calls replayed as they make them with their default settings
(read from their code: ../shared/notes/clients-and-components.md), each through a whole image
generation. Neither is on PyPI/npm in a form that runs here without a 7 GB install (Open WebUI;
`make clients` runs its own router code) or a browser (SillyTavern), so the replay sends their
exact requests: headers, bodies and the order of calls, with `requests` (which, as their HTTP
clients, sends `Basic ` with nothing after it; httpx refuses to)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
import requests
from PIL import Image

from tests.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]
# Both send this when no "user:password" is configured: the base64 of an empty string.
NO_AUTH = {"Authorization": "Basic "}


class Client(requests.Session):
    """A session with the clients' empty Basic header, on the stack's base URL."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.headers.update(NO_AUTH)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().request(method, f"{self.base}{url!s}", *args, timeout=120, **kwargs)


def pictures(answer: dict[str, Any]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in answer["images"]]


def test_open_webuis_automatic1111_engine(stack: Stack) -> None:
    with Client(stack.url) as webui:
        # "Verify connection": the options, for the current checkpoint
        options = webui.get("/sdapi/v1/options")
        assert options.status_code == 200, options.text
        models = webui.get("/sdapi/v1/sd-models").json()
        assert "demo-sd15" in [m["title"] for m in models]
        # Choosing a model POSTs the whole options dict back, the checkpoint changed
        chosen = {**options.json(), "sd_model_checkpoint": "demo-sd15"}
        assert webui.post("/sdapi/v1/options", json=chosen).status_code == 200
        assert webui.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "demo-sd15"
        made = webui.post("/sdapi/v1/txt2img", json={
            "prompt": "a lighthouse", "batch_size": 1, "width": 64, "height": 64, "steps": 2,
            "negative_prompt": "fog",
        })  # fmt: skip
        assert made.status_code == 200, made.text
    answer = made.json()
    assert [p.size for p in pictures(answer)] == [(64, 64)]
    assert json.loads(answer["info"])["sd_model_name"] == "demo-sd15"


def test_open_webuis_openai_engine_generates_and_edits(stack: Stack) -> None:
    with httpx.Client(base_url=f"{stack.url}/v1", timeout=120,
                      headers={"Authorization": "Bearer sk-none"}) as webui:  # fmt: skip
        made = webui.post("/images/generations", json={
            "model": "demo-sd15", "prompt": "a lighthouse", "n": 1, "size": "64x64",
            "response_format": "b64_json",
        })  # fmt: skip
        assert made.status_code == 200, made.text
        [item] = made.json()["data"]
        source = base64.b64decode(item["b64_json"])
        # Its image editing: multipart, the picture as image[], no mask
        edited = webui.post("/images/edits", data={"model": "demo-sd15", "prompt": "at night",
                                                   "n": "1", "size": "64x64"},
                            files=[("image[]", ("image.png", source, "image/png"))])  # fmt: skip
        assert edited.status_code == 200, edited.text
    [item] = edited.json()["data"]
    assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (64, 64)


def test_sillytaverns_stable_diffusion_extension(stack: Stack) -> None:
    with Client(stack.url) as tavern:
        # Connecting: every list it fills its menus from
        for path in ("options", "upscalers", "latent-upscale-modes", "sd-vae", "samplers",
                     "schedulers", "sd-models", "progress"):  # fmt: skip
            listed = tavern.get(f"/sdapi/v1/{path}")
            assert listed.status_code == 200, (path, listed.text)
        assert "normal" in [s["name"] for s in tavern.get("/sdapi/v1/schedulers").json()]
        # Choosing a model, then polling until the server says it is idle
        chosen = tavern.post("/sdapi/v1/options", json={"sd_model_checkpoint": "demo-sd15"})
        assert chosen.status_code == 200
        progress = tavern.get("/sdapi/v1/progress").json()
        assert (progress["progress"], progress["state"]["job_count"]) == (0, 0)
        made = tavern.post("/sdapi/v1/txt2img", json={
            "prompt": "a lighthouse", "negative_prompt": "fog", "sampler_name": "Euler",
            "scheduler": "normal", "steps": 2, "cfg_scale": 7, "width": 64, "height": 64,
            "seed": 3, "restore_faces": False, "enable_hr": False, "denoising_strength": 0.7,
            "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "clip_skip": 1,
            "override_settings": {"CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic"},
            "override_settings_restore_afterwards": True,
            # its own fields, sent to the server too
            "url": stack.url, "auth": "", "model": "demo-sd15",
        })  # fmt: skip
        assert made.status_code == 200, made.text
        # It interrupts when the browser goes away: nothing is running, and that is fine
        assert tavern.post("/sdapi/v1/interrupt").status_code == 200
    [picture] = pictures(made.json())
    assert picture.size == (64, 64)
    assert "Schedule type: Normal" in str(picture.info["parameters"])
