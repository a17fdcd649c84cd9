"""Pictures in object storage: `IMAGEGEN_PICTURE_STORE=s3` keeps a job's PNGs (its results, its
init image, the pictures one pool hands the next) in an S3-compatible bucket — AWS S3, MinIO,
R2, Ceph — and Redis only the records and the keys.

A job's objects live under `<prefix><job id>/`: `image-<i>.png`, `init.png`,
`handoff-<segment>-<i>.png`. Redis notes, per job, when they may go (`PICTURES_DUE`, a sorted
set: a few dozen bytes a job); the janitor's sweep deletes them then, and a bucket lifecycle rule
on the prefix is the backstop for what a lost sweep leaves (docs/operations.md).

Credentials, region and the rest come from boto3's own chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE, a role…), as every AWS tool
reads them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from redis import Redis
from redis.client import Pipeline

from jobs.redis_keys import PICTURES_DUE, text

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger("imagegen.jobs")
T = TypeVar("T")

SWEEP_BATCH = 100  # jobs whose objects one sweep deletes


class PicturesUnavailable(Exception):
    """The object store could not be reached, or refused us, for as long as the call waited."""


def image_name(index: int) -> str:
    return f"image-{index}.png"


INIT_NAME = "init.png"


def handoff_name(segment: int, index: int) -> str:
    return f"handoff-{segment}-{index}.png"


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = "imagegen/"
    endpoint_url: str | None = None  # None: AWS itself (or AWS_ENDPOINT_URL, which boto3 reads)
    presign_s: int = 0  # >0: GET /jobs/{id}/images/{i} redirects to a URL valid this long
    write_wait_s: float = 60.0  # how long a write retries before the job fails


class S3Pictures:
    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.presign_s = config.presign_s
        self._gave_up_at: float | None = None  # when a waiting call last gave up
        # A custom endpoint (MinIO, Ceph, a server on loopback) rarely serves
        # `<bucket>.<host>` names: path-style addresses work on all of them.
        style: Literal["path", "auto"] = "path" if config.endpoint_url else "auto"
        self.client: S3Client = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            config=Config(
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": style},
            ),
        )

    def key(self, job_id: str, name: str) -> str:
        return f"{self.config.prefix}{job_id}/{name}"

    def put(self, job_id: str, name: str, data: bytes, wait_s: float | None = None) -> None:
        """Write one picture, retrying for up to `wait_s` (default `write_wait_s`: a store that
        restarts, a network that blinks); PicturesUnavailable after that."""
        key = self.key(job_id, name)
        self._waiting(
            lambda: self.client.put_object(
                Bucket=self.config.bucket, Key=key, Body=data, ContentType="image/png"
            ),
            self.config.write_wait_s if wait_s is None else wait_s,
        )

    def get(self, job_id: str, name: str, wait_s: float = 0) -> bytes | None:
        """One picture; None if the store has no such object. The gateway does not wait (it
        answers 503 with Retry-After); a worker waits as long as for a write."""

        def read() -> bytes | None:
            try:
                key = self.key(job_id, name)
                return self.client.get_object(Bucket=self.config.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

        return self._waiting(read, wait_s)

    def url(self, job_id: str, name: str) -> str:
        """A presigned GET of one picture, valid for `presign_s` seconds (signed here, offline)."""
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.config.bucket, "Key": self.key(job_id, name)},
            ExpiresIn=self.presign_s,
        )

    def delete(self, job_id: str, names: Iterable[str]) -> None:
        """Best effort: what is left is the sweep's (and the lifecycle rule's)."""
        objects: list[ObjectIdentifierTypeDef] = [{"Key": self.key(job_id, n)} for n in names]
        if not objects:
            return
        try:
            self.client.delete_objects(Bucket=self.config.bucket, Delete={"Objects": objects})
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not delete pictures of job %s: %s", job_id, _reason(exc))

    def delete_job(self, job_id: str) -> None:
        """Every object under the job's prefix (raises PicturesUnavailable: the sweep retries)."""
        try:
            listed = self.client.list_objects_v2(
                Bucket=self.config.bucket, Prefix=self.key(job_id, "")
            )
            objects: list[ObjectIdentifierTypeDef] = [
                {"Key": o["Key"]} for o in listed.get("Contents", []) if "Key" in o
            ]
            if objects:
                self.client.delete_objects(Bucket=self.config.bucket, Delete={"Objects": objects})
        except (ClientError, BotoCoreError) as exc:
            raise PicturesUnavailable(_reason(exc)) from exc

    def _waiting(self, call: Callable[[], T], wait_s: float) -> T:
        """`call`, retried for up to `wait_s`. Once a call has given up, the next ones try once
        while the store still refuses (a batch's members do not wait a minute each)."""
        if self._gave_up_at is not None and time.monotonic() - self._gave_up_at < 60:
            wait_s = 0
        deadline = time.monotonic() + wait_s
        pause = 0.5
        while True:
            try:
                done = call()
                self._gave_up_at = None
                return done
            except (ClientError, BotoCoreError) as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if wait_s:
                        self._gave_up_at = time.monotonic()
                    raise PicturesUnavailable(_reason(exc)) from exc
                log.warning("the picture store refused us (%s); retrying", _reason(exc))
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, 10.0)


def note_due(pipe: Pipeline | Redis, job_id: str, ttl_s: int) -> None:
    """The job's objects may go `ttl_s` from now, or later if already noted later (a job
    whose results are written after its init image keeps them a whole TTL). GT only keeps a
    noted member from moving earlier; a new one is added."""
    pipe.zadd(PICTURES_DUE, {job_id: time.time() + ttl_s}, gt=True)


def sweep_pictures(redis: Redis, pictures: S3Pictures, batch: int = SWEEP_BATCH) -> int:
    """Delete the objects of jobs whose time has come; the number of jobs swept."""
    due = redis.zrangebyscore(PICTURES_DUE, "-inf", time.time(), start=0, num=batch)
    swept = 0
    for raw in due:
        job_id = text(raw)  # type: ignore[arg-type]  # members, without scores
        try:
            pictures.delete_job(job_id)
        except PicturesUnavailable as exc:
            log.warning("picture sweep stopped: the store is unavailable (%s)", exc)
            break
        redis.zrem(PICTURES_DUE, job_id)
        swept += 1
    return swept


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip(": ")
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")
