"""The generation worker: an RQ worker (`HeartbeatWorker`) that keeps pipelines loaded and
publishes which models it holds.

    python -m workers                            # serves pool "default"
    IMAGEGEN_POOL=flux python -m workers         # serves the registry's models of pool "flux"
"""

from __future__ import annotations

import logging

import torch
from redis import Redis

from contract.job_rules import load_registry
from contract.registry import ModelRegistry
from jobs import lifecycle, logs
from jobs.heartbeat_worker import HeartbeatWorker, unique_name
from jobs.lifecycle import Lifecycle
from jobs.outage import through_outage, wait_for_room
from jobs.presence import WorkerPresence, publish, withdraw
from jobs.queues import SERIALIZER, pool_queue
from jobs.store import JobStore
from workers.models.cache import ModelCache, ModelUnavailable
from workers.models.loading import resolve_device
from workers.segments.batching import Batching
from workers.segments.finisher import Finisher
from workers.segments.runner import JobRunner
from workers.settings import WorkerSettings
from workers.tasks import install_runner, installed_runner

log = logging.getLogger("imagegen.worker")
__all__ = ["GenerationWorker", "build_runner", "main", "unique_name"]


class GenerationWorker(HeartbeatWorker):
    def __init__(
        self,
        *args: object,
        settings: WorkerSettings,
        cache: ModelCache,
        lifecycle: Lifecycle,
        **kwargs: object,
    ) -> None:
        super().__init__(
            *args,
            lifecycle=lifecycle,
            heartbeat_s=settings.heartbeat_s,
            heartbeat_ttl_s=settings.heartbeat_ttl_s,
            sweep_interval_s=settings.sweep_interval_s,
            **kwargs,
        )
        self.settings = settings
        self.cache = cache

    def beat(self) -> None:
        publish(self.connection, self.presence(), ttl_s=self.settings.heartbeat_ttl_s)

    def stopped(self) -> None:
        runner = installed_runner()
        if runner is not None and runner.finisher is not None:
            runner.finisher.drain()  # the last jobs' pictures, stored before the worker goes
        withdraw(self.connection, self.name)

    def presence(self) -> WorkerPresence:
        return WorkerPresence(
            name=self.name,
            pool=self.settings.pool,
            models=self.cache.registry.pool(self.settings.pool),
            loaded=self.cache.loaded(),
            holds=self.cache.holdings(),
            resident_mib=round(self.cache.resident_bytes() / 2**20, 1),
            loads=self.cache.loads,
            unavailable=dict(self.cache.unavailable),
        )


def build_runner(settings: WorkerSettings, redis: Redis, name: str) -> JobRunner:
    registry = load_registry(settings.registry)
    serves = registry.pool(settings.pool)
    if not serves:
        known = ", ".join(registry.pools())
        raise SystemExit(f"no registered model is in pool {settings.pool!r}; pools: {known}")
    budget = settings.memory_budget_mb * 2**20 if settings.memory_budget_mb else None
    cache = ModelCache(registry, budget_bytes=budget)
    if settings.preload:
        for model in serves:
            if registry.models[model].preload:
                try:
                    cache.get(model)
                except ModelUnavailable as exc:
                    # That model is unavailable (GET /models says why); the rest are served.
                    log.error("preloading failed: %s", exc)
    store = JobStore(redis, settings.result_ttl_s, settings.pictures(), settings.replication)
    ends = Lifecycle(store, settings.webhooks)
    batching = (
        Batching(
            settings.pool,
            settings.batch_window_ms / 1000,
            settings.max_batch_images,
            settings.max_batch_megapixels,
        )
        if settings.batch_window_ms
        else None
    )
    return JobRunner(
        ends, cache, registry, settings.limits, name, settings.progress_interval_s,
        batching=batching, claim_ttl_s=settings.heartbeat_ttl_s,
        finisher=Finisher() if finish_in_background(settings, registry) else None,
    )  # fmt: skip


def finish_in_background(settings: WorkerSettings, registry: ModelRegistry) -> bool:
    if settings.finish_in_background is not None:
        return settings.finish_in_background
    # The finisher overlaps PNG encoding with denoising on the GPU. On CPU cores that denoise,
    # it competes with them: `make bench`'s P6 shape, batched, made 8.1 pictures/s with it and
    # 10.2 without (two cores, median of 3 rounds).
    devices = {resolve_device(registry.models[m].device) for m in registry.pool(settings.pool)}
    return devices != {"cpu"}


def main() -> None:
    settings = WorkerSettings()
    logs.configure(settings.log_level)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    redis = settings.redis(health_check_interval=30)
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
    presence = worker.presence()
    wait_for_room(lambda: publish(redis, presence, ttl_s=settings.heartbeat_ttl_s), name)
    log.info(
        "worker %s serving pool %s: %s", name, settings.pool, ", ".join(worker.presence().models)
    )
    worker.work(logging_level=settings.log_level)
