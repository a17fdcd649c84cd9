"""What a client reads for each exception a segment can raise: its type, and words without a
traceback."""

from __future__ import annotations

import logging

import pytest
import torch
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from contract.envelope import FailureType
from contract.violations import JobRejected, Violation
from workers.models.cache import ModelUnavailable
from workers.stages.errors import StageError
from workers.stages.outcomes import OUT_OF_MEMORY, Failed


def test_a_rule_a_load_and_a_stages_refusal_keep_their_own_words() -> None:
    rejected = JobRejected(
        [Violation("latent_space_mismatch", ("stages", 1), "use a pixel handoff")]
    )
    assert Failed.of(rejected).type is FailureType.INVALID_JOB
    assert "use a pixel handoff" in Failed.of(rejected).message
    unavailable = ModelUnavailable("model 'x' could not be loaded: no such folder")
    assert Failed.of(unavailable) == Failed(
        FailureType.MODEL_UNAVAILABLE, "model 'x' could not be loaded: no such folder"
    )
    refused = StageError(FailureType.LATENT_SPACE_MISMATCH, "stage 1 cannot take the latents")
    assert Failed.of(refused) == Failed(
        FailureType.LATENT_SPACE_MISMATCH, "stage 1 cannot take the latents"
    )


def test_out_of_memory_says_what_to_ask_for_instead() -> None:
    failed = Failed.of(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert failed == Failed(FailureType.OUT_OF_MEMORY, OUT_OF_MEMORY)
    assert "smaller size or fewer images" in failed.message


def test_a_models_own_error_names_its_kind_and_first_line_and_logs_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\n  deep inside")
    except RuntimeError as exc:
        with caplog.at_level(logging.ERROR, "imagegen.worker"):
            failed = Failed.of(exc)
    assert failed.type is FailureType.GENERATION_FAILED
    assert "(RuntimeError)" in failed.message
    assert "mat1 and mat2 shapes cannot be multiplied" in failed.message
    assert "deep inside" not in failed.message
    assert "Traceback" not in failed.message
    [record] = caplog.records
    assert record.exc_info is not None  # the operator gets the traceback, in the worker's log


def test_a_full_store_is_store_full_and_an_away_one_unavailable_without_the_command() -> None:
    # What redis-py raises at maxmemory: its text carries the refused command, PNG bytes and all
    refused = OutOfMemoryError(
        "command not allowed when used memory > 'maxmemory'. SET imagegen:job:x:image:0 \x89PNG"
    )
    failed = Failed.of(refused)
    assert failed.type is FailureType.STORE_FULL
    assert "memory limit" in failed.message
    assert "SET" not in failed.message
    assert "PNG" not in failed.message
    away = Failed.of(RedisConnectionError("Error 111 connecting to 10.0.0.9:6379"))
    assert away.type is FailureType.STORAGE_UNAVAILABLE
    assert "unreachable" in away.message
    assert "10.0.0.9" not in away.message
