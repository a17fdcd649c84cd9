"""Errors mapped to HTTP in one table. Routes raise; only the handlers here answer.

Every error body has one shape, the one FastAPI gives validation errors:
`{"detail": [{"type": <machine name>, "loc": [...], "msg": <what to do>, "ctx": {...}}]}`.
No traceback or exception text from a library ever reaches a client.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic_core.core_schema import ErrorType as PydanticErrorType
from starlette.exceptions import HTTPException

from app import body_limit
from app.admission import ImageNotFound, JobAlreadyFinished, JobNotFound, NotReplicated
from app.events import TooManyStreams
from app.keys import AdminOnly, NotAuthenticated
from app.openai.errors import openai_error
from app.uploads import TooManyUploads
from contract.violations import JobRejected, RuleType
from jobs.caps import QueueFull
from jobs.idempotency import IdempotencyConflict, IdempotencyInFlight
from jobs.pictures import PicturesUnavailable

log = logging.getLogger("imagegen.gateway")


class NotServed(Exception):
    """A route another server has (an A1111 one) that this service does not serve."""


# The gateway's own error names; with the job rules' (`RuleType`) and pydantic's validation
# errors (`PydanticErrorType`) they are every `type` an error body can carry.
GatewayErrorType = Literal[
    "not_authenticated",
    "job_not_found",
    "image_not_found",
    "job_already_finished",
    "idempotency_conflict",
    "idempotency_in_flight",
    "queue_full",
    "too_many_streams",
    "store_unavailable",
    "store_full",
    "bad_request",
    "not_found",
    "method_not_allowed",
    "body_too_large",
    "http_error",
    "internal_error",
    "not_served",
    "host_not_allowed",
    "admin_only",
    "too_many_uploads",
    "picture_store_unavailable",
    "not_replicated",
]
# Why a job failed (`FailureType`'s values), for the A1111 face's 502, which waits for the job.
FailedJobType = Literal[
    "invalid_job",
    "latent_space_mismatch",
    "model_unavailable",
    "out_of_memory",
    "generation_failed",
    "timeout",
    "worker_lost",
    "worker_error",
    "record_unreadable",
    "queue_entry_lost",
    "non_finite_output",
    "storage_unavailable",
    "store_full",
]
ErrorType = Literal[GatewayErrorType, RuleType, PydanticErrorType, FailedJobType]


class ErrorItem(BaseModel):
    type: ErrorType = Field(
        description="Machine name, e.g. latent_space_mismatch (a job rule), missing (pydantic's "
        "validation), job_not_found; on the A1111 face's 502, why the job failed."
    )
    loc: list[str | int] = Field(description="Where in the request: body, path, header.")
    msg: str = Field(description="What is wrong and how to fix it.")
    ctx: dict[str, Any] | None = None
    input: Any = None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    detail: list[ErrorItem]


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: GatewayErrorType
    loc: tuple[str, ...] = ()
    retry_after_s: int | None = None
    # What the client reads when the exception's own text is a library's (logged instead).
    message: str | None = None


_STORE_DOWN = ErrorKind(
    503,
    "store_unavailable",
    retry_after_s=2,
    message="the job store (Redis) is unavailable; retry shortly",
)


# The one table: exception -> status, machine type, where it points, Retry-After.
ERRORS: dict[type[Exception], ErrorKind] = {
    NotAuthenticated: ErrorKind(401, "not_authenticated", ("header", "authorization")),
    AdminOnly: ErrorKind(403, "admin_only", ("header", "authorization")),
    JobNotFound: ErrorKind(404, "job_not_found", ("path", "job_id")),
    ImageNotFound: ErrorKind(404, "image_not_found", ("path", "index")),
    JobAlreadyFinished: ErrorKind(409, "job_already_finished", ("path", "job_id")),
    IdempotencyConflict: ErrorKind(409, "idempotency_conflict", ("header", "idempotency-key")),
    IdempotencyInFlight: ErrorKind(
        409, "idempotency_in_flight", ("header", "idempotency-key"), retry_after_s=1
    ),
    QueueFull: ErrorKind(429, "queue_full", retry_after_s=5),
    TooManyStreams: ErrorKind(429, "too_many_streams", retry_after_s=5),
    TooManyUploads: ErrorKind(429, "too_many_uploads", ("body",), retry_after_s=1),
    NotServed: ErrorKind(501, "not_served"),
    # The S3 bucket (IMAGEGEN_PICTURE_STORE=s3) did not answer, or refused us: the log says why.
    PicturesUnavailable: ErrorKind(
        503,
        "picture_store_unavailable",
        retry_after_s=5,
        message="the picture store (S3) is unavailable; retry shortly",
    ),
    # IMAGEGEN_REDIS_MIN_REPLICAS: no replica confirmed the job in time; it was withdrawn.
    NotReplicated: ErrorKind(
        503,
        "not_replicated",
        retry_after_s=1,
        message="the job store's replicas did not confirm the job in time, so it was withdrawn "
        "and will not run; submit it again",
    ),
    redis.exceptions.ConnectionError: _STORE_DOWN,
    redis.exceptions.TimeoutError: _STORE_DOWN,
    redis.exceptions.BusyLoadingError: _STORE_DOWN,
    # Redis answers but refuses us (DENIED in protected mode, NOAUTH, a read-only replica): a
    # deployment fault the log names; for the client the store is unavailable.
    redis.exceptions.ResponseError: _STORE_DOWN,
    # Redis at its maxmemory with `noeviction` (docker-compose.yml): it refuses writes rather
    # than evict queued jobs. Room comes back as finished jobs expire (IMAGEGEN_RESULT_TTL_S).
    redis.exceptions.OutOfMemoryError: ErrorKind(
        503,
        "store_full",
        retry_after_s=30,
        message="the job store (Redis) is at its memory limit and takes no new jobs until "
        "finished ones expire; retry later",
    ),
}

# HTTP-level errors Starlette and FastAPI raise themselves (no route, wrong method, body limit).
_HTTP_TYPES: dict[int, GatewayErrorType] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}

_DESCRIPTIONS = {
    400: "The body is not JSON (or not UTF-8).",
    401: "No valid API key: send `Authorization: Bearer <key>`.",
    403: "The route takes an admin key (`admin_only`).",
    404: "No such job or image (or not yours).",
    409: "Conflicts with the job's state, or with an earlier use of the Idempotency-Key "
    "(`idempotency_in_flight`: that request is still being admitted; retry).",
    413: "The request body is over the deployment's limit.",
    421: "Open mode only: the `Host` is a name this gateway does not answer for (reach it as "
    "`localhost` or by address, or list the name in IMAGEGEN_ALLOWED_HOSTS).",
    422: "The request breaks a rule; nothing was queued. Each entry names the field (`loc`) and "
    "says how to fix it (`msg`).",
    429: "Too many unfinished jobs (`queue_full`), open event streams (`too_many_streams`) or "
    "pictures being received (`too_many_uploads`) for this key; retry after `Retry-After` "
    "seconds.",
    502: "The job failed (A1111 face, which waits for it): `type` is the job's `error.type`.",
    501: "Not served here (an A1111 route this service has no counterpart for).",
    503: "Redis is unreachable (`store_unavailable`) or at its memory limit (`store_full`), "
    "or the picture store (S3) is unreachable (`picture_store_unavailable`), or no Redis "
    "replica confirmed the job in time (`not_replicated`: it was withdrawn); retry after "
    "`Retry-After` seconds.",
}


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    }
}
_WITH_RETRY_AFTER = {409, 429, 503}


def documented(*codes: int, by_reference: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error codes, all shaped as `ErrorBody`.

    `by_reference` for routes whose own media type is not JSON (the SSE stream): FastAPI would
    declare a `model` under the route's media type, but errors are always JSON.
    """
    entries: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"description": _DESCRIPTIONS[code]}
        if by_reference:
            schema = {"$ref": "#/components/schemas/ErrorBody"}
            entry["content"] = {"application/json": {"schema": schema}}
        else:
            entry["model"] = ErrorBody
        if code in _WITH_RETRY_AFTER:
            entry["headers"] = RETRY_AFTER
        entries[code] = entry
    return entries


