"""Benchmark: starting from an object store (S3, moto's server on loopback) vs a local folder.

Two repositories, each served three ways in one run, side by side, over ``--rounds`` rounds
(interleaved, so the machine's load hits all variants alike):

- ``local``: the folder itself (the floor: import, load, warm-up);
- ``s3 cold``: ``s3://…`` with an empty model cache: list, download, verify, assemble;
- ``s3 warm``: the same with the cache the cold start filled (a restart): list, verify, assemble.

Repositories: one large model (``--size-mb``, default 50: an ONNX embedding table, a stand-in
for a large booster: what the store path costs depends on bytes and files, not on the
framework), and ``--small`` (default 200) small models of two files each, for the per-file
overhead. Reports the median start-to-ready time, the ratio to ``local``, the per-file
overhead and the bytes downloaded (from /metrics), with the load average.

Server start-up times swing with the machine's load; the store path alone is measured too, in
this process, without the server: ``RemoteRepository.sync`` with an empty cache (list, download,
verify, assemble) and with the warm cache of a restart (list, verify, assemble), per file.

    .venv/bin/python loadtests/remote_repo_bench.py [--size-mb 50] [--small 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from serving.repository.remote import RemoteRepository
from serving.settings import Settings
from tests.s3server import S3Server, moto_s3
from tests.server_process import start_server, wait_until_ready
from tests.tinymodels import identity_onnx, spec, write_config


def embedding_model(root: Path, size_mb: int) -> Path:
    rows = size_mb * (1 << 20) // (4 * 16)
    table = np.random.default_rng(0).normal(size=(rows, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    write_config(
        root / "big",
        {
            "platform": "onnx",
            "inputs": [spec("ids", "INT64", [-1])],
            "outputs": [spec("y", "FP32", [-1, 16])],
        },
    )
    (root / "big/1").mkdir(parents=True)
    (root / "big/1/model.onnx").write_bytes(model.SerializeToString())
    return root


def small_models(root: Path, count: int) -> Path:
    body = identity_onnx("FP32")
    for i in range(count):
        write_config(
            root / f"m{i:03d}",
            {
                "platform": "onnx",
                "inputs": [spec("x", "FP32", [-1, 3])],
                "outputs": [spec("y", "FP32", [-1, 3])],
            },
        )
        (root / f"m{i:03d}/1").mkdir(parents=True)
        (root / f"m{i:03d}/1/model.onnx").write_bytes(body)
    return root


def downloaded(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        float(v) for v in re.findall(r"^serving_repository_download_bytes_total\{[^}]*\} (\S+)$", text, re.M)
    )


def start_once(repo: str, env: dict[str, str], logs: Path) -> tuple[float, float]:
    """Seconds from process start to ready, and bytes it downloaded."""
    start = time.perf_counter()
    server = start_server(repo, logs, env=env, grpc=False, wait_ready=False)  # type: ignore[arg-type]
    try:
        wait_until_ready(server, timeout=600)
        seconds = time.perf_counter() - start
        return seconds, downloaded(server.url)
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="remote-bench-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # caches of every variant: hundreds of MB


def run(args: argparse.Namespace, work: Path) -> int:
    repos = {
        "large": embedding_model(work / "large", args.size_mb),
        "small": small_models(work / "small", args.small),
    }
    files = {name: sum(1 for p in root.rglob("*") if p.is_file()) for name, root in repos.items()}
    sizes = {
        name: sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) for name, root in repos.items()
    }
    print(f"load average before: {os.getloadavg()}", flush=True)
    results: dict[tuple[str, str], list[float]] = {}
    fetched: dict[tuple[str, str], list[float]] = {}
    with moto_s3() as s3:
        store: S3Server = s3
        store.client().create_bucket(Bucket="bench")
        for name, root in repos.items():
            store.upload_tree(root, "bench", name)
        for round_ in range(args.rounds):
            for name, root in repos.items():
                cache = work / f"cache-{name}-{round_}"
                env = {**store.env, "SERVING_MODEL_CACHE_DIR": str(cache)}
                for variant, repo in (
                    ("local", str(root)),
                    ("s3 cold", f"s3://bench/{name}"),
                    ("s3 warm", f"s3://bench/{name}"),
                ):
                    seconds, got = start_once(repo, env, work / "logs")
                    results.setdefault((name, variant), []).append(seconds)
                    fetched.setdefault((name, variant), []).append(got)
                    print(
                        f"round {round_} {name:5s} {variant:8s} {seconds:7.2f} s  downloaded {got / 1e6:8.2f} MB",
                        flush=True,
                    )
        syncs: dict[tuple[str, str], list[float]] = {}
        for name in repos:
            os.environ.update(store.env)
            for round_ in range(args.rounds):
                settings = Settings(
                    model_repo=f"s3://bench/{name}", model_cache_dir=work / f"sync-{name}-{round_}"
                )
                for variant in ("cold", "warm"):
                    repo = RemoteRepository(settings)
                    start = time.perf_counter()
                    repo.sync(first=True)
                    syncs.setdefault((name, variant), []).append(time.perf_counter() - start)
                    repo.close()
    print(f"load average after: {os.getloadavg()}")
    print()
    print(
        "| repository | files | sync with an empty cache (ms per file) | with a warm cache (ms per file) | warm / cold |"
    )
    print("|---|---|---|---|---|")
    for name in repos:
        cold = statistics.median(syncs[(name, "cold")])
        warm = statistics.median(syncs[(name, "warm")])
        print(
            f"| {name} | {files[name]} | {cold * 1e3:.0f} ({cold / files[name] * 1e3:.1f}) | "
            f"{warm * 1e3:.0f} ({warm / files[name] * 1e3:.1f}) | {warm / cold:.2f} |"
        )
    print()
    print(
        "| repository | files | MB | variant | median start-to-ready (s) | vs local | per file vs local (ms) | MB downloaded |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in repos:
        local = statistics.median(results[(name, "local")])
        for variant in ("local", "s3 cold", "s3 warm"):
            median = statistics.median(results[(name, variant)])
            per_file = (median - local) / files[name] * 1e3
            print(
                f"| {name} | {files[name]} | {sizes[name] / 1e6:.1f} | {variant} | {median:.2f} | "
                f"{median / local:.2f}x | {per_file:+.1f} | {statistics.median(fetched[(name, variant)]) / 1e6:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
