"""The worker container's health check: healthy while this host's worker process is visibly alive
(its presence key, refreshed by its heartbeat thread, is in Redis). Imports no torch: it runs every
few seconds beside the worker.

    python -m workers.healthcheck             # 0: alive; 1: not (yet) alive, or Redis unreachable
    python -m workers.healthcheck --webhooks  # the same for this host's webhook worker
"""

from __future__ import annotations

import socket
import sys

from redis import Redis
from rq import Worker

from jobs.presence import live_workers
from jobs.webhooks import webhook_queue
from workers.settings import WorkerSettings


def alive(settings: WorkerSettings, redis: Redis) -> bool:
    # Worker names are <name or hostname>.<pid>.<random> (`workers.worker.unique_name`).
    prefix = f"{settings.name or socket.gethostname()}."
    return any(w.name.startswith(prefix) for w in live_workers(redis))


def webhook_worker_alive(redis: Redis) -> bool:
    # Its name is <hostname>-webhooks.<pid>.<random> (`jobs.webhook_worker`), and RQ keeps a
    # worker's key only while it sends heartbeats.
    prefix = f"{socket.gethostname()}-webhooks."
    workers = Worker.all(queue=webhook_queue(redis))
    return any(w.name.startswith(prefix) for w in workers)


def main() -> int:
    settings = WorkerSettings()
    try:
        redis = settings.redis(socket_timeout=3)
        ok = webhook_worker_alive(redis) if "--webhooks" in sys.argv[1:] else alive(settings, redis)
    except Exception as error:  # Redis unreachable: not healthy, and say why
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    print("healthy" if ok else "unhealthy: no live worker of this host in Redis")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
