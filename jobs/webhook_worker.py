"""The webhook worker: drains the `imagegen.webhooks` queue, one POST per RQ job (torch-free).

    python -m jobs.webhook_worker

Run one or more anywhere that can reach Redis and the receivers; deliveries survive their
restarts (see `jobs.webhooks`). It lives in `jobs/`, not `workers/`: it needs neither torch nor
the worker package, so it runs from the gateway's image as well. Retries due after a backoff are
put on the queue by the janitor's sweep, which this worker runs too.
"""

from __future__ import annotations

import logging
import socket
import time

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from jobs import lifecycle, logs, webhooks
from jobs.heartbeat_worker import HeartbeatWorker, unique_name
from jobs.lifecycle import Lifecycle
from jobs.outage import wait_for_room
from jobs.queues import SERIALIZER
from jobs.settings import CommonSettings
from jobs.store import JobStore

log = logging.getLogger("imagegen.worker")

HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 8


def main() -> None:
    settings = CommonSettings()
    logs.configure(settings.log_level)
    redis = settings.redis(health_check_interval=30)
    _wait_for(redis)
    webhooks.install(settings.webhooks)
    store = JobStore(redis, settings.result_ttl_s, settings.pictures(), settings.replication)
    ends = Lifecycle(store, settings.webhooks)
    lifecycle.install(ends)  # for RQ's failure callbacks found by this worker's sweeps
    moved = wait_for_room(lambda: webhooks.move_legacy_queue(redis), "the webhook worker")
    if moved:
        log.info("moved %d owed webhooks from %s", moved, webhooks.LEGACY_WEBHOOK_QUEUE)
    worker = HeartbeatWorker(
        [webhooks.webhook_queue(redis)],
        connection=redis,
        name=unique_name(f"{socket.gethostname()}-webhooks"),  # workers.healthcheck reads it
        serializer=SERIALIZER,
        lifecycle=ends,
        heartbeat_s=HEARTBEAT_S,
        heartbeat_ttl_s=HEARTBEAT_TTL_S,
        sweep_interval_s=settings.sweep_interval_s,
        worker_ttl=30,
    )
    if settings.webhook_secret is None:
        log.warning("IMAGEGEN_WEBHOOK_SECRET is not set: owed webhooks will be recorded failed")
    log.info("webhook worker %s delivering from %s", worker.name, webhooks.WEBHOOK_QUEUE)
    worker.work(logging_level=settings.log_level)


def _wait_for(redis: Redis) -> None:
    """A worker that starts while Redis (re)starts waits for it."""
    while True:
        try:
            redis.ping()
            return
        except RedisConnectionError:
            log.warning("waiting for Redis")
            time.sleep(1)


if __name__ == "__main__":
    main()
