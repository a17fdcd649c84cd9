"""Redis on a network: every process (gateway, worker, webhook worker, health checks) reaches a
Redis that takes TLS only and requires a password, each reading its secrets from files as
compose and Kubernetes mount them (`REDIS_URL_FILE`, `IMAGEGEN_API_KEYS_FILE`,
`IMAGEGEN_WEBHOOK_SECRET_FILE`). The certificate authority is a throwaway one made by openssl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from app.keys import digest
from devstack.processes import (
    start_gateway,
    start_webhook_worker,
    start_worker,
    stop,
    wait_for_gateway,
    wait_for_rq_worker,
    wait_for_workers,
)
from devstack.redis_server import RedisServer, free_port, make_tls_files
from jobs.settings import REPO_ROOT
from jobs.webhooks import WEBHOOK_QUEUE
from tests.helpers import wait_final
from tests.receiver import WEBHOOK_SECRET, Receiver

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

KEY = "ig_networked_key"
JOB = {"prompt": "tls", "width": 64, "height": 64, "stages": [{"model": "demo-sd15", "steps": 2}]}


def test_every_process_runs_on_a_tls_redis_with_a_password_read_from_files(
    registry_file: Path, tmp_path: Path
) -> None:
    server = RedisServer(
        tmp_path / "redis", password="a-long-redis-password", tls=make_tls_files(tmp_path / "tls")
    ).start()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "redis_url").write_text(server.url + "\n")
    (secrets / "api_keys").write_text(json.dumps({"alice": digest(KEY)}))
    (secrets / "webhook_secret").write_text(WEBHOOK_SECRET)
    env = {
        "REDIS_URL_FILE": str(secrets / "redis_url"),
        "IMAGEGEN_API_KEYS_FILE": str(secrets / "api_keys"),
        "IMAGEGEN_WEBHOOK_SECRET_FILE": str(secrets / "webhook_secret"),
        "IMAGEGEN_REGISTRY": str(registry_file),
        "IMAGEGEN_TORCH_THREADS": "1",
        "IMAGEGEN_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback
    }
    redis = Redis.from_url(server.url)
    port = free_port()
    worker = start_worker(env, tmp_path / "worker.log")
    hooks = start_webhook_worker(env, tmp_path / "webhooks.log")
    gateway = start_gateway(env, port, tmp_path / "gateway.log")
    receiver = Receiver()
    try:
        # Nothing reaches it without TLS, or without the password.
        with pytest.raises(ConnectionError):
            Redis(port=server.port, socket_timeout=2).ping()
        with pytest.raises((AuthenticationError, ResponseError)):
            Redis.from_url(server.url.replace(":a-long-redis-password@", "")).set("k", "v")
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        wait_for_workers(redis, [worker])
        wait_for_rq_worker(redis, hooks, WEBHOOK_QUEUE)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            headers={"Authorization": f"Bearer {KEY}"},
        ) as http:
            created = http.post("/jobs", json={**JOB, "webhook_url": receiver.url})
            assert created.status_code == 202, created.text
            envelope = wait_final(http, created.json()["id"])
            assert envelope["status"] == "succeeded", envelope["error"]
            assert http.get("/readyz").json()["workers"] == 1
        [delivery] = receiver.wait(1)
        assert json.loads(delivery["body"])["id"] == envelope["id"]
        for check in ([], ["--webhooks"]):  # the containers' health checks, on the same files
            command = [sys.executable, "-m", "workers.healthcheck", *check]
            probe = subprocess.run(
                command, env={"PATH": os.environ["PATH"], **env}, cwd=REPO_ROOT,
                capture_output=True, timeout=60,
            )  # fmt: skip
            assert probe.returncode == 0, probe.stderr.decode()[-2000:]
    finally:
        receiver.close()
        for process in (gateway, worker, hooks):
            stop(process)
        server.stop()
