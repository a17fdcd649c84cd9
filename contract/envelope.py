"""The job envelope: the one shape every job response has, from queued to finished."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from contract.spec import JobSpec


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


def image_url(job_id: str, index: int) -> str:
    """Where the gateway serves a job's image."""
    return f"/jobs/{job_id}/images/{index}"


class ImageInfo(BaseModel):
    index: int
    url: str = Field(description="GET this for the PNG.")
    width: int
    height: int
    seed: int


class JobError(BaseModel):
    type: str = Field(
        description="Machine name, e.g. generation_failed, timeout, model_unavailable."
    )
    message: str


class Progress(BaseModel):
    stage: int = Field(description="1-based index of the running stage.")
    stages: int
    step: int = Field(description="Denoising steps done in this stage.")
    steps: int
    fraction: float = Field(ge=0, le=1, description="Of the whole job, by steps.")
    eta_s: float | None = Field(None, description="Estimated seconds left.")


class StageTrace(BaseModel):
    """What one stage received and produced."""

    stage: int
    model: str
    worker: str = Field(description="The worker process that ran it.")
    sampler: str = Field(description="The scheduler, named as A1111-style tools name it.")
    input: str = Field(description="text, init_image, latents or pixels")
    input_latent_space: str | None = None
    input_shape: list[int] | None = None
    width: int
    height: int
    seconds: float
    step_seconds: float | None = Field(None, description="Mean time of one denoising step.")


class JobEnvelope(BaseModel):
    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    spec: JobSpec = Field(description="The normalized spec: seed and defaults filled in.")
    progress: Progress | None = None
    images: list[ImageInfo] = []
    error: JobError | None = None
    trace: list[StageTrace] = Field([], description="Per stage, once the job has succeeded.")
