"""P2: how fast the gateway admits jobs, against raw RQ on the same Redis.

    python -m bench.admission

Admissions: `POST /jobs` (validation, queue caps, envelope and RQ job in one transaction) from 64
concurrent keep-alive connections, driven by `wrk` (a C load generator, so that the client takes
little of the two cores; `apt-get install wrk`), against a gateway of two uvicorn processes with
no worker. Raw: `Queue.enqueue` one at a time from one Python process. Same Redis, one run.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue

from devstack.processes import start_gateway, stop, wait_for_gateway
from devstack.redis_server import RedisServer, free_port
from jobs.queues import SERIALIZER
from jobs.settings import REPO_ROOT

CONNECTIONS = 64
GATEWAY_PROCESSES = 2
DURATION_S = 10
RAW_JOBS = 3000
BODY = '{"prompt": "a lighthouse", "width": 256, "height": 256, "stages": [{"model": "demo-sd15"}]}'
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def raw_enqueue(redis: Redis) -> float:
    queue = Queue("bench.raw", connection=redis, serializer=SERIALIZER)
    started = time.perf_counter()
    for i in range(RAW_JOBS):
        queue.enqueue("workers.tasks.run_job", str(i), 0)
    return RAW_JOBS / (time.perf_counter() - started)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url: str, work: Path, connections: int = CONNECTIONS) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{DURATION_S}s", "--latency"]
    command += ["-s", str(script), f"{url}/jobs"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out, out
    return {
        "admissions_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
    }


def measure() -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("P2 needs wrk: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-p2-"))
    server = RedisServer(work / "redis").start()
    port = free_port()
    env = {
        "REDIS_URL": server.url,
        "IMAGEGEN_REGISTRY": str(REPO_ROOT / "deploy" / "registry.demo.yaml"),
        "IMAGEGEN_MAX_OUTSTANDING_JOBS": "100000000",
        "IMAGEGEN_MAX_OUTSTANDING_PER_KEY": "100000000",
        "IMAGEGEN_LOG_LEVEL": "WARNING",
    }
    gateway = start_gateway(env, port, work / "gateway.log", processes=GATEWAY_PROCESSES)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_gateway(url, gateway)
        time.sleep(2)  # both processes up
        redis = Redis.from_url(server.url)
        raw = raw_enqueue(redis)
        admitted = wrk(url, work)
        light = wrk(url, work, connections=4)  # latency when the gateway is not saturated
        raw_again = raw_enqueue(redis)  # before and after: the machine drifts
    finally:
        stop(gateway)
        server.stop()
    return {
        **admitted,
        "raw_enqueue_per_s": statistics.mean([raw, raw_again]),
        "light_p50_ms": light["p50_ms"],
        "light_p99_ms": light["p99_ms"],
    }


def main() -> int:
    m = measure()
    ratio = m["admissions_per_s"] / m["raw_enqueue_per_s"]
    print(
        f"P2 POST /jobs {m['admissions_per_s']:.0f}/s / raw enqueue {m['raw_enqueue_per_s']:.0f}/s"
        f" = {ratio:.3f} (target >= 0.5); latency at {CONNECTIONS} connections: p50 "
        f"{m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms (target < 50 ms); at 4 connections: "
        f"p50 {m['light_p50_ms']:.1f} ms, p99 {m['light_p99_ms']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
