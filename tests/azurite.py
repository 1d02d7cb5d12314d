"""Azurite (Microsoft's Azure Storage emulator, from the npm registry) on a free loopback port.

``scripts/test.sh`` installs it into ``.ci-tools/azurite`` with npm. Where it is missing (no
npm, a full disk) the test that needs it skips with the reason.
Containers are created with one SharedKey-signed request (the emulator's well-known
development account), as the Azure SDK would do; everything else goes through obstore.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.server_process import ROOT, free_port

# The emulator's published development account (not a secret: it is in Azure's documentation).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
INSTALLED = ROOT / ".ci-tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"


def azurite_binary() -> str:
    found = str(INSTALLED) if INSTALLED.is_file() else shutil.which("azurite-blob")
    if found is None:
        pytest.skip(
            "Azurite is not installed (bash scripts/test.sh installs it with npm into .ci-tools/azurite)"
        )
    return found


@dataclass
class Azurite:
    port: int

    @property
    def env(self) -> dict[str, str]:
        """The standard variables of Azure's clients for the emulator."""
        return {
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{self.port}",
        }

    def create_container(self, name: str) -> None:
        date, version = formatdate(usegmt=True), "2021-08-06"
        path = f"/{ACCOUNT}/{name}"
        to_sign = (
            "PUT\n"
            + "\n" * 11
            + f"x-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}{path}\nrestype:container"
        )
        signature = base64.b64encode(
            hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()
        )
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(
            "PUT",
            f"{path}?restype=container",
            headers={
                "x-ms-date": date,
                "x-ms-version": version,
                "Authorization": f"SharedKey {ACCOUNT}:{signature.decode()}",
                "Content-Length": "0",
            },
        )
        try:
            response = conn.getresponse()
            assert response.status == 201, (response.status, response.read()[:300])
        finally:
            conn.close()

    def upload_tree(self, local: Path, container: str, prefix: str) -> int:
        import obstore
        from obstore.store import AzureStore

        saved = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)  # the client reads the emulator's address from there only
        try:
            store = AzureStore(container, use_emulator=True)
            sent = 0
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                body = path.read_bytes()
                obstore.put(store, f"{prefix}/{path.relative_to(local).as_posix()}", body)
                sent += len(body)
            return sent
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextlib.contextmanager
def azurite(workdir: Path) -> Iterator[Azurite]:
    binary = azurite_binary()
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(workdir), "--silent",
         "--skipApiVersionCheck"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, f"azurite exited with {proc.returncode}"
                assert time.monotonic() < deadline, "azurite did not listen within 30 s"
                time.sleep(0.1)
        yield Azurite(port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
