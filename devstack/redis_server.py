"""A private redis-server on a free port, owned (and stopped) by whoever started it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from redis import Redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    """A certificate authority and a certificate for 127.0.0.1 it signed (`make_tls_files`)."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, with openssl (for tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    ca_key, csr, ext = folder / "ca.key", folder / "server.csr", folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    key = ["-newkey", "rsa:2048", "-nodes"]
    openssl("req", "-x509", *key, "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(ca_key), "-out", str(files.ca))  # fmt: skip
    openssl("req", *key, "-subj", "/CN=127.0.0.1", "-keyout", str(files.key), "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext),
            "-out", str(files.cert))  # fmt: skip
    return files


class RedisServer:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        appendonly: bool = False,
        fsync: str = "everysec",
        password: str | None = None,
        tls: TlsFiles | None = None,
        replica_of: RedisServer | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.fsync = fsync
        self.password = password  # `requirepass`: every client must AUTH
        self.tls = tls  # TLS only: the plain port is closed
        self.replica_of = replica_of  # a replica of that server (the same password, no TLS)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"

    def _security(self) -> list[str]:
        # masterauth too: any node may be made a replica of another (Sentinel does so).
        args = (
            ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        )
        if self.tls is not None:
            args += [
                "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        return args

    def _replication(self) -> list[str]:
        # Any node may become the primary: none waits its default 5 s before a replica's sync.
        args = ["--repl-diskless-sync-delay", "0"]
        if self.replica_of is None:
            return args
        return [*args, "--replicaof", "127.0.0.1", str(self.replica_of.port)]

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                self.fsync,
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
                *self._security(),
                *self._replication(),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = Redis.from_url(self.url)
        while True:
            try:
                client.ping()
                return self
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.workdir}") from None
                time.sleep(0.02)

    def wait_in_sync(self, timeout: float = 10) -> None:
        """A replica: wait until it has its primary's data and follows its writes."""
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica did not sync in {timeout} s; see {self.workdir}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: gone at once, whatever it had not yet replicated lost with it."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
