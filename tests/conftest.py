"""Shared fixtures: the demo models, a private redis-server, the gateway, real worker processes.

Every Redis here is one the tests started themselves, so flushing it is safe.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from app.settings import GatewaySettings
from demo.models import DEMO_MODELS, ensure_built
from devstack.processes import (
    start_gateway,
    start_webhook_worker,
    start_worker,
    stop,
    wait_for_gateway,
    wait_for_rq_worker,
    wait_for_workers,
)
from devstack.redis_server import RedisServer, free_port
from jobs.settings import REPO_ROOT
from jobs.webhooks import WEBHOOK_QUEUE
from tests.receiver import WEBHOOK_SECRET

MODELS_DIR = REPO_ROOT / ".models"

# One thread per torch op, set before any test module imports torch (this file imports none): on
# the tiny demo models a second thread buys nothing, and with two test processes on two cores
# each op's threads wait on the other process's (`make test-fast` took twice the CPU, 1.5x the
# time). Worker processes the stack tests start inherit it, as their own torch_threads setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def demo_models() -> Path:
    ensure_built(MODELS_DIR)
    return MODELS_DIR


@pytest.fixture(scope="session")
def registry_file(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, LoRA, upscalers, VAEs, embeddings and ControlNets, plus `demo-broken`: an
    SD1.5 entry whose files are corrupt."""
    root = tmp_path_factory.mktemp("registry")
    broken = root / "broken-sd15"
    broken.mkdir()
    (broken / "model_index.json").write_text("{ this is not json")
    models = {
        name: {
            "architecture": name.removeprefix("demo-"),
            "source": {"folder": str(demo_models / name)},
            "preload": True,
        }
        for name in DEMO_MODELS
    }
    models["demo-broken"] = {"architecture": "sd15", "source": {"folder": str(broken)}}
    # The tiny inpainting checkpoints (demo/inpainting.py), as make run's.
    for arch in ("sd15", "sdxl"):
        models[f"demo-{arch}-inpainting"] = {
            "architecture": arch,
            "variant": "inpainting",
            "source": {"folder": str(demo_models / "demo-inpainting" / arch)},
            "preload": True,
        }
    models["demo-flux-fill"] = {
        "architecture": "flux",
        "variant": "fill",
        "source": {"folder": str(demo_models / "demo-inpainting" / "flux")},
        "preload": True,
    }
    # The demo transformers as quantized single files (demo/quantized.py), as make run's.
    quantized = demo_models / "demo-quantized"
    for name, arch, file in (
        ("demo-flux-q8", "flux", "demo-flux-Q8_0.gguf"),
        ("demo-flux-fp8", "flux", "demo-flux-fp8-e4m3fn.safetensors"),
        ("demo-flux-nf4", "flux", "demo-flux-bnb-nf4.safetensors"),
        ("demo-sd35-q8", "sd35", "demo-sd35-Q8_0.gguf"),
        ("demo-sd35-fp8-scaled", "sd35", "demo-sd35-fp8-scaled.safetensors"),
    ):
        models[name] = {
            "architecture": arch,
            "source": {
                "single_file": str(quantized / file),
                "config": str(demo_models / f"demo-{arch}"),
            },
            "preload": True,
        }
    models["demo-flux-q8-t5q8"] = {  # both quantized, as most people run Flux
        **models["demo-flux-q8"],
        "source": {
            **models["demo-flux-q8"]["source"],
            "t5": str(quantized / "demo-t5-encoder-Q8_0.gguf"),
        },
    }
    # A pool no worker serves: its jobs stay queued (for cancel and janitor tests).
    models["demo-sd15-unserved"] = {
        "architecture": "sd15",
        "source": {"folder": str(demo_models / "demo-sd15")},
        "pool": "unserved",
    }
    # The demo SD1.5 LoRA under another name: built with the demo models, copied, not rebuilt
    # (that needs torch, which this process, pytest-xdist's controller among them, need not load).
    lora = root / "loras" / "detail-sd15.safetensors"
    lora.parent.mkdir()
    shutil.copyfile(demo_models / "demo-loras" / "demo-sd15-lora.safetensors", lora)
    loras = {"detail-sd15": {"architecture": "sd15", "file": str(lora)}}
    path = root / "registry.yaml"
    upscalers = {
        f.stem: {"file": str(f)}
        for f in sorted((demo_models / "demo-upscalers").glob("*.safetensors"))
    }
    vaes = {
        f"{model}-vae": {
            "latent_space": space,
            "file": str(demo_models / "demo-vaes" / f"{model}-vae.safetensors"),
        }
        for model, space in (("demo-sd15", "sd1"), ("demo-sdxl", "sdxl"))
    }
    embedded = demo_models / "demo-embeddings"
    embeddings = {  # the SDXL one's layout shows it, the tiny SD1.5 one's does not
        "demo-sd15-emb": {
            "architecture": "sd15",
            "file": str(embedded / "demo-sd15-emb.safetensors"),
        },
        "demo-sdxl-emb": {"file": str(embedded / "demo-sdxl-emb.safetensors")},
    }
    controlnets = {  # the tiny ones' widths show no architecture; their configs' class does
        f"{model}-canny": {
            "architecture": model.removeprefix("demo-"),
            "file": str(demo_models / "demo-controlnets" / f"{model}-canny"),
        }
        for model in ("demo-sd15", "demo-sdxl", "demo-flux")
    }
    # The tiny ones' widths show no architecture; each takes the image_encoder/ beside it.
    ip_adapters = {
        f"{model}-ip": {
            "architecture": model.removeprefix("demo-"),
            "file": str(demo_models / "demo-ip-adapters" / f"{model}-ip.safetensors"),
        }
        for model in ("demo-sd15", "demo-sdxl")
    }
    presets = {"sd15-flux-hires": {"description": "the article's workflow", "stages": [
        {"model": "demo-sd15"},
        {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "steps": 2},
    ]}}  # fmt: skip
    sections = {"models": models, "loras": loras, "upscalers": upscalers, "vaes": vaes,
                "embeddings": embeddings, "controlnets": controlnets,
                "ip_adapters": ip_adapters, "presets": presets,
                # not the first by name (demo-broken, which cannot load)
                "a1111_default_checkpoint": "demo-sd15"}  # fmt: skip
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    """Database 1 of the private server, empty for each test (the stack uses database 0)."""
    client = Redis(port=redis_server.port, db=1)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def gateway_settings(
    redis: Redis, redis_server: RedisServer, registry_file: Path
) -> GatewaySettings:
    return GatewaySettings(
        redis_url=f"redis://127.0.0.1:{redis_server.port}/1",
        registry=registry_file,
        max_pixels=1024 * 1024,
        allowed_hosts=["testserver"],  # the name the in-process test client sends
    )


