"""The A1111 face in-process (no worker; tests/stack/test_a1111_client.py runs jobs through it):
HTTP Basic keys, per-key options, the lists, refusals before anything is queued."""

from __future__ import annotations

from fastapi.testclient import TestClient
from redis import Redis

from tests.app.conftest import ALICE, BOB, queued


def test_basic_auth_carries_the_api_key_as_password(secured: TestClient) -> None:
    assert secured.get("/sdapi/v1/options", auth=("anyone", ALICE)).status_code == 200
    assert secured.get("/sdapi/v1/options").status_code == 401
    assert secured.get("/sdapi/v1/options", auth=("alice", "wrong")).status_code == 401
    # Refused before the body is read, like every request with a body.
    refused = secured.post("/sdapi/v1/txt2img", json={"prompt": "p"}, auth=("a", "wrong"))
    assert refused.status_code == 401


def test_options_set_the_checkpoint_per_key(secured: TestClient) -> None:
    chosen = {"sd_model_checkpoint": "demo-flux.safetensors"}
    assert secured.post("/sdapi/v1/options", json=chosen, auth=("a", ALICE)).status_code == 200
    assert secured.get("/sdapi/v1/options", auth=("a", ALICE)).json()["sd_model_checkpoint"] == (
        "demo-flux"
    )
    assert secured.get("/sdapi/v1/options", auth=("b", BOB)).json()["sd_model_checkpoint"] != (
        "demo-flux"
    )
    unknown = secured.post(
        "/sdapi/v1/options", json={"sd_model_checkpoint": "v1-5"}, auth=("a", ALICE)
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "sd_model_checkpoint"]


def test_the_lists_a1111_clients_read(client: TestClient) -> None:
    models = client.get("/sdapi/v1/sd-models").json()
    assert {"demo-sd15", "demo-flux", "demo-sdxl-refiner"} <= {m["title"] for m in models}
    assert "DPM++ 2M SDE" in [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert [s["name"] for s in client.get("/sdapi/v1/schedulers").json()] == [
        "automatic", "karras", "exponential",
    ]  # fmt: skip
    assert [u["name"] for u in client.get("/sdapi/v1/upscalers").json()] == [
        "None", "Lanczos", "Nearest", "compact-2x", "esrgan-4x", "swinir-2x",
    ]  # fmt: skip
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    idle = client.get("/sdapi/v1/progress").json()
    assert (idle["progress"], idle["state"]["job_count"]) == (0.0, 0)
    assert client.post("/sdapi/v1/interrupt").status_code == 200  # nothing to stop


def test_a_refused_request_queues_nothing(client: TestClient, redis: Redis) -> None:
    body = {
        "prompt": "p", "width": 64, "height": 64, "enable_hr": True,
        "hr_checkpoint_name": "demo-flux", "hr_upscaler": "Latent (nearest-exact)",
        "override_settings": {"sd_model_checkpoint": "demo-sd15"},
    }  # fmt: skip
    refused = client.post("/sdapi/v1/txt2img", json=body)
    assert refused.status_code == 422
    [item] = refused.json()["detail"]
    assert (item["type"], item["loc"]) == ("latent_space_mismatch", ["body", "hr_upscaler"])
    assert queued(redis) == 0
    unknown = client.post(
        "/sdapi/v1/txt2img", json={**body, "enable_hr": False, "sampler_name": "Euler z"}
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "sampler_name"]
