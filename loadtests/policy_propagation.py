"""Traffic-policy propagation on one host: store write -> every process applies it.

Starts ``--servers`` single-process servers and one ``--workers 2`` server on the demo model,
all following one policy directory, writes a new policy ``--rounds`` times (alternating
weights) and times how long until every process and worker reports the new generation
through ``GET /v2/models/{m}/traffic``. Prints one line per round and a summary.

    python loadtests/policy_propagation.py --servers 3 --rounds 20 --poll 1.0

Expect about half the poll interval on average and at most one poll interval plus the read
(each process stats its file once per poll). In Kubernetes add the kubelet's ConfigMap sync
delay (docs/canary.md).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.control.policy import write_entry  # noqa: E402
from tests.server_process import DEMO_REPO, start_server, wait_until_ready  # noqa: E402

MODEL = "iris-xgb"


def generations(urls: list[str]) -> list[int]:
    out = []
    for url in urls:
        doc = httpx.get(f"{url}/v2/models/{MODEL}/traffic", timeout=5).json()
        workers = doc.get("workers")
        out += [int(g) for g in workers.values()] if workers else [int(doc["generation"])]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--poll", type=float, default=1.0, help="SERVING_TRAFFIC_POLICY_POLL_SECONDS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = tmp / "store"
        store.mkdir()
        repo = tmp / "repo"
        shutil.copytree(DEMO_REPO / MODEL, repo / MODEL)
        env = {
            "SERVING_TRAFFIC_POLICY_DIR": str(store),
            "SERVING_TRAFFIC_POLICY_POLL_SECONDS": str(args.poll),
        }
        servers = [
            start_server(repo, tmp, args=extra, env=env, grpc=False, wait_ready=False)
            for extra in [[]] * args.servers + [["--workers", "2"]]
        ]
        try:
            for server in servers:
                wait_until_ready(server, 300)
            urls = [s.url for s in servers]
            while len(generations(urls)) < args.servers + 2:  # both workers reporting
                time.sleep(0.1)
            times = []
            for i in range(args.rounds):
                weights = {"1": 50, "2": 50} if i % 2 else {"2": 100}
                began = time.monotonic()
                generation = write_entry(store, MODEL, {"weights": weights}, "policy_propagation").generation
                while set(generations(urls)) != {generation}:
                    time.sleep(0.01)
                times.append(time.monotonic() - began)
                print(f"round {i + 1}: generation {generation} on {len(generations(urls))} processes "
                      f"after {times[-1] * 1000:.0f} ms")  # fmt: skip
            times.sort()
            print(
                f"{args.servers} servers + 1 x --workers 2, poll {args.poll:g} s, {args.rounds} rounds: "
                f"median {statistics.median(times) * 1000:.0f} ms, "
                f"p90 {times[int(0.9 * (len(times) - 1))] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
            )
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
