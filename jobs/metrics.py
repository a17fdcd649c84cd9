"""Service metrics kept in Redis, so that every gateway can report what every worker did.

Workers and gateways increment counters and histogram buckets in Redis hashes; any gateway's
`/metrics` renders them in the Prometheus text format, with queue depths and live workers read
at scrape time.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.client import Pipeline

from jobs.presence import live_workers
from jobs.redis_keys import (
    METRICS_JOB_SECONDS,
    METRICS_JOBS,
    METRICS_STEP_SECONDS,
    OUTSTANDING,
    queue_name,
    rq_queue_key,
    text,
)

DURATION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
STEP_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)


def count_job(redis: Redis | Pipeline, event: str, model: str) -> None:
    redis.hincrby(METRICS_JOBS, f"{event}|{model}", 1)


def observe_job_seconds(redis: Redis | Pipeline, model: str, seconds: float) -> None:
    """From POST to the end of the job."""
    _observe(redis, METRICS_JOB_SECONDS, DURATION_BUCKETS, model, seconds)


def observe_step_seconds(redis: Redis | Pipeline, model: str, seconds: float) -> None:
    """Mean denoising step time of one stage."""
    _observe(redis, METRICS_STEP_SECONDS, STEP_BUCKETS, model, seconds)


def _observe(
    redis: Redis | Pipeline, key: str, buckets: tuple[float, ...], model: str, value: float
) -> None:
    index = bisect.bisect_left(buckets, value)  # len(buckets) is the +Inf bucket
    redis.hincrby(key, f"{model}|{index}", 1)
    redis.hincrbyfloat(key, f"{model}|sum", value)


def _histograms(
    redis: Redis, key: str, buckets: tuple[float, ...], name: str, doc: str
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["model"])
    raw = {text(k): text(v) for k, v in redis.hgetall(key).items()}
    for model in sorted({k.split("|")[0] for k in raw}):
        counts = [int(raw.get(f"{model}|{i}", 0)) for i in range(len(buckets) + 1)]
        cumulative, running = [], 0
        for bound, count in zip([*buckets, math.inf], counts, strict=True):
            running += count
            cumulative.append((str(bound) if bound != math.inf else "+Inf", running))
        family.add_metric([model], cumulative, float(raw.get(f"{model}|sum", 0)))
    return family


class RedisCollector(Collector):
    def __init__(self, redis: Redis, pools: Iterable[str]) -> None:
        self.redis = redis
        self.pools = list(pools)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        jobs = CounterMetricFamily(
            "imagegen_jobs", "Jobs by event and first model.", labels=["event", "model"]
        )
        for field, value in sorted(self.redis.hgetall(METRICS_JOBS).items()):
            event, model = text(field).split("|", 1)
            jobs.add_metric([event, model], float(text(value)))
        yield jobs
        depth = GaugeMetricFamily(
            "imagegen_queue_depth", "Jobs waiting per queue.", labels=["queue"]
        )
        for pool in self.pools:
            depth.add_metric([queue_name(pool)], float(self.redis.llen(rq_queue_key(pool))))
        yield depth
        yield GaugeMetricFamily(
            "imagegen_jobs_outstanding",
            "Jobs not finished yet.",
            value=float(self.redis.zcard(OUTSTANDING)),
        )
        yield GaugeMetricFamily(
            "imagegen_workers_alive",
            "Workers sending heartbeats.",
            value=float(len(live_workers(self.redis))),
        )
        yield _histograms(
            self.redis,
            METRICS_JOB_SECONDS,
            DURATION_BUCKETS,
            "imagegen_job_duration_seconds",
            "From POST to the end of the job, by first model.",
        )
        yield _histograms(
            self.redis,
            METRICS_STEP_SECONDS,
            STEP_BUCKETS,
            "imagegen_step_seconds",
            "Mean denoising step time of a stage, by model.",
        )
