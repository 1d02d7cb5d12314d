"""A real S3-compatible server for tests: moto's standalone server on a free loopback port.

In this process (``ThreadedMotoServer``), so a test can also reach into the store's own state
to do what no client can: change an object's bytes behind its ETag (bit rot in the store).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.server_process import free_port


@dataclass
class S3Server:
    port: int
    server: Any

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The standard variables every S3 client reads: nothing project-specific."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        env = self.env
        return boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )

    def upload_tree(self, local: Path, bucket: str, prefix: str) -> int:
        """Upload every file under ``local`` to ``bucket/prefix/...``; returns the bytes sent."""
        client = self.client()
        sent = 0
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            body = path.read_bytes()
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(local).as_posix()}", Body=body)
            sent += len(body)
        return sent

    def rot(self, bucket: str, key: str) -> None:
        """Flip the bytes of a stored object while its ETag (the MD5 listed) stays the old one."""
        from moto.s3.models import s3_backends

        for account in s3_backends.values():
            for backend in account.values():
                found = backend.buckets.get(bucket)
                if found is not None and key in found.keys:
                    obj = found.keys[key]
                    etag = obj.etag  # computed (and cached by moto) before the change
                    obj.value = bytes(b ^ 0xFF for b in obj.value)
                    assert obj.etag == etag
                    return
        raise KeyError(f"{bucket}/{key}")

    def stop(self) -> None:
        self.server.stop()


@contextlib.contextmanager
def moto_s3() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(port, server)
    try:
        yield s3
    finally:
        with contextlib.suppress(Exception):
            server.stop()
