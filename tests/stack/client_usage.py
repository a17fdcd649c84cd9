"""What an app does with a client generated from the service's OpenAPI document.

`tests/stack/test_generated_client.py` generates `imagegen_client` with openapi-python-client from
the running gateway's /openapi.json, type-checks this script with `mypy --strict` against it, and
runs it against the stack: python client_usage.py http://127.0.0.1:PORT

Every answer is read through the generated types: no raw JSON, no casts.
"""

from __future__ import annotations

import sys
import time
from uuid import UUID

from imagegen_client import Client
from imagegen_client.api.jobs import cancel_job, create_job, get_job, get_job_image
from imagegen_client.api.models import list_models
from imagegen_client.models import (
    ErrorBody,
    ErrorItemType,
    Handoff,
    JobEnvelope,
    JobSpec,
    JobStatus,
    Mode,
    ModelInfo,
    StageInput,
    StageTraceInput,
)
from imagegen_client.types import File

FINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}


def models(client: Client) -> dict[str, ModelInfo]:
    listed = list_models.sync(client=client)
    assert isinstance(listed, list), listed
    return {m.name: m for m in listed}


def submit(client: Client, spec: JobSpec) -> JobEnvelope:
    response = create_job.sync_detailed(client=client, body=spec)
    assert response.status_code == 202, response.content
    assert isinstance(response.parsed, JobEnvelope)
    assert response.headers["location"] == f"/jobs/{response.parsed.id}"
    return response.parsed


def wait(client: Client, job_id: UUID, timeout_s: float = 120) -> JobEnvelope:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        envelope = get_job.sync(job_id, client=client)
        assert isinstance(envelope, JobEnvelope), envelope
        if envelope.status in FINAL:
            return envelope
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


def text_to_image_then_flux_hires(client: Client) -> None:
    spec = JobSpec(
        prompt="a lighthouse at dusk",
        seed=7,
        width=64,
        height=64,
        stages=[
            StageInput(model="demo-sd15", steps=2),
            StageInput(
                model="demo-flux", mode=Mode.HIRES, handoff=Handoff.PIXEL, scale=2.0, steps=2
            ),
        ],
    )
    done = wait(client, submit(client, spec).id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert [t.input_ for t in done.trace] == [StageTraceInput.TEXT, StageTraceInput.PIXELS]
    picture = get_job_image.sync(done.id, done.images[0].index, client=client)
    assert isinstance(picture, File), picture
    png = picture.payload.read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert (done.images[0].width, done.images[0].height) == (128, 128)


def refused_latent_handoff(client: Client) -> None:
    """The headline rule: SD1.5 latents cannot go to Flux; the refusal is a typed error."""
    spec = JobSpec(
        prompt="p",
        width=64,
        height=64,
        stages=[
            StageInput(model="demo-sd15", steps=2),
            StageInput(model="demo-flux", mode=Mode.HIRES, handoff=Handoff.LATENT, steps=2),
        ],
    )
    response = create_job.sync_detailed(client=client, body=spec)
    assert response.status_code == 422
    error = response.parsed
    assert isinstance(error, ErrorBody), response.content
    first = error.detail[0]
    assert first.type_ is ErrorItemType.LATENT_SPACE_MISMATCH
    assert first.loc == ["body", "stages", 1, "handoff"]
    assert "pixel" in first.msg


def cancel_a_job(client: Client) -> None:
    # Several seconds on a CPU: canceled while queued (200) or running (202).
    steps = [StageInput(model="demo-sd15", steps=150)]
    spec = JobSpec(prompt="slow", width=384, height=384, stages=steps)
    job_id = submit(client, spec).id
    response = cancel_job.sync_detailed(job_id, client=client)
    assert response.status_code in (200, 202), response.content
    assert isinstance(response.parsed, JobEnvelope)
    ended = wait(client, job_id)
    assert ended.status is JobStatus.CANCELED
    again = cancel_job.sync_detailed(job_id, client=client)
    assert again.status_code == 409
    assert isinstance(again.parsed, ErrorBody)
    assert again.parsed.detail[0].type_ is ErrorItemType.JOB_ALREADY_FINISHED


def unknown_job(client: Client) -> None:
    missing = get_job.sync(UUID(int=0), client=client)
    assert isinstance(missing, ErrorBody)
    assert missing.detail[0].type_ is ErrorItemType.JOB_NOT_FOUND


def main(base_url: str) -> None:
    # raise_on_unexpected_status: any answer the document does not declare fails the run.
    with Client(base_url=base_url, raise_on_unexpected_status=True, timeout=None) as client:
        known = models(client)
        assert known["demo-flux"].latent_space.channels == 16
        assert known["demo-sd15"].architecture.value == "sd15"
        text_to_image_then_flux_hires(client)
        refused_latent_handoff(client)
        cancel_a_job(client)
        unknown_job(client)
    print("generated client: every call typed and answered as documented")


if __name__ == "__main__":
    main(sys.argv[1])
