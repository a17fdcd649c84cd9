"""Which live workers hold which models: each worker republishes this every few seconds.

Each is JSON {pool, models, loaded, holds, resident_mib, loads, unavailable} under
`presence_key(name)`,
expiring after the worker's heartbeat TTL: a dead worker disappears by itself.
"""

from __future__ import annotations

from pydantic import BaseModel
from redis import Redis

from jobs.redis_keys import PRESENCE_PATTERN, presence_key


class ComponentHolding(BaseModel):
    storage: list[str]  # its weights' dtypes, or a GGUF file's quantization (Q8_0)
    mib: float


class WorkerPresence(BaseModel):
    name: str
    pool: str
    models: list[str]  # what it serves
    loaded: list[str]  # what it holds in memory now
    holds: dict[str, dict[str, ComponentHolding]] = {}  # model -> component -> as loaded
    resident_mib: float
    loads: int  # times it read weights from disk since it started
    unavailable: dict[str, str] = {}  # model -> why it could not be loaded here


def publish(redis: Redis, presence: WorkerPresence, ttl_s: int) -> None:
    redis.set(presence_key(presence.name), presence.model_dump_json(), ex=ttl_s)


def withdraw(redis: Redis, name: str) -> None:
    redis.delete(presence_key(name))


def live_workers(redis: Redis) -> list[WorkerPresence]:
    keys = list(redis.scan_iter(PRESENCE_PATTERN, count=500))
    values = redis.mget(keys) if keys else []
    return sorted(
        (WorkerPresence.model_validate_json(v) for v in values if v),
        key=lambda w: w.name,
    )
