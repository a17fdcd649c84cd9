"""What can be checked of the deployment without a Docker engine: the compose file against the
Compose specification, the Dockerfiles with hadolint, and that the deploy section of
docs/operations.md names commands and settings that exist (its settings table:
tests/test_readme_and_docs.py)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import GatewaySettings
from contract.registry import ModelRegistry
from jobs.settings import REPO_ROOT, SETTING_NAMES, TOOLING_NAMES
from workers.settings import WorkerSettings

DOCKERFILES = sorted((REPO_ROOT / "deploy" / "docker").glob("*.Dockerfile"))
COMPOSE = REPO_ROOT / "docker-compose.yml"


def tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(path).exists(), f"{name} is not installed (make install)"
    return path


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


WORKER_HOST = REPO_ROOT / "deploy" / "compose.worker-host.yml"
REDIS_PUBLISHED = REPO_ROOT / "deploy" / "compose.redis-published.yml"


@pytest.mark.parametrize("path", [COMPOSE, WORKER_HOST, REDIS_PUBLISHED], ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path: Path) -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_worker_host_runs_the_primarys_worker_against_the_primarys_redis(
    compose: dict[str, Any],
) -> None:
    """deploy/compose.worker-host.yml: the same worker, environment and secret as the primary
    host's, with no Redis of its own: REDIS_URL must name the primary's."""
    host: dict[str, Any] = yaml.safe_load(WORKER_HOST.read_text())
    assert list(host["services"]) == ["worker"]
    worker = host["services"]["worker"]
    primary = compose["services"]["worker"]
    assert set(primary["environment"]) <= set(worker["environment"])
    assert worker["environment"]["REDIS_URL"].startswith("${REDIS_URL:?")
    for same in ("IMAGEGEN_REDIS_PASSWORD_FILE", "IMAGEGEN_REGISTRY", "IMAGEGEN_PICTURE_STORE"):
        assert worker["environment"][same] == primary["environment"][same], same
    assert worker["secrets"] == ["redis_password"]
    assert worker["deploy"] == primary["deploy"]  # a GPU
    assert worker["image"] == compose["x-worker"]["image"]
    # Paths are the compose file's own folder's (deploy/): the files they name exist.
    build = WORKER_HOST.parent / worker["build"]["context"]
    assert (build / worker["build"]["dockerfile"]).is_file()
    registry = worker["volumes"][0].split(":-", 1)[1].split("}", 1)[0]
    assert (WORKER_HOST.parent / registry).is_file()
    secret = host["secrets"]["redis_password"]["file"].split(":-", 1)[1].rstrip("}")
    assert (WORKER_HOST.parent / secret).resolve() == (
        REPO_ROOT / compose["secrets"]["redis_password"]["file"].split(":-", 1)[1].rstrip("}")
    ).resolve()


def test_publishing_redis_takes_an_address_and_adds_nothing_else() -> None:
    published: dict[str, Any] = yaml.safe_load(REDIS_PUBLISHED.read_text())
    assert published["services"] == {
        "redis": {"ports": ["${REDIS_PUBLISH_ADDRESS:?a private address of this host}:6379:6379"]}
    }


def test_redis_persists_and_everything_waits_for_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"]
    assert "yes" in redis["command"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_redis_requires_a_password_every_service_reads_from_one_secret(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert "requirepass" in " ".join(services["redis"]["command"])
    assert "redis_password" in " ".join(services["redis"]["healthcheck"]["test"])
    for name in ("redis", "api", "worker", "webhooks"):
        assert "redis_password" in services[name]["secrets"], name
    for name in ("api", "worker", "webhooks"):
        environment = services[name]["environment"]
        assert environment["IMAGEGEN_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password", name
    assert compose["secrets"]["redis_password"]["file"].startswith("${REDIS_PASSWORD_FILE:-")
    for name in ("api", "worker", "dashboard"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_only_loopback_is_published_by_default_and_redis_never(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["api"]["ports"] == [
        "${IMAGEGEN_PUBLISH:-127.0.0.1}:${IMAGEGEN_PORT:-8000}:8000"
    ]
    # The gateway learns where it is published, and refuses open mode beyond loopback.
    api_env = services["api"]["environment"]
    assert api_env["IMAGEGEN_PUBLISHED_ADDRESS"] == "${IMAGEGEN_PUBLISH:-127.0.0.1}"
    assert api_env["IMAGEGEN_ALLOW_PUBLIC_OPEN_MODE"] == "${IMAGEGEN_ALLOW_PUBLIC_OPEN_MODE:-false}"
    assert services["dashboard"]["ports"] == ["127.0.0.1:9181:9181"]
    assert "ports" not in services["redis"]
    assert "ports" not in compose["x-worker"]


def test_redis_refuses_writes_at_its_limit_instead_of_evicting(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1] == "${REDIS_MAXMEMORY:-4gb}"


def test_workers_have_a_writable_model_cache_and_a_health_check(compose: dict[str, Any]) -> None:
    assert "hf-cache:/var/cache/imagegen" in compose["x-worker"]["volumes"]
    assert "hf-cache" in compose["volumes"]
    worker = (REPO_ROOT / "deploy" / "docker" / "worker.Dockerfile").read_text()
    assert "HF_HOME=/var/cache/imagegen/huggingface" in worker
    assert "workers.healthcheck" in worker
    assert "--create-home" in worker


def test_worker_reserves_a_gpu_and_mounts_models_and_registry_read_only(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    anchor = compose["x-worker"]
    mounts = {v.rsplit(":", 2)[1]: v for v in anchor["volumes"]}
    assert mounts["/models"].endswith(":ro")
    assert mounts["/etc/imagegen/registry.yaml"].endswith(":ro")
    assert compose["services"]["dashboard"]["profiles"] == ["dashboard"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_non_root_and_copy_files_that_exist(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"


def test_api_image_has_no_torch() -> None:
    lines = (REPO_ROOT / "deploy" / "docker" / "api.Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.startswith("#"))
    assert "torch" not in text
    assert "[worker]" not in text
    assert "COPY workers" not in text


def test_dockerignore_keeps_local_state_out_of_images() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".models"} <= set(ignored)


def deploy_section() -> str:
    doc = (REPO_ROOT / "docs" / "operations.md").read_text()
    return doc.split("\n## Deploy on a GPU host\n", 1)[1].split("\n## ", 1)[0]


def test_the_deploy_section_names_settings_that_are_read(compose: dict[str, Any]) -> None:
    section = deploy_section()
    read = {
        f"IMAGEGEN_{name.upper()}"
        for cls in (GatewaySettings, WorkerSettings)
        for name in cls.model_fields
    } | {"REDIS_URL"}
    compose_text = COMPOSE.read_text()
    for variable in set(re.findall(r"\b(?:IMAGEGEN_[A-Z_]+|REDIS_URL|WORKER_GPU)\b", section)):
        # Either a setting the processes read, or a variable docker-compose.yml interpolates.
        assert variable in read or f"${{{variable}" in compose_text, variable


def test_the_deploy_section_names_commands_that_exist() -> None:
    section = deploy_section()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in re.findall(r"`make (\w+)`", section):
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target}"
    for module in re.findall(r"python -m ([\w.]+)", section):
        assert importlib.util.find_spec(module) is not None, module
    for path in re.findall(r"`((?:deploy|docker)[\w./-]+\.(?:ya?ml|Dockerfile))`", section):
        assert (REPO_ROOT / path).exists(), path


@pytest.mark.parametrize(
    ("dockerfile", "packages"),
    [
        ("api.Dockerfile", {"contract", "jobs", "app"}),
        ("worker.Dockerfile", {"contract", "jobs", "workers"}),
    ],
)
def test_each_image_copies_every_layer_its_process_imports(
    dockerfile: str, packages: set[str]
) -> None:
    lines = (REPO_ROOT / "deploy" / "docker" / dockerfile).read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert packages <= copied, f"{dockerfile} lacks {packages - copied}"


def test_a_webhook_worker_runs_beside_the_workers_and_reserves_no_gpu(
    compose: dict[str, Any],
) -> None:
    webhooks = compose["services"]["webhooks"]
    assert webhooks["command"] == ["python", "-m", "jobs.webhook_worker"]
    # Two of them (a slow receiver holds one at most), and no GPU reserved.
    assert webhooks["deploy"] == {"replicas": 2}
    assert webhooks["environment"]["IMAGEGEN_WEBHOOK_SECRET"] == "${IMAGEGEN_WEBHOOK_SECRET:-}"
    assert "--webhooks" in webhooks["healthcheck"]["test"]


def test_the_names_start_up_accepts_are_exactly_the_settings_and_the_tooling() -> None:
    read = {
        f"IMAGEGEN_{name.upper()}"
        for cls in (GatewaySettings, WorkerSettings)
        for name in cls.model_fields
    }
    assert read == SETTING_NAMES
    compose_variables = set(re.findall(r"\$\{(IMAGEGEN_[A-Z0-9_]+)", COMPOSE.read_text()))
    assert compose_variables - SETTING_NAMES <= TOOLING_NAMES


def test_the_containers_registry_serves_the_demo_components_make_run_serves() -> None:
    """deploy/registry.docker.yaml reads ./.models at /models: the same LoRA, VAE and embedding
    files, under the same names, of the same architectures and latent spaces."""

    def components(registry: str, models: Path) -> dict[str, tuple[str, Path]]:
        found = ModelRegistry.load(REPO_ROOT / "deploy" / registry)
        entries = [
            *((n, e.architecture, e.file) for n, e in found.loras.items()),
            *((n, e.latent_space, e.file) for n, e in found.vaes.items()),
            *((n, e.architecture, e.file) for n, e in found.embeddings.items()),
        ]
        return {n: (kind, file.relative_to(models)) for n, kind, file in entries}

    demo = components("registry.demo.yaml", REPO_ROOT / ".models")
    assert set(demo) == {
        "demo-sd15-lora", "demo-flux-lora", "demo-sd15-vae", "demo-sdxl-vae", "demo-sd15-emb",
        "demo-sdxl-emb",
    }  # fmt: skip
    assert components("registry.docker.yaml", Path("/models")) == demo
