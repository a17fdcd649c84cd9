"""`make run`: a port that is taken is said plainly, with the way out, before anything starts;
its private Redis keeps what it holds across a restart."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from redis import Redis

from devstack.__main__ import main, private_redis


def test_a_taken_port_is_named_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("PORT", str(port))
        assert main() == 2
    err = capsys.readouterr().err
    assert f"port {port} is already in use" in err
    assert f"make run PORT={port + 1}" in err


def test_make_runs_redis_keeps_queued_jobs_across_a_restart(tmp_path: Path) -> None:
    """Found by a hostile pass: `make run`'s Redis had neither AOF nor RDB."""
    first = private_redis(tmp_path).start()
    try:
        Redis.from_url(first.url).rpush("rq:queue:imagegen.default", "a-job")
    finally:
        first.stop()
    again = private_redis(tmp_path).start()
    try:
        assert Redis.from_url(again.url).lrange("rq:queue:imagegen.default", 0, -1) == [b"a-job"]
    finally:
        again.stop()
