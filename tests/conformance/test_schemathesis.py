"""schemathesis against the published OIP v2 REST OpenAPI spec (found by tests.references).

Property-based requests for every operation: no response may be a server error, and every
documented response must match its schema. Two deviations from the file, both where the spec
and real clients (tritonclient, KServe's clients, our server) disagree:

- The spec writes path templates as ``/v2/models/${MODEL_NAME}/...``; OpenAPI templating is
  ``{MODEL_NAME}``, so taken literally every URL would contain a ``$``. We drop the ``$``.
- The spec lists only 200 (and 400 for metadata/infer); real servers also answer 404 (unknown
  model), 503 (not ready) and 415/413, so status-code conformance is not checked; response
  bodies of the documented codes are.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from schemathesis.core import NOT_SET, Body
from schemathesis.schemas import APIOperation

from tests.conformance.reference import MODELS, sample
from tests.references import reference
from tests.server_process import ServerProcess

SPEC = reference("kserve/oip_v2_rest_predict_v2.yaml", module_level=True)
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def load_spec(pinned: bool = False) -> dict[str, Any]:
    """The spec with ``${X}`` templates fixed; ``pinned`` limits model and version to the demo
    models so generated bodies reach the decoder and the model instead of a 404."""
    doc: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    doc["paths"] = {path.replace("${", "{"): item for path, item in doc["paths"].items()}
    if pinned:
        enums = {"MODEL_NAME": sorted({m for m, _, _, _ in MODELS}), "MODEL_VERSION": ["1", "2"]}
        for item in doc["paths"].values():
            for param in item.get("parameters", []):
                param["schema"]["enum"] = enums[param["name"]]
    return doc


# Loaded at import (a local file): schemathesis' lazy from_fixture does not work with pytest 9.
schema = schemathesis.openapi.from_dict(load_spec())
pinned_schema = schemathesis.openapi.from_dict(load_spec(pinned=True))


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_server_errors_and_conforming_responses(case: Any, demo_server: ServerProcess) -> None:
    case.call_and_validate(base_url=demo_server.url, checks=CHECKS, timeout=10)


@pinned_schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_demo_models_fuzzed_per_spec(case: Any, demo_server: ServerProcess) -> None:
    case.call_and_validate(base_url=demo_server.url, checks=CHECKS, timeout=10)


@pytest.mark.parametrize(("model", "version", "features", "outputs"), MODELS)
def test_real_models_answer_per_spec(
    demo_server: ServerProcess, model: str, version: str, features: int, outputs: list[str]
) -> None:
    """Valid requests for every demo model: 200s whose bodies conform to the spec."""
    path = {"MODEL_NAME": model, "MODEL_VERSION": version}
    x = sample(features)
    body: dict[str, Any] = {
        "id": "s1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
    }
    calls: list[tuple[APIOperation[Any, Any, Any, Any], Body]] = [
        (schema["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"]["POST"], body),
        (schema["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}"]["GET"], NOT_SET),
        (schema["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/ready"]["GET"], NOT_SET),
        (schema["/v2/"]["GET"], NOT_SET),
        (schema["/v2/health/ready"]["GET"], NOT_SET),
    ]
    for operation, request_body in calls:
        path_parameters = path if "{" in operation.path else None
        case = operation.Case(path_parameters=path_parameters, body=request_body)
        response = case.call_and_validate(base_url=demo_server.url, checks=CHECKS, timeout=10)
        assert response.status_code == 200, (operation.path, response.text)
        if operation.method.upper() == "POST":
            doc = response.json()
            assert [o["name"] for o in doc["outputs"]] == outputs and doc["model_version"] == version
