"""GET /models: what the deployment serves and in which latent space."""

from __future__ import annotations

from fastapi.testclient import TestClient


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
