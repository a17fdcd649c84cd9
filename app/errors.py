"""Errors mapped to HTTP in one place. No traceback or exception text ever reaches a client."""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.job_service import IdempotencyConflict, QueueFull
from contract.violations import JobRejected

log = logging.getLogger("imagegen.gateway")

_MAX_ECHO = 200  # characters of a rejected input echoed back (a 10 MB prompt is not)


def _trim(error: dict[str, Any]) -> dict[str, Any]:
    value = error.get("input")
    if isinstance(value, str) and len(value) > _MAX_ECHO:
        error = {**error, "input": value[:_MAX_ECHO] + "…"}
    elif isinstance(value, (dict, list)) and len(repr(value)) > _MAX_ECHO:
        error = {k: v for k, v in error.items() if k != "input"}
    error.pop("url", None)
    return error


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [_trim(dict(e)) for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(detail)})


async def _job_rejected(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobRejected)
    detail = [v.as_error() for v in exc.violations]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(detail)})


async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable: %s", exc)
    return JSONResponse(
        status_code=503,
        content={"detail": "the job store (Redis) is unavailable; retry shortly"},
        headers={"Retry-After": "2"},
    )


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=429, content={"detail": str(exc)}, headers={"Retry-After": "5"})


async def _idempotency_conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": str(exc)})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(JobRejected, _job_rejected)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(IdempotencyConflict, _idempotency_conflict)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down)
    app.add_exception_handler(redis.exceptions.BusyLoadingError, _redis_down)
