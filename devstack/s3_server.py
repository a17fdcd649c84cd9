"""A private S3-protocol server on a free loopback port, for tests and `make bench`.

No MinIO binary is installable here (no container registry, no MinIO package on PyPI, Debian or
npm): moto's standalone server (PyPI `moto[server]`) speaks the same S3 REST API, signatures and
presigned URLs included, and stands in for it. The service's code talks to it through boto3 as it
would to AWS, MinIO, R2 or Ceph.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from devstack.redis_server import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# moto checks signatures against any key; the processes need some, as they would real ones.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "imagegen-test",
    "AWS_SECRET_ACCESS_KEY": "imagegen-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    def __init__(self, workdir: Path, bucket: str = "imagegen-pictures") -> None:
        self.workdir = workdir
        self.bucket = bucket
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, prefix: str = "imagegen/") -> dict[str, str]:
        """What a process of the service needs to keep its pictures here."""
        return {
            "IMAGEGEN_PICTURE_STORE": "s3",
            "IMAGEGEN_S3_BUCKET": self.bucket,
            "IMAGEGEN_S3_PREFIX": prefix,
            "IMAGEGEN_S3_ENDPOINT_URL": self.endpoint_url,
            **CREDENTIALS,
        }

    def client(self) -> S3Client:
        """A boto3 S3 client of this server (for tests to look into the bucket)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            config=Config(s3={"addressing_style": "path"}),
        )

    def start(self) -> S3Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "s3.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        client = self.client()
        while True:
            try:
                client.create_bucket(Bucket=self.bucket)
                return self
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"the S3 server did not start; see {self.workdir}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def object_keys(self) -> list[str]:
        """Every object's key in the bucket."""
        listed = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in listed.get("Contents", []) if "Key" in o)