def _answer(
    status: int,
    items: list[dict[str, Any]],
    retry_after_s: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    headers = dict(headers or {})
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    content = {"detail": _finite(jsonable_encoder(items))}
    return JSONResponse(status_code=status, content=content, headers=headers)


async def _mapped(_: Request, exc: Exception) -> JSONResponse:
    return answer_for(exc)


def answer_for(exc: Exception) -> JSONResponse:
    """The answer the table gives `exc` (for middleware, which runs outside the handlers)."""
    kind = next(ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS)
    if kind.message is not None:
        log.warning("%s: %s", kind.type, exc)
    item = {"type": kind.type, "loc": list(kind.loc), "msg": kind.message or str(exc)}
    return _answer(kind.status, [item], kind.retry_after_s)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = _HTTP_TYPES.get(exc.status_code, "http_error")
    msg = exc.detail if isinstance(exc.detail, str) else kind
    loc: list[str] = []
    if exc.status_code == 413:
        loc, msg = ["body"], body_limit.message(request.app.state.settings.max_body_bytes)
    item = {"type": kind, "loc": loc, "msg": msg}
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_methods_of(request))
    return _answer(exc.status_code, [item], headers=headers)


def _methods_of(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's,
    where two routes share a path: GET and POST /sdapi/v1/options)."""
    methods: set[str] = set()
    for route in request.app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


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
    """What JSON in UTF-8 cannot carry, made so: NaN and Infinity as strings, lone surrogates
    (`\ud800`, which a JSON body may hold) escaped. A client may send either."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_finite(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _answer(422, [_trim(dict(e)) for e in exc.errors()])


async def _job_rejected(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobRejected)
    return _answer(422, [v.as_error() for v in exc.violations])


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    where = {
        "method": request.method,
        "route": getattr(request.scope.get("route"), "path", request.url.path),
        "job_id": request.path_params.get("job_id"),
    }
    log.error("unhandled error", exc_info=exc, extra=where)
    item = {"type": "internal_error", "loc": [], "msg": "the gateway hit an internal error"}
    if request.url.path.startswith("/v1/"):
        # Answered outside the OpenAI face's error rewriting (Starlette's outermost layer).
        return JSONResponse(openai_error(500, [item]), status_code=500)
    return _answer(500, [item])


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(JobRejected, _job_rejected)
    app.add_exception_handler(HTTPException, _http_error)
    for exc_class in ERRORS:
        app.add_exception_handler(exc_class, _mapped)
    app.add_exception_handler(Exception, _unexpected)
