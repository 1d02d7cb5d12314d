"""The model control API's auth and validation, against real servers."""

from __future__ import annotations

import httpx
import pytest

from tests.server_process import ServerProcess
from tests.versions.conftest import AUTH, TOKEN

ADMIN_CALLS = [
    ("POST", "/v2/repository/models/iris-xgb/load", None),
    ("POST", "/v2/repository/models/iris-xgb/unload", None),
    ("POST", "/v2/repository/reload", None),
    ("PUT", "/v2/models/iris-xgb/traffic", {"weights": {"1": 1}}),
    ("DELETE", "/v2/models/iris-xgb/traffic", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_admin_endpoints_are_disabled_without_a_configured_token(
    demo_server: ServerProcess, method: str, path: str, body: object
) -> None:
    for headers in ({}, {"Authorization": "Bearer anything"}):
        response = httpx.request(method, f"{demo_server.url}{path}", json=body, headers=headers)
        assert response.status_code == 403, response.text
        assert "SERVING_ADMIN_TOKEN" in response.json()["error"]
    # nothing changed: both versions still READY
    states = {r["version"]: r["state"] for r in httpx.get(f"{demo_server.url}/v2/repository/index").json()
              if r["name"] == "iris-xgb"}  # fmt: skip
    assert states == {"1": "READY", "2": "READY"}


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_wrong_or_missing_token_is_401(
    canary_server: ServerProcess, method: str, path: str, body: object
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        response = httpx.request(method, f"{canary_server.url}{path}", json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "error" in response.json()


def test_right_token_is_200_and_the_index_is_public(canary_server: ServerProcess) -> None:
    url = canary_server.url
    traffic = httpx.get(f"{url}/v2/models/iris-xgb/traffic", headers=AUTH)
    assert traffic.status_code == 200
    doc = traffic.json()
    assert doc["source"] == "config" and doc["policy"]["weights"] == {"1": 90.0, "2": 10.0}
    assert doc["effective"] == {
        "shares": {"1": 0.9, "2": 0.1},
        "stable": "1",
        "canary": ["2"],
        "shadow": None,
    }
    assert httpx.post(f"{url}/v2/repository/reload", headers=AUTH).json() == {
        "loaded": [],
        "unloaded": [],
        "failed": [],
    }
    # the traffic policy read is public too: convergence checks read it through the
    # Kubernetes pod proxy, which does not pass an Authorization header on
    public = httpx.get(f"{url}/v2/models/iris-xgb/traffic")
    assert public.status_code == 200 and public.json()["policy"] == doc["policy"]
    assert public.json()["generation"] == doc["generation"]
    # the index is read-only and needs no token (GET and the OIP POST form, with "ready")
    for response in (
        httpx.get(f"{url}/v2/repository/index"),
        httpx.post(f"{url}/v2/repository/index"),
        httpx.post(f"{url}/v2/repository/index", json={"ready": True}),
    ):
        assert response.status_code == 200
        assert [(r["name"], r["version"], r["state"]) for r in response.json()] == [
            ("iris-xgb", "1", "READY"),
            ("iris-xgb", "2", "READY"),
        ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("PUT", "/v2/models/iris-xgb/traffic", {"weights": {"1": -1}}, 400, "weight of version 1"),
        ("PUT", "/v2/models/iris-xgb/traffic", {"weights": {"9": 1}}, 400, "no loaded version 9"),
        ("PUT", "/v2/models/iris-xgb/traffic", {"weights": {"x": 1}}, 400, "not a version"),
        ("PUT", "/v2/models/iris-xgb/traffic", {"shadow_fraction": 2}, 400, "shadow_fraction"),
        ("PUT", "/v2/models/iris-xgb/traffic", {"weightz": {}}, 400, "weightz"),
        ("PUT", "/v2/models/iris-xgb/traffic", [1, 2], 400, "JSON object"),
        ("PUT", "/v2/models/iris-xgb/traffic", None, 400, "traffic policy"),
        ("PUT", "/v2/models/nope/traffic", {}, 404, "not in the repository"),
        ("PUT", "/v2/models/bad$name/traffic", {}, 400, "invalid model name"),
        (
            "POST",
            "/v2/repository/models/iris-xgb/load",
            {"parameters": {"version": "0"}},
            400,
            "invalid model version",
        ),
        (
            "POST",
            "/v2/repository/models/iris-xgb/load",
            {"parameters": {"version": "8"}},
            404,
            "no version folder",
        ),
        ("POST", "/v2/repository/models/iris-xgb/load", {"parameters": 5}, 400, "parameters"),
        ("POST", "/v2/repository/models/nope/load", None, 404, "no folder"),
        ("POST", "/v2/repository/models/nope/unload", None, 404, "not in the repository"),
        ("POST", "/v2/repository/models/iris-xgb/unload", {"version": "8"}, 404, "version '8' is not found"),
        ("POST", "/v2/repository/index", {"ready": "yes"}, 400, "ready"),
    ],
)
def test_bad_admin_requests_are_clear_4xx(
    canary_server: ServerProcess, method: str, path: str, body: object, status: int, needle: str
) -> None:
    response = httpx.request(method, f"{canary_server.url}{path}", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]


def test_invalid_json_body_is_400(canary_server: ServerProcess) -> None:
    response = httpx.put(
        f"{canary_server.url}/v2/models/iris-xgb/traffic", content=b"{not json", headers=AUTH
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
