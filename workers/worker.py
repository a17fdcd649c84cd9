"""The worker process: an RQ SimpleWorker that keeps pipelines loaded and stays visibly alive.

Plain SimpleWorker runs jobs in its own process (models stay loaded; no fork after CUDA init) but
sends no heartbeat while a job holds the main thread, and gives a running job a registry TTL of
timeout + 60 s, so a killed worker's job would sit `running` for minutes. Here a thread sends
heartbeats every few seconds with a short TTL, and sweeps abandoned jobs of our queues, so a job
whose worker died is retried within seconds.

    python -m workers            # serves every registered model
    IMAGEGEN_MODELS=demo-flux python -m workers
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job

from contract.job_store import JobStore
from contract.queues import SERIALIZER, queue_for_model
from contract.registry import ModelRegistry
from workers.job_runner import JobRunner
from workers.runtime import ModelCache
from workers.settings import WorkerSettings
from workers.tasks import install_runner

log = logging.getLogger("imagegen.worker")


def unique_name(prefix: str | None) -> str:
    # Unique per process: a restarted worker must not wait for its dead namesake's key to expire.
    return f"{prefix or socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


class GenerationWorker(SimpleWorker):
    def __init__(self, *args: object, settings: WorkerSettings, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.settings = settings

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.settings.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, stop), daemon=True, name="heartbeat")
        beat.start()
        try:
            super().execute_job(job, queue)
        finally:
            stop.set()
            beat.join()

    def _beat(self, job: Job, stop: threading.Event) -> None:
        while not stop.wait(self.settings.heartbeat_s):
            try:
                self.maintain_heartbeats(job)
                self.sweep_abandoned()
            except Exception:  # a missed beat must not kill the thread; the next one retries
                log.exception("heartbeat failed")

    def sweep_abandoned(self) -> None:
        """Retry (or fail) jobs whose worker stopped sending heartbeats."""
        for queue in self.queues:
            queue.started_job_registry.cleanup()


def build_runner(settings: WorkerSettings, redis: Redis) -> tuple[JobRunner, list[str]]:
    registry = ModelRegistry.load(settings.registry)
    serves = settings.models or registry.names()
    unknown = sorted(set(serves) - set(registry.names()))
    if unknown:
        raise SystemExit(f"IMAGEGEN_MODELS names unregistered models: {', '.join(unknown)}")
    cache = ModelCache(registry)
    if settings.preload:
        for name in serves:
            if registry.models[name].preload:
                cache.get(name)
    store = JobStore(redis, settings.result_ttl_s)
    runner = JobRunner(store, cache, registry, settings.limits, settings.progress_interval_s)
    return runner, serves


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = WorkerSettings()
    redis = Redis.from_url(settings.redis_url, health_check_interval=30)
    runner, serves = build_runner(settings, redis)
    install_runner(runner)
    queues = [Queue(queue_for_model(m), connection=redis, serializer=SERIALIZER) for m in serves]
    worker = GenerationWorker(
        queues,
        connection=redis,
        name=unique_name(settings.name),
        serializer=SERIALIZER,
        settings=settings,
        worker_ttl=30,
        maintenance_interval=30,
    )
    log.info("worker %s serving %s", worker.name, ", ".join(serves))
    worker.work(logging_level="INFO")
