"""The worker container's health check: healthy only while this host's worker is alive in Redis,
and cheap enough to run every few seconds (no torch)."""

from __future__ import annotations

import socket
import subprocess
import sys

from redis import Redis

from jobs.presence import WorkerPresence, publish, withdraw
from workers.healthcheck import alive
from workers.settings import WorkerSettings


def presence(name: str) -> WorkerPresence:
    return WorkerPresence(name=name, pool="default", models=[], loaded=[], resident_mib=0, loads=0)


def test_healthy_only_while_this_hosts_worker_is_alive(redis: Redis) -> None:
    settings = WorkerSettings()
    publish(redis, presence("another-host.7.abcdef"), ttl_s=30)
    assert not alive(settings, redis)
    mine = f"{socket.gethostname()}.12.abcdef"
    publish(redis, presence(mine), ttl_s=30)
    assert alive(settings, redis)
    withdraw(redis, mine)
    assert not alive(settings, redis)


def test_the_check_imports_no_torch() -> None:
    probe = "import sys, workers.healthcheck; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
