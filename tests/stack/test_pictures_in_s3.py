"""Pictures in object storage, through the whole stack: a gateway, a worker per pool and a real
S3-protocol server on loopback (moto's standalone server from PyPI stands in for MinIO, which
cannot be installed here; devstack.s3_server). Results, init images and the pictures one pool
hands the next live in the bucket and Redis holds none of them; a presigned redirect serves
what the gateway would stream; a store that is down fails jobs `storage_unavailable` (never
`succeeded` without their pictures, never run twice) and reads with 503 and Retry-After.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from devstack.processes import start_gateway, stop, wait_for_gateway
from devstack.redis_server import RedisServer, free_port
from devstack.s3_server import S3Server
from jobs.redis_keys import QUEUE_PREFIX, handoff_key, image_key, init_image_key, job_key
from tests.conftest import Stack
from tests.helpers import fetch_png, png_b64, submit_and_wait, wait_final

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

PREFIX = "pictures/"
TXT2IMG = {
    "prompt": "a bucket",
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15", "steps": 2}],
}


class S3Stack(Stack):
    def __init__(self, server: RedisServer, registry: Path, logs: Path, s3: S3Server) -> None:
        super().__init__(server, registry, logs)
        self.s3 = s3
        # Short waits: the failure test would otherwise sit out a minute per write.
        self.env.update(s3.env(PREFIX), IMAGEGEN_S3_WRITE_WAIT_S="2")

    def objects(self, job_id: str) -> dict[str, bytes]:
        """The job's objects in the bucket, by name."""
        client = self.s3.client()
        found = {}
        for key in self.s3.object_keys():
            if key.startswith(f"{PREFIX}{job_id}/"):
                body = client.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read()
                found[key.rsplit("/", 1)[1]] = body
        return found


@pytest.fixture(scope="module")
def s3_stack(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Stack]:
    root = tmp_path_factory.mktemp("s3-stack")
    registry = root / "registry.yaml"
    models: dict[str, Any] = {
        "demo-sd15": {"architecture": "sd15", "pool": "sd", "preload": True,
                      "source": {"folder": str(demo_models / "demo-sd15")}},
        "demo-flux": {"architecture": "flux", "pool": "flux", "preload": True,
                      "source": {"folder": str(demo_models / "demo-flux")}},
    }  # fmt: skip
    registry.write_text(yaml.safe_dump({"models": models}))
    s3 = S3Server(root / "s3").start()
    server = RedisServer(root / "redis").start()
    stack = S3Stack(server, registry, root, s3)
    try:
        stack.start(workers=[{"IMAGEGEN_POOL": "sd"}])  # the flux pool's comes in a test
        yield stack
    finally:
        stack.stop()
        server.stop()
        s3.stop()


def queued_count(stack: Stack) -> int:
    return sum(
        int(stack.redis.llen(q)) for q in stack.redis.scan_iter(f"rq:queue:{QUEUE_PREFIX}.*")
    )


def pixels(png: bytes) -> bytes:
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


def test_results_init_images_and_hand_overs_travel_through_the_bucket(s3_stack: S3Stack) -> None:
    init = png_b64(64, 64)
    spec = {
        "prompt": "a lighthouse",
        "width": 64,
        "height": 64,
        "init_image": init,
        "strength": 0.6,
        "stages": [
            {"model": "demo-sd15", "steps": 2},
            {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "scale": 2, "steps": 2},
        ],
    }
    redis = s3_stack.redis
    with s3_stack.client() as client:
        created = client.post("/jobs", json=spec)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        # No flux worker yet: the job waits between its pools, its pictures in the bucket.
        deadline = time.monotonic() + 60
        while "handoff-1-0.png" not in s3_stack.objects(job_id):
            assert time.monotonic() < deadline, client.get(f"/jobs/{job_id}").json()
            time.sleep(0.2)
        waiting = s3_stack.objects(job_id)
        assert pixels(waiting["init.png"]) == pixels(base64.b64decode(init))
        assert not redis.exists(init_image_key(job_id), handoff_key(job_id, 1, 0))
        s3_stack.start_worker(IMAGEGEN_POOL="flux")
        envelope = wait_final(client, job_id)
        assert envelope["status"] == "succeeded", envelope["error"]
        png, image = fetch_png(client, envelope["images"][0]["url"])
        assert image.size == (128, 128)
    # The result is the bucket's object; the spent inputs are gone; Redis keeps only the record.
    assert s3_stack.objects(job_id) == {"image-0.png": png}
    assert not redis.exists(image_key(job_id, 0))
    assert [k.decode() for k in redis.scan_iter(f"{job_key(job_id)}*")] == [job_key(job_id)]


def test_a_presigned_redirect_serves_what_the_gateway_streams(s3_stack: S3Stack) -> None:
    port = free_port()
    env = {**s3_stack.env, "IMAGEGEN_S3_PRESIGN_S": "60"}
    gateway = start_gateway(env, port, s3_stack.logs / "presigning-gateway.log")
    try:
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        with s3_stack.client() as client:
            envelope = submit_and_wait(client, TXT2IMG)
            assert envelope["status"] == "succeeded", envelope["error"]
            streamed, _ = fetch_png(client, envelope["images"][0]["url"])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as presigning:
            answer = presigning.get(envelope["images"][0]["url"])
            assert answer.status_code == 307, answer.text
            location = answer.headers["location"]
            assert location.startswith(s3_stack.s3.endpoint_url)
            assert presigning.get(f"/jobs/{envelope['id']}/images/5").status_code == 404
        assert httpx.get(location).content == streamed  # no credentials: the URL's signature
    finally:
        stop(gateway)


def test_a_store_that_is_down_fails_jobs_with_its_type_and_answers_reads_with_503(
    s3_stack: S3Stack,
) -> None:
    with s3_stack.client() as client:
        before = submit_and_wait(client, TXT2IMG)
        assert before["status"] == "succeeded", before["error"]
        s3_stack.s3.stop()
        try:
            read = client.get(before["images"][0]["url"])
            assert read.status_code == 503, read.text
            assert int(read.headers["retry-after"]) > 0
            assert read.json()["detail"][0]["type"] == "picture_store_unavailable"
            # An init image cannot be kept: refused before anything is queued.
            queued = queued_count(s3_stack)
            refused = client.post("/jobs", json={**TXT2IMG, "init_image": png_b64(64, 64)})
            assert refused.status_code == 503, refused.text
            assert refused.json()["detail"][0]["type"] == "picture_store_unavailable"
            assert queued_count(s3_stack) == queued
            # Made, but not kept: failed with the store's type, after one run only.
            failed = submit_and_wait(client, {**TXT2IMG, "seed": 7})
            assert failed["status"] == "failed"
            assert failed["error"]["type"] == "storage_unavailable", failed["error"]
            assert "S3" in failed["error"]["message"]
            assert s3_stack.redis.hget(job_key(failed["id"]), "attempts:0") == b"1"
        finally:
            s3_stack.s3.start()  # on its port again (moto keeps nothing: a new, empty bucket)
        after = submit_and_wait(client, {**TXT2IMG, "seed": 8})
        assert after["status"] == "succeeded", after["error"]
        stored = s3_stack.objects(after["id"])["image-0.png"]
        assert fetch_png(client, after["images"][0]["url"])[0] == stored
