"""Request dependencies: the objects the app builds once at start-up, as typed aliases.

They are `async def` although they await nothing: FastAPI runs a plain `def` dependency in its
thread pool, a hop per dependency per request, which costs admission throughput for nothing.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from redis.asyncio import Redis as AsyncRedis

from app.admission import JobNotFound, JobService
from app.keys import CallerDep
from contract.registry import ModelRegistry
from jobs.redis_keys import job_key, text
from jobs.store import JobStore


async def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


async def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


async def _async_redis(request: Request) -> AsyncRedis:
    redis: AsyncRedis = request.app.state.async_redis
    return redis


async def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


JobServiceDep = Annotated[JobService, Depends(_service)]
StoreDep = Annotated[JobStore, Depends(_store)]
AsyncRedisDep = Annotated[AsyncRedis, Depends(_async_redis)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]


async def _followed_job(job_id: UUID, redis: AsyncRedisDep, caller: CallerDep) -> str:
    """A job the caller may see, checked before a stream starts (so a 404 is still JSON)."""
    owner = await redis.hget(job_key(str(job_id)), "owner")
    if owner is None or not caller.may_see(text(owner)):
        raise JobNotFound(str(job_id))
    return str(job_id)


FollowedJobDep = Annotated[str, Depends(_followed_job)]
