"""The gateway on a real Redis with no worker: admission, validation and reads."""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import CanceledJobRegistry

from contract.envelope import JobEnvelope
from jobs.queues import SERIALIZER, pool_queue
from jobs.redis_keys import job_key
from tests.app.conftest import SPEC
from tests.helpers import bomb_png_b64, png_b64, queued_anything, truncated_png_b64


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": "a lighthouse",
        "width": 256,
        "height": 256,
        "stages": [{"model": "demo-sd15", "steps": 4}],
    }
    body.update(overrides)
    return body


def test_post_queues_a_job_and_answers_202_with_location(client: TestClient, redis: Redis) -> None:
    response = client.post("/jobs", json=spec(seed=5))
    assert response.status_code == 202
    envelope = response.json()
    assert response.headers["location"] == f"/jobs/{envelope['id']}"
    assert uuid.UUID(envelope["id"]).version == 4
    assert envelope["status"] == "queued"
    assert envelope["spec"]["seed"] == 5
    assert envelope["spec"]["stages"][0]["guidance_scale"] == 7.0  # the sd15 default, filled in
    assert redis.llen("rq:queue:imagegen.default") == 1
    # The queue payload is JSON (zlib-compressed by RQ), not a pickle.
    payload = redis.hget(f"rq:job:{envelope['id']}", "data")
    assert payload is not None
    func, _instance, args, _kwargs = json.loads(zlib.decompress(payload))
    assert (func, args) == ("workers.tasks.run_job", [envelope["id"], 0])
    assert client.get(f"/jobs/{envelope['id']}").json() == envelope


def test_missing_seed_is_chosen_and_reported(client: TestClient) -> None:
    seeds = {client.post("/jobs", json=spec()).json()["spec"]["seed"] for _ in range(3)}
    assert len(seeds) == 3
    assert all(isinstance(s, int) and s >= 0 for s in seeds)


