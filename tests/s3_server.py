"""moto's S3 server on loopback, with the AWS_* variables pointing at it, for tests that need an
object store: the product finds it through the same variables it reads in production."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

SECRET = "s3cr3t-TEST-value-9f8e7d"
KEY_ID = "testing-key-id"
# Variables that would point boto/s3fs somewhere else than the moto server.
SHADOWING = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


class S3:
    """The moto endpoint plus a boto3 client, for the tests' own uploads and checks."""

    def __init__(self, endpoint: str, bucket: str):
        import boto3

        self.endpoint, self.bucket = endpoint, bucket
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def upload_directory(self, local: str, prefix: str) -> None:
        for root, _, files in os.walk(local):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    self.put(f"{prefix}/{os.path.relpath(path, local)}", handle.read())

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint, key=KEY_ID, secret=SECRET, skip_instance_cache=True, use_listings_cache=False
        )


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[S3]:
    """Starts moto's S3 server on 127.0.0.1 with `bucket` in it and sets the AWS_* variables (child
    processes started inside inherit them); stops it and restores the variables on exit."""
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in (*env, *SHADOWING)}
    for name in SHADOWING:
        os.environ.pop(name, None)
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        s3 = S3(env["AWS_ENDPOINT_URL"], bucket)
        s3.client.create_bucket(Bucket=bucket)
        yield s3
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
