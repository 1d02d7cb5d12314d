"""Bounded load for the rollout end-to-end test: ``ROLLOUT_RATE`` requests per second per
user, half the users on each of the two models in ``ROLLOUT_MODELS`` (comma-separated), so a
slow canary on one model does not throttle the other's traffic.

Injected 500s are expected (that is the bad canary), so they do not fail the run.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, constant_throughput, task

MODELS = [m for m in os.environ.get("ROLLOUT_MODELS", "").split(",") if m]
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


class _Caller(FastHttpUser):
    abstract = True
    model = ""
    wait_time = constant_throughput(float(os.environ.get("ROLLOUT_RATE", "10")))

    @task
    def infer(self) -> None:
        with self.client.post(
            f"/v2/models/{self.model}/infer", json=BODY, catch_response=True, name=self.model
        ) as r:
            if r.status_code in (200, 500):
                r.success()


class FirstModel(_Caller):
    model = MODELS[0] if MODELS else ""


class SecondModel(_Caller):
    model = MODELS[1] if len(MODELS) > 1 else (MODELS[0] if MODELS else "")
