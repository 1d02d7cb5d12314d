"""End to end, in-pod mode: real server, real Prometheus (1 s scrapes), locust load, and the
``serving rollout`` CLI as a process.

One server holds two copies of the iris model, each with versions 1 (stable) and 2 (canary).
Version 2 of ``iris-bad`` has injected faults (``fault_target``: 25 % errors, +250 ms);
version 2 of ``iris-good`` is healthy. ``analyze`` must say promote for the good canary and
rollback for the bad one; ``auto`` must take the good one to 100 % (across an interrupted
run that resumes) and the bad one to 0 %. The Knative and Standard selectors (by pod) are
checked on the same data, scraped a second time under pod labels (POD_JOBS).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.observability.prom import running_prometheus
from tests.rollout.kube_fake import (
    NS,
    base_isvc,
    fake_api_client,
    install_kserve,
    isvc_path,
    isvc_schema,
    knative_status,
    load_crd,
    strip_nulls,
    validator,
    without_required,
)
from tests.server_process import (
    DEMO_REPO,
    ROOT,
    ServerProcess,
    running_server,
    start_server,
    wait_until_ready,
)

pytestmark = pytest.mark.slow

TOKEN = "rollout-test-token-0123456789"
GOOD, BAD = "iris-good", "iris-bad"
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
# Seconds-scale windows so the whole file runs in well under a minute and a half.
# The window and the canary volume waited for: the bad canary's users are slowed by its
# +250 ms, so it gets about 10 canary requests a second. At 50 requests its 25 % errors
# stayed inconclusive against the +5 % allowed in about 1 run in 60 (a CI run saw it);
# at 90, fewer than 1 in 1,000 (simulated with compare_errors).
WINDOW, VOLUME = "10s", 90
ANALYSIS = ["--min-requests", "40", "--max-error-increase", "0.05", "--latency-slack-ms", "100"]


@dataclass
class Stack:
    server: ServerProcess
    prometheus: str
    tmp: Path

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "serving.cli", "rollout", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def target(self, model: str) -> list[str]:
        return [model, "--mode", "inpod", "--server", self.server.url, "--token", TOKEN]

    def analyze(self, command: str, model: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """``rollout analyze|status`` of ``model`` over the last WINDOW, with the test's thresholds."""
        return self.cli(
            command,
            *self.target(model),
            "--prometheus",
            self.prometheus,
            "--window",
            WINDOW,
            *ANALYSIS,
            *extra,
        )

    def traffic(self, model: str) -> dict[str, Any]:
        r = httpx.get(
            f"{self.server.url}/v2/models/{model}/traffic",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        r.raise_for_status()
        policy: dict[str, Any] = r.json()["policy"]
        return policy

    def canary_requests(self, model: str, window: str) -> float:
        query = f'sum(increase(serving_requests_total{{model="{model}",variant="canary"}}[{window}]))'
        r = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": query}, timeout=5)
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0


def build_repo(root: Path) -> Path:
    repo = root / "repo"
    for name in (GOOD, BAD):
        shutil.copytree(DEMO_REPO / "iris-xgb", repo / name)
        config_path = repo / name / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["traffic"] = {"weights": {"1": 100}}  # version 1 is the incumbent
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return repo


# KServe modes tell stable from canary by pod (each revision or Deployment is its own pod).
# To give those selectors real data, Prometheus also scrapes the one server as four "pods",
# each job keeping one (model, variant) slice and labelled as Kubernetes discovery would.
POD_JOBS = {
    # Knative InferenceService "iris" on iris-bad: revision 00001 stable, 00002 canary
    "iris-predictor-00001-deployment-7d9f8c-x2x4q": (BAD, "stable"),
    "iris-predictor-00002-deployment-5b6c7d-p9z8k": (BAD, "canary"),
    # Standard InferenceService "iris-std" on iris-good: Deployments iris-std-predictor / iris-std-v2-predictor
    "iris-std-predictor-6f7d8b9c4-hq2zt": (GOOD, "stable"),
    "iris-std-v2-predictor-58c9d7f6b-4kw7m": (GOOD, "canary"),
}


def pod_jobs(target: str) -> list[dict[str, Any]]:
    """Scrape jobs that relabel one server's series as if they came from KServe's pods."""
    jobs: list[dict[str, Any]] = []
    for pod, (model, variant) in POD_JOBS.items():
        jobs.append(
            {
                "job_name": f"pod-{pod}",
                "static_configs": [{"targets": [target], "labels": {"namespace": NS, "pod": pod}}],
                "metric_relabel_configs": [
                    {"source_labels": ["model", "variant"], "regex": f"{model};{variant}", "action": "keep"},
                    # a revision's pod knows no variant; and in-pod selectors must not count it twice
                    {"regex": "variant", "action": "labeldrop"},
                ],
            }
        )
    return jobs


def start_load(tmp: Path, url: str) -> subprocess.Popen[bytes]:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or shutil.which("locust")
    if locust is None:
        pytest.fail("locust is not installed (test extras)")
    env = {**os.environ, "ROLLOUT_MODELS": f"{GOOD},{BAD}", "ROLLOUT_RATE": "15"}
    # 8 users (4 per model) x 15 requests/s: ~60 requests/s per model, bounded to 80 s.
    with (tmp / "locust.log").open("wb") as log:
        return subprocess.Popen(
            [
                locust,
                "-f",
                str(Path(__file__).with_name("locustfile.py")),
                "--headless",
                "-u",
                "8",
                "-r",
                "8",
                "-t",
                "80s",
                "--host",
                url,
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        pytest.fail("prometheus is not installed (scripts/test.sh installs Debian's package)")
    tmp = tmp_path_factory.mktemp("rollout-e2e")
    env = {
        "SERVING_ADMIN_TOKEN": TOKEN,
        "SERVING_FAULT_TARGET": f"{BAD}:2",
        "SERVING_FAULT_ERROR_RATE": "0.25",
        "SERVING_FAULT_LATENCY_MS": "250",
    }
    with contextlib.ExitStack() as cleanup:
        server = cleanup.enter_context(running_server(build_repo(tmp), tmp, grpc=False, env=env))
        target = f"127.0.0.1:{server.http_port}"
        prom = cleanup.enter_context(
            running_prometheus(prometheus_bin, tmp / "prometheus", [target], [], extra_jobs=pod_jobs(target))
        )
        prom_url = prom.url
        stack = Stack(server, prom_url, tmp)
        for model in (GOOD, BAD):
            done = stack.cli(
                "start", *stack.target(model), "--canary-version", "2", "--percent", "30", "-o", "json"
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert json.loads(done.stdout)["state"]["canary_percent"] == 30
        load = start_load(tmp, server.url)
        try:
            yield stack
        finally:
            if load.poll() is None:
                load.send_signal(signal.SIGTERM)
                try:
                    load.wait(15)
                except subprocess.TimeoutExpired:
                    load.kill()
                    load.wait()


def wait_for_canary_volume(stack: Stack, model: str, window: str, needed: float, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        seen = stack.canary_requests(model, window)
        if seen >= needed:
            return
        time.sleep(0.5)
    pytest.fail(f"{model}: only {seen:.0f} canary requests in {window} after {timeout}s")


def test_analyze_promote_good_rollback_bad(stack: Stack) -> None:
    for model in (GOOD, BAD):
        wait_for_canary_volume(stack, model, WINDOW, VOLUME)
    good = stack.analyze("analyze", GOOD, "-o", "json")
    bad = stack.analyze("analyze", BAD, "-o", "json")
    good_out, bad_out = json.loads(good.stdout), json.loads(bad.stdout)
    assert good.returncode == 0, good_out
    assert good_out["analysis"]["verdict"] == "promote"
    assert good_out["analysis"]["canary"]["requests"] >= 40
    assert good_out["analysis"]["canary"]["errors"] == 0
    assert bad.returncode == 1, bad_out
    analysis = bad_out["analysis"]
    assert analysis["verdict"] == "rollback"
    assert analysis["checks"]["errors"] == "fail" and analysis["checks"]["latency"] == "fail"
    assert 0.1 < analysis["errors"]["canary_ratio"] < 0.45  # 25 % injected
    assert analysis["stable"]["errors"] == 0
    assert analysis["canary"]["p99_s"] > 0.2  # +250 ms injected
    # the human-readable form says the same
    text = stack.analyze("analyze", BAD)
    assert text.returncode == 1
    assert "verdict: ROLLBACK" in text.stdout and "error ratio" in text.stdout
    status = stack.analyze("status", GOOD)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "stable  1" in status.stdout and "canary  2" in status.stdout and "30%" in status.stdout
    assert "verdict: PROMOTE" in status.stdout


def test_kserve_modes_analyze_on_pod_series(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Knative and Standard mode: the CLI reads the InferenceService through the real
    kubernetes client (recording transport), derives pod selectors from it, and judges on
    real Prometheus data: the Knative canary revision (faulty) -> rollback, the Standard
    spec.canary[] entry (healthy) -> promote."""
    from serving.cli import main
    from serving.rollout import kserve

    api_client, fake = fake_api_client()
    knative = base_isvc("iris", "Serverless")
    knative["spec"]["predictor"]["canaryTrafficPercent"] = 30
    knative["status"] = knative_status("iris-predictor-00002", "iris-predictor-00001", 30)
    standard = base_isvc("iris-std", "Standard")
    canary_model = {
        **standard["spec"]["predictor"]["model"],
        "name": "kserve-container",
        "storageUri": "s3://m/v2",
    }
    standard["spec"]["canary"] = [{"trafficPercent": 30, "predictor": {"name": "v2", "model": canary_model}}]
    standard["status"] = {
        "deploymentMode": "Standard",
        "canaryStatuses": [{"name": "v2", "ready": True, "trafficPercent": 30}],
    }
    fake.objects[isvc_path(NS, "iris")] = knative
    fake.objects[isvc_path(NS, "iris-std")] = standard
    install_kserve(fake)  # a KServe that splits Standard canaries (Gateway API, post-v0.20.0)
    fake.reconcile(isvc_path(NS, "iris-std"))
    monkeypatch.setattr(kserve, "load_api_client", lambda context=None: api_client)
    wait_for_canary_volume(stack, BAD, WINDOW, VOLUME)

    flags = ["-n", NS, "--prometheus", stack.prometheus, "--window", WINDOW, *ANALYSIS, "-o", "json"]
    assert main(["rollout", "analyze", "iris", *flags]) == 1
    knative_out = json.loads(capsys.readouterr().out)
    assert knative_out["state"]["mode"] == "knative"
    assert knative_out["analysis"]["verdict"] == "rollback"
    assert knative_out["analysis"]["canary"]["requests"] >= 40
    assert (
        knative_out["analysis"]["canary"]["errors"] > 0 and knative_out["analysis"]["stable"]["errors"] == 0
    )

    assert main(["rollout", "analyze", "iris-std", *flags]) == 0
    standard_out = json.loads(capsys.readouterr().out)
    assert standard_out["state"]["mode"] == "standard"
    assert standard_out["analysis"]["verdict"] == "promote"
    assert standard_out["analysis"]["canary"]["errors"] == 0
    assert standard_out["state"]["selectors"]["canary"].endswith(
        'pod=~"iris-std-v2-predictor-[a-z0-9]+-[a-z0-9]+"'
    )
    assert {r.method for r in fake.requests} == {"GET"}  # analysis only reads
    # the pod series carry no variant label, so the in-pod selectors did not count them twice
    inpod = stack.analyze("analyze", GOOD, "-o", "json")
    pooled = json.loads(inpod.stdout)["analysis"]["canary"]["requests"]
    assert abs(pooled - standard_out["analysis"]["canary"]["requests"]) <= 0.25 * pooled + 10

    # `auto` in Standard mode: steps the spec.canary[] entry 30 -> 60, then promotes it; every
    # PATCH it sent is valid against the CRD and KServe's webhooks, and the stable predictor
    # ends on the canary's model (no container name, its own name kept).
    # No cluster moves the one server's split when the recorded PATCH says 60 %: it stays at
    # 30 %, which the sample-ratio check rightly calls a mismatch (exit 3). Off here: this test
    # is about the PATCHes; the check has its own end-to-end test (test_e2e_predictions.py).
    steps = ["--steps", "30,60,100", "--interval", "4s", "--max-holds", "5", "--srm-threshold", "0"]
    assert main(["rollout", "auto", "iris-std", *flags[:-2], *steps, "-o", "json"]) == 0
    auto_events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in auto_events if e["event"] in ("stepped", "promoted")] == [
        "stepped",
        "promoted",
    ]
    crd = load_crd()
    full, partial = validator(isvc_schema(crd)), validator(without_required(isvc_schema(crd)))
    patches = [r.body for r in fake.requests if r.method == "PATCH"]
    for body in patches:
        partial.validate(strip_nulls(body))
    final = fake.objects[isvc_path(NS, "iris-std")]
    full.validate(final)
    assert patches[0]["spec"]["canary"][0]["trafficPercent"] == 60
    assert final["spec"]["canary"] == [] and "name" not in final["spec"]["predictor"]
    assert final["spec"]["predictor"]["model"]["storageUri"] == "s3://m/v2" and fake.refusals == []


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_auto_inpod_good_to_100_bad_to_0(stack: Stack) -> None:
    auto = [
        "--prometheus",
        stack.prometheus,
        "--steps",
        "30,60,100",
        "--interval",
        "4s",
        "--max-holds",
        "5",
        *ANALYSIS,
        "-o",
        "json",
    ]
    bad = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "rollout", "auto", *stack.target(BAD), *auto],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    # The good canary's run is interrupted right after its first step up, then resumed.
    first = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "rollout", "auto", *stack.target(GOOD), *auto],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert first.stdout is not None
        seen = []
        for line in first.stdout:
            seen.append(json.loads(line))
            if seen[-1]["event"] in ("stepped", "rolled_back", "promoted", "error", "gave_up"):
                break
        assert seen[-1]["event"] == "stepped" and seen[-1]["percent"] == 60, seen
        first.send_signal(signal.SIGINT)
        rest, _ = first.communicate(timeout=20)
        assert first.returncode == 130
        assert events(rest)[-1]["event"] == "interrupted"
        assert stack.traffic(GOOD)["weights"] == {"1": 40.0, "2": 60.0}

        resumed = stack.cli("auto", *stack.target(GOOD), *auto, timeout=60)
        resumed_events = events(resumed.stdout)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert resumed_events[0]["event"] == "wait" and resumed_events[0]["percent"] == 60  # resumed at 60 %
        assert resumed_events[-1]["event"] == "promoted"

        bad_out, _ = bad.communicate(timeout=60)
        bad_events = events(bad_out)
        assert bad.returncode == 1, bad_out
        assert [e["event"] for e in bad_events][-2:] == ["analysis", "rolled_back"]
        assert bad_events[-2]["analysis"]["verdict"] == "rollback"
    finally:
        for proc in (bad, first):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    # The policies say so, and so does the traffic itself.
    good_policy, bad_policy = stack.traffic(GOOD), stack.traffic(BAD)
    assert good_policy["weights"] == {"2": 100.0} and good_policy["stable_version"] == "2"
    assert bad_policy["weights"] == {"1": 100.0, "2": 0.0} and bad_policy["stable_version"] == "1"
    with httpx.Client(base_url=stack.server.url, timeout=5) as client:
        for model, version in ((GOOD, "2"), (BAD, "1")):
            served = {
                client.post(f"/v2/models/{model}/infer", json=BODY).json()["model_version"] for _ in range(30)
            }
            assert served == {version}, (model, served)

    status = stack.cli("status", *stack.target(BAD))
    assert status.returncode == 0
    assert "canary" in status.stdout and "0%" in status.stdout


# -- fleet mode: one policy directory, several processes ---------------------------------------
class FleetLoad:
    """Unpinned requests spread over every process, ~``rate`` per second per model, until
    stopped. Each thread keeps one connection per server (several connections per server,
    so the kernel spreads a ``--workers N`` server's share over its workers)."""

    THREADS_PER_MODEL = 6

    def __init__(self, urls: list[str], models: tuple[str, ...], rate: float) -> None:
        self.urls, self.models, self.rate = urls, models, rate
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(m, i), daemon=True)
            for m in models
            for i in range(self.THREADS_PER_MODEL)
        ]
        for t in self.threads:
            t.start()

    def _run(self, model: str, offset: int) -> None:
        interval = self.THREADS_PER_MODEL / self.rate
        clients = [httpx.Client(base_url=url, timeout=5) for url in self.urls]
        i = offset
        try:
            while not self.stop.is_set():
                began = time.monotonic()
                client = clients[i % len(clients)]
                i += 1
                with contextlib.suppress(httpx.HTTPError):
                    client.post(f"/v2/models/{model}/infer", json=BODY)
                self.stop.wait(max(0.0, interval - (time.monotonic() - began)))
        finally:
            for client in clients:
                client.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def fleet_policy(store: Path, model: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((store / f"{model}.yaml").read_text())
    return doc


@pytest.mark.timeout(600)  # ~60 s on a quiet 2-core machine; six servers start in parallel
def test_fleet_auto_good_to_100_bad_to_0_on_every_process(tmp_path: Path) -> None:
    """Three single-process servers and one ``--workers 2`` share a policy directory;
    ``rollout auto`` in fleet mode (``--policy-dir`` + every ``--server``) steps the healthy
    canary to 100 % and rolls the faulty one back, judged on a real Prometheus scraping all
    four; a process started mid-rollout serves the current split from its first ready moment;
    afterwards unpinned requests to any process reach only the right version."""
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        pytest.fail("prometheus is not installed (scripts/test.sh installs Debian's package)")
    repo = build_repo(tmp_path)
    store = tmp_path / "policies"
    store.mkdir()
    env = {
        "SERVING_ADMIN_TOKEN": TOKEN,
        "SERVING_FAULT_TARGET": f"{BAD}:2",
        "SERVING_FAULT_ERROR_RATE": "0.25",
        "SERVING_FAULT_LATENCY_MS": "250",
        "SERVING_TRAFFIC_POLICY_DIR": str(store),
        "SERVING_TRAFFIC_POLICY_POLL_SECONDS": "0.2",
    }
    with contextlib.ExitStack() as cleanup:
        servers = []
        for args in ((), (), (), ("--workers", "2")):
            server = start_server(
                repo, tmp_path / "logs", args=list(args), env=env, grpc=False, wait_ready=False
            )
            cleanup.callback(server.stop)
            servers.append(server)
        for server in servers:  # started in parallel
            wait_until_ready(server, 240)
        urls = [s.url for s in servers]
        prom = cleanup.enter_context(
            running_prometheus(
                prometheus_bin, tmp_path / "prometheus", [u.removeprefix("http://") for u in urls], []
            )
        )
        fleet = ["--mode", "inpod", "--policy-dir", str(store), *[f"--server={u}" for u in urls]]

        def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "serving.cli", "rollout", *args],
                capture_output=True, text=True, timeout=timeout, cwd=ROOT,
            )  # fmt: skip

        for model in (GOOD, BAD):
            done = cli("start", model, *fleet, "--canary-version", "2", "--percent", "30", "-o", "json")
            assert done.returncode == 0, done.stdout + done.stderr
            state = json.loads(done.stdout)["state"]
            assert state["mode"] == "inpod-fleet" and state["canary_percent"] == 30
            assert len(state["replicas"]) == 5  # 3 processes + 2 workers, all on the new generation
            assert {r["generation"] for r in state["replicas"]} == {state["generation"]}
        load = FleetLoad(urls, (GOOD, BAD), rate=60)
        cleanup.callback(load.close)

        # an 8 s window over four scraped targets: enough canary requests at 30 % even when slow.
        # A process starts mid-rollout below (model loads, twin builds) on this 2-core machine, and
        # its start-up spiked the good canary's p99 to 131 ms once (> stable 21 ms + 100 ms slack):
        # this test is about every process following the policy, so the bad canary is caught by
        # its injected errors (asserted below) and latency gets a wide slack; the latency check
        # itself is test_analyze_promote_good_rollback_bad's.
        auto = ["--prometheus", prom.url, "--steps", "30,60,100", "--interval", "4s", "--window", "8s",
                "--max-holds", "6", *ANALYSIS, "--latency-slack-ms", "1000", "--min-requests", "30",
                "-o", "json"]  # fmt: skip
        runs = {
            model: subprocess.Popen(
                [sys.executable, "-m", "serving.cli", "rollout", "auto", model, *fleet, *auto],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for model in (GOOD, BAD)
        }
        try:
            # Mid-rollout, a new process joins: from its first ready answer it applies the
            # store's current policy, not config.yaml's 100 % on version 1.
            late = start_server(repo, tmp_path / "logs", env=env, grpc=False, wait_ready=False)
            cleanup.callback(late.stop)
            floor = fleet_policy(store, GOOD)["generation"]
            wait_until_ready(late, 240)
            first = httpx.get(f"{late.url}/v2/models/{GOOD}/traffic", timeout=5).json()
            assert first["source"] == "store" and first["generation"] >= floor, first
            assert first["policy"]["weights"].get("2", 0) >= 30, first

            outs = {model: run.communicate(timeout=90) for model, run in runs.items()}
        finally:
            for run in runs.values():
                if run.poll() is None:
                    run.kill()
                    run.communicate()
        good_events, bad_events = events(outs[GOOD][0]), events(outs[BAD][0])
        assert runs[GOOD].returncode == 0, outs[GOOD][0][-4000:] + outs[GOOD][1][-2000:]
        assert [e["event"] for e in good_events if e["event"] in ("stepped", "promoted")] == [
            "stepped",
            "promoted",
        ]
        assert runs[BAD].returncode == 1, outs[BAD][0][-4000:] + outs[BAD][1][-2000:]
        assert [e["event"] for e in bad_events][-2:] == ["analysis", "rolled_back"]
        assert bad_events[-2]["analysis"]["verdict"] == "rollback"
        assert bad_events[-2]["analysis"]["checks"]["errors"] == "fail"
        # the analysis pooled every process: canary requests were counted on all four targets
        instances = prom.query(
            f'count by (instance) (serving_requests_total{{model="{GOOD}",variant="canary"}})'
        )
        assert len(instances) == 4, instances
        load.close()

        assert fleet_policy(store, GOOD)["traffic"]["weights"] == {"2": 100.0}
        assert fleet_policy(store, BAD)["traffic"]["weights"] == {"1": 100.0, "2": 0.0}
        for url in [*urls, late.url]:
            for model, version in ((GOOD, "2"), (BAD, "1")):
                served = {
                    httpx.post(f"{url}/v2/models/{model}/infer", json=BODY, timeout=5).headers[
                        "x-model-version"
                    ]
                    for _ in range(12)
                }
                assert served == {version}, (url, model, served)
        status = cli("status", BAD, *fleet)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "replicas (store generation" in status.stdout and "pid" in status.stdout
