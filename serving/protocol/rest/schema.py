"""Our description of the inference and explain routes and their JSON messages (Open Inference
Protocol v2, KServe v1).

The inference routes are served by the raw-ASGI handler (``app.InferenceApp``), not by FastAPI,
so they are missing from the OpenAPI document FastAPI writes for the other routes. This module
says what they accept and answer, for the REST reference page (scripts/docs_reference.py, which
reads nothing outside this checkout) and for tests: real responses of a running server are
validated against these schemas, and tests/protocol/rest/test_schema.py compares them with
KServe's OIP spec wherever that reference file is at hand. Nothing here runs per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.datatypes import DATATYPES


@dataclass(frozen=True)
class InferenceRoute:
    method: str
    path: str
    summary: str
    request: str
    """Name of the request body's schema in ``MESSAGES``."""
    response: str
    """Name of the 200 answer's schema in ``MESSAGES``."""


INFERENCE_ROUTES = (
    InferenceRoute(
        "POST",
        "/v2/models/{model_name}/infer",
        "Inference on the version the router picks (the stable one, or a canary's share)",
        "inference_request",
        "inference_response",
    ),
    InferenceRoute(
        "POST",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        "Inference on one version",
        "inference_request",
        "inference_response",
    ),
    InferenceRoute(
        "POST",
        "/v1/models/{model_name}:predict",
        "KServe v1 predict: rows of features in, predictions out",
        "v1_predict_request",
        "v1_predict_response",
    ),
    InferenceRoute(
        "POST",
        "/v2/models/{model_name}/explain",
        "Exact per-feature contributions, bias and raw margin of an inference body's rows "
        "(boosters, and ONNX versions exported from one; explain_max_rows rows at most)",
        "inference_request",
        "explain_response",
    ),
    InferenceRoute(
        "POST",
        "/v2/models/{model_name}/versions/{model_version}/explain",
        "Explanations from one version",
        "inference_request",
        "explain_response",
    ),
    InferenceRoute(
        "POST",
        "/v1/models/{model_name}:explain",
        "Explanations for KServe v1 instances",
        "v1_predict_request",
        "explain_response",
    ),
)
"""The routes ``InferenceApp`` serves; everything else is a FastAPI route in the OpenAPI document.
Errors on every route answer ``error_response`` with a 4xx/5xx status (docs/reference/errors.md)."""

_PARAMETERS = {
    "type": "object",
    "description": "free-form parameters (the ones this server reads: docs/concepts/protocols.md)",
}
_TENSOR_DATA = {
    "type": "array",
    "description": "the tensor's elements, flat in row-major order or nested by the shape",
    "items": {"anyOf": [{"type": "array"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_DATATYPE = {"type": "string", "enum": sorted(DATATYPES)}


def _tensor(description: str) -> dict[str, Any]:
    """A tensor of a request or response; "data" may be absent when parameters.binary_data_size
    puts the tensor after the JSON (the binary extension)."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "name": {"type": "string"},
            "shape": _SHAPE,
            "datatype": _DATATYPE,
            "parameters": _PARAMETERS,
            "data": _TENSOR_DATA,
        },
        "required": ["name", "shape", "datatype"],
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


MESSAGES: dict[str, dict[str, Any]] = {
    "inference_request": {
        "type": "object",
        "description": "The body of an inference request (JSON; or a JSON header and binary tensors, "
        "with the Inference-Header-Content-Length header).",
        "properties": {
            "id": {"type": "string", "description": "echoed in the response"},
            "parameters": _PARAMETERS,
            "inputs": {"type": "array", "items": _ref("request_input")},
            "outputs": {
                "type": "array",
                "description": "the outputs to return (default: all of them)",
                "items": _ref("request_output"),
            },
        },
        "required": ["inputs"],
    },
    "request_input": _tensor("One input tensor, named as in the model's config.yaml."),
    "request_output": {
        "type": "object",
        "description": "An output the caller asks for; parameters.binary_data asks for it in binary.",
        "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
        "required": ["name"],
    },
    "inference_response": {
        "type": "object",
        "description": "The answer to an inference request.",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string", "description": "the version that computed it"},
            "id": {"type": "string", "description": "the request's id, when it had one"},
            "parameters": _PARAMETERS,
            "outputs": {"type": "array", "items": _ref("response_output")},
        },
        "required": ["model_name", "outputs"],
    },
    "response_output": _tensor(
        "One output tensor (in binary, its data follows the JSON and "
        "parameters.binary_data_size says its length)."
    ),
    "v1_predict_request": {
        "type": "object",
        "description": "KServe v1: one row of features per instance.",
        "properties": {"instances": {"type": "array", "minItems": 1}},
        "required": ["instances"],
    },
    "v1_predict_response": {
        "type": "object",
        "description": "KServe v1: one prediction per instance.",
        "properties": {"predictions": {"type": "array"}},
        "required": ["predictions"],
    },
    "explain_response": {
        "type": "object",
        "description": "Contributions in the booster's raw margin: per row (and class), one per "
        "feature, plus the bias; they add up to the margin.",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "feature_names": {"type": "array", "items": {"type": "string"}},
            "contributions": {
                "type": "array",
                "description": "[rows][features], or [rows][classes][features]",
            },
            "bias": {"type": "array", "description": "[rows], or [rows][classes]"},
            "margin": {"type": "array", "description": "[rows], or [rows][classes]"},
        },
        "required": ["model_name", "model_version", "feature_names", "contributions", "bias", "margin"],
    },
    "error_response": {
        "type": "object",
        "description": "Every error, on every route: one readable sentence.",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
    },
}
"""Message name -> JSON Schema (draft 2020-12, with ``$ref`` into this mapping as OpenAPI's
``#/components/schemas/``)."""


def json_schema(name: str) -> dict[str, Any]:
    """``MESSAGES[name]`` as a self-contained JSON Schema (its references resolvable), for a
    validator such as ``jsonschema``."""
    return {**MESSAGES[name], "components": {"schemas": MESSAGES}}
