from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Header, HTTPException, Response
from fastapi.responses import StreamingResponse

from app.deps import AsyncRedisDep, JobServiceDep, StoreDep
from app.errors import documented
from app.events import job_events
from app.examples import JOB_EXAMPLES, LATENT_MISMATCH_RESPONSE
from app.job_service import JobAlreadyFinished, JobNotFound
from app.keys import Caller, CallerDep
from contract.envelope import JobEnvelope
from contract.job_store import JobStore
from contract.redis_layout import job_key, text
from contract.spec import JobSpec

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=documented(401, 404, 503))


def _not_found(job_id: UUID) -> HTTPException:
    # Also for another key's job: a 403 would confirm that it exists.
    return HTTPException(status_code=404, detail=f"no job {job_id} (unknown, or expired)")


def _visible(store: JobStore, job_id: UUID, caller: Caller) -> JobEnvelope:
    found = store.load_with_owner(str(job_id))
    if found is None or not caller.may_see(found[1]):
        raise _not_found(job_id)
    return found[0]


@router.post(
    "",
    status_code=202,
    operation_id="create_job",
    response_model=JobEnvelope,
    responses={
        200: {"description": "Seen before: the job this Idempotency-Key and body created."},
        202: {"description": "Queued. Poll the `Location` header's URL."},
        **documented(400, 409, 413, 429),
        422: {
            "description": "The spec breaks a rule; nothing was queued. Each entry names the "
            "field (`loc`) and says how to fix it (`msg`).",
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


@router.get("/{job_id}", operation_id="get_job")
def get_job(job_id: UUID, store: StoreDep, caller: CallerDep) -> JobEnvelope:
    """The job envelope: status, progress, images (when succeeded) or error (when failed)."""
    return _visible(store, job_id, caller)


@router.get(
    "/{job_id}/images/{index}",
    operation_id="get_job_image",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The PNG."},
    },
)
def get_job_image(job_id: UUID, index: int, store: StoreDep, caller: CallerDep) -> Response:
    """One result image as PNG."""
    _visible(store, job_id, caller)
    png = store.image(str(job_id), index) if 0 <= index < 16 else None
    if png is None:
        raise HTTPException(status_code=404, detail=f"job {job_id} has no image {index}")
    return Response(content=png, media_type="image/png")


@router.post(
    "/{job_id}/cancel",
    operation_id="cancel_job",
    responses={
        200: {"description": "The job was queued and is now canceled; it will never run."},
        202: {"description": "The job is running; it stops at its next step and ends canceled."},
        **documented(409),
    },
)
def cancel_job(
    job_id: UUID, jobs: JobServiceDep, caller: CallerDep, response: Response
) -> JobEnvelope:
    """Cancel a job. A queued job never runs; a running one stops at the next denoising step."""
    try:
        outcome = jobs.cancel(str(job_id), caller)
    except JobNotFound:
        raise _not_found(job_id) from None
    except JobAlreadyFinished as done:
        raise HTTPException(
            status_code=409, detail=f"job {job_id} has already finished ({done.status.value})"
        ) from None
    response.status_code = 200 if outcome.immediate else 202
    return outcome.envelope


@router.get(
    "/{job_id}/events",
    operation_id="job_events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Server-Sent Events: an `envelope` event whenever status or progress "
            "changes, the last one when the job ends.",
        },
    },
)
async def stream_job_events(
    job_id: UUID, redis: AsyncRedisDep, caller: CallerDep
) -> StreamingResponse:
    """Follow a job live instead of polling."""
    owner = await redis.hget(job_key(str(job_id)), "owner")
    if owner is None or not caller.may_see(text(owner)):
        raise _not_found(job_id)
    return StreamingResponse(
        job_events(redis, str(job_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
