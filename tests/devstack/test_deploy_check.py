"""make deploy-check's own parts that need no container engine (CI runs the whole check after
`make test`): the override changes only what this machine cannot do, and podman is configured
for a machine without systemd or CAP_SYS_RESOURCE."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack import deploy_check


class _Tagged(yaml.SafeLoader):
    """Reads compose's `!reset` tag (podman-compose and Docker Compose both know it)."""


_Tagged.add_constructor("!reset", lambda loader, node: "!reset")


def test_the_override_only_swaps_the_redis_image_and_drops_the_gpu_reservation() -> None:
    override = yaml.load(deploy_check.OVERRIDE.read_text(), Loader=_Tagged)
    assert override == {
        "services": {
            "redis": {"image": deploy_check.BASE},
            "worker": {"deploy": "!reset"},
        }
    }
    compose = yaml.safe_load(deploy_check.COMPOSE.read_text())
    # What it swaps exists in the real file: a public Redis image and an NVIDIA reservation.
    assert compose["services"]["redis"]["image"].startswith("redis:")
    [device] = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"


def test_podman_is_set_up_for_a_machine_without_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy_check, "STATE", tmp_path / "state")
    monkeypatch.setattr(deploy_check, "CACHE", tmp_path / "cache")
    env = deploy_check.podman_env()
    containers = Path(env["CONTAINERS_CONF"]).read_text()
    assert 'cgroup_manager = "cgroupfs"' in containers
    assert 'runtime = "runc"' in containers
    storage = Path(env["CONTAINERS_STORAGE_CONF"]).read_text()
    # The base image and layers live in the cache: a second run on this machine reuses them.
    assert f'graphroot = "{tmp_path / "cache" / "storage"}"' in storage
