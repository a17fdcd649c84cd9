"""The whole path on real parts: HTTP -> gateway (uvicorn) -> Redis/RQ -> worker process -> PNG."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from rq import Queue

from app.examples import JOB_EXAMPLES
from jobs.queues import RUN_JOB, SERIALIZER, queue_name
from tests.conftest import Stack
from tests.helpers import fetch_png, png_b64, submit_and_wait, wait_final

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]


def example(name: str) -> dict[str, Any]:
    value = JOB_EXAMPLES[name]["value"]
    assert isinstance(value, dict)
    return json.loads(json.dumps(value))


def test_sd15_txt2img_gives_a_png_of_the_requested_size(stack: Stack) -> None:
    with stack.client() as client:
        spec = {**example("sd15_txt2img"), "width": 192, "height": 128, "num_images": 2}
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope["error"]
        assert envelope["error"] is None
        assert [(i["width"], i["height"]) for i in envelope["images"]] == [(192, 128)] * 2
        assert [i["seed"] for i in envelope["images"]] == [42, 43]
        assert envelope["started_at"]
        assert envelope["finished_at"]
        assert envelope["progress"]["fraction"] == 1.0
        for info in envelope["images"]:
            _, image = fetch_png(client, info["url"])
            assert image.size == (192, 128)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("sd15_txt2img", (256, 256)),
        ("sdxl_refiner", (256, 256)),
        ("sd15_flux_hires", (512, 512)),
        ("flux_latent_hires", (512, 512)),
        ("upscale", (128, 128)),
    ],
)
def test_worked_examples_run_as_they_are(stack: Stack, name: str, size: tuple[int, int]) -> None:
    with stack.client() as client:
        envelope = submit_and_wait(client, example(name))
        assert envelope["status"] == "succeeded", envelope["error"]
        _, image = fetch_png(client, envelope["images"][0]["url"])
        assert image.size == size


def test_pixel_handoff_sd15_to_flux_at_scale_2_doubles_the_base_size(stack: Stack) -> None:
    spec = example("sd15_flux_hires")
    spec.update(width=192, height=128)
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
    assert envelope["status"] == "succeeded", envelope["error"]
    base, hires = envelope["trace"]
    assert (base["width"], base["height"]) == (192, 128)
    assert hires["input"] == "pixels"  # the Flux stage got a decoded picture, not SD latents
    assert (envelope["images"][0]["width"], envelope["images"][0]["height"]) == (384, 256)


def test_refiner_consumes_the_base_latents(stack: Stack) -> None:
    with stack.client() as client:
        envelope = submit_and_wait(client, example("sdxl_refiner"))
    assert envelope["status"] == "succeeded", envelope["error"]
    base, refiner = envelope["trace"]
    assert base["input"] == "text"
    assert refiner["input"] == "latents"
    assert refiner["input_latent_space"] == "sdxl"
    assert refiner["input_shape"] == [1, 4, 32, 32]  # 256 px / VAE factor 8


def test_flux_latent_hires_unpacks_and_repacks(stack: Stack) -> None:
    with stack.client() as client:
        envelope = submit_and_wait(client, example("flux_latent_hires"))
    assert envelope["status"] == "succeeded", envelope["error"]
    assert envelope["trace"][1]["input_shape"] == [1, 16, 32, 32]  # unpacked, 16 channels


def test_init_image_job_runs_img2img(stack: Stack) -> None:
    spec = {
        "prompt": "a watercolor of a harbour",
        "seed": 9,
        "width": 128,
        "height": 128,
        "init_image": png_b64(300, 200),
        "strength": 0.6,
        "stages": [{"model": "demo-sd15", "steps": 10}],
    }
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope["error"]
        assert envelope["trace"][0]["input"] == "init_image"
        _, image = fetch_png(client, envelope["images"][0]["url"])
        assert image.size == (128, 128)


def test_refiner_can_start_from_an_init_image(stack: Stack) -> None:
    spec = {
        "prompt": "sharper",
        "seed": 1,
        "width": 128,
        "height": 128,
        "init_image": png_b64(128, 128),
        "stages": [{"model": "demo-sdxl-refiner", "steps": 10}],
    }
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
    assert envelope["status"] == "succeeded", envelope["error"]


@pytest.mark.parametrize("name", ["sd15_txt2img", "sdxl_refiner", "sd15_flux_hires"])
def test_same_seed_and_spec_give_identical_bytes(stack: Stack, name: str) -> None:
    with stack.client() as client:
        first = submit_and_wait(client, example(name))
        second = submit_and_wait(client, example(name))
        a, _ = fetch_png(client, first["images"][0]["url"])
        b, _ = fetch_png(client, second["images"][0]["url"])
        assert a == b
        other = submit_and_wait(client, {**example(name), "seed": 12345})
        c, _ = fetch_png(client, other["images"][0]["url"])
        assert c != a


def test_a_model_that_cannot_load_fails_the_job_with_a_reason(stack: Stack) -> None:
    spec = {"prompt": "x", "width": 64, "height": 64, "stages": [{"model": "demo-broken"}]}
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "failed"
        assert envelope["error"]["type"] == "model_unavailable"
        assert "demo-broken" in envelope["error"]["message"]
        assert "Traceback" not in envelope["error"]["message"]
        assert envelope["images"] == []
        # The worker keeps serving.
        assert submit_and_wait(client, example("sd15_txt2img"))["status"] == "succeeded"


def test_worker_checks_the_latent_rule_again_for_jobs_that_skip_the_gateway(stack: Stack) -> None:
    """A job written straight into Redis (not through POST /jobs) with SD1.5 -> Flux latents."""
    from contract.checked import CheckedSpec
    from jobs.store import JobStore

    spec = CheckedSpec.model_validate(
        {
            "prompt": "x",
            "seed": 1,
            "width": 128,
            "height": 128,
            "timeout_s": 60,
            "stages": [
                {"model": "demo-sd15", "steps": 4, "guidance_scale": 7.0},
                {
                    "model": "demo-flux",
                    "mode": "hires",
                    "handoff": "latent",
                    "scale": 2,
                    "upscaler": "latent-bilinear",
                    "denoise": 0.5,
                    "steps": 4,
                    "guidance_scale": 3.5,
                    "width": 256,
                    "height": 256,
                },
            ],
        }
    )
    job_id = "5d0f6f8e-8f0e-4d8a-9d55-000000000001"
    store = JobStore(stack.redis, 600)
    with stack.redis.pipeline() as pipe:
        store.create(job_id, spec, pipe)
        pipe.execute()
    queue = Queue(queue_name("default"), connection=stack.redis, serializer=SERIALIZER)
    job = queue.enqueue(RUN_JOB, job_id, job_id=job_id)
    assert json.loads(zlib.decompress(stack.redis.hget(f"rq:job:{job.id}", "data")))[0] == RUN_JOB
    with stack.client() as client:
        envelope = wait_final(client, job_id)
    assert envelope["status"] == "failed"
    assert envelope["error"]["type"] == "invalid_job"
    assert "latent space" in envelope["error"]["message"]


def without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nones(v) for v in value]
    return value


def test_pngs_carry_a1111_parameters_and_the_spec(stack: Stack) -> None:
    spec = {**example("sd15_flux_hires"), "negative_prompt": "blurry, low quality"}
    with stack.client() as client:
        envelope = submit_and_wait(client, spec)
        assert envelope["status"] == "succeeded", envelope["error"]
        _, image = fetch_png(client, envelope["images"][0]["url"])
    parameters = image.text["parameters"]
    prompt, negative, settings = parameters.split("\n")
    assert prompt == spec["prompt"]
    assert negative == "Negative prompt: blurry, low quality"
    assert settings.startswith(
        "Steps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 3, Size: 256x256, Model: demo-sd15"
    )
    for field in (
        "Denoising strength: 0.5",
        "Hires upscale: 2.0",
        "Hires steps: 8",
        "Hires upscaler: Lanczos",
    ):
        assert field in settings
    stored = json.loads(image.text["imagegen-spec"])
    assert stored == without_nones(envelope["spec"])  # the normalized spec, stages included
    assert stored["stages"][1]["width"] == 512


def test_refiner_png_names_the_refiner(stack: Stack) -> None:
    with stack.client() as client:
        envelope = submit_and_wait(client, example("sdxl_refiner"))
        _, image = fetch_png(client, envelope["images"][0]["url"])
    assert "Refiner: demo-sdxl-refiner, Refiner switch at: 0.8" in image.text["parameters"]
