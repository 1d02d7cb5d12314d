"""The Dockerfile's own install steps and ENTRYPOINT, run in a fresh virtualenv (no container
engine here), and the ServingRuntime's exact args and env on top of that ENTRYPOINT: both start
a server that answers the probes, inference and gRPC health, and writes nothing outside /tmp."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from packaging.utils import canonicalize_name

from tests.deploy.dockerfile import Rootfs, parse
from tests.lockfiles import REQUIREMENTS, hashes, pins
from tests.server_process import DEMO_REPO, ROOT, ServerProcess, free_port, wait_until_ready

# The first run on a machine downloads the image's packages (~700 MB) into the cache mount;
# later runs install from it in ~30 s.
pytestmark = pytest.mark.timeout(900)

DOCKERFILE = ROOT / "Dockerfile"
RUNTIME = ROOT / "manifests" / "runtime" / "servingruntime.yaml"
IRIS_ROWS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


@dataclass
class Image:
    rootfs: Rootfs
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]

    @property
    def models(self) -> Path:
        return Path(self.rootfs.map("/mnt/models"))

    def mount_models(self, source: Path) -> None:
        """What KServe's storage initializer does: the model files, in /mnt/models."""
        shutil.rmtree(self.models, ignore_errors=True)
        shutil.copytree(source, self.models)

    def start(self, args: list[str], env: dict[str, str], log_dir: Path) -> ServerProcess:
        http_port, grpc_port = free_port(), free_port()
        ports = {"8080": str(http_port), "8081": str(grpc_port)}
        argv = [self.rootfs.map(_ports(a, ports)) for a in [*self.entrypoint, *args]]
        log_path = log_dir / f"image-{http_port}.log"
        full_env = {**self.env, **env, "SERVING_HOST": "127.0.0.1"}  # loopback only in tests
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=self.env["HOME"]
            )
        server = ServerProcess(proc, http_port, grpc_port, log_path)
        wait_until_ready(server, timeout=120)
        return server


def _ports(arg: str, ports: dict[str, str]) -> str:
    """--http-port=8080 / 8080 -> the free port picked for this run (8080 may be taken here)."""
    for fixed, free in ports.items():
        if arg == fixed or arg.endswith(f"={fixed}"):
            return arg[: -len(fixed)] + free
    return arg


def snapshot(*dirs: Path) -> set[tuple[str, float]]:
    return {(str(p), p.stat().st_mtime) for d in dirs for p in d.rglob("*")}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    global_args, stages = parse(DOCKERFILE.read_text())
    assert global_args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}", (
        "the tests stand in for the base image with their own interpreter"
    )
    assert len(stages) == 2 and stages[0].name == "build"
    build, final = stages
    libgomp = (
        "apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*"
    )
    assert all(step.args.startswith("useradd ") or step.args == libgomp for step in final.all("RUN")), (
        "final stage may only add the user and LightGBM's OpenMP runtime"
    )
    assert not any(step.args.startswith("--from") for step in build.all("COPY"))
    # Everything the build copies passes .dockerignore ("*" then "!path" exceptions).
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything not listed stays out of the build context
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {src.rstrip("/") for step in build.all("COPY") for src in step.args.split()[:-1]}
    excluded = {src for src in copied if not any(src == a or src.startswith(f"{a}/") for a in allowed)}
    assert not excluded, f"COPY sources excluded by .dockerignore: {excluded}"
    rootfs = Rootfs(tmp_path_factory.mktemp("rootfs"), ROOT)
    (rootfs.root / "tmp").mkdir()
    start = time.monotonic()
    # Same steps, same packages; three ENV values only change how files land, and are left out
    # to keep the test fast: pip may cache, uv hard-links from its cache instead of copying 1 GB,
    # and bytecode is compiled on import instead of ahead (~35 s here).
    fast = frozenset({"PIP_NO_CACHE_DIR", "UV_LINK_MODE", "UV_COMPILE_BYTECODE"})
    rootfs.run_stage(build, global_args, drop_env=fast)
    print(f"build stage: {time.monotonic() - start:.0f} s")
    env = rootfs.run_stage(final, global_args, run=False)
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    return Image(rootfs, env, entrypoint.json_args(), cmd.json_args())


def installed(image: Image) -> dict[str, str]:
    uv = image.rootfs.map("/opt/uv/bin/uv")
    listed = subprocess.run(
        [uv, "pip", "list", "--format", "json"], capture_output=True, text=True, env=image.env, check=True
    )
    return {canonicalize_name(d["name"]): d["version"] for d in json.loads(listed.stdout)}


