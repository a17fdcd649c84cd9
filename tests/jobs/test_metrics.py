"""Metrics counted in Redis and rendered in the Prometheus text format."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from redis import Redis

from jobs import metrics


def render(redis: Redis) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.RedisCollector(redis, ["default"]))
    return generate_latest(registry).decode()


def test_counters_histograms_and_queue_depth(redis: Redis) -> None:
    metrics.count_job(redis, "succeeded", "m")
    metrics.count_job(redis, "succeeded", "m")
    metrics.observe_job_seconds(redis, "m", 0.3)
    metrics.observe_job_seconds(redis, "m", 7)
    metrics.observe_step_seconds(redis, "m", 0.004)
    redis.rpush("rq:queue:imagegen.default", "a", "b")
    text = render(redis)
    assert 'imagegen_jobs_total{event="succeeded",model="m"} 2.0' in text
    assert 'imagegen_queue_depth{queue="imagegen.default"} 2.0' in text
    # Cumulative buckets: 0.3 s falls in le=0.5, 7 s in le=10.
    assert 'imagegen_job_duration_seconds_bucket{le="0.25",model="m"} 0.0' in text
    assert 'imagegen_job_duration_seconds_bucket{le="0.5",model="m"} 1.0' in text
    assert 'imagegen_job_duration_seconds_bucket{le="10",model="m"} 2.0' in text
    assert 'imagegen_job_duration_seconds_sum{model="m"} 7.3' in text
    assert 'imagegen_step_seconds_bucket{le="0.005",model="m"} 1.0' in text
