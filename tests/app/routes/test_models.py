"""GET /models: what the deployment serves and in which latent space."""

from __future__ import annotations

from fastapi.testclient import TestClient
from redis import Redis

from jobs.presence import WorkerPresence, publish
from tests.app.conftest import ALICE, ROOT, auth


def test_models_lists_architecture_and_latent_space(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/models").json()}
    assert models["demo-sd15"]["latent_space"]["name"] == "sd1"
    assert models["demo-sdxl-refiner"]["latent_space"]["name"] == "sdxl"
    assert models["demo-sdxl-refiner"]["text_to_image"] is False
    assert models["demo-flux"]["latent_space"] == {
        "name": "flux",
        "channels": 16,
        "vae_downscale": 8,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
        "packed_2x2": True,
    }
    assert models["demo-flux"]["size_multiple"] == 16


def test_a_model_a_worker_could_not_load_says_why(client: TestClient, redis: Redis) -> None:
    presence = WorkerPresence(
        name="gpu-host.1.abc",
        pool="default",
        models=["demo-sd15", "demo-sdxl"],
        loaded=["demo-sd15"],
        resident_mib=1.0,
        loads=1,
        unavailable={"demo-sdxl": "sdxl.safetensors is a LoRA, not a checkpoint"},
    )
    publish(redis, presence, ttl_s=30)
    models = {m["name"]: m for m in client.get("/models").json()}
    assert models["demo-sdxl"]["unavailable_on"] == {
        "gpu-host.1.abc": "sdxl.safetensors is a LoRA, not a checkpoint"
    }
    assert models["demo-sd15"]["unavailable_on"] == {}
    assert models["demo-sd15"]["loaded_on"] == ["gpu-host.1.abc"]


def test_only_admin_keys_see_worker_hosts_and_pids(secured: TestClient, redis: Redis) -> None:
    presence = WorkerPresence(
        name="gpu-host.4242.abc123", pool="default", models=["demo-sd15"], loaded=[],
        resident_mib=1.0, loads=0, unavailable={},
    )  # fmt: skip
    publish(redis, presence, ttl_s=30)

    def serving(key: str) -> list[str]:
        models = {m["name"]: m for m in secured.get("/models", headers=auth(key)).json()}
        return list(models["demo-sd15"]["workers_serving"])

    assert serving(ALICE) == ["worker-abc123"]
    assert serving(ROOT) == ["gpu-host.4242.abc123"]


def test_loras_are_listed_with_their_architecture(client: TestClient) -> None:
    assert client.get("/loras").json() == [
        {
            "name": "detail-sd15",
            "architecture": "sd15",
            "file": "detail-sd15.safetensors",
            # the demo LoRA is 32 wide: its keys cannot tell, the registry says
            "architecture_from": "registry",
        }
    ]


def test_vaes_are_listed_with_the_latent_space_each_decodes(client: TestClient) -> None:
    assert client.get("/vaes").json() == [
        {
            "name": "demo-sd15-vae",
            "latent_space": "sd1",
            "architectures": ["sd15"],
            "file": "demo-sd15-vae.safetensors",
            # an SD1.5 VAE's shapes are an SDXL VAE's: the registry says, its channels checked
            "latent_space_from": "registry",
            "channels_checked": True,
        },
        {
            "name": "demo-sdxl-vae",
            "latent_space": "sdxl",
            "architectures": ["sdxl", "sdxl-refiner"],
            "file": "demo-sdxl-vae.safetensors",
            "latent_space_from": "registry",
            "channels_checked": True,
        },
    ]


def test_embeddings_are_listed_with_their_architecture(client: TestClient) -> None:
    assert client.get("/embeddings").json() == [
        {
            "name": "demo-sd15-emb",
            "architecture": "sd15",
            "file": "demo-sd15-emb.safetensors",
            "architecture_from": "registry",  # 32 wide: its width shows no architecture
            "vectors": 2,
        },
        {
            "name": "demo-sdxl-emb",
            "architecture": "sdxl",
            "file": "demo-sdxl-emb.safetensors",
            "architecture_from": "header",  # clip_l + clip_g: SDXL's layout
            "vectors": 2,
        },
    ]


def test_controlnets_are_listed_with_their_architecture(client: TestClient) -> None:
    listed = {c["name"]: c for c in client.get("/controlnets").json()}
    assert sorted(listed) == ["demo-flux-canny", "demo-sd15-canny", "demo-sdxl-canny"]
    assert listed["demo-flux-canny"] == {
        "name": "demo-flux-canny",
        "architecture": "flux",
        "file": "demo-flux-canny",
        "architecture_from": "header",  # its config's class: FluxControlNetModel
    }
    # 32 wide: its config's cross-attention width is no architecture's, the registry says
    assert listed["demo-sd15-canny"]["architecture_from"] == "registry"


def test_ip_adapters_are_listed_with_their_architecture_and_image_encoder(
    client: TestClient,
) -> None:
    listed = client.get("/ip-adapters").json()
    assert listed == [
        {
            "name": f"demo-{arch}-ip",
            "architecture": arch,
            "file": f"demo-{arch}-ip.safetensors",
            "image_encoder": "image_encoder",  # the one beside it, as in h94's layout
            "architecture_from": "registry",  # 32 and 64 wide: no architecture's, as written
        }
        for arch in ("sd15", "sdxl")
    ]


def test_upscalers_list_the_resamplers_and_the_registered_models(client: TestClient) -> None:
    listed = {u["name"]: u for u in client.get("/upscalers").json()}
    assert listed["lanczos"] == {
        "name": "lanczos",
        "handoff": "pixel",
        "kind": "resampler",
        "file": None,
    }
    assert listed["latent-bicubic"]["handoff"] == "latent"
    assert listed["esrgan-4x"] == {
        "name": "esrgan-4x",
        "handoff": "pixel",
        "kind": "model",
        "file": "esrgan-4x.safetensors",
    }
    assert {"compact-2x", "swinir-2x"} <= set(listed)


def test_presets_are_listed_with_their_stages(client: TestClient) -> None:
    [preset] = client.get("/presets").json()
    assert preset["name"] == "sd15-flux-hires"
    assert [s["model"] for s in preset["stages"]] == ["demo-sd15", "demo-flux"]
    # and as a model string on the other faces
    assert "sd15-flux-hires" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    titles = [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]
    assert titles[-1] == "sd15-flux-hires"
