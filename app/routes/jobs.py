from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, HTTPException, Response

from app.deps import AdmissionDep, StoreDep
from app.examples import JOB_EXAMPLES, LATENT_MISMATCH_RESPONSE
from contract.envelope import JobEnvelope
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
    admission: AdmissionDep,
    response: Response,
) -> JobEnvelope:
    """Queue a job of one to four stages; answers 202 with the envelope."""
    envelope = admission.submit(spec)
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
