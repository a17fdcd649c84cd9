"""A lone job's latency with this checkout's worker against another checkout's, in one run.

    python -m bench.lone_job BASELINE_CHECKOUT [--rounds 3] [--jobs 6]

Issue 15's target: a lone job (nothing else queued) is no slower than before batching and the
finisher (≤ 1.05×). One gateway and Redis; the two workers take turns, `rounds` times, each
running `jobs` of make bench's P1 job one after another (POST, then its SSE stream to the end);
each turn's median, then the median over turns. The baseline worker runs from its own checkout
(`git worktree add /tmp/base <commit>`) with this environment's packages and demo models.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import httpx
from redis import Redis

from bench.__main__ import P1_SPEC, through_service
from demo.models import ensure_built
from devstack.processes import start_gateway, start_worker, stop, wait_for_gateway, wait_for_workers
from devstack.redis_server import RedisServer, free_port
from jobs.settings import REPO_ROOT


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lone_job")
    parser.add_argument("baseline", type=Path, help="the other checkout (its worker code)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=6)
    args = parser.parse_args()
    ensure_built(REPO_ROOT / ".models")
    registry = REPO_ROOT / "deploy" / "registry.demo.yaml"
    work = Path(tempfile.mkdtemp(prefix="lone-job-"))
    server = RedisServer(work / "redis").start()
    env = {"REDIS_URL": server.url, "IMAGEGEN_REGISTRY": str(registry)}
    port = free_port()
    gateway = start_gateway(env, port, work / "gateway.log")
    turns: dict[str, list[float]] = {"this": [], "baseline": []}
    try:
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for round_ in range(args.rounds):
                for name in turns:
                    checkout = REPO_ROOT if name == "this" else args.baseline
                    worker = start_worker(env, work / f"worker-{name}-{round_}.log", checkout)
                    try:
                        wait_for_workers(Redis.from_url(server.url), [worker], timeout=120)
                        through_service(client, P1_SPEC)  # warm-up
                        times = [through_service(client, P1_SPEC) for _ in range(args.jobs)]
                        turns[name].append(statistics.median(times))
                    finally:
                        stop(worker)
    finally:
        stop(gateway)
        server.stop()
    this, baseline = (statistics.median(turns[n]) for n in ("this", "baseline"))
    print(json.dumps({"turns_s": turns, "this_s": this, "baseline_s": baseline,
                      "this_over_baseline": this / baseline}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
