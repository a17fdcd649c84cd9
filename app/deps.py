"""Request dependencies: the objects the app builds once at start-up, as typed aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis as AsyncRedis

from app.job_service import JobService
from contract.job_store import JobStore
from contract.registry import ModelRegistry


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _async_redis(request: Request) -> AsyncRedis:
    redis: AsyncRedis = request.app.state.async_redis
    return redis


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


JobServiceDep = Annotated[JobService, Depends(_service)]
StoreDep = Annotated[JobStore, Depends(_store)]
AsyncRedisDep = Annotated[AsyncRedis, Depends(_async_redis)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
