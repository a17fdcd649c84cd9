"""The worker container's health check: healthy while this host's worker process is visibly alive
(its presence key, refreshed by its heartbeat thread, is in Redis). Imports no torch: it runs every
few seconds beside the worker.

    python -m workers.healthcheck        # exit 0: alive; 1: not (yet) alive, or Redis unreachable
"""

from __future__ import annotations

import socket
import sys

from redis import Redis

from jobs.presence import live_workers
from workers.settings import WorkerSettings


def alive(settings: WorkerSettings, redis: Redis) -> bool:
    # Worker names are <name or hostname>.<pid>.<random> (`workers.worker.unique_name`).
    prefix = f"{settings.name or socket.gethostname()}."
    return any(w.name.startswith(prefix) for w in live_workers(redis))


def main() -> int:
    settings = WorkerSettings()
    try:
        ok = alive(settings, Redis.from_url(settings.redis_url, socket_timeout=3))
    except Exception as error:  # Redis unreachable: not healthy, and say why
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    print("healthy" if ok else "unhealthy: no live worker of this host in Redis")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
