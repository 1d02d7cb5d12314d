"""Serving from an S3 bucket (issue 28's done-when scenarios), against moto's real S3 server.

Real parts only: moto's standalone server on a loopback port, the server as a subprocess,
httpx for requests and /metrics. One scenario walks a bucket through a deployment's life
(first start, new version, corrupted version, warm restart, restart with the store down), so
the processes start a handful of times instead of once per claim.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from serving.observability.metrics import Metrics
from serving.repository.remote import RemoteRepository
from serving.settings import Settings
from tests.s3server import S3Server, moto_s3
from tests.server_process import ServerProcess, running_server, start_server, wait_until_ready
from tests.tinymodels import identity_onnx, spec, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with moto_s3() as server:
        yield server


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels`` (0 when absent)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def index(server: ServerProcess) -> dict[str, dict[str, str]]:
    rows = httpx.post(f"{server.url}/v2/repository/index", json={}, timeout=10).json()
    return {f"{r['name']}/{r.get('version', '')}": r for r in rows}


def wait_for(what: str, check: Callable[[], bool], server: ServerProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{server.log()[-3000:]}")


def infer(server: ServerProcess, model: str, version: str | None = None) -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}
    return httpx.post(server.url + path, json=body, timeout=10)


def model_tree(root: Path, versions: list[int], policy: dict[str, object] | None = None) -> Path:
    model = root / "ident"
    write_config(
        model,
        {
            "platform": "onnx",
            "inputs": [spec("x", "FP32", [-1, 3])],
            "outputs": [spec("y", "FP32", [-1, 3])],
            "version_policy": policy or {"all": True},
        },
    )
    for v in versions:
        (model / str(v)).mkdir(parents=True, exist_ok=True)
        (model / str(v) / "model.onnx").write_bytes(identity_onnx("FP32"))
    return root


def test_bucket_through_restarts_new_versions_corruption_and_outage(s3: S3Server, tmp_path: Path) -> None:
    client = s3.client()
    client.create_bucket(Bucket="models-life")
    # A neighbour prefix sharing the first letters must never leak into the repository.
    client.put_object(Bucket="models-life", Key="repo-other/ident/config.yaml", Body=b"not: ours")
    sent = s3.upload_tree(model_tree(tmp_path / "v1", [1]), "models-life", "repo")
    cache = tmp_path / "cache"
    env = {
        **s3.env,
        "SERVING_MODEL_CACHE_DIR": str(cache),
        "SERVING_REPOSITORY_POLL_SECONDS": "0.3",
        "SERVING_REPOSITORY_RETRIES": "1",
        "SERVING_REPOSITORY_BACKOFF_SECONDS": "0.1",
        "SERVING_REPOSITORY_TIMEOUT_SECONDS": "5",
    }
    uri = "s3://models-life/repo"
    logs = tmp_path / "logs"

    # 1. First start: downloads every object once and serves.
    with running_server(uri, logs, env=env, grpc=False) as server:  # type: ignore[arg-type]
        assert infer(server, "ident").status_code == 200
        assert metric(server, "serving_repository_download_bytes_total") == sent
        assert metric(server, "serving_model_cache_misses_total") == 2
        assert metric(server, "serving_repository_store_up") == 1
        assert metric(server, "serving_repository_last_listing_timestamp_seconds") > time.time() - 60

        # 2. A new version: loaded at a following poll (once two listings agree on it); the
        # unchanged version 1 is never downloaded or loaded again.
        s3.upload_tree(model_tree(tmp_path / "v2", [2]), "models-life", "repo")
        wait_for("version 2 READY", lambda: index(server).get("ident/2", {}).get("state") == "READY", server)
        assert infer(server, "ident", "2").status_code == 200
        assert server.log().count("model ident version 1 ready") == 1
        assert metric(server, "serving_repository_download_bytes_total", version="1") == sent - len(
            (tmp_path / "v1/ident/config.yaml").read_bytes()
        )

        # A changed config.yaml applies: version 1 is no longer selected and retires.
        model_tree(tmp_path / "v2b", [], policy={"specific": [2, 3]})
        s3.upload_tree(tmp_path / "v2b", "models-life", "repo")
        wait_for("version 1 retired", lambda: index(server)["ident/1"]["state"] == "UNAVAILABLE", server)
        assert index(server)["ident/2"]["state"] == "READY"

    # 3. Restart with the store up and nothing changed: zero bytes downloaded.
    with running_server(uri, logs, env=env, grpc=False) as server:  # type: ignore[arg-type]
        assert infer(server, "ident", "2").status_code == 200
        assert metric(server, "serving_repository_download_bytes_total") == 0
        assert metric(server, "serving_model_cache_hits_total") >= 3

        # 4. Version 3 whose bytes rot in the store behind their ETag: FAILED with the digest
        # mismatch, version 2 keeps serving.
        client.put_object(Bucket="models-life", Key="repo/ident/3/model.onnx", Body=identity_onnx("FP32"))
        s3.rot("models-life", "repo/ident/3/model.onnx")
        wait_for(
            "version 3 FAILED", lambda: index(server).get("ident/3", {}).get("state") == "FAILED", server
        )
        assert "digest mismatch" in index(server)["ident/3"]["reason"]
        assert index(server)["ident/2"]["state"] == "READY"
        assert infer(server, "ident").status_code == 200
        assert metric(server, "serving_repository_failures_total", kind="digest") == 1
        # Logged once, not at every poll: the same bytes are not fetched again.
        logged = server.log().count("digest mismatch")
        seen = metric(server, "serving_repository_last_listing_timestamp_seconds")
        wait_for(
            "three more polls",
            lambda: metric(server, "serving_repository_last_listing_timestamp_seconds") > seen + 0.8,
            server,
        )
        assert server.log().count("digest mismatch") == logged
        assert metric(server, "serving_repository_failures_total", kind="digest") == 1
        assert "testing-secret-key" not in server.log()

    # 5. Restart with the store down: the cached versions serve, marked in the index; the
    # version never cached (3) is FAILED with the reason.
    s3.stop()
    with running_server(uri, logs, env=env, grpc=False) as server:  # type: ignore[arg-type]
        assert infer(server, "ident", "2").status_code == 200
        rows = index(server)
        assert rows["ident/2"]["state"] == "READY"
        assert "object store was unreachable" in rows["ident/2"]["reason"]
        assert rows["ident/3"]["state"] == "FAILED"
        assert "not in the model cache" in rows["ident/3"]["reason"]
        assert metric(server, "serving_repository_store_up") == 0
        assert metric(server, "serving_repository_download_bytes_total") == 0
        assert "serving from the model cache" in server.log()


def test_two_processes_sharing_the_cache_download_each_object_once(s3: S3Server, tmp_path: Path) -> None:
    client = s3.client()
    client.create_bucket(Bucket="models-shared")
    tree = model_tree(tmp_path / "tree", [1])
    # A larger companion file, so the two start-ups overlap while it downloads.
    (tree / "ident/1/extra.bin").write_bytes(os.urandom(4 << 20))
    sent = s3.upload_tree(tree, "models-shared", "repo")
    env = {**s3.env, "SERVING_MODEL_CACHE_DIR": str(tmp_path / "cache")}
    servers = [
        start_server("s3://models-shared/repo", tmp_path / "logs", env=env, grpc=False, wait_ready=False)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    try:
        for server in servers:
            wait_until_ready(server)
            assert infer(server, "ident").status_code == 200
        downloaded = [metric(server, "serving_repository_download_bytes_total") for server in servers]
        hits = [metric(server, "serving_model_cache_hits_total") for server in servers]
    finally:
        for server in servers:
            server.stop()
    assert sum(downloaded) == sent, (downloaded, sent)
    # Each of the three files came from the store once and from the cache once: which process
    # downloads which file depends on who gets there first (a run saw hits 1 and 2, not 0 and 3).
    assert sum(hits) == 3, hits
    blobs = list((tmp_path / "cache/blobs/sha256").iterdir())
    assert len(blobs) == 3


def test_azure_blob_repository_through_azurite(tmp_path: Path) -> None:
    """The same client serves az:// from Azurite: first start downloads and serves, a restart
    downloads nothing (Azure's ETags are not MD5s: files are verified by their sha256)."""
    from tests.azurite import azurite

    with azurite(tmp_path / "azurite") as az:
        az.create_container("models")
        sent = az.upload_tree(model_tree(tmp_path / "tree", [1]), "models", "repo")
        env = {**az.env, "SERVING_MODEL_CACHE_DIR": str(tmp_path / "cache")}
        with running_server("az://models/repo", tmp_path / "logs", env=env, grpc=False) as server:  # type: ignore[arg-type]
            assert infer(server, "ident").status_code == 200
            assert metric(server, "serving_repository_download_bytes_total") == sent
        # The restart's sync, in this process (a second server start would add only its import).
        with pytest.MonkeyPatch.context() as patch:
            for name, value in az.env.items():
                patch.setenv(name, value)
            metrics = Metrics()
            settings = Settings(model_repo="az://models/repo", model_cache_dir=tmp_path / "cache")
            restarted = RemoteRepository(settings, metrics)
            assert restarted.sync(first=True) == {"ident/config.yaml", "ident/1"}
            restarted.close()
        assert metrics.registry.get_sample_value("serving_model_cache_hits_total") == 2
        assert metrics.registry.get_sample_value("serving_model_cache_misses_total") == 0
