"""`make run`: the service on its embedded defaults.

Builds the demo models if missing, starts a private redis-server unless REDIS_URL is set, then the
gateway, one worker and two webhook workers; stops what it started on Ctrl-C. The Redis URL it uses
is in .run/redis-url while it runs, for `rq info --url $(cat .run/redis-url)` and rq-dashboard.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

from redis import Redis

from demo.models import ensure_built
from devstack.processes import (
    start_gateway,
    start_webhook_worker,
    start_worker,
    stop,
    wait_for_gateway,
    wait_for_workers,
)
from devstack.redis_server import RedisServer
from jobs.settings import REPO_ROOT


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def private_redis(run_dir: Path) -> RedisServer:
    """`make run`'s own Redis, with AOF (fsync every second) in .run/redis, as docker-compose.yml
    runs it: queued jobs survive a restart of `make run`."""
    return RedisServer(run_dir / "redis", appendonly=True)


def write_redis_url(run_dir: Path, url: str) -> Path:
    """The Redis URL `make run` uses, where RQ's tools can read it (the private server's port is
    a free one, another each time)."""
    path = run_dir / "redis-url"
    path.write_text(f"{url}\n")
    return path


def remove_redis_url(path: Path, url: str) -> None:
    """Gone with the stack, unless another `make run` has written its own since."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text().strip() == url:
            path.unlink()


def main(run_dir: Path = REPO_ROOT / ".run") -> int:
    port = int(os.environ.get("PORT", "8000"))
    if port_taken(port):
        # Said here, not left to the gateway's log: uvicorn would exit with code 3.
        print(
            f"port {port} is already in use on 127.0.0.1; pick another: make run PORT={port + 1}",
            file=sys.stderr,
        )
        return 2
    run_dir.mkdir(exist_ok=True)
    for folder in ensure_built(REPO_ROOT / ".models"):
        print(f"built demo model {folder.name}")
    redis_server = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis_server = private_redis(run_dir).start()
        redis_url = redis_server.url
    url_file = write_redis_url(run_dir, redis_url)
    rq_info = f"rq info --url $(cat {url_file})"
    started = "started a private redis-server" if redis_server else "from REDIS_URL"
    print(f"Redis: {redis_url} ({started}; written to {url_file}: {rq_info})")
    env = {"REDIS_URL": redis_url}
    worker = start_worker(env, run_dir / "worker.log")
    # Two webhook workers: a receiver that answers slowly holds one (jobs.webhooks).
    webhooks = [start_webhook_worker(env, run_dir / f"webhooks-{i}.log") for i in (0, 1)]
    gateway = start_gateway(env, port, run_dir / "gateway.log")
    try:
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        print("waiting for the worker to load its models…")
        wait_for_workers(Redis.from_url(redis_url), [worker])
        print(
            f"\n  Swagger UI: http://127.0.0.1:{port}/docs\n"
            f"  Redis: {redis_url} (in {url_file}: {rq_info})\n"
            f"  logs: {run_dir}/gateway.log, worker.log, webhooks-*.log\n  Ctrl-C stops.\n"
        )
        while all(p.poll() is None for p in (gateway, worker, *webhooks)):
            time.sleep(0.5)
        print("a process exited; see the logs above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        for process in (gateway, worker, *webhooks):
            stop(process)
        if redis_server:
            redis_server.stop()
        remove_redis_url(url_file, redis_url)
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def cli(run_dir: Path = REPO_ROOT / ".run") -> int:
    """`python -m devstack`: SIGTERM stops the stack as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _interrupt)
    return main(run_dir)


if __name__ == "__main__":
    sys.exit(cli())