def test_unknown_job_is_404_and_malformed_id_is_422(client: TestClient) -> None:
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    assert client.get(f"/jobs/{uuid.uuid4()}/images/0").status_code == 404
    response = client.get("/jobs/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "job_id"]


BAD_INPUT = {
    "malformed base64": (
        spec(init_image="@@not base64@@"),
        ["body", "init_image"],
        "invalid_base64",
    ),
    "not an image": (
        spec(init_image=base64.b64encode(b"hello world").decode()),
        ["body", "init_image"],
        "unsupported_image",
    ),
    "truncated png": (
        spec(init_image=truncated_png_b64()),
        ["body", "init_image"],
        "invalid_image",
    ),
    "image over the pixel budget": (
        spec(init_image=png_b64(1100, 1000)),
        ["body", "init_image"],
        "image_too_large",
    ),
    "decompression bomb": (
        spec(init_image=bomb_png_b64()),
        ["body", "init_image"],
        "image_too_large",
    ),
    "switch_at 0": (
        spec(
            stages=[
                {"model": "demo-sdxl"},
                {"model": "demo-sdxl-refiner", "mode": "refine", "switch_at": 0},
            ]
        ),
        ["body", "stages", 1, "switch_at"],
        "greater_than",
    ),
    "switch_at 1": (
        spec(
            stages=[
                {"model": "demo-sdxl"},
                {"model": "demo-sdxl-refiner", "mode": "refine", "switch_at": 1},
            ]
        ),
        ["body", "stages", 1, "switch_at"],
        "less_than",
    ),
    "scale 0": (
        spec(stages=[{"model": "demo-sd15"}, {"model": "demo-sd15", "mode": "hires", "scale": 0}]),
        ["body", "stages", 1, "scale"],
        "greater_than_equal",
    ),
    "five stages": (
        spec(
            stages=[{"model": "demo-sd15"}]
            + [{"model": "demo-sd15", "mode": "hires", "scale": 1}] * 4
        ),
        ["body", "stages"],
        "too_long",
    ),
    "unknown model": (
        spec(stages=[{"model": "no-such-model"}]),
        ["body", "stages", 0, "model"],
        "unknown_model",
    ),
    "model name like a path": (
        spec(stages=[{"model": "../../etc/passwd"}]),
        ["body", "stages", 0, "model"],
        "string_pattern_mismatch",
    ),
    "width not a multiple of 8": (spec(width=250), ["body", "width"], "size_not_multiple"),
    "flux width not a multiple of 16": (
        spec(width=264, stages=[{"model": "demo-flux"}]),
        ["body", "width"],
        "size_not_multiple",
    ),
    "over the pixel budget": (
        spec(width=2048, height=2048),
        ["body", "width"],
        "pixel_budget_exceeded",
    ),
    "hires over the pixel budget": (
        spec(
            width=320,
            stages=[{"model": "demo-sd15"}, {"model": "demo-sd15", "mode": "hires", "scale": 4}],
        ),
        ["body", "stages", 1, "scale"],
        "pixel_budget_exceeded",
    ),
    "num_images 5": (spec(num_images=5), ["body", "num_images"], "less_than_equal"),
    "negative seed": (spec(seed=-1), ["body", "seed"], "greater_than_equal"),
    "refiner first without a picture": (
        spec(stages=[{"model": "demo-sdxl-refiner"}]),
        ["body", "stages", 0, "model"],
        "text_to_image_unsupported",
    ),
    "flux with a negative prompt": (
        spec(negative_prompt="blurry", stages=[{"model": "demo-flux"}]),
        ["body", "negative_prompt"],
        "negative_prompt_unsupported",
    ),
    "flux guidance out of range": (
        spec(stages=[{"model": "demo-flux", "guidance_scale": 20}]),
        ["body", "stages", 0, "guidance_scale"],
        "guidance_out_of_range",
    ),
    "flux with a clip skip": (
        spec(stages=[{"model": "demo-flux", "clip_skip": 2}]),
        ["body", "stages", 0, "clip_skip"],
        "clip_skip_unsupported",
    ),
    "an sd1.5 vae on sdxl": (
        spec(stages=[{"model": "demo-sdxl", "vae": "demo-sd15-vae"}]),
        ["body", "stages", 0, "vae"],
        "vae_latent_space_mismatch",
    ),
    "an sdxl vae on flux": (
        spec(
            stages=[
                {"model": "demo-sd15"},
                {"model": "demo-flux", "mode": "hires", "vae": "demo-sdxl-vae"},
            ]
        ),
        ["body", "stages", 1, "vae"],
        "vae_latent_space_mismatch",
    ),
    "an sd1.5 embedding in an sdxl prompt": (
        spec(prompt="a castle, demo-sd15-emb", stages=[{"model": "demo-sdxl"}]),
        ["body", "prompt"],
        "embedding_architecture_mismatch",
    ),
    "an sdxl embedding in a flux stage's own prompt": (
        spec(
            stages=[
                {"model": "demo-sdxl"},
                {"model": "demo-flux", "mode": "hires", "prompt": "demo-sdxl-emb"},
            ]
        ),
        ["body", "stages", 1, "prompt"],
        "embedding_architecture_mismatch",
    ),
    "an sd1.5 controlnet on sdxl": (
        spec(
            stages=[
                {
                    "model": "demo-sdxl",
                    "controlnets": [{"name": "demo-sd15-canny", "image": png_b64(64, 64)}],
                }
            ]
        ),
        ["body", "stages", 0, "controlnets", 0],
        "controlnet_architecture_mismatch",
    ),
    "a controlnet preprocessor not served": (
        spec(
            stages=[
                {
                    "model": "demo-sd15",
                    "controlnets": [{"name": "demo-sd15-canny", "module": "depth"}],
                }
            ]
        ),
        ["body", "stages", 0, "controlnets", 0, "module"],
        "literal_error",
    ),
    "an sd1.5 ip-adapter on sdxl": (
        spec(
            stages=[
                {
                    "model": "demo-sdxl",
                    "ip_adapters": [{"name": "demo-sd15-ip", "image": png_b64(64, 64)}],
                }
            ]
        ),
        ["body", "stages", 0, "ip_adapters", 0],
        "ip_adapter_architecture_mismatch",
    ),
    "an ip-adapter without its picture": (
        spec(stages=[{"model": "demo-sd15", "ip_adapters": [{"name": "demo-sd15-ip"}]}]),
        ["body", "stages", 0, "ip_adapters", 0, "image"],
        "missing",
    ),
    "an unknown vae": (
        spec(stages=[{"model": "demo-sd15", "vae": "nope"}]),
        ["body", "stages", 0, "vae"],
        "unknown_vae",
    ),
    "clip skip past A1111's 12": (
        spec(stages=[{"model": "demo-sd15", "clip_skip": 13}]),
        ["body", "stages", 0, "clip_skip"],
        "less_than_equal",
    ),
    "mode on the first stage": (
        spec(stages=[{"model": "demo-sd15", "mode": "hires"}]),
        ["body", "stages", 0, "mode"],
        "field_not_allowed",
    ),
    "later stage without mode": (
        spec(stages=[{"model": "demo-sd15"}, {"model": "demo-sd15"}]),
        ["body", "stages", 1, "mode"],
        "missing",
    ),
    "latent upscaler on a pixel handoff": (
        spec(
            stages=[
                {"model": "demo-sd15"},
                {
                    "model": "demo-flux",
                    "mode": "hires",
                    "handoff": "pixel",
                    "upscaler": "latent-bicubic",
                },
            ]
        ),
        ["body", "stages", 1, "upscaler"],
        "upscaler_handoff_mismatch",
    ),
    "unknown field": (spec(steps=20), ["body", "steps"], "extra_forbidden"),
    "strength without init_image": (spec(strength=0.5), ["body", "strength"], "field_not_allowed"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_a_4xx_naming_the_field_and_nothing_is_queued(
    client: TestClient, redis: Redis, case: str
) -> None:
    body, loc, kind = BAD_INPUT[case]
    response = client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"] == loc and e["type"] == kind for e in errors), errors
    assert all(e["msg"] for e in errors)
    assert not queued_anything(redis)


def test_huge_inputs_are_not_echoed_back(client: TestClient) -> None:
    response = client.post("/jobs", json=spec(prompt="x" * 100_000))
    assert response.status_code == 422
    assert len(response.content) < 2000


def test_init_image_job_is_queued_without_the_picture_in_the_envelope(
    client: TestClient, redis: Redis
) -> None:
    response = client.post("/jobs", json=spec(init_image=png_b64(300, 200), strength=0.6))
    assert response.status_code == 202, response.text
    envelope = response.json()
    assert "init_image" not in envelope["spec"] or envelope["spec"]["init_image"] is None
    assert envelope["spec"]["strength"] == 0.6
    assert redis.exists(f"imagegen:job:{envelope['id']}:init")


def test_a_latent_handoff_across_spaces_is_a_422_and_queues_nothing(
    client: TestClient, redis: Redis
) -> None:
    body = spec(
        stages=[
            {"model": "demo-sd15", "steps": 4},
            {"model": "demo-flux", "mode": "hires", "handoff": "latent", "scale": 2},
        ]
    )
    response = client.post("/jobs", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "latent_space_mismatch"
    assert error["loc"] == ["body", "stages", 1, "handoff"]
    assert "handoff: pixel" in error["msg"]
    assert not queued_anything(redis), "a refused job must leave nothing in Redis"
    body["stages"][1]["handoff"] = "pixel"
    assert client.post("/jobs", json=body).status_code == 202


def test_canceling_a_queued_job_files_its_rq_job_canceled(client: TestClient, redis: Redis) -> None:
    job_id = client.post("/jobs", json=spec()).json()["id"]
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    rq_job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
    assert rq_job.get_status() == RQStatus.CANCELED  # `rq info` agrees; no worker will take it
    queue = pool_queue(redis, "default")
    assert job_id not in queue.get_job_ids()
    assert job_id in CanceledJobRegistry(queue=queue)


def test_a_job_whose_record_no_longer_parses_reads_as_failed_never_500(
    client: TestClient, redis: Redis
) -> None:
    job_id = client.post("/jobs", json=spec()).json()["id"]
    redis.hset(job_key(job_id), "spec", json.dumps({"prompt": "p", "stages": "all of them"}))

    envelope = client.get(f"/jobs/{job_id}").json()
    JobEnvelope.model_validate(envelope)  # what the document promises
    assert (envelope["status"], envelope["spec"]) == ("failed", None)
    assert envelope["error"]["type"] == "record_unreadable"
    assert "broken: spec" in envelope["error"]["message"]
    refused = client.post(f"/jobs/{job_id}/cancel")
    assert (refused.status_code, refused.json()["detail"][0]["type"]) == (
        409,
        "job_already_finished",
    )
    with client.stream("GET", f"/jobs/{job_id}/events") as events:
        data = next(line for line in events.iter_lines() if line.startswith("data:"))
    assert json.loads(data.removeprefix("data:"))["error"]["type"] == "record_unreadable"


def test_cancel_is_not_a_500_when_rq_cannot_file_the_job_canceled(
    client: TestClient, redis: Redis
) -> None:
    """Found by schemathesis: RQ's cancel raises when a worker is dequeuing the job at that
    moment (an execution listed but not yet stored). The job is canceled all the same."""
    job_id = client.post("/jobs", json=spec()).json()["id"]
    # What a worker leaves mid-dequeue: the RQ job started, its execution listed, not stored.
    Job.fetch(job_id, connection=redis, serializer=SERIALIZER).set_status(RQStatus.STARTED)
    redis.zadd(f"rq:executions:{job_id}", {"in-flight": 1e12})
    canceled = client.post(f"/jobs/{job_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert client.get(f"/jobs/{job_id}").json()["status"] == "canceled"


def test_an_empty_idempotency_key_is_refused_not_shared_by_every_retry(
    client: TestClient, redis: Redis
) -> None:
    response = client.post("/jobs", json=SPEC, headers={"Idempotency-Key": ""})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["header", "idempotency-key"]
    assert not queued_anything(redis)


def test_a_job_canceled_after_its_pictures_were_stored_serves_none(
    client: TestClient, redis: Redis
) -> None:
    # As a cancel at a job's last step leaves it: the picture stored, the job ended canceled.
    job_id = client.post("/jobs", json=SPEC).json()["id"]
    client.app.state.jobs.store.store_images(job_id, [base64.b64decode(png_b64(8, 8))])  # type: ignore[attr-defined]
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    envelope = client.get(f"/jobs/{job_id}").json()
    assert (envelope["status"], envelope["images"]) == ("canceled", [])
    assert client.get(f"/jobs/{job_id}/images/0").status_code == 404
