"""Model-affinity routing: two worker processes with disjoint models; a SD1.5 -> Flux pixel job
crosses them, its picture travelling through Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack.redis_server import RedisServer
from jobs.disclosure import public_worker_name
from tests.conftest import Stack
from tests.helpers import fetch_png, submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]


@pytest.fixture(scope="module")
def split_stack(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("split")
    registry = root / "registry.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "demo-sd15": {
                        "architecture": "sd15",
                        "source": {"folder": str(demo_models / "demo-sd15")},
                        "pool": "sd",
                        "preload": True,
                    },
                    "demo-sd15-b": {
                        "architecture": "sd15",
                        "source": {"folder": str(demo_models / "demo-sd15")},
                        "pool": "flux",
                    },
                    "demo-flux": {
                        "architecture": "flux",
                        "source": {"folder": str(demo_models / "demo-flux")},
                        "pool": "flux",
                        "preload": True,
                    },
                }
            }
        )
    )
    server = RedisServer(root / "redis").start()
    stack = Stack(server, registry, root)
    try:
        stack.start(workers=[{"IMAGEGEN_POOL": "sd"}, {"IMAGEGEN_POOL": "flux"}])
        yield stack
    finally:
        stack.stop()
        server.stop()


def test_pixel_handoff_crosses_worker_pools(split_stack: Stack) -> None:
    spec = {
        "prompt": "a castle",
        "seed": 3,
        "width": 128,
        "height": 128,
        "stages": [
            {"model": "demo-sd15", "steps": 6},
            {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "scale": 2, "steps": 4},
        ],
    }
    with split_stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope["error"]
        sd_stage, flux_stage = envelope["trace"]
        assert sd_stage["worker"] != flux_stage["worker"]
        models = {m["name"]: m for m in client.get("/models").json()}

        def serving(model: str) -> list[str]:  # as the trace names them, without host and pid
            return [public_worker_name(w) for w in models[model]["workers_serving"]]

        assert sd_stage["worker"] in serving("demo-sd15")
        assert flux_stage["worker"] in serving("demo-flux")
        assert models["demo-sd15"]["workers_serving"] != models["demo-flux"]["workers_serving"]
        assert flux_stage["input"] == "pixels"
        _, image = fetch_png(client, envelope["images"][0]["url"])
        assert image.size == (256, 256)
        # Same job again: the same bytes, although it crossed hosts' worth of processes.
        again = submit_and_wait(client, spec)
        assert (
            fetch_png(client, again["images"][0]["url"])[0]
            == fetch_png(client, envelope["images"][0]["url"])[0]
        )


def test_latent_handoff_across_pools_is_refused(split_stack: Stack) -> None:
    spec = {
        "prompt": "x",
        "width": 128,
        "height": 128,
        "stages": [
            {"model": "demo-sd15"},
            {"model": "demo-sd15-b", "mode": "hires", "handoff": "latent", "scale": 2},
        ],
    }
    with split_stack.client() as client:
        response = client.post("/jobs", json=spec)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "handoff_across_pools"
    assert error["loc"] == ["body", "stages", 1, "handoff"]
