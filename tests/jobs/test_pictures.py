"""Pictures in object storage, against a real S3-protocol server on loopback (moto's standalone
server from PyPI stands in for MinIO, which cannot be installed here: devstack.s3_server): what
the job store writes there instead of Redis, what the sweep deletes, presigned URLs a client can
fetch, and a store that does not answer."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from devstack.s3_server import CREDENTIALS, S3Server
from jobs.janitor import sweep
from jobs.lifecycle import Lifecycle
from jobs.pictures import PicturesUnavailable, S3Config, S3Pictures, sweep_pictures
from jobs.redis_keys import PICTURES_DUE, image_key, init_image_key
from jobs.store import JobStore
from tests.jobs.conftest import SPEC

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # the store keeps bytes as they are


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # boto3's chain, as a deployment's processes read it
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pictures_of(server: S3Server, **config: object) -> S3Pictures:
    prefix = f"t-{uuid.uuid4().hex[:8]}/"  # each test its own corner of the bucket
    return S3Pictures(
        S3Config(bucket=server.bucket, prefix=prefix, endpoint_url=server.endpoint_url, **config)  # type: ignore[arg-type]
    )


def test_results_and_init_images_go_to_the_bucket_and_redis_keeps_none(
    s3: S3Server, redis: Redis
) -> None:
    pictures = pictures_of(s3)
    store = JobStore(redis, 60, pictures)
    job_id = str(uuid.uuid4())
    with redis.pipeline() as pipe:
        store.create(job_id, SPEC, pipe, init_image=PNG)
        pipe.execute()
    store.store_images(job_id, [PNG, PNG[::-1]])
    assert (store.init_image(job_id), store.image(job_id, 1)) == (PNG, PNG[::-1])
    assert not redis.exists(init_image_key(job_id), image_key(job_id, 0), image_key(job_id, 1))
    prefix = f"{pictures.config.prefix}{job_id}/"
    assert [k for k in s3.object_keys() if k.startswith(prefix)] == [
        prefix + "image-0.png",
        prefix + "image-1.png",
        prefix + "init.png",
    ]
    assert store.image(job_id, 2) is None  # no such object: nothing, not an error
    with redis.pipeline(transaction=False) as pipe:
        store.drop_inputs(pipe, job_id, SPEC)  # the job ended: its init image is spent
        pipe.execute()
    assert [k for k in s3.object_keys() if k.startswith(prefix)] == [
        prefix + "image-0.png",
        prefix + "image-1.png",
    ]


def test_the_sweep_deletes_a_jobs_objects_once_its_ttl_has_run_out(
    s3: S3Server, redis: Redis
) -> None:
    pictures = pictures_of(s3)
    short, long = JobStore(redis, 1, pictures), JobStore(redis, 600, pictures)
    gone, kept = str(uuid.uuid4()), str(uuid.uuid4())
    short.store_images(gone, [PNG])
    long.store_images(kept, [PNG])
    assert sweep_pictures(redis, pictures) == 0  # nothing is due yet
    time.sleep(1.2)
    assert sweep(Lifecycle(short), 1.0)  # the janitor's sweep does it
    assert short.image(gone, 0) is None
    assert long.image(kept, 0) == PNG
    assert redis.zscore(PICTURES_DUE, gone) is None
    assert redis.zscore(PICTURES_DUE, kept) is not None


def test_a_presigned_url_serves_the_picture_to_a_client_without_credentials(
    s3: S3Server, redis: Redis
) -> None:
    pictures = pictures_of(s3, presign_s=60)
    store = JobStore(redis, 60, pictures)
    job_id = str(uuid.uuid4())
    store.store_images(job_id, [PNG])
    url = store.image_redirect(job_id, 0)
    assert url is not None
    assert url.startswith(s3.endpoint_url)
    fetched = httpx.get(url)  # no AWS credentials: the signature in the URL is the permission
    assert (fetched.status_code, fetched.content) == (200, PNG)
    assert JobStore(redis, 60, pictures_of(s3)).image_redirect(job_id, 0) is None  # streamed


def test_a_store_that_does_not_answer_fails_writes_after_their_wait_and_reads_at_once(
    redis: Redis, tmp_path: Path
) -> None:
    server = S3Server(tmp_path / "s3")  # never started: nothing listens on its port
    pictures = pictures_of(server, write_wait_s=1.0)
    started = time.monotonic()
    with pytest.raises(PicturesUnavailable):
        pictures.put("job", "image-0.png", PNG)
    assert time.monotonic() - started >= 1.0  # it retried for its wait
    started = time.monotonic()
    with pytest.raises(PicturesUnavailable):
        pictures.put("job", "image-1.png", PNG)  # just gave up: a batch's next member does not
    with pytest.raises(PicturesUnavailable):
        JobStore(redis, 60, pictures).image("job", 0)  # the gateway answers 503 from this
    assert time.monotonic() - started < 1.0
