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
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(port, server)
    try:
        yield s3
    finally:
        with contextlib.suppress(Exception):
            server.stop()


class FaultyProxy:
    """A TCP proxy in front of the S3 server that misbehaves on purpose, as networks and stores
    do: answers the first ``throttle`` requests with 503 SlowDown, and cuts the first response
    to a GET of ``cut_key`` after ``cut_after`` bytes. Records every request's head."""

    def __init__(self, upstream_port: int, cut_key: str = "", cut_after: int = 0, throttle: int = 0) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.cut_key = cut_key.encode()
        self.cut_after = cut_after
        self.throttle = throttle
        self.requests: list[bytes] = []
        self.times: list[float] = []
        self._cut_done = False
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Any) -> None:
        import socket
        import threading
        import time

        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        armed = {"cut": False, "sent": 0}

        def down() -> None:  # upstream -> client, cutting when armed
            try:
                while data := upstream.recv(65536):
                    if armed["cut"]:
                        room = self.cut_after - armed["sent"]
                        if room <= len(data):
                            client.sendall(data[: max(room, 0)])
                            client.shutdown(socket.SHUT_RDWR)
                            client.close()
                            upstream.close()
                            return
                        armed["sent"] += len(data)
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=down, daemon=True).start()
        try:
            while data := client.recv(65536):
                if data[:4] in (b"GET ", b"PUT ", b"HEAD", b"POST", b"DELE"):
                    with self._lock:
                        self.requests.append(data.split(b"\r\n\r\n", 1)[0])
                        self.times.append(time.monotonic())
                        throttled = len(self.requests) <= self.throttle
                        cut = not throttled and not self._cut_done and bool(self.cut_key)
                        cut = cut and data.startswith(b"GET ") and self.cut_key in data.split(b"\r\n", 1)[0]
                        if cut:
                            self._cut_done = True
                    if throttled:
                        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                        client.sendall(
                            b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: "
                            + str(len(body)).encode()
                            + b"\r\n\r\n"
                            + body
                        )
                        continue
                    if cut:
                        armed["cut"] = True
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._listener.close()
