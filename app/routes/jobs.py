from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, HTTPException, Response
from fastapi.responses import StreamingResponse

from app.deps import AsyncRedisDep, JobServiceDep, StoreDep
from app.events import job_events
from app.examples import JOB_EXAMPLES, LATENT_MISMATCH_RESPONSE
from app.job_service import JobAlreadyFinished, JobNotFound
from contract.envelope import JobEnvelope
from contract.job_store import job_key
from contract.spec import JobSpec

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[UUID, "the id POST /jobs returned"]


def _not_found(job_id: UUID) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no job {job_id} (unknown, or expired)")


@router.post(
    "",
    status_code=202,
    operation_id="create_job",
    responses={
        202: {"description": "Queued. Poll the `Location` header's URL."},
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
    response: Response,
) -> JobEnvelope:
    """Queue a job of one to four stages; answers 202 with the envelope."""
    envelope = jobs.submit(spec)
    response.headers["Location"] = f"/jobs/{envelope.id}"
    return envelope


@router.get("/{job_id}", operation_id="get_job", responses={404: {"description": "No such job."}})
def get_job(job_id: UUID, store: StoreDep) -> JobEnvelope:
    """The job envelope: status, progress, images (when succeeded) or error (when failed)."""
    envelope = store.load(str(job_id))
    if envelope is None:
        raise _not_found(job_id)
    return envelope


@router.get(
    "/{job_id}/images/{index}",
    operation_id="get_job_image",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The PNG."},
        404: {"description": "No such job or image."},
    },
)
def get_job_image(job_id: UUID, index: int, store: StoreDep) -> Response:
    """One result image as PNG."""
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
        404: {"description": "No such job."},
        409: {"description": "The job has already finished."},
    },
)
def cancel_job(job_id: UUID, jobs: JobServiceDep, response: Response) -> JobEnvelope:
    """Cancel a job. A queued job never runs; a running one stops at the next denoising step."""
    try:
        outcome = jobs.cancel(str(job_id))
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
        404: {"description": "No such job."},
    },
)
async def stream_job_events(job_id: UUID, redis: AsyncRedisDep) -> StreamingResponse:
    """Follow a job live instead of polling."""
    if not await redis.exists(job_key(str(job_id))):
        raise _not_found(job_id)
    return StreamingResponse(
        job_events(redis, str(job_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
