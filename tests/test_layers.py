"""The layers, read from the source: no module imports from a layer above its own.

    contract  (pure)      <- jobs (Redis, RQ; no torch) <- app (HTTP)
                                                      <- workers (torch, diffusers)
                                                         <- demo (tiny models; tests, make run)

`tests/stack/test_gateway_without_workers.py` proves the same for the running gateway, dynamic
imports and RQ's by-name callbacks included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobs.settings import REPO_ROOT

# layer -> top-level packages its modules may not import
FORBIDDEN = {
    "contract": {"jobs", "app", "workers", "devstack", "demo", "redis", "rq", "fastapi",
                 "starlette", "httpx", "torch", "diffusers", "transformers"},
    "jobs": {"app", "workers", "devstack", "demo", "fastapi", "starlette", "torch", "diffusers",
             "transformers"},
    "app": {"workers", "devstack", "demo", "torch", "diffusers", "transformers", "safetensors"},
    # The service never runs on demo models unless a registry names them.
    "workers": {"app", "devstack", "demo", "fastapi", "starlette"},
    "demo": {"app", "devstack", "jobs", "fastapi", "starlette"},
}  # fmt: skip


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_module_imports_from_a_layer_above(layer: str) -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(imported_packages(path) & FORBIDDEN[layer])
        for path in sorted((REPO_ROOT / layer).rglob("*.py"))
    }
    assert {p: bad for p, bad in offenders.items() if bad} == {}


def test_the_gateway_names_no_worker_code_but_the_job_function() -> None:
    # RQ imports functions named as strings: only the job function itself may name `workers`.
    for layer in ("contract", "jobs", "app"):
        for path in (REPO_ROOT / layer).rglob("*.py"):
            for line in path.read_text().splitlines():
                if '"workers.' in line or "'workers." in line:
                    assert "RUN_JOB" in line, f"{path}: {line.strip()}"


# The worker's wings, each importing only those before it; the process modules (workers/*.py)
# come after them all.
WINGS = ("families", "models", "stages", "segments")


def test_each_worker_wing_imports_only_the_wings_before_it() -> None:
    offenders = []
    for rank, wing in enumerate(WINGS):
        later = {f"workers.{w}" for w in WINGS[rank + 1 :]}
        process = {f"workers.{p.stem}" for p in (REPO_ROOT / "workers").glob("*.py")}
        for path in sorted((REPO_ROOT / "workers" / wing).rglob("*.py")):
            for name in project_imports(path):
                if any(name == m or name.startswith(f"{m}.") for m in later | process):
                    offenders.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert offenders == []
    assert {p.name for p in (REPO_ROOT / "workers").iterdir() if p.is_dir()} - {"__pycache__"} == (
        set(WINGS)
    )


# Modules without a test file of their own, and why.
UNMIRRORED = {
    "workers/settings.py": "fields only; read by tests/workers/test_worker.py",
    "app/openai/schemas.py": "shapes only; the openai SDK reads them in tests/app/openai and "
    "tests/stack/test_openai_client.py",
    "demo/upscalers.py": "its files are what tests/workers/models/test_upscalers.py loads",
    "demo/controlnets.py": "its folders are what tests/workers/stages/test_setup.py steers "
    "with and tests/workers/models/test_controlnets.py loads",
    "demo/ip_adapters.py": "its files are what tests/workers/stages/test_setup.py steers with "
    "and tests/workers/models/test_ip_adapters.py loads",
    "demo/embeddings.py": "its files are what tests/workers/stages/test_setup.py names in "
    "prompts and tests/app/routes/test_models.py lists",
    "demo/vaes.py": "its files are what tests/workers/models/test_vaes.py and "
    "tests/contract/test_vae_files.py load",
    "demo/layouts.py": "LDM's names for demo files: tests/workers/models/test_vaes.py loads them "
    "beside diffusers' layout, tests/workers/models/test_loading.py as A1111 checkpoints",
    "demo/parts.py": "the demo builders' pieces: tests/demo/test_models.py",
    "demo/sd.py": "demo builders: tests/demo/test_models.py loads what they build",
    "demo/flux.py": "demo builders: tests/demo/test_models.py loads what they build",
    "demo/sd3.py": "demo builders: tests/demo/test_models.py loads what they build",
    "demo/chroma.py": "demo builders: tests/demo/test_models.py loads what they build",
    "workers/segments/gathering.py": "a batch leader's gathering: "
    "tests/workers/segments/test_batching.py",
    "jobs/outage.py": "Redis restarts: tests/stack/reliability/test_faults.py",
    "workers/stages/errors.py": "an exception class; tests/workers/stages/test_chain.py raises it",
    "app/a1111/schemas.py": "fields only; tests/app/a1111/ and the webuiapi tests use them",
    "devstack/processes.py": "starts every process of tests/stack/",
    "devstack/sentinel.py": "the sentinels of tests/jobs/test_redis_client.py and "
    "tests/stack/reliability/test_failover.py",
    "devstack/s3_server.py": "the S3 stand-in of tests/jobs/test_pictures.py and "
    "tests/stack/test_pictures_in_s3.py",
    "jobs/heartbeat_worker.py": "the workers' base: tests/workers/test_worker.py, "
    "tests/stack/test_crash_recovery.py and the webhook kill test exercise it",
}


def has_logic(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body
    )


def test_every_module_with_logic_has_a_test_file_of_the_same_name() -> None:
    missing = []
    for layer in ("contract", "jobs", "app", "workers", "devstack", "demo"):
        for path in sorted((REPO_ROOT / layer).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT)
            if path.name == "__init__.py" or not has_logic(path):
                continue
            if relative.as_posix() in UNMIRRORED:
                continue
            name = "main.py" if path.name == "__main__.py" else path.name
            expected = REPO_ROOT / "tests" / relative.parent / f"test_{name}"
            if not expected.exists():
                missing.append(f"{relative} -> {expected.relative_to(REPO_ROOT)}")
    assert missing == []


def project_imports(path: Path) -> set[str]:
    """The project modules `path` imports anywhere in it (a function-level import, too)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_import_circle_anywhere() -> None:
    modules = {
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for layer in (*FORBIDDEN, "bench")
        for path in (REPO_ROOT / layer).rglob("*.py")
    }
    graph = {
        name: {
            other
            for other in project_imports(path)
            if other in modules and other != name and not name.startswith(f"{other}.")
        }
        for name, path in modules.items()
    }
    circles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                circles.append([*trail[trail.index(other) :], other])
            elif other not in state:
                visit(other, [*trail, other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []
