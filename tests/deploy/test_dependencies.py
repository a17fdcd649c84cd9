"""One dependency set: pyproject.toml says what the code needs, constraints.txt pins what CI
tested, and every install (Makefile, CI, both Dockerfiles) takes its versions from the pins."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from jobs.settings import REPO_ROOT

LOCK = REPO_ROOT / "constraints.txt"
DOCKER = REPO_ROOT / "deploy" / "docker"


def pins() -> dict[str, Version]:
    found = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            found[canonicalize_name(name)] = Version(pinned)
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["worker"] + extras["dev"]]


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_declared_dependency_is_pinned_within_its_range(requirement: Requirement) -> None:
    pinned = pins().get(canonicalize_name(requirement.name))
    assert pinned is not None, f"{requirement.name} is not in constraints.txt: run `make lock`"
    assert requirement.specifier.contains(pinned, prereleases=True), (
        f"constraints.txt pins {requirement.name}=={pinned}, outside pyproject's {requirement}"
    )


@pytest.mark.parametrize("package", ["torch", "diffusers", "transformers", "fastapi", "rq"])
def test_ci_runs_the_pinned_versions(package: str) -> None:
    installed = Version(version(package))
    assert installed.public == str(pins()[package]), f"{package} {installed} is not the pin"


def test_torch_floor_is_what_diffusers_and_transformers_need() -> None:
    [torch] = [r for r in declared() if r.name == "torch"]
    assert not torch.specifier.contains("2.5.1"), "diffusers 0.42 fails at import below 2.6"
    assert torch.specifier.contains("2.6.0")


@pytest.mark.parametrize("dockerfile", ["api.Dockerfile", "worker.Dockerfile"])
def test_every_pip_install_in_the_images_uses_the_pins(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    assert "COPY constraints.txt" in text
    installs = re.findall(r"pip install[^\n]*", text)
    assert installs
    for install in installs:
        assert "-c constraints.txt" in install, install
    # No version is written in a Dockerfile: the pins are the only place.
    assert not re.search(r"torch==|diffusers==|transformers==", text)


def test_the_makefile_installs_with_the_pins_and_takes_torch_from_them() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "LOCK   := constraints.txt" in makefile
    assert "-c $(LOCK)" in makefile
    assert "TORCH  ?= $(shell grep '^torch==' $(LOCK))" in makefile
