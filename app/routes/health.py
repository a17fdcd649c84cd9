from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from redis.exceptions import OutOfMemoryError

from app.deps import RegistryDep, StoreDep
from app.errors import documented
from app.keys import AdminDep
from contract.envelope import Answer
from jobs.metrics import RedisCollector
from jobs.presence import live_workers

router = APIRouter(tags=["health"])


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    redis: Literal["ok"]
    workers: int
    models_without_workers: list[str]


@router.get("/healthz", operation_id="healthz")
async def healthz() -> Health:
    """The process is up (it does not touch Redis)."""
    # async: answered on the event loop, never queued behind request threads busy admitting
    # (decoding pictures) — a probe that waits for those says "down" about a busy gateway.
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    responses=documented(503),
)
def readyz(store: StoreDep, registry: RegistryDep) -> Readiness:
    """Redis answers; lists registered models that no live worker serves (their jobs wait)."""
    store.redis.ping()  # a connection error becomes a 503 (see app.errors)
    memory = store.redis.info("memory")
    if 0 < memory["maxmemory"] <= memory["used_memory"]:
        # What admission meets at the limit (noeviction refuses writes): 503 store_full here too,
        # so a load balancer stops sending jobs to a gateway that can only refuse them.
        raise OutOfMemoryError("Redis is at its maxmemory; no job can be admitted")
    workers = live_workers(store.redis)
    served = {model for worker in workers for model in worker.models}
    return Readiness(
        redis="ok",
        workers=len(workers),
        models_without_workers=[m for m in registry.names() if m not in served],
    )


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format.",
        },
        **documented(401, 403, by_reference=True),
    },
)
def metrics(store: StoreDep, registry: RegistryDep, _: AdminDep) -> Response:
    """Jobs by event and model, queue depths, live workers, job and step time histograms. Every
    key's activity, so with API keys it takes an admin key (a scraper sends it as a bearer
    token)."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(RedisCollector(store.redis, registry.pools()))
    return Response(generate_latest(collectors), media_type=CONTENT_TYPE_LATEST)
