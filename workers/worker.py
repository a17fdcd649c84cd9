"""The worker process: an RQ SimpleWorker that keeps pipelines loaded and stays visibly alive.

Plain SimpleWorker runs jobs in its own process (models stay loaded; no fork after CUDA init) but
sends no heartbeat while a job holds the main thread, and gives a running job a registry TTL of
timeout + 60 s, so a killed worker's job would sit `running` for minutes. Here a thread, alive as
long as the worker, refreshes the running job's heartbeat every few seconds with a short TTL,
publishes which models this worker holds, and sweeps abandoned jobs, so a job whose worker died
is retried within seconds.

    python -m workers                            # serves pool "default"
    IMAGEGEN_POOL=flux python -m workers         # serves the registry's models of pool "flux"
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any

import torch
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job

from contract.registry import ModelRegistry
from jobs import lifecycle, logs
from jobs.janitor import sweep
from jobs.lifecycle import JobFailed, Lifecycle
from jobs.presence import WorkerPresence, publish, withdraw
from jobs.queues import SERIALIZER, pool_queue
from jobs.store import JobStore
from workers.job_runner import JobRunner, through_outage
from workers.runtime import ModelCache
from workers.settings import WorkerSettings
from workers.tasks import install_runner

log = logging.getLogger("imagegen.worker")


def unique_name(prefix: str | None) -> str:
    # Unique per process: a restarted worker must not wait for its dead namesake's key to expire.
    return f"{prefix or socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


class GenerationWorker(SimpleWorker):
    def __init__(
        self,
        *args: object,
        settings: WorkerSettings,
        cache: ModelCache,
        lifecycle: Lifecycle,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.cache = cache
        self.lifecycle = lifecycle
        self._running: Job | None = None
        self._stop = threading.Event()

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.settings.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._running = job
        try:
            super().execute_job(job, queue)
        finally:
            self._running = None

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        if isinstance(exc_info[1], JobFailed):
            # A job that failed for a reason already in its envelope, not a crash: RQ would log
            # a traceback of `run_job` raising for it.
            log.info("RQ job %s filed as failed (%s)", job.id, exc_info[1].failure.value)
            return
        super().handle_exception(job, *exc_info)

    def work(self, *args: object, **kwargs: object) -> bool:
        life = threading.Thread(target=self._life, daemon=True, name="heartbeat")
        life.start()
        try:
            return bool(super().work(*args, **kwargs))  # type: ignore[arg-type]
        finally:
            self._stop.set()
            life.join(timeout=5)
            withdraw(self.connection, self.name)

    def _life(self) -> None:
        """Heartbeats for the running job, presence, and the sweep for abandoned jobs."""
        settings = self.settings
        while not self._stop.wait(settings.heartbeat_s):
            try:
                job = self._running
                if job is not None and self.execution is not None:
                    self.maintain_heartbeats(job)
                publish(self.connection, self.presence(), ttl_s=settings.heartbeat_ttl_s)
                sweep(self.lifecycle, settings.sweep_interval_s)
            except Exception:  # Redis away: a missed beat must not kill the thread
                log.warning("heartbeat failed", exc_info=True)

    def presence(self) -> WorkerPresence:
        return WorkerPresence(
            name=self.name,
            pool=self.settings.pool,
            models=self.cache.registry.pool(self.settings.pool),
            loaded=self.cache.loaded(),
            resident_mib=round(self.cache.resident_bytes() / 2**20, 1),
            loads=self.cache.loads,
        )


def build_runner(settings: WorkerSettings, redis: Redis, name: str) -> JobRunner:
    registry = ModelRegistry.load(settings.registry)
    serves = registry.pool(settings.pool)
    if not serves:
        known = ", ".join(registry.pools())
        raise SystemExit(f"no registered model is in pool {settings.pool!r}; pools: {known}")
    budget = settings.memory_budget_mb * 2**20 if settings.memory_budget_mb else None
    cache = ModelCache(registry, budget_bytes=budget)
    if settings.preload:
        for model in serves:
            if registry.models[model].preload:
                cache.get(model)
    ends = Lifecycle(JobStore(redis, settings.result_ttl_s), settings.webhooks)
    return JobRunner(ends, cache, registry, settings.limits, name, settings.progress_interval_s)


def main() -> None:
    settings = WorkerSettings()
    logs.configure(settings.log_level)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    redis = Redis.from_url(settings.redis_url, health_check_interval=30)
    name = unique_name(settings.name)
    runner = build_runner(settings, redis, name)
    install_runner(runner)
    through_outage(redis.ping)  # a worker that starts while Redis restarts waits for it
    lifecycle.install(runner.lifecycle)  # for RQ's failure callback (hard timeouts, sweeps)
    worker = GenerationWorker(
        [pool_queue(redis, settings.pool)],
        connection=redis,
        name=name,
        serializer=SERIALIZER,
        settings=settings,
        cache=runner.cache,
        lifecycle=runner.lifecycle,
        worker_ttl=30,
    )
    publish(redis, worker.presence(), ttl_s=settings.heartbeat_ttl_s)
    log.info(
        "worker %s serving pool %s: %s", name, settings.pool, ", ".join(worker.presence().models)
    )
    worker.work(logging_level=settings.log_level)
