"""Starting the gateway and workers as real processes, and waiting until they serve."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from redis import Redis
from rq import Worker

from jobs.presence import live_workers
from jobs.settings import REPO_ROOT


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")  # no hub here; never wait on one
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return env


def _spawn(
    argv: list[str], env: Mapping[str, str], log: Path, cwd: Path = REPO_ROOT
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, cwd=cwd, env=_env(env), stdout=out, stderr=subprocess.STDOUT)


def start_worker(
    env: Mapping[str, str], log: Path, checkout: Path = REPO_ROOT
) -> subprocess.Popen[bytes]:
    """A generation worker running `checkout`'s code (another one: bench.lone_job's baseline)."""
    return _spawn([sys.executable, "-m", "workers"], env, log, checkout)


def start_webhook_worker(env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    return _spawn([sys.executable, "-m", "jobs.webhook_worker"], env, log)


def wait_for_rq_worker(
    redis: Redis, process: subprocess.Popen[bytes], queue: str, timeout: float = 30
) -> None:
    """Wait until `process` is a registered RQ worker of `queue`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}")
        names = [w.name for w in Worker.all(connection=redis) if queue in w.queue_names()]
        if any(f".{process.pid}." in name for name in names):
            return
        time.sleep(0.1)
    raise RuntimeError(f"no worker of {queue} registered in {timeout} s")


def start_gateway(
    env: Mapping[str, str],
    port: int,
    log: Path,
    processes: int = 1,
    runner: Sequence[str] = ("-m", "uvicorn"),
) -> subprocess.Popen[bytes]:
    """Run the gateway under uvicorn; `runner` replaces `-m uvicorn` (a script that takes
    uvicorn's arguments, as the tests' import guard does)."""
    app = ["app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)]
    argv = [sys.executable, *runner, *app, "--log-level", "warning"]
    if processes > 1:
        argv += ["--workers", str(processes)]
    return _spawn(argv, env, log)


def wait_for_gateway(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gateway at {url} did not come up in {timeout} s")


def wait_for_workers(
    redis: Redis, processes: list[subprocess.Popen[bytes]], timeout: float = 120
) -> None:
    """Wait until each worker process has its models resident and announces itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in processes:
            if p.poll() is not None:
                raise RuntimeError(f"worker exited with {p.returncode}")
        live = {w.name.split(".")[-2] for w in live_workers(redis)}
        if all(str(p.pid) in live for p in processes):
            return
        time.sleep(0.1)
    raise RuntimeError(f"workers did not announce themselves in {timeout} s")


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
