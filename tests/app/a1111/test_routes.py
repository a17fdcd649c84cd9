"""The A1111 face in-process (no worker; tests/stack/test_a1111_client.py runs jobs through it):
HTTP Basic keys, per-key options, the lists, refusals before anything is queued."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from app.settings import GatewaySettings
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


def test_options_set_the_vae_per_key_and_automatic_takes_it_back(secured: TestClient) -> None:
    def vae(auth: tuple[str, str]) -> str:
        return str(secured.get("/sdapi/v1/options", auth=auth).json()["sd_vae"])

    assert vae(("a", ALICE)) == "Automatic"
    chosen = {"sd_vae": "demo-sdxl-vae.safetensors"}
    assert secured.post("/sdapi/v1/options", json=chosen, auth=("a", ALICE)).status_code == 200
    assert (vae(("a", ALICE)), vae(("b", BOB))) == ("demo-sdxl-vae", "Automatic")
    unknown = secured.post("/sdapi/v1/options", json={"sd_vae": "x.pt"}, auth=("a", ALICE))
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "sd_vae"]
    secured.post("/sdapi/v1/options", json={"sd_vae": "Automatic"}, auth=("a", ALICE))
    assert vae(("a", ALICE)) == "Automatic"


def test_the_lists_a1111_clients_read(client: TestClient) -> None:
    models = client.get("/sdapi/v1/sd-models").json()
    assert {"demo-sd15", "demo-flux", "demo-sdxl-refiner"} <= {m["title"] for m in models}
    assert "DPM++ 2M SDE" in [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert [s["name"] for s in client.get("/sdapi/v1/schedulers").json()] == [
        "automatic", "uniform", "karras", "exponential", "sgm_uniform", "simple", "normal", "ddim",
    ]  # fmt: skip
    aliases = {s["name"]: s["aliases"] for s in client.get("/sdapi/v1/samplers").json()}
    assert "k_euler_a" in aliases["Euler a"]
    assert [u["name"] for u in client.get("/sdapi/v1/upscalers").json()] == [
        "None", "Lanczos", "Nearest", "compact-2x", "esrgan-4x", "swinir-2x",
    ]  # fmt: skip
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    # demo-sd15 is the registry's default checkpoint: SDXL's embedding is skipped, as A1111 says
    embeddings = client.get("/sdapi/v1/embeddings").json()
    item = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 32,
            "vectors": 2}  # fmt: skip
    assert embeddings["loaded"] == {"demo-sd15-emb": item}
    assert list(embeddings["skipped"]) == ["demo-sdxl-emb"]
    vaes = client.get("/sdapi/v1/sd-vae").json()
    assert [v["model_name"] for v in vaes] == ["demo-sd15-vae", "demo-sdxl-vae"]
    assert vaes[0]["filename"].endswith("demo-vaes/demo-sd15-vae.safetensors")
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
    sd15_word = {"prompt": "p", "negative_prompt": "demo-sd15-emb", "width": 64, "height": 64,
                 "override_settings": {"sd_model_checkpoint": "demo-sdxl"}}  # fmt: skip
    [item] = client.post("/sdapi/v1/txt2img", json=sd15_word).json()["detail"]
    assert (item["type"], item["loc"]) == (
        "embedding_architecture_mismatch", ["body", "negative_prompt"]
    )  # fmt: skip
    sd15_vae_on_sdxl = {"prompt": "p", "width": 64, "height": 64,
                        "override_settings": {"sd_model_checkpoint": "demo-sdxl",
                                              "sd_vae": "demo-sd15-vae"}}  # fmt: skip
    mismatch = client.post("/sdapi/v1/txt2img", json=sd15_vae_on_sdxl)
    assert mismatch.status_code == 422
    [item] = mismatch.json()["detail"]
    assert (item["type"], item["loc"]) == (
        "vae_latent_space_mismatch", ["body", "override_settings", "sd_vae"]
    )  # fmt: skip
    assert queued(redis) == 0


@pytest.fixture(params=[None, "demo-sdxl"], ids=["file-order", "named"])
def default_checkpoint(
    request: pytest.FixtureRequest,
    gateway_settings: GatewaySettings,
    demo_models: Path,
    tmp_path: Path,
) -> Iterator[tuple[TestClient, str]]:
    """A gateway on a registry whose first model by name is Flux's, and whose first in the file
    is SD1.5's; with `a1111_default_checkpoint` naming SDXL, or without."""
    registry = tmp_path / "registry.yaml"
    models = "".join(
        f"  {name}: {{architecture: {name.removeprefix('demo-')}, "
        f"source: {{folder: {demo_models / name}}}}}\n"
        for name in ("demo-sdxl-refiner", "demo-sd15", "demo-sdxl", "demo-flux")
    )
    named = f"a1111_default_checkpoint: {request.param}\n" if request.param else ""
    registry.write_text(f"models:\n{models}{named}")
    settings = gateway_settings.model_copy(update={"registry": registry})
    with TestClient(create_app(settings)) as client:
        yield client, request.param or "demo-sd15"


def test_a_request_naming_no_checkpoint_gets_the_registrys_default_not_the_first_by_name(
    default_checkpoint: tuple[TestClient, str], redis: Redis
) -> None:
    client, expected = default_checkpoint
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == expected
    body = {"prompt": "p", "width": 64, "height": 64, "steps": 2}
    with ThreadPoolExecutor(1) as pool:  # the request holds on until its job ends
        answer = pool.submit(client.post, "/sdapi/v1/txt2img", json=body)
        try:
            deadline = time.monotonic() + 30
            while not (job := client.get("/sdapi/v1/progress").json()["state"]["job"]):
                assert not answer.done(), answer.result().text
                assert time.monotonic() < deadline, "the txt2img job was never queued"
                time.sleep(0.05)
            spec = client.get(f"/jobs/{job.removeprefix('task(').rstrip(')')}").json()["spec"]
            assert [stage["model"] for stage in spec["stages"]] == [expected]
        finally:
            client.post("/sdapi/v1/interrupt")  # no worker here: end the queued job
        response = answer.result(timeout=30)
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["sd_model_name"] == expected


def test_with_no_model_that_draws_from_text_the_checkpoint_must_be_named(
    gateway_settings: GatewaySettings, demo_models: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.yaml"
    refiner = demo_models / "demo-sdxl-refiner"
    registry.write_text(
        f"models:\n  r: {{architecture: sdxl-refiner, source: {{folder: {refiner}}}}}\n"
    )
    settings = gateway_settings.model_copy(update={"registry": registry})
    with TestClient(create_app(settings)) as client:
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] is None
        refused = client.post("/sdapi/v1/txt2img", json={"prompt": "p"})
    assert refused.status_code == 422
    [item] = refused.json()["detail"]
    assert item["loc"] == ["body", "override_settings", "sd_model_checkpoint"]
    assert "no registered model draws from text" in item["msg"]


# What A1111's clients send with no auth configured: Open WebUI and SillyTavern base64 an empty
# "user:pass" setting (`Basic `); others send a bare user name or ":".
NO_CREDENTIALS = ["Basic ", "Basic Og==", "Basic dXNlcg==", "Basic %%%"]


@pytest.mark.parametrize("header", NO_CREDENTIALS)
def test_in_open_mode_clients_sending_empty_basic_credentials_get_in(
    client: TestClient, header: str
) -> None:
    assert client.get("/sdapi/v1/sd-models", headers={"Authorization": header}).status_code == 200
    body = {"prompt": "p", "width": 64, "height": 64}
    # the body is read (not refused first): a 422 for a field, not a 401
    posted = client.post("/sdapi/v1/txt2img", json={**body, "steps": 0},
                         headers={"Authorization": header})  # fmt: skip
    assert posted.status_code == 422


@pytest.mark.parametrize("header", NO_CREDENTIALS)
def test_with_keys_empty_basic_credentials_are_not_authenticated(
    secured: TestClient, header: str
) -> None:
    for response in (
        secured.get("/sdapi/v1/sd-models", headers={"Authorization": header}),
        secured.post("/sdapi/v1/txt2img", json={"prompt": "p"}, headers={"Authorization": header}),
    ):
        assert response.status_code == 401
        [error] = response.json()["detail"]
        assert error["type"] == "not_authenticated"
