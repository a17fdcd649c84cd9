"""Redis Sentinel on loopback, for the failover test: sentinels (redis-server in sentinel mode)
that watch a primary and promote its replica when it dies."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis

from devstack.redis_server import RedisServer, free_port


class SentinelServer:
    """One sentinel watching `primary` under `master`. It needs a config file it may rewrite
    (sentinels record what they learn there). `down_after_ms`: how long the primary may be
    silent before this sentinel calls it down; a failover follows once `quorum` agree."""

    def __init__(
        self,
        workdir: Path,
        primary: RedisServer,
        master: str = "imagegen",
        quorum: int = 2,
        down_after_ms: int = 1000,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.primary = primary
        self.master = master
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        password = self.primary.password
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.workdir}",
            f"logfile {self.workdir / 'sentinel.log'}",
            f"sentinel monitor {self.master} 127.0.0.1 {self.primary.port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}",
            f"sentinel failover-timeout {self.master} 10000",
            f"sentinel parallel-syncs {self.master} 1",
        ]
        if password:  # the nodes' password, and this sentinel's own (clients use the same)
            lines += [f"sentinel auth-pass {self.master} {password}", f"requirepass {password}"]
        return "\n".join(lines) + "\n"

    def start(self) -> SentinelServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "sentinel.conf"
        config.write_text(self._config())
        self.process = subprocess.Popen(
            [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL
        )
        client = Redis(port=self.port, password=self.primary.password, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"sentinel did not start; see {self.workdir}") from None
                time.sleep(0.02)

    def primary_port(self) -> int | None:
        """The port of the primary this sentinel names now (None: it names none)."""
        client = Redis(port=self.port, password=self.primary.password, socket_timeout=1)
        try:
            address = client.sentinel_get_master_addr_by_name(self.master)
        finally:
            client.close()
        return int(address[1]) if isinstance(address, (tuple, list)) else None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
