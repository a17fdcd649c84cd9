"""Errors mapped to HTTP in one place. No traceback or exception text ever reaches a client."""

from __future__ import annotations

import logging
import math
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.job_service import IdempotencyConflict, QueueFull
from contract.violations import JobRejected

log = logging.getLogger("imagegen.gateway")


class Problem(BaseModel):
    """Every error other than a validation error: what went wrong and what to do."""

    detail: str


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error codes, all shaped as `Problem`."""
    return {code: {"model": Problem, "description": _DESCRIPTIONS[code]} for code in codes}


_DESCRIPTIONS = {
    400: "The body is not JSON (or not UTF-8).",
    401: "No valid API key: send `Authorization: Bearer <key>`.",
    404: "No such job (or not yours).",
    409: "Conflicts with the job's state, or with an earlier use of the Idempotency-Key.",
    413: "The request body is over the deployment's limit.",
    429: "Too many unfinished jobs; retry after `Retry-After` seconds.",
    503: "Redis is unreachable; retry after `Retry-After` seconds.",
}

_MAX_ECHO = 200  # characters of a rejected input echoed back (a 10 MB prompt is not)


def _trim(error: dict[str, Any]) -> dict[str, Any]:
    value = error.get("input")
    if isinstance(value, str) and len(value) > _MAX_ECHO:
        error = {**error, "input": value[:_MAX_ECHO] + "…"}
    elif isinstance(value, (dict, list)) and len(repr(value)) > _MAX_ECHO:
        error = {k: v for k, v in error.items() if k != "input"}
    error.pop("url", None)
    return error


def _finite(value: Any) -> Any:
    """NaN and Infinity, which JSON cannot carry, as strings (a client may send them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [_finite(_trim(dict(e))) for e in exc.errors()]
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
