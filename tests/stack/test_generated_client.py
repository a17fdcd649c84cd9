"""A client generated from the served OpenAPI document types every answer and runs the whole flow.

openapi-python-client (software nobody here wrote) generates `imagegen_client` from the running
gateway's /openapi.json; the generator must print no warning (a warning means an answer it could
not type and left out). `client_usage.py` then passes `mypy --strict` against the generated
package and runs against the stack: models, submit, poll, PNG, a latent-handoff refusal read as a
typed 422, cancel, 404.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

BIN = Path(sys.executable).parent
USAGE = Path(__file__).with_name("client_usage.py")
# image/png read as bytes: the generator types only JSON, text and octet-stream bodies.
CONFIG = "content_type_overrides:\n  image/png: application/octet-stream\n"


def run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_a_generated_client_types_every_answer_and_runs_the_flow(
    stack: Stack, tmp_path: Path
) -> None:
    document = httpx.get(f"{stack.url}/openapi.json").json()
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    (tmp_path / "config.yml").write_text(CONFIG)

    generated = run(
        BIN / "openapi-python-client",
        "generate",
        "--path",
        tmp_path / "openapi.json",
        "--config",
        tmp_path / "config.yml",
        "--meta",
        "none",
        "--output-path",
        tmp_path / "imagegen_client",
    )
    assert "warning" not in generated.lower(), generated

    path = {"MYPYPATH": str(tmp_path), "PYTHONPATH": str(tmp_path)}
    checked = run(BIN / "mypy", "--strict", "--no-incremental", "--config-file=", USAGE, env=path)
    assert "Success" in checked, checked
    ran = run(sys.executable, USAGE, stack.url, env=path)
    assert "every call typed" in ran
