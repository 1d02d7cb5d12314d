"""REST routes of the model control API (OIP model repository extension + traffic policy).

Read-only, no token needed (like model metadata); reasons name files relative to the
repository and give a short cause, without absolute paths or library messages:

    GET|POST /v2/repository/index                 body {"ready": true} lists READY only
    GET    /v2/models/{m}/traffic                the policy this process applies, its
                                                 generation and the shares it gives now

The traffic read is public because convergence checks read it from every replica through
the Kubernetes API server's pod proxy, which does not pass the caller's Authorization
header on; it holds weights and version names, nothing secret.

Admin, ``Authorization: Bearer <SERVING_ADMIN_TOKEN>`` (403 when no token is configured,
401 when missing or wrong); with ``SERVING_ADMIN_PORT`` set, only on that port:

    GET|POST /v2/repository/index/detail        the same with full reasons (paths, library messages)
    POST   /v2/repository/models/{m}/load        body {"parameters": {"version": "3"}} optional
    POST   /v2/repository/models/{m}/unload      body {"parameters": {"version": "1"}} optional
    POST   /v2/repository/reload                 re-read model_repo/ (new or removed folders)
    PUT    /v2/models/{m}/traffic                replace it: {"weights": {"1": 90, "2": 10}, ...}
    DELETE /v2/models/{m}/traffic                back to config.yaml's policy
    POST   /v2/models/{m}/feedback               ground truth: {"labels": [{"id": "...", "label": 1}]}
                                                 (serving/core/feedback.py; SERVING_FEEDBACK_RETENTION)
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request

from serving.control.models import ModelControl
from serving.errors import InvalidInput, ModelNotFound
from serving.modelconfig import check_version_name


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def _version_param(doc: Any) -> str | None:
    """``{"parameters": {"version": "2"}}`` (OIP style) or ``{"version": 2}``."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise InvalidInput('expected a JSON object such as {"parameters": {"version": "2"}}')
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("'parameters' must be an object")
    value = (params or {}).get("version", doc.get("version"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput("'version' must be a positive integer or its string")
    return check_version_name(str(value))


async def _ready_only(request: Request) -> bool:
    doc = await _json_body(request) if request.method == "POST" else None
    ready = doc.get("ready", False) if isinstance(doc, dict) else False
    if not isinstance(ready, bool):
        raise InvalidInput("'ready' must be true or false")
    return ready


def read_routes(control: ModelControl) -> APIRouter:
    routes = APIRouter()

    @routes.api_route("/v2/repository/index", methods=["GET", "POST"])
    async def repository_index(request: Request) -> Any:
        return control.index(ready_only=await _ready_only(request))

    @routes.get("/v2/models/{name}/traffic")
    async def get_traffic(name: str) -> Any:
        return control.traffic(name)

    return routes


def admin_routes(control: ModelControl) -> APIRouter:
    def require_admin(request: Request) -> None:
        control.authorize(request.headers.get("authorization"))

    admin = [Depends(require_admin)]
    routes = APIRouter()

    @routes.api_route("/v2/repository/index/detail", methods=["GET", "POST"], dependencies=admin)
    async def repository_index_detail(request: Request) -> Any:
        return control.index(ready_only=await _ready_only(request), detail=True)

    @routes.post("/v2/repository/models/{name}/load", dependencies=admin)
    async def load(name: str, request: Request) -> Any:
        version = _version_param(await _json_body(request))
        return {"name": name, "versions": await control.load(name, version)}

    @routes.post("/v2/repository/models/{name}/unload", dependencies=admin)
    async def unload(name: str, request: Request) -> Any:
        version = _version_param(await _json_body(request))
        return {"name": name, "versions": await control.unload(name, version)}

    @routes.post("/v2/repository/reload", dependencies=admin)
    async def reload() -> Any:
        return await control.reload()

    @routes.put("/v2/models/{name}/traffic", dependencies=admin)
    async def put_traffic(name: str, request: Request) -> Any:
        doc = await _json_body(request)
        if doc is None:
            raise InvalidInput("send the traffic policy as a JSON object (DELETE resets it)")
        return await control.set_traffic(name, doc)

    @routes.delete("/v2/models/{name}/traffic", dependencies=admin)
    async def reset_traffic(name: str) -> Any:
        return await control.set_traffic(name, None)

    @routes.post("/v2/models/{name}/feedback", dependencies=admin)
    async def feedback(name: str, request: Request) -> Any:
        return control.dataplane.submit_feedback(name, await _json_body(request))

    return routes


def admin_elsewhere(port: int) -> APIRouter:
    """On the inference port when ``SERVING_ADMIN_PORT`` is set: the admin routes answer 404
    with a pointer (the NetworkPolicy decides who reaches the admin port)."""
    routes = APIRouter()

    async def elsewhere() -> Any:
        raise ModelNotFound(f"model control is served on the admin port ({port}) only")

    for path, methods in (
        ("/v2/repository/index/detail", ["GET", "POST"]),
        ("/v2/repository/models/{name}/load", ["POST"]),
        ("/v2/repository/models/{name}/unload", ["POST"]),
        ("/v2/repository/reload", ["POST"]),
        ("/v2/models/{name}/traffic", ["PUT", "DELETE"]),
        ("/v2/models/{name}/feedback", ["POST"]),
    ):
        routes.add_api_route(path, elsewhere, methods=methods)
    return routes
