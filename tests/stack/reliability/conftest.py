"""A stack for fault tests: its own Redis with AOF (as compose runs it), two workers with short
heartbeats, so that kills are noticed in seconds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack.redis_server import RedisServer
from tests.conftest import Stack

FAST = {
    # Heartbeats every second, abandoned after 6 s of silence: a starved thread on a busy
    # 2-core machine can miss a few beats without its job being retried needlessly.
    "IMAGEGEN_HEARTBEAT_S": "1",
    "IMAGEGEN_HEARTBEAT_TTL_S": "6",
    "IMAGEGEN_SWEEP_INTERVAL_S": "1",
    # Two workers on two cores: one torch thread each. With torch's default (one per core)
    # they oversubscribe the CPU and each job runs about five times slower.
    "IMAGEGEN_TORCH_THREADS": "1",
}


@pytest.fixture(scope="package")
def fault_registry(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault-registry")
    corrupt = root / "corrupt-sd15"
    shutil.copytree(demo_models / "demo-sd15", corrupt)
    (corrupt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage" * 1000)
    models = {
        "demo-sd15": {
            "architecture": "sd15",
            "source": {"folder": str(demo_models / "demo-sd15")},
            "preload": True,
        },
        # Weights that do not load: the job fails with model_unavailable.
        "corrupt-weights": {"architecture": "sd15", "source": {"folder": str(corrupt)}},
        # Loads, then raises inside diffusers at the first step (a refiner run as a base model).
        "raises-in-diffusers": {
            "architecture": "sdxl",
            "source": {"folder": str(demo_models / "demo-sdxl-refiner")},
        },
    }
    path = root / "registry.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


@pytest.fixture(scope="package")
def fault_stack(fault_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("faults")
    server = RedisServer(root / "redis", appendonly=True).start()
    stack = Stack(server, fault_registry, root)
    stack.env.update(FAST)
    try:
        stack.start(workers=[{}, {}])
        yield stack
    finally:
        stack.stop()
        server.stop()
