"""Remote repository faults without a server process: a cut download, a throttling store,
keys that try to leave the prefix, and the cache's size bound. Against moto's real S3 server,
through a proxy that cuts and throttles as real networks and stores do."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.errors import ModelLoadError
from serving.observability.metrics import Metrics
from serving.repository.cache import ContentCache
from serving.repository.remote import RemoteRepository, unit_of
from serving.settings import Settings
from tests.s3server import FaultyProxy, S3Server, moto_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_s3() as server:
        yield server


def remote(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, uri: str, cache: Path, endpoint: str = ""
) -> RemoteRepository:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    settings = Settings(
        model_repo=uri,
        model_cache_dir=cache,
        repository_retries=3,
        repository_backoff_seconds=0.05,
        repository_timeout_seconds=5,
    )
    return RemoteRepository(settings, Metrics())


def sample(metrics: Metrics | None, name: str, **labels: str) -> float:
    assert metrics is not None
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_cut_download_resumes_and_throttled_store_backs_off(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3.client()
    client.create_bucket(Bucket="faults-cut")
    body = os.urandom(300_000)
    client.put_object(Bucket="faults-cut", Key="repo/m/config.yaml", Body=b"platform: onnx\n")
    client.put_object(Bucket="faults-cut", Key="repo/m/1/model.onnx", Body=body)
    proxy = FaultyProxy(s3.port, cut_key="/faults-cut/repo/m/1/model.onnx", cut_after=60_000, throttle=2)
    try:
        repo = remote(s3, monkeypatch, "s3://faults-cut/repo", tmp_path / "cache", proxy.endpoint)
        changed = repo.sync(first=True)
    finally:
        proxy.close()
    assert changed == {"m/config.yaml", "m/1"}
    assert (repo.view / "m/1/model.onnx").read_bytes() == body
    heads = [h.lower() for h in proxy.requests]
    # The two 503 SlowDown answers were retried after a back-off, not given up on.
    assert heads[0].startswith(b"get /faults-cut?list-type=2") and heads[2].startswith(b"get /faults-cut?")
    assert proxy.times[2] - proxy.times[0] >= 0.05
    # The cut body was resumed from where it stopped, pinned to the listed ETag.
    gets = [h for h in heads if h.startswith(b"get /faults-cut/repo/m/1/model.onnx")]
    assert len(gets) == 2 and b"range: bytes=" in gets[1] and b"if-match:" in gets[1]
    assert sample(repo.metrics, "serving_repository_download_bytes_total", model="m", version="1") >= len(
        body
    )
    blob = repo.cache.blob(hashlib.sha256(body).hexdigest())
    assert blob.read_bytes() == body
    repo.close()


def test_keys_that_leave_the_layout_are_skipped_and_dotdot_is_refused(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in (
        "../x",
        "m/../x",
        "/m/1/a",
        "m//1/a",
        "m/./1/a",
        "m\\1\\a",
        "m/1a/x",
        "bad name/1/x",
        "m/notes.txt",
        "",
    ):
        assert unit_of(key) is None, key
    assert unit_of("m/config.yaml") == "m/config.yaml"
    assert unit_of("m/2/sub/model.onnx") == "m/2"
    assert unit_of("3/model.onnx") == "3" and unit_of("config.yaml") == "config.yaml"

    client = s3.client()
    client.create_bucket(Bucket="faults-escape")
    client.put_object(Bucket="faults-escape", Key="repo/m/config.yaml", Body=b"platform: onnx\n")
    client.put_object(Bucket="faults-escape", Key="repo/m/notes.txt", Body=b"skipped")
    client.put_object(Bucket="faults-escape", Key="repox/m/1/model.onnx", Body=b"a neighbour prefix")
    repo = remote(s3, monkeypatch, "s3://faults-escape/repo", tmp_path / "cache")
    assert repo.sync(first=True) == {"m/config.yaml"}
    assert sorted(p.relative_to(repo.view).as_posix() for p in repo.view.rglob("*")) == ["m", "m/config.yaml"]
    # A key with '..' makes the client refuse the whole listing: nothing is written anywhere,
    # the error names the key, and (with no earlier listing in the cache) start-up fails.
    client.put_object(Bucket="faults-escape", Key="repo/m/1/../../../../escaped", Body=b"evil")
    repo.close()
    fresh = remote(s3, monkeypatch, "s3://faults-escape/repo", tmp_path / "other-cache")
    with pytest.raises(ModelLoadError, match=r"repo/m/1/\.\./\.\./\.\./\.\./escaped"):
        fresh.sync(first=True)
    assert not list(tmp_path.rglob("escaped"))
    fresh.close()


def _store(cache: ContentCache, oid: str, body: bytes) -> str:
    def download(out: object) -> str:
        out.write(body)  # type: ignore[attr-defined]
        return hashlib.sha256(body).hexdigest()

    return cache.fetch(oid, download).digest


def test_cache_evicts_least_recently_used_and_never_a_linked_file(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", max_bytes=2500)
    digests = [_store(cache, f"{i:064x}", bytes([i]) * 1000) for i in range(4)]
    for age, digest in enumerate(digests):  # 0 is the oldest use, 3 the newest
        os.utime(cache.blob(digest), ns=(age * 10**9, age * 10**9))
    in_use = tmp_path / "view" / "model.onnx"
    in_use.parent.mkdir()
    cache.link(digests[0], in_use)  # the oldest, but an assembled version links it
    os.utime(cache.blob(digests[0]), ns=(0, 0))
    evicted, size = cache.evict()
    assert (evicted, size) == (2, 2000)
    assert cache.blob(digests[0]).is_file() and in_use.read_bytes() == bytes([0]) * 1000
    assert not cache.blob(digests[1]).exists() and not cache.blob(digests[2]).exists()
    assert cache.blob(digests[3]).is_file()
    # An evicted object is a miss (downloaded again), not a dangling index entry.
    assert cache.lookup(f"{1:064x}") is None and cache.lookup(f"{3:064x}") == digests[3]


def test_a_cached_file_changed_on_disk_is_caught_before_use(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache")
    digest = _store(cache, "a" * 64, b"model bytes")
    fresh = ContentCache(tmp_path / "cache")  # another process: it has verified nothing yet
    blob = fresh.blob(digest)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"model bytez")
    assert not fresh.verify(digest)
    assert fresh.lookup("a" * 64) is None  # removed: the next sync downloads it again


def test_one_models_folder_is_served_under_the_prefix_name(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KServe's layout in a bucket: the URI names one model's folder (config.yaml at the top)."""
    client = s3.client()
    client.create_bucket(Bucket="faults-single")
    client.put_object(Bucket="faults-single", Key="models/iris/config.yaml", Body=b"platform: onnx\n")
    client.put_object(Bucket="faults-single", Key="models/iris/1/model.onnx", Body=b"onnx bytes")
    repo = remote(s3, monkeypatch, "s3://faults-single/models/iris", tmp_path / "cache")
    assert repo.sync(first=True) == {"config.yaml", "1"}
    assert repo.view.name == "iris"
    assert (repo.view / "config.yaml").read_bytes() == b"platform: onnx\n"
    assert (repo.view / "1/model.onnx").read_bytes() == b"onnx bytes"
    # The files are hard links into the cache (no second copy), read-only.
    assert (repo.view / "1/model.onnx").stat().st_nlink == 2
    assert not os.access(repo.view / "1/model.onnx", os.W_OK) or os.geteuid() == 0
    # Unchanged at the next poll: nothing reassembled.
    assert repo.sync() == set()
    repo.close()
    assert not repo.view.exists()


