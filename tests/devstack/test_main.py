"""`make run`: a port that is taken is said plainly, with the way out, before anything starts;
its private Redis keeps what it holds across a restart, and its URL is in .run/redis-url while
the stack runs."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from redis import Redis

from devstack.__main__ import main, private_redis
from devstack.redis_server import free_port
from jobs.settings import REPO_ROOT


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


@pytest.mark.stack
def test_make_run_writes_its_redis_url_for_rq_and_removes_it_when_stopped(
    tmp_path: Path, demo_models: Path
) -> None:
    """The private Redis is on a free port: `rq info` and rq-dashboard find it in .run/."""
    run_dir = tmp_path / ".run"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PORT=str(free_port()), PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO_ROOT))
    code = "import sys, pathlib, devstack.__main__ as m; sys.exit(m.cli(pathlib.Path(sys.argv[1])))"
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stdout or ():
            lines.put(line)
        lines.put("")  # it exited

    reader = threading.Thread(target=read)
    reader.start()
    said: list[str] = []
    try:
        while not said or "Ctrl-C stops." not in said[-1]:
            said.append(lines.get(timeout=180))
            assert said[-1], f"make run exited: {''.join(said)}"
        url_file = run_dir / "redis-url"
        url = url_file.read_text().strip()
        assert url.startswith("redis://127.0.0.1:")
        rq_info = f"rq info --url $(cat {url_file})"
        written = f"(started a private redis-server; written to {url_file}: {rq_info})"
        assert f"Redis: {url} {written}\n" in said
        # As printed, in a shell: RQ's own tool lists make run's worker on its queue.
        rq = Path(sys.executable).parent
        info = subprocess.run(
            ["bash", "-c", rq_info], env={**env, "PATH": f"{rq}:{env['PATH']}"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert info.returncode == 0, info.stderr
        assert "imagegen.default" in info.stdout, info.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        stopped = process.wait(60)
        reader.join()
        assert process.stdout is not None
        process.stdout.close()
    assert stopped == 0, "".join(said)
    assert not (run_dir / "redis-url").exists()