@pytest.fixture
def client(gateway_settings: GatewaySettings) -> Iterator[TestClient]:
    """The gateway in-process, on a real Redis, with no worker: jobs stay queued."""
    with TestClient(create_app(gateway_settings)) as test_client:
        yield test_client


class Stack:
    """A private Redis, real worker processes and the gateway under uvicorn."""

    def __init__(self, redis_server: RedisServer, registry: Path, logs: Path) -> None:
        self.redis_server = redis_server
        self.redis_url = redis_server.url
        self.redis = Redis.from_url(self.redis_url)
        self.registry = registry
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "REDIS_URL": self.redis_url,
            "IMAGEGEN_REGISTRY": str(registry),
            "IMAGEGEN_MAX_PIXELS": str(1024 * 1024),
            # The webhook tests run a receiver on loopback, which production refuses.
            "IMAGEGEN_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "IMAGEGEN_WEBHOOK_ALLOW_PRIVATE": "true",
            "IMAGEGEN_WEBHOOK_FIRST_BACKOFF_S": "0.2",
            # Tests run two at a time on two cores (pytest-xdist): one torch thread per worker
            # process, or they oversubscribe the cores and every job runs several times slower.
            "IMAGEGEN_TORCH_THREADS": "1",
            # What a GPU host runs (a CPU-only worker stores inline by default): the crash
            # tests of storing off the critical path need it.
            "IMAGEGEN_FINISH_IN_BACKGROUND": "true",
        }
        self.workers: list[subprocess.Popen[bytes]] = []
        self.webhooks: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None

    def start_worker(self, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        index = len(self.workers)
        process = start_worker({**self.env, **env}, self.logs / f"worker-{index}.log")
        self.workers.append(process)
        if wait:
            wait_for_workers(self.redis, [process])
        return process

    def start_webhook_worker(self) -> subprocess.Popen[bytes]:
        """The webhook worker (replacing one that died or was killed)."""
        self.webhooks = start_webhook_worker(self.env, self.logs / "webhooks.log")
        wait_for_rq_worker(self.redis, self.webhooks, WEBHOOK_QUEUE)
        return self.webhooks

    def start(self, workers: list[dict[str, str]] | None = None) -> Stack:
        try:
            started = [self.start_worker(wait=False, **env) for env in (workers or [{}])]
            self.start_webhook_worker()
            self.gateway = start_gateway(self.env, self.port, self.logs / "gateway.log")
            wait_for_gateway(self.url, self.gateway)
            wait_for_workers(self.redis, started)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        others = [p for p in (self.webhooks, self.gateway) if p is not None]
        for process in [*self.workers, *others]:
            stop(process)


@pytest.fixture(scope="session")
def stack(
    redis_server: RedisServer, registry_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    running = Stack(redis_server, registry_file, tmp_path_factory.mktemp("logs")).start()
    yield running
    running.stop()