def test_a_version_still_uploading_waits_until_two_listings_agree(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completeness rule while polling: a new or changed version folder is taken only
    once two consecutive listings agree on it; unchanged ones are never touched."""
    client = s3.client()
    client.create_bucket(Bucket="faults-partial")
    client.put_object(Bucket="faults-partial", Key="repo/m/config.yaml", Body=b"platform: onnx\n")
    client.put_object(Bucket="faults-partial", Key="repo/m/1/model.onnx", Body=b"one")
    repo = remote(s3, monkeypatch, "s3://faults-partial/repo", tmp_path / "cache")
    assert repo.sync(first=True) == {"m/config.yaml", "m/1"}
    one = (repo.view / "m/1/model.onnx").stat().st_ino

    client.put_object(Bucket="faults-partial", Key="repo/m/2/model.onnx", Body=b"two")
    assert repo.sync() == set()  # first sight of version 2: wait
    client.put_object(Bucket="faults-partial", Key="repo/m/2/model.onnx.data", Body=b"external data")
    assert repo.sync() == set()  # it changed since: wait again
    assert not (repo.view / "m/2").exists()
    assert repo.sync() == {"m/2"}  # two listings agree: taken, whole
    assert sorted(p.name for p in (repo.view / "m/2").iterdir()) == ["model.onnx", "model.onnx.data"]
    assert (repo.view / "m/1/model.onnx").stat().st_ino == one  # version 1 untouched

    client.delete_object(Bucket="faults-partial", Key="repo/m/1/model.onnx")
    assert repo.sync() == {"m/1"}  # a removed version leaves the view at once
    assert not (repo.view / "m/1").exists()
    repo.close()
