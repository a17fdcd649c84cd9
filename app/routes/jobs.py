"""Job routes. They raise the admission's exceptions; `app.errors` answers them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Header, Response
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from app.deps import AsyncRedisDep, FollowedJobDep, JobEventsDep, JobServiceDep, StreamSlotDep
from app.errors import documented
from app.events import job_events
from app.examples import JOB_EXAMPLES, LATENT_MISMATCH_RESPONSE
from app.keys import CallerDep
from contract.envelope import JobEnvelope
from contract.spec import JobSpec

log = logging.getLogger("imagegen.gateway")

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=documented(401, 404, 422, 503))

LOCATION = {
    "Location": {"description": "The job's URL: GET it to poll.", "schema": {"type": "string"}}
}
# OpenAPI links: what a client (or a stateful fuzzer) does next with the id POST /jobs returned.
_JOB_ID = {"job_id": "$response.body#/id"}


def job_links(job_id: dict[str, str]) -> dict[str, dict[str, object]]:
    """Links to the job whose id `job_id` (a runtime expression) locates in an answer."""
    return {
        "GetJob": {"operationId": "get_job", "parameters": job_id, "description": "Poll it."},
        "JobEvents": {
            "operationId": "job_events",
            "parameters": job_id,
            "description": "Follow it.",
        },
        "CancelJob": {
            "operationId": "cancel_job",
            "parameters": job_id,
            "description": "Cancel it.",
        },
    }


JOB_LINKS = job_links(_JOB_ID)
# The faces that wait for their job (A1111's, OpenAI's) answer its id in a header: the same job,
# behind the native routes.
JOB_ID_HEADER = "X-Imagegen-Job-Id"
WAITED_JOB = {
    "headers": {
        JOB_ID_HEADER: {
            "description": "The job that made the pictures: `GET /jobs/{id}` has its envelope.",
            "schema": {"type": "string", "format": "uuid"},
        }
    },
    "links": job_links({"job_id": f"$response.header.{JOB_ID_HEADER}"}),
}
# A job has images only once it has succeeded: the link starts from the envelope that lists them.
IMAGE_LINKS = {
    "GetJobImage": {
        "operationId": "get_job_image",
        "parameters": {**_JOB_ID, "index": "$response.body#/images/0/index"},
        "description": "Its first image (a succeeded job lists them in `images`).",
    },
}


@router.post(
    "",
    status_code=202,
    operation_id="create_job",
    response_model=JobEnvelope,
    responses={
        200: {
            "model": JobEnvelope,
            "description": "Seen before: the job this Idempotency-Key and body created.",
            "headers": LOCATION,
            "links": JOB_LINKS,
        },
        202: {
            "description": "Queued. Poll the `Location` header's URL.",
            "headers": LOCATION,
            "links": JOB_LINKS,
        },
        **documented(400, 409, 413, 429),
        422: {
            **documented(422)[422],
            "content": {"application/json": {"example": LATENT_MISMATCH_RESPONSE}},
        },
    },
)
def create_job(
    spec: Annotated[JobSpec, Body(openapi_examples=JOB_EXAMPLES)],
    jobs: JobServiceDep,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,  # an empty header is a client's bug, not a key every retry shares
            max_length=255,
            description="Retry-safe creation: the same key and body return the same job.",
        ),
    ] = None,
) -> Response:
    """Queue a job of one to four stages; answers 202 with the envelope."""
    envelope, created = jobs.submit(spec, caller.name, idempotency_key)
    # Serialized once, here: the hottest endpoint skips FastAPI's re-validation of the model.
    return Response(
        envelope.model_dump_json(),
        status_code=202 if created else 200,
        media_type="application/json",
        headers={"Location": f"/jobs/{envelope.id}"},
    )


@router.get(
    "/{job_id}",
    operation_id="get_job",
    responses={200: {"description": "The job's envelope.", "links": IMAGE_LINKS}},
)
def get_job(job_id: UUID, jobs: JobServiceDep, caller: CallerDep) -> JobEnvelope:
    """The job envelope: status, progress, images (when succeeded) or error (when failed)."""
    return jobs.visible(str(job_id), caller)


class ImageRedirect(BaseModel):
    """Where a picture kept in object storage is fetched from (the `Location` of a 307), for
    clients that do not follow redirects."""

    url: str = Field(description="A presigned URL of the PNG; no credentials needed.")
    expires_in_s: int = Field(description="How long the URL stays valid after this answer.")


@router.get(
    "/{job_id}/images/{index}",
    operation_id="get_job_image",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The PNG.",
        },
        307: {
            "model": ImageRedirect,
            "description": "Pictures in object storage with presigned URLs on "
            "(IMAGEGEN_S3_PRESIGN_S): fetch the PNG from `Location`, valid that many seconds.",
            "headers": {
                "Location": {
                    "description": "A presigned URL of the PNG.",
                    "schema": {"type": "string", "format": "uri"},
                }
            },
        },
    },
)
def get_job_image(job_id: UUID, index: int, jobs: JobServiceDep, caller: CallerDep) -> Response:
    """One result image as PNG, or a redirect to it in the deployment's object store."""
    redirect = jobs.image_redirect(str(job_id), index, caller)
    if redirect is not None:
        url, expires_in_s = redirect
        answer = ImageRedirect(url=url, expires_in_s=expires_in_s)
        return JSONResponse(answer.model_dump(), status_code=307, headers={"Location": url})
    return Response(content=jobs.image(str(job_id), index, caller), media_type="image/png")


@router.post(
    "/{job_id}/cancel",
    operation_id="cancel_job",
    responses={
        200: {"description": "The job was queued and is now canceled; it will never run."},
        202: {
            "model": JobEnvelope,
            "description": "The job is running; it stops at its next step and ends canceled.",
        },
        **documented(409),
    },
)
def cancel_job(
    job_id: UUID, jobs: JobServiceDep, caller: CallerDep, response: Response
) -> JobEnvelope:
    """Cancel a job. A queued job never runs; a running one stops at the next denoising step."""
    outcome = jobs.cancel(str(job_id), caller)
    response.status_code = 200 if outcome.immediate else 202
    return outcome.envelope


def resume_after(last_event_id: str | None) -> int:
    """The event id a reconnecting client last saw; anything but ASCII digits streams from the
    start ("²", a header byte 0xb2, is a digit to str.isdigit and not to int())."""
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        return int(last_event_id)
    return 0


@router.get(
    "/{job_id}/events",
    operation_id="job_events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-Sent Events: an `envelope` event whenever status or progress "
            "changes, the last one when the job ends.",
        },
        **documented(401, 404, 422, 429, 503, by_reference=True),
    },
)
async def stream_job_events(
    job_id: FollowedJobDep,
    redis: AsyncRedisDep,
    hub: JobEventsDep,
    _slot: StreamSlotDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=32,
            description="Sent by a reconnecting EventSource: the stream resumes with the current "
            "envelope and numbers its events on from this id.",
        ),
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Follow a job live instead of polling. Events carry ids and a `retry` hint."""
    resume = resume_after(last_event_id)
    try:
        async for event in job_events(redis, hub, job_id, resume):
            yield event
    except Exception:
        # The 200 is sent: end the stream (an EventSource reconnects and resumes) and say why
        # in a JSON line, not in the server's plain-text traceback.
        where = {"job_id": job_id, "method": "GET", "route": "/jobs/{job_id}/events"}
        log.exception("event stream broke off", extra=where)