def test_build_installs_exactly_the_runtime_lock(image: Image) -> None:
    venv = Path(image.env["VIRTUAL_ENV"])
    assert Path(image.rootfs.map("/opt/venv")) == venv
    # A fresh venv (no system site-packages) where pip finds every requirement satisfied.
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    uv = image.rootfs.map("/opt/uv/bin/uv")
    check = subprocess.run([uv, "pip", "check"], capture_output=True, text=True, env=image.env)
    assert check.returncode == 0, check.stdout + check.stderr
    packages = installed(image)
    assert packages.pop("serving") == "0.1.0"
    # The lock's pins for this interpreter, nothing more: no kserve, kubernetes or exporters.
    assert packages == pins(REQUIREMENTS / "runtime.txt")
    assert not (venv / "bin" / "pytest").exists()  # no test extras in the image
    assert not (venv / "bin" / "pip").exists()  # no installer in the runtime venv
    assert image.env["HOME"] == image.env["TMPDIR"] == image.rootfs.map("/tmp")


def test_entrypoint_serves_a_repository(image: Image, tmp_path: Path) -> None:
    assert image.entrypoint == ["serving", "serve", "--model-repo", "/mnt/models"]
    image.mount_models(DEMO_REPO)
    before = snapshot(Path(image.rootfs.map("/opt")), image.models)
    server = image.start(image.cmd, {}, tmp_path)
    try:
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
        answer = httpx.post(f"{server.url}/v2/models/iris-xgb/infer", json=IRIS_ROWS)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["shape"] == [1, 3]
        index = httpx.post(f"{server.url}/v2/repository/index", json={}).json()
        assert {row["name"] for row in index} == {p.name for p in DEMO_REPO.iterdir() if p.is_dir()}
        with grpc.insecure_channel(server.grpc_target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert server.stop() == 0, server.log()
    # Read-only root filesystem: nothing written to the image or the model volume.
    assert snapshot(Path(image.rootfs.map("/opt")), image.models) == before


def test_sbom_lists_every_package_in_the_image(image: Image, tmp_path: Path) -> None:
    """scripts/sbom.py: the CycloneDX document generated from the lock names exactly what the
    image's install step installed, each with its purl and the lock's hashes."""
    out = tmp_path / "runtime.cdx.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sbom.py"), "-o", str(out)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    sbom = json.loads(out.read_text())
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.6")
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"]) == ("serving", "0.1.0")
    listed = {canonicalize_name(c["name"]): c for c in sbom["components"]}
    in_image = installed(image)
    in_image.pop("serving")
    assert {name: c["version"] for name, c in listed.items()} == in_image
    locked = hashes(REQUIREMENTS / "runtime.txt")
    for name, component in listed.items():
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}"
        (dist,) = (r for r in component["externalReferences"] if r["type"] == "distribution")
        assert {h["content"] for h in dist["hashes"]} == locked[name, component["version"]], name


def test_runtime_image_names_the_rollout_extra(image: Image, tmp_path: Path) -> None:
    """The image has no Kubernetes client (the rollout extra): the rollout CLI says so in one
    line, with its error status. (The export commands' modules are runtime dependencies now:
    onnxmltools builds the XGBoost twin; tests/test_extras.py covers their message.)"""
    serving = image.rootfs.map("/opt/venv/bin/serving")
    run = subprocess.run(
        [serving, "rollout", "status", "iris", "--mode", "knative"],
        capture_output=True,
        text=True,
        env=image.env,
        cwd=tmp_path,
    )
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert run.returncode == 3 and len(lines) == 1, run
    assert "serving rollout needs the 'rollout' extra (kubernetes not installed)" in lines[0]


@pytest.fixture(scope="module")
def runtime_container() -> dict[str, object]:
    runtime = yaml.safe_load(RUNTIME.read_text())
    (container,) = runtime["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_servingruntime_args_and_env_start_a_working_server(
    image: Image, runtime_container: dict[str, object], tmp_path: Path
) -> None:
    # KServe runs the image's ENTRYPOINT with the runtime's args, {{.Name}} replaced by the
    # InferenceService name, and one model's folder in /mnt/models.
    args = [str(a).replace("{{.Name}}", "iris") for a in runtime_container["args"]]  # type: ignore[attr-defined]
    env = {e["name"]: e["value"] for e in runtime_container["env"]}  # type: ignore[attr-defined]
    assert any(a.startswith("--model-name=") for a in args)
    image.mount_models(DEMO_REPO / "iris-xgb")
    server = image.start(args, env, tmp_path)
    try:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            http_get = runtime_container[probe]["httpGet"]  # type: ignore[index]
            assert http_get["port"] == 8080
            assert httpx.get(f"{server.url}{http_get['path']}").status_code == 200, probe
        assert httpx.get(f"{server.url}/v2/models/iris/ready").status_code == 200
        answer = httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS_ROWS)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_name"] == "iris"
        assert httpx.get(f"{server.url}/v2/models/iris-xgb/ready").status_code == 404
        with grpc.insecure_channel(server.grpc_target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "serving_inflight_requests" in metrics
    finally:
        assert server.stop() == 0, server.log()


@pytest.fixture(autouse=True)
def _no_proxy_env() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in ("HTTP_PROXY", "http_proxy") if k in os.environ}
    yield
    os.environ.update(saved)
