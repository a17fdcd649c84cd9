"""An RQ SimpleWorker that stays visibly alive while a job holds its main thread (torch-free:
the webhook worker is one too; the generation worker adds its models).

Plain SimpleWorker runs jobs in its own process (models stay loaded; no fork after CUDA init) but
sends no heartbeat while a job holds the main thread, and gives a running job a registry TTL of
timeout + 60 s, so a killed worker's job would sit `running` for minutes. Here a thread, alive as
long as the worker, refreshes the running job's heartbeat every few seconds with a short TTL and
sweeps abandoned jobs (`jobs.janitor`), so a job whose worker died is retried within seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any

from rq import Queue, SimpleWorker
from rq.job import Job

from jobs.janitor import sweep
from jobs.lifecycle import JobFailed, Lifecycle

log = logging.getLogger("imagegen.worker")


def unique_name(prefix: str | None) -> str:
    # Unique per process: a restarted worker must not wait for its dead namesake's key to expire.
    return f"{prefix or socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


class HeartbeatWorker(SimpleWorker):
    def __init__(
        self,
        *args: object,
        lifecycle: Lifecycle,
        heartbeat_s: float,
        heartbeat_ttl_s: int,
        sweep_interval_s: float,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lifecycle = lifecycle
        self.heartbeat_s = heartbeat_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.sweep_interval_s = sweep_interval_s
        self._running: Job | None = None
        self._stop = threading.Event()

    def register_birth(self) -> None:
        super().register_birth()  # type: ignore[no-untyped-call]
        # RQ registers a queue at its first enqueue, and `rq info` lists workers by queue: a
        # worker on a queue nobody has used yet (the webhook queue before its first webhook)
        # was missing from it.
        with self.connection.pipeline() as pipe:
            for queue in self.queues:
                pipe.sadd(Queue.redis_queues_keys, queue.key)
            pipe.execute()

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.heartbeat_ttl_s

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
            self.stopped()

    def beat(self) -> None:
        """Called every heartbeat, after the running job's: what else says this worker lives."""

    def stopped(self) -> None:
        """Called once the worker stops taking jobs."""

    def _life(self) -> None:
        """Heartbeats for the running job, `beat`, and the sweep for abandoned jobs."""
        while not self._stop.wait(self.heartbeat_s):
            try:
                job = self._running
                if job is not None and self.execution is not None:
                    self.maintain_heartbeats(job)
                self.beat()
                sweep(self.lifecycle, self.sweep_interval_s)
            except Exception:  # Redis away: a missed beat must not kill the thread
                log.warning("heartbeat failed", exc_info=True)
