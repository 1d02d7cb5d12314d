"""Which in-pod target the flags ask for (``--mode inpod``): one server, a host fleet or an
InferenceService's pods."""

from __future__ import annotations

from typing import Any

from serving.rollout.fleet import FileStore, FleetTarget
from serving.rollout.servertarget import InPodTarget
from serving.rollout.state import RolloutError


def make_inpod_target(args: Any, token: str | None) -> InPodTarget:
    """The in-pod target the flags ask for: one server (``--server``), a host fleet
    (``--policy-dir`` and a ``--server`` per process), or an InferenceService's pods."""
    model = args.model or args.name
    servers: list[str] = args.server or []
    if args.policy_dir is not None:
        if not servers:
            raise RolloutError("--policy-dir needs a --server URL for every process that follows it")
        return FleetTarget(FileStore(args.policy_dir, servers), model, args.converge_timeout)
    if len(servers) > 1:
        raise RolloutError(
            "several --server URLs form a fleet: give the policy directory they share (--policy-dir)"
        )
    if servers:
        return InPodTarget(servers[0], model, token)
    from serving.rollout.configmap import ConfigMapStore
    from serving.rollout.kserve import load_api_client

    store = ConfigMapStore(load_api_client(args.context), args.name, args.namespace, args.pod_port)
    return FleetTarget(store, model, args.converge_timeout)
