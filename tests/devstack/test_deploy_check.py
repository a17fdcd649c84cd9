"""make deploy-check's own parts that need no container engine (CI runs the whole check after
`make test`): the override changes only what this machine cannot do, podman is configured
for a machine without systemd or CAP_SYS_RESOURCE, and a machine without podman, runc or
mmdebstrap is told what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devstack import deploy_check
from jobs.settings import REPO_ROOT


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


def _deploy_check(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """`make deploy-check`'s entry point, run with only `path` on PATH."""
    env = {"PATH": str(path), "PYTHONPATH": str(REPO_ROOT), "IMAGEGEN_DEPLOY_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "devstack.deploy_check"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_machine_without_podman_is_told_what_to_install_not_shown_a_traceback(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = _deploy_check(empty, tmp_path / "cache")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output
    assert "podman, runc and mmdebstrap are not installed" in output, output
    assert (
        "apt-get install -y --no-install-recommends podman containernetworking-plugins "
        "golang-github-containernetworking-plugin-dnsname runc mmdebstrap fuse-overlayfs "
        "slirp4netns uidmap" in output
    ), output
    assert not (tmp_path / "cache").exists()  # said before anything was done


def test_only_what_is_missing_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.mkdir()
    for tool in ("podman", "runc", "fuse-overlayfs", "slirp4netns", "newuidmap"):
        (path / tool).write_text("#!/bin/sh\nexit 1\n")
        (path / tool).chmod(0o755)
    done = _deploy_check(path, tmp_path / "cache")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output
    assert "mmdebstrap is not installed" in output, output
    assert output.rstrip().endswith("apt-get install -y --no-install-recommends mmdebstrap")
    assert "podman" not in output
    assert " runc" not in output
