"""The private redis-server that `make run` and the tests start: on loopback, stopped by its
owner, and with AOF it keeps what was written across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from devstack.redis_server import RedisServer


def test_it_serves_on_loopback_until_stopped(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    client = Redis.from_url(server.url)
    assert server.url.startswith("redis://127.0.0.1:")
    assert client.ping()
    server.stop()
    with pytest.raises(RedisConnectionError):
        Redis.from_url(server.url).ping()


def test_with_aof_a_restart_keeps_what_was_written(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=True, fsync="always").start()
    try:
        Redis.from_url(server.url).set("queued", "job-1")
        server.stop()
        server.start()  # same port and folder
        assert Redis.from_url(server.url).get("queued") == b"job-1"
    finally:
        server.stop()
