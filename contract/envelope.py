"""The job envelope: the one shape every job response has, from queued to finished."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contract.checked import CheckedSpec
from contract.latent_spaces import LatentSpaceName
from contract.spec import ControlModule, ControlNetUse, IpAdapterUse, LoraUse, WebhookEvent


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


class FailureType(StrEnum):
    """Why a job failed: the closed set clients may switch on."""

    INVALID_JOB = "invalid_job"  # a rule broken that only the worker could check
    LATENT_SPACE_MISMATCH = "latent_space_mismatch"
    MODEL_UNAVAILABLE = "model_unavailable"  # its weights failed to load on the worker
    OUT_OF_MEMORY = "out_of_memory"
    GENERATION_FAILED = "generation_failed"  # the model raised
    TIMEOUT = "timeout"  # the job's time limit, or the worker's hard one
    WORKER_LOST = "worker_lost"  # its worker died and no retries were left
    WORKER_ERROR = "worker_error"  # the worker failed outside generation
    RECORD_UNREADABLE = "record_unreadable"  # the stored job no longer parses
    QUEUE_ENTRY_LOST = "queue_entry_lost"  # its RQ job was deleted from under the service
    NON_FINITE_OUTPUT = "non_finite_output"  # NaN/Inf latents or pixels, never a picture
    STORAGE_UNAVAILABLE = "storage_unavailable"  # the job store refused its writes to the end
    STORE_FULL = "store_full"  # the store stayed at its memory limit while its pictures waited


class Answer(BaseModel):
    """A model the service only sends: every field is always present (null where empty), so the
    document marks them all required and generated clients need not test for absent ones."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ImageInfo(Answer):
    index: int
    url: str = Field(description="GET this for the PNG.")
    width: int
    height: int
    seed: int


class JobError(Answer):
    type: FailureType
    message: str = Field(description="What happened and what to do about it.")


class Progress(Answer):
    stage: int = Field(description="1-based index of the running stage.")
    stages: int
    step: int = Field(description="Denoising steps done in this stage.")
    steps: int
    fraction: float = Field(ge=0, le=1, description="Of the whole job, by steps.")
    eta_s: float | None = Field(None, description="Estimated seconds left.")


class ControlNetTrace(Answer):
    """A ControlNet that steered a stage (one of weight 0, or of no part of the schedule, did
    not act, and is not listed)."""

    name: str
    module: ControlModule
    weight: float
    guidance_start: float
    guidance_end: float

    @classmethod
    def of(cls, use: ControlNetUse) -> ControlNetTrace:
        return cls(
            name=use.name, module=use.module, weight=use.weight,
            guidance_start=use.guidance_start, guidance_end=use.guidance_end,
        )  # fmt: skip


class IpAdapterTrace(Answer):
    """An IP-Adapter that steered a stage with a picture."""

    name: str
    weight: float

    @classmethod
    def of(cls, use: IpAdapterUse) -> IpAdapterTrace:
        return cls(name=use.name, weight=use.weight)


StageInput = Literal["text", "init_image", "latents", "pixels"]


class StageTrace(Answer):
    """What one stage received and produced."""

    stage: int
    model: str
    worker: str = Field(description="The worker process that ran it.")
    sampler: str = Field(description="The scheduler, named as A1111-style tools name it.")
    input: StageInput = Field(description="What the stage started from.")
    input_latent_space: LatentSpaceName | None = None
    input_shape: list[int] | None = None
    width: int
    height: int
    seconds: float
    step_seconds: float | None = Field(None, description="Mean time of one denoising step.")
    decoded_again_in_fp32: bool = Field(
        False,
        description="The VAE's decode at the model's dtype gave NaN/Inf pixels, and decoding "
        "again in fp32 gave a finite picture (A1111's answer to the fp16 SDXL VAE).",
    )
    loras: list[LoraUse] = Field([], description="The LoRAs active during this stage.")
    upscaler: str | None = Field(
        None, description="hires: the resampler or upscaler model that made its input."
    )
    clip_skip: int | None = Field(
        None, description="A1111's Clip skip the stage read its prompt with; none: the last layer."
    )
    vae: str | None = Field(
        None, description="The registered VAE that stood in for the model's own; none: its own."
    )
    embeddings: list[str] = Field(
        [], description="The textual-inversion embeddings its prompt and negative prompt named."
    )
    controlnets: list[ControlNetTrace] = Field([], description="The ControlNets that steered it.")
    ip_adapters: list[IpAdapterTrace] = Field(
        [], description="The IP-Adapters that steered it (one of weight 0 did not act)."
    )
    batch_size: int = Field(
        1,
        description="Pictures made in the same pipeline call, this job's and other jobs' "
        "batched with it (IMAGEGEN_BATCH_WINDOW_MS).",
    )


WebhookState = Literal["pending", "delivered", "failed"]


class WebhookDelivery(Answer):
    """The notification a finished job owes its `webhook_url`, and how its delivery went."""

    id: str = Field(description="The `webhook-id` header of every attempt: deduplicate on it.")
    event: WebhookEvent
    state: WebhookState = Field(
        description="`pending` until a receiver answered 2xx (`delivered`) or the attempts "
        "are spent or the receiver refused it for good (`failed`)."
    )
    attempts: int = Field(description="POSTs tried so far.")
    last_status: int | None = Field(description="The receiver's HTTP status at the last attempt.")
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    next_attempt_at: datetime | None = Field(description="When the next attempt is due.")
    delivered_at: datetime | None = None


class JobEnvelope(Answer):
    id: UUID
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    spec: CheckedSpec | None = Field(
        description="The checked spec: seed, defaults and every stage's size filled in. Null "
        "only when the stored job could no longer be read (`error.type` is `record_unreadable`)."
    )
    progress: Progress | None = None
    images: list[ImageInfo] = []
    error: JobError | None = None
    trace: list[StageTrace] = Field([], description="Per stage, once the job has succeeded.")
    webhook: WebhookDelivery | None = Field(
        None, description="Once the job has ended, the notification it owes `webhook_url`."
    )
