"""A real Prometheus (Debian's ``prometheus`` binary) on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.server_process import free_port
from tests.waiting import wait_until


def _epoch(rfc3339: str) -> float:
    """Prometheus's RFC 3339 times carry nanoseconds; Python reads at most microseconds."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")).timestamp()


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector (raises on a PromQL error)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        doc = response.json()
        assert response.status_code == 200 and doc["status"] == "success", f"{expr}: {doc}"
        assert doc["data"]["resultType"] == "vector", f"{expr}: {doc['data']['resultType']}"
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def finite(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """The series of an instant query whose value is a finite number."""
        out = []
        for series in self.query(expr):
            value = float(series["value"][1])
            if math.isfinite(value):
                out.append((series["metric"], value))
        return out

    def value(self, expr: str) -> float:
        (series,) = self.query(expr)
        return float(series["value"][1])

    def wait_for(self, expr: str, predicate: Any, timeout: float) -> list[dict[str, Any]]:
        result = self.query(expr)

        def holds() -> bool:
            nonlocal result
            result = self.query(expr)
            return bool(predicate(result))

        wait_until(holds, timeout, 0.25, lambda: f"{expr}: still {result}\n{self.log()[-2000:]}")
        return result

    def evaluated_after_a_scrape(self, since: float) -> bool:
        """Every target was scraped after ``since`` (epoch seconds), and every rule group was
        evaluated after those scrapes: what happened before ``since`` is in the rules' results."""
        targets = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        scraped = [_epoch(t["lastScrape"]) for t in targets]
        if not scraped or min(scraped) <= since:
            return False
        groups = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return all(_epoch(g["lastEvaluation"]) > max(scraped) for g in groups)


@contextlib.contextmanager
def running_prometheus(
    binary: str,
    workdir: Path,
    targets: list[str],
    rule_files: list[Path],
    interval: str = "1s",
    extra_jobs: Sequence[dict[str, Any]] = (),
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (job "serving") and any ``extra_jobs`` (full scrape_config
    entries) every ``interval``, evaluating ``rule_files``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": "serving", "static_configs": [{"targets": targets}]},
            *extra_jobs,
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(proc, f"http://127.0.0.1:{port}", log_path)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{prom.log()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{prom.url}/-/ready", timeout=1).status_code == 200
            return False

        wait_until(ready, 30, 0.1, lambda: f"prometheus not ready:\n{prom.log()}")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
