"""Request dependencies: the objects the app builds once at start-up, as typed aliases.

They are `async def` although they await nothing: FastAPI runs a plain `def` dependency in its
thread pool, a hop per dependency per request, which costs admission throughput for nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from redis.asyncio import Redis as AsyncRedis

from app.admission import JobNotFound, JobService
from app.events import JobEvents, StreamSlots
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


async def _job_events(request: Request) -> JobEvents:
    hub: JobEvents = request.app.state.job_events
    return hub


async def _stream_slot(request: Request, caller: CallerDep) -> AsyncIterator[None]:
    """One of the caller's open-stream slots, held until the stream ends (this dependency
    exits after the response, its scope being the request)."""
    slots: StreamSlots = request.app.state.stream_slots
    with slots.hold(caller.name):
        yield


JobEventsDep = Annotated[JobEvents, Depends(_job_events)]
StreamSlotDep = Annotated[None, Depends(_stream_slot)]
