"""Reads the canary and stable numbers for one window from the Prometheus HTTP API.

Series are the server's own (serving/observability/metrics.py): ``serving_requests_total``,
``serving_request_duration_seconds`` and ``serving_predictions_total``. Each side is a PromQL label matcher list, so the same
queries work for in-pod routing (``variant="canary"``) and for KServe revisions, which are
separate pods (``pod=~"<revision>-deployment-.*"``).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from serving.rollout.decision import Sample
from serving.rollout.shadowgate import ShadowSample

# Outcomes that are the server's fault: REST 5xx, and the gRPC codes our error table maps
# 5xx-class errors to. 4xx is the caller's fault and does not count against a canary.
SERVER_ERROR_OUTCOMES = "5xx|INTERNAL|UNKNOWN|DATA_LOSS|UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED"

_DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h)$")


class PrometheusError(Exception):
    """Prometheus could not be reached or rejected the query."""


def parse_duration(text: str) -> float:
    """``500ms``, ``30s``, ``5m``, ``1h`` -> seconds."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ValueError(f"invalid duration '{text}': use e.g. 500ms, 30s, 5m, 1h")
    value, unit = int(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def promql_duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class Side:
    """Label matchers (PromQL syntax, without braces) that select one side's series."""

    name: str
    matchers: str


def inpod_sides(model: str) -> tuple[Side, Side]:
    m = _quote(model)
    return Side("stable", f'model="{m}",variant="stable"'), Side("canary", f'model="{m}",variant="canary"')


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class PrometheusClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns the vector's ``result`` list."""
        data = urllib.parse.urlencode({"query": promql}).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v1/query",
            data=data,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise PrometheusError(f"Prometheus rejected {promql!r}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusError(f"Prometheus at {self.url} not reachable: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus query failed: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        """First sample's value of a query, or None for an empty result or NaN."""
        result = self.query(promql)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    def vector(self, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
        """A query's samples keyed by the values of ``labels`` (NaN and infinite values dropped)."""
        found: dict[tuple[str, ...], float] = {}
        for item in self.query(promql):
            value = float(item["value"][1])
            if math.isnan(value) or math.isinf(value):
                continue
            found[tuple(item["metric"].get(label, "") for label in labels)] = value
        return found

    def requests(self, side: Side, window_s: float) -> float:
        """Requests of one side over the last ``window_s`` seconds."""
        w = promql_duration(window_s)
        return self.scalar(f"sum(increase(serving_requests_total{{{side.matchers}}}[{w}]))") or 0.0

    def shadow(self, model: str, stable: str, canary: str, window_s: float) -> ShadowSample:
        """The canary's shadow comparisons against the stable version over ``window_s``."""
        w = promql_duration(window_s)
        sel = f'model="{_quote(model)}",primary_version="{_quote(stable)}",shadow_version="{_quote(canary)}"'
        rows: dict[str, dict[str, float]] = {}
        for (output, result), count in self.vector(
            f"sum by (output, result) (increase(serving_shadow_rows_total{{{sel}}}[{w}]))", "output", "result"
        ).items():
            rows.setdefault(output, {})[result] = count
        compared = self.scalar(f"sum(increase(serving_shadow_abs_diff_count{{{sel}}}[{w}]))") or 0.0
        q90 = self.scalar(
            f"histogram_quantile(0.9, sum by (le) (rate(serving_shadow_abs_diff_bucket{{{sel}}}[{w}])))"
        )
        return ShadowSample(rows, compared, q90 if compared > 0 else None)

    def sample(self, side: Side, window_s: float, predictions: bool = True, labels: bool = False) -> Sample:
        """Requests, server errors, latency (p99 and buckets) and, with ``predictions``, the
        prediction counts per output and bucket for one side over the last ``window_s`` seconds."""
        w = promql_duration(window_s)
        sel = side.matchers
        requests = self.requests(side, window_s)
        errors = (
            self.scalar(
                f'sum(increase(serving_requests_total{{{sel},outcome=~"{SERVER_ERROR_OUTCOMES}"}}[{w}]))'
            )
            or 0.0
        )
        p99 = self.scalar(
            f"histogram_quantile(0.99, sum by (le) "
            f"(rate(serving_request_duration_seconds_bucket{{{sel}}}[{w}])))"
        )
        buckets: dict[float, float] = {}
        for (le,), count in self.vector(
            f"sum by (le) (increase(serving_request_duration_seconds_bucket{{{sel}}}[{w}]))", "le"
        ).items():
            try:
                buckets[float(le)] = count
            except ValueError:
                continue
        found: dict[str, dict[str, float]] | None = None
        if predictions:
            series = self.vector(
                f"sum by (output, bucket) (increase(serving_predictions_total{{{sel}}}[{w}]))",
                "output",
                "bucket",
            )
            if series:
                found = {}
                for (output, bucket), count in series.items():
                    found.setdefault(output, {})[bucket] = count
        labelled = wrong = 0.0
        if labels:
            results = self.vector(
                f"sum by (result) (increase(serving_feedback_labels_total{{{sel}}}[{w}]))", "result"
            )
            wrong = results.get(("wrong",), 0.0)
            labelled = wrong + results.get(("correct",), 0.0)
        return Sample(
            labelled=labelled,
            wrong=wrong,
            requests=requests,
            errors=errors,
            p99_s=p99 if requests > 0 else None,
            latency_buckets=buckets or None,
            predictions=found,
        )
