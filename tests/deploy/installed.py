"""Our runtimes as a cluster would hold them after ``kubectl apply`` or ``helm install``."""

from __future__ import annotations

from typing import Any

from tests.deploy.kserve_rules import KServe, builtin_runtimes, validate_runtime

Obj = dict[str, Any]


def install_runtimes(objects: list[Obj], kserve: KServe) -> tuple[list[Obj], list[Obj]]:
    """Every ServingRuntime and ClusterServingRuntime among ``objects`` through KServe's runtime
    webhook, in a cluster that already has KServe's built-in ClusterServingRuntimes; returns the
    (namespaced, cluster) runtimes that ``select_runtime`` chooses from."""
    namespaced = [o for o in objects if o["kind"] == "ServingRuntime"]
    cluster = builtin_runtimes(kserve)
    for runtime in (o for o in objects if o["kind"] == "ClusterServingRuntime"):
        problem = validate_runtime(runtime, cluster, kserve)
        assert problem is None, f"ClusterServingRuntime/{runtime['metadata']['name']}: {problem}"
        cluster = [*cluster, runtime]
    for runtime in namespaced:
        problem = validate_runtime(runtime, [r for r in namespaced if r is not runtime], kserve)
        assert problem is None, f"ServingRuntime/{runtime['metadata']['name']}: {problem}"
    return namespaced, cluster
