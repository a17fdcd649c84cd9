"""An RQ SimpleWorker that stays visibly alive while a job holds its main thread (torch-free:
the webhook worker is one too; the generation worker adds its models).

Plain SimpleWorker runs jobs in its own process (models stay loaded; no fork after CUDA init) but
sends no heartbeat while a job holds the main thread, and gives a running job a registry TTL of
timeout + 60 s, so a killed worker's job would sit `running` for minutes. Here a thread, alive as
long as the worker, refreshes the running job's heartbeat every few seconds with a short TTL and
sweeps abandoned jobs (`jobs.janitor`), so a job whose worker died is retried within seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from typing import Any

from redis.client import Pipeline
from redis.exceptions import OutOfMemoryError
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.utils import now as utcnow

from jobs.janitor import sweep
from jobs.lifecycle import JobFailed, Lifecycle
from jobs.outage import wait_for_room

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

    # RQ's own bookkeeping writes (registration, heartbeat, state, taking a job) raised out of
    # its loop when Redis was at its memory limit, and the worker quit: idle workers within
    # seconds, a new one at once. Here each waits for room (`jobs.outage.wait_for_room`), and a
    # heartbeat that cannot write keeps the worker's key alive with EXPIRE, which a full Redis
    # still takes.

    def register_birth(self) -> None:
        # Two waits: RQ's registration, repeated once it has succeeded, refuses a second one.
        wait_for_room(
            lambda: super(HeartbeatWorker, self).register_birth(),  # type: ignore[no-untyped-call]
            f"worker {self.name}'s registration",
        )
        wait_for_room(self._register_queues, f"worker {self.name}'s queues")

    def _register_queues(self) -> None:
        # RQ registers a queue at its first enqueue, and `rq info` lists workers by queue: a
        # worker on a queue nobody has used yet (the webhook queue before its first webhook)
        # was missing from it.
        with self.connection.pipeline() as pipe:
            for queue in self.queues:
                pipe.sadd(Queue.redis_queues_keys, queue.key)
            pipe.execute()

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        try:
            super().heartbeat(timeout, pipeline)
        except OutOfMemoryError:
            self.connection.expire(self.key, timeout or self.worker_ttl + 60)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        with contextlib.suppress(OutOfMemoryError):  # the last state stands until there is room
            super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        # RQ asks whether `rq suspend` holds in one transaction with the worker's heartbeat
        # (HSET), before each job: after a job whose end a full Redis refused, it raised out of
        # the loop and the worker quit.
        wait_for_room(
            lambda: super(HeartbeatWorker, self).check_for_suspension(burst),
            f"worker {self.name}'s next turn",
        )

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        except OutOfMemoryError:
            self.last_cleaned_at = utcnow()  # type: ignore[assignment]  # tried: next in its interval
            log.warning("Redis is at its memory limit: RQ's registry cleanup waits")

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        # Taking a job moves it between lists, which a full Redis refuses: wait for room.
        return wait_for_room(
            lambda: super(HeartbeatWorker, self).dequeue_job_and_maintain_ttl(
                timeout, max_idle_time
            ),
            f"worker {self.name}, to take its next job,",
        )

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.heartbeat_ttl_s

    # A job's own bookkeeping around its run: each is a transaction (MULTI/EXEC, which a full
    # Redis refuses whole), so each waits for room and is run again.

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        wait_for_room(
            lambda: super(HeartbeatWorker, self).prepare_job_execution(
                job, remove_from_intermediate_queue
            ),
            f"job {job.id}'s start",
        )

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        wait_for_room(
            lambda: super(HeartbeatWorker, self).handle_execution_ended(job, queue, heartbeat_ttl),
            f"job {job.id}'s end",
        )

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry
    ) -> None:
        wait_for_room(
            lambda: super(HeartbeatWorker, self).handle_job_success(
                job, queue, started_job_registry
            ),
            f"job {job.id}'s success",
        )

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._running = job
        try:
            super().execute_job(job, queue)
        except OutOfMemoryError:
            # What is left of RQ's bookkeeping (a failure's filing): RQ's registry cleanup finds
            # the RQ job abandoned later and runs its failure callback, which leaves an ended
            # job as it is. The worker goes on instead of quitting.
            log.warning("Redis is at its memory limit: RQ could not file job %s's end", job.id)
        finally:
            self._running = None

    def register_death(self) -> None:
        try:
            super().register_death()  # type: ignore[no-untyped-call]
        except OutOfMemoryError:  # the worker's key expires with its TTL instead
            log.warning("Redis is at its memory limit: worker %s left unregistered", self.name)

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
