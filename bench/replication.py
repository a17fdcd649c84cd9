"""P8: what a Redis you can lose costs and how fast it comes back.

    python -m bench.replication

Admission latency: `POST /jobs` one at a time from one keep-alive connection, against two
gateways on one primary with one replica: one answers once the primary has the job (the
default), the other once the replica has it too (IMAGEGEN_REDIS_MIN_REPLICAS=1: Redis' WAIT).
Rounds alternate between them (the machine drifts). Failover: three sentinels watch the primary
(down after 1 s, as the failover test runs them); it is killed with SIGKILL and the time is taken
until a client that asks the sentinels writes again, on the promoted replica.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from devstack.processes import start_gateway, stop, wait_for_gateway
from devstack.redis_server import RedisServer, free_port
from devstack.sentinel import SentinelServer
from jobs.redis_client import RedisTarget, connect
from jobs.settings import REPO_ROOT

PASSWORD = "bench-replication"
ROUNDS = 5
PER_ROUND = 100
BODY = {"prompt": "a lighthouse", "width": 256, "height": 256, "stages": [{"model": "demo-sd15"}]}


def _latencies_ms(http: httpx.Client, count: int) -> list[float]:
    taken = []
    for _ in range(count):
        started = time.perf_counter()
        answer = http.post("/jobs", json=BODY)
        taken.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 202, answer.text
    return taken


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def admission(work: Path, primary: RedisServer) -> dict[str, float]:
    env = {
        "REDIS_URL": primary.url,
        "IMAGEGEN_REGISTRY": str(REPO_ROOT / "deploy" / "registry.demo.yaml"),
        "IMAGEGEN_MAX_OUTSTANDING_JOBS": "100000000",
        "IMAGEGEN_MAX_OUTSTANDING_PER_KEY": "100000000",
        "IMAGEGEN_LOG_LEVEL": "WARNING",
    }
    ports = {"alone": free_port(), "replicated": free_port()}
    gateways = {
        "alone": start_gateway(env, ports["alone"], work / "alone.log"),
        "replicated": start_gateway(
            {**env, "IMAGEGEN_REDIS_MIN_REPLICAS": "1"},
            ports["replicated"],
            work / "replicated.log",
        ),
    }
    taken: dict[str, list[float]] = {"alone": [], "replicated": []}
    try:
        clients = {}
        for name, port in ports.items():
            wait_for_gateway(f"http://127.0.0.1:{port}", gateways[name])
            clients[name] = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        for http in clients.values():
            _latencies_ms(http, 20)  # warm up
        for _ in range(ROUNDS):
            for name, http in clients.items():
                taken[name] += _latencies_ms(http, PER_ROUND)
    finally:
        for process in gateways.values():
            stop(process)
    return {
        f"{name}_{stat}_ms": value
        for name, values in taken.items()
        for stat, value in (("p50", statistics.median(values)), ("p99", _percentile(values, 99)))
    }


def failover(work: Path, primary: RedisServer, replica: RedisServer) -> float:
    """Seconds from the primary's SIGKILL to the first write the promoted replica takes."""
    sentinels = [SentinelServer(work / f"sentinel-{i}", primary).start() for i in range(3)]
    try:
        target = RedisTarget(primary.url, tuple(("127.0.0.1", s.port) for s in sentinels))
        client = connect(target, socket_timeout=1)
        client.set("bench:before", 1)
        time.sleep(1.5)  # the sentinels have found the replica and each other
        primary.kill()
        killed = time.monotonic()
        while True:
            try:
                client.set("bench:after", 1)
                return time.monotonic() - killed
            except Exception:
                time.sleep(0.02)
    finally:
        for sentinel in sentinels:
            sentinel.stop()


def measure() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-p8-"))
    primary = RedisServer(work / "primary", password=PASSWORD).start()
    replica = RedisServer(work / "replica", password=PASSWORD, replica_of=primary).start()
    try:
        replica.wait_in_sync()
        figures: dict[str, Any] = admission(work, primary)
        figures["failover_s"] = failover(work, primary, replica)
    finally:
        primary.stop()
        replica.stop()
    return figures


def main() -> int:
    m = measure()
    print(
        f"P8 POST /jobs latency, one connection: waiting for the replica (WAIT) p50 "
        f"{m['replicated_p50_ms']:.2f} ms, p99 {m['replicated_p99_ms']:.2f} ms; primary only "
        f"p50 {m['alone_p50_ms']:.2f} ms, p99 {m['alone_p99_ms']:.2f} ms; "
        f"ratio p50 {m['replicated_p50_ms'] / m['alone_p50_ms']:.3f}. Failover (SIGKILL to "
        f"the first write on the promoted replica): {m['failover_s']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
