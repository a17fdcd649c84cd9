"""The openai npm SDK, unmodified (tests/npm: pinned in its package-lock, installed by `make
test`), against the running stack: generate, edit, list models, and a refusal read as its own
BadRequestError at the field."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from jobs.settings import REPO_ROOT
from tests.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]
NPM = REPO_ROOT / "tests" / "npm"


def test_the_openai_npm_sdk_generates_edits_and_lists(stack: Stack) -> None:
    node = shutil.which("node")
    assert node, "node is needed (.ci/run installs nodejs)"
    assert (NPM / "node_modules" / "openai").is_dir(), "run `make npm-clients` (make test does)"
    ran = subprocess.run([node, str(NPM / "openai_images.mjs"), stack.url], capture_output=True,
                         text=True, timeout=300, cwd=NPM)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert len(got["generated"]) == 2
    assert all(size > 100 for size in got["generated"])  # PNGs
    assert got["edited"] == ["PNG"]
    assert "demo-sd15" in got["models"]
    assert got["refusal"] == {"status": 400, "param": "size", "code": "size_not_multiple",
                              "name": "BadRequestError"}  # fmt: skip
