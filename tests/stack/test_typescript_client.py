"""The TypeScript client openapi-typescript generates with its defaults, from the committed
document, through openapi-fetch (both pinned in tests/npm): `tsc --strict` accepts a whole job's
life sending only what the job needs (request fields with defaults are optional: app/
request_schemas.py), and node runs it against the stack."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from jobs.settings import REPO_ROOT
from tests.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]
NPM = REPO_ROOT / "tests" / "npm"
TS = NPM / "ts"


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=TS)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def test_the_generated_typescript_client_types_and_runs_a_job(stack: Stack) -> None:
    node = shutil.which("node")
    assert node, "node is needed (.ci/run installs nodejs)"
    bins = NPM / "node_modules" / ".bin"
    assert (bins / "tsc").exists(), "run `make npm-clients` (make test does)"
    run(str(bins / "openapi-typescript"), str(REPO_ROOT / "openapi" / "openapi.json"),
        "-o", str(TS / "api.d.ts"))  # fmt: skip
    run(str(bins / "tsc"), "-p", "tsconfig.json")  # --strict: tsconfig.json says so
    got = json.loads(run(node, str(TS / "out" / "job_life.js"), stack.url).strip().splitlines()[-1])
    assert got["status"] == "succeeded"
    assert got["bytes"] > 100
    assert got["steps"] == 2
    assert got["a1111"] == 1
