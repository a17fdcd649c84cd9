"""How a job's stages end for one member of a group: the closed set the segment files.

`workers.stages.chain` gives every member exactly one of these, and `workers.segments.state`
files each as the job's record says it: `Made` hands the pictures on or stores them, `Stopped` is
`canceled` or a `timeout` failure, `Failed` is a failure of its type with its message. No
exception travels as a value: whatever a stage raises becomes a `Failed` where it is caught.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image
from redis.exceptions import OutOfMemoryError, RedisError

from contract.envelope import FailureType, StageTrace
from contract.violations import JobRejected
from jobs.disclosure import without_host_paths
from jobs.pictures import PicturesUnavailable
from workers.models.cache import ModelUnavailable, first_line
from workers.stages.errors import StageError

log = logging.getLogger("imagegen.worker")

OUT_OF_MEMORY = "the worker ran out of GPU memory; ask for a smaller size or fewer images"

# What a step monitor answers when a job must stop: its cancel was asked for, or its time is up.
StopReason = Literal["canceled", "timeout"]


@dataclass(frozen=True)
class Made:
    """The segment's stages ran: its pictures, and a trace per stage."""

    pictures: list[Image.Image]
    traces: list[StageTrace]


@dataclass(frozen=True)
class Stopped:
    """Its step monitor said stop; its pictures, if any were made, are dropped."""

    reason: StopReason


@dataclass(frozen=True)
class Failed:
    """It cannot end with pictures: `type` is the machine name clients see, `message` what they
    read (a sentence they can act on, never a traceback)."""

    type: FailureType
    message: str

    @classmethod
    def of(cls, exc: Exception) -> Failed:
        """The failure an exception raised while a segment ran stands for. A job rule broken, a
        model that cannot load and a stage's own refusal keep their words; anything else is the
        model's, logged with its traceback for the operator."""
        if isinstance(exc, JobRejected):
            return cls(FailureType.INVALID_JOB, str(exc))
        # Which file, not where the host keeps it (jobs.disclosure); the log has the path.
        if isinstance(exc, ModelUnavailable):
            return cls(FailureType.MODEL_UNAVAILABLE, without_host_paths(str(exc)))
        if isinstance(exc, StageError):
            return cls(exc.type, without_host_paths(str(exc)))
        if isinstance(exc, torch.OutOfMemoryError):
            log.error("out of memory", exc_info=exc)
            return cls(FailureType.OUT_OF_MEMORY, OUT_OF_MEMORY)
        if isinstance(exc, RedisError):
            # Not the model's: a store that stayed full (or away) past the write's retries. Its
            # text names the refused command, a picture's bytes among its arguments: logged only.
            log.error("the job store refused a write", exc_info=exc)
            return cls.not_stored(exc)
        log.error("generation failed", exc_info=exc)
        return cls(
            FailureType.GENERATION_FAILED,
            f"generation failed in the model ({type(exc).__name__}); the worker log has "
            f"details. {first_line(exc)}",
        )

    @classmethod
    def not_stored(cls, exc: RedisError | PicturesUnavailable) -> Failed:
        """The job's results were made and the store refused them to the end of their wait."""
        if isinstance(exc, PicturesUnavailable):
            return cls(
                FailureType.STORAGE_UNAVAILABLE,
                f"the picture store (S3) could not be reached or refused the job's pictures "
                f"({exc}); submit the job again later",
            )
        if isinstance(exc, OutOfMemoryError):
            return cls(
                FailureType.STORE_FULL,
                "the job store (Redis) stayed at its memory limit while the finished pictures "
                "waited for room; submit the job again later",
            )
        return cls(
            FailureType.STORAGE_UNAVAILABLE,
            f"the job store (Redis) refused to keep the job's results ({type(exc).__name__}): "
            "it is unreachable; submit the job again later",
        )


Outcome = Made | Stopped | Failed
