"""The rest of A1111's API its clients call, in-process: what this service has, honest empty
lists for what it has none of, png-info reading A1111's text back, interrogate refused as not
served; each behind the same keys."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from tests.app.conftest import ALICE


def test_the_lists_a1111_clients_fill_their_menus_from(client: TestClient) -> None:
    loras = client.get("/sdapi/v1/loras").json()
    assert [(lora["name"], lora["metadata"]) for lora in loras] == [
        ("detail-sd15", {"architecture": "sd15"})
    ]
    upscalers = [u["name"] for u in client.get("/sdapi/v1/realesrgan-models").json()]
    assert upscalers == ["compact-2x", "esrgan-4x", "swinir-2x"]
    for path in ("sd-modules", "prompt-styles", "face-restorers", "hypernetworks"):
        assert client.get(f"/sdapi/v1/{path}").json() == []
    assert client.get("/sdapi/v1/cmd-flags").json()["api"] is True
    ram = client.get("/sdapi/v1/memory").json()["ram"]
    assert 0 < ram["free"] <= ram["total"]


def test_refreshing_is_accepted_and_changes_nothing(client: TestClient) -> None:
    before = client.get("/sdapi/v1/sd-models").json()
    for path in ("refresh-checkpoints", "refresh-loras", "refresh-vae"):
        response = client.post(f"/sdapi/v1/{path}")
        assert (response.status_code, response.json()) == (200, None)
    assert client.get("/sdapi/v1/sd-models").json() == before


def png_with(parameters: str) -> str:
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", parameters)
    text.add_text("imagegen-spec", "{}")
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="PNG", pnginfo=text)
    return base64.b64encode(out.getvalue()).decode()


def test_png_info_reads_a1111s_text_back(client: TestClient) -> None:
    written = "a castle\nNegative prompt: fog\nSteps: 4, Sampler: Euler, Seed: 7, Size: 64x32"
    answer = client.post("/sdapi/v1/png-info", json={"image": png_with(written)}).json()
    assert answer["info"] == written
    assert answer["items"] == {"imagegen-spec": "{}"}
    assert answer["parameters"] == {
        "Prompt": "a castle", "Negative prompt": "fog", "Steps": "4", "Sampler": "Euler",
        "Seed": "7", "Size-1": "64", "Size-2": "32",
    }  # fmt: skip
    refused = client.post("/sdapi/v1/png-info", json={"image": "bm90IGEgcGljdHVyZQ=="})
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert (error["type"], error["loc"]) == ("invalid_image", ["body", "image"])


def test_interrogate_is_refused_as_not_served_in_the_one_error_shape(client: TestClient) -> None:
    response = client.post("/sdapi/v1/interrogate", json={"image": png_with("x")})
    assert response.status_code == 501
    [error] = response.json()["detail"]
    assert error["type"] == "not_served"
    assert "no captioning model" in error["msg"]


@pytest.mark.parametrize("path", ["loras", "memory", "cmd-flags", "sd-modules"])
def test_they_answer_only_a_valid_key(secured: TestClient, path: str) -> None:
    assert secured.get(f"/sdapi/v1/{path}").status_code == 401
    assert secured.get(f"/sdapi/v1/{path}", auth=("user", ALICE)).status_code == 200
