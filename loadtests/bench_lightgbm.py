"""Side-by-side benchmark for LightGBM: our server against the floors, KServe's lgbserver and
MLServer's LightGBM runtime, on one generated booster (bench.py's machinery and rules: server
pinned to one core, load generator to the other, each peer in its own virtualenv).

    .venv/bin/python loadtests/bench_lightgbm.py                 # ~4 minutes (+ peer venvs once)
    .venv/bin/python loadtests/bench_lightgbm.py --smoke --out /tmp/lgbm-smoke   # ours only, < 60 s

Models (200 trees, 63 leaves, 32 features, binary; one row per request):

- ``bench-lgbm``: ``platform: lightgbm`` as shipped (the guarded single-row fast path);
- ``bench-lgbm-library``: the same file with ``fast_path: false`` (``Booster.predict``: what the
  guard falls back to);
- ``bench-lgbm-onnx``: the same booster exported by ``serving export``.

Targets: ``in-process`` (``Runtime.predict`` for one row in a loop), ``raw-asgi`` and
``grpc-floor`` (fixed answers), ``ours`` (REST JSON, REST binary, gRPC), ``kserve-lgbm``
(KServe 0.21 ModelServer with an lgbserver-style Model, ``peers/kserve_lgbm.py``) and
``mlserver-lgbm`` (MLServer 1.7.1 + mlserver-lightgbm). Writes ``results.csv`` and
``results.md`` to ``--out``; the figures quoted in docs/lightgbm.md come from one such run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
from bench import FEATURES, HERE, ROOT, Bench, Point, Row, Target, ensure_venv, free_port, log

PEERS = {
    # lgbserver 0.21 pins lightgbm ~=4.6.0 and pandas >=2.2,<3 (python/lgbserver/pyproject.toml)
    "kserve-lgbm": ["kserve==0.21.0", "lightgbm==4.6.0", "pandas>=2.2,<3"],
    "mlserver-lgbm": ["mlserver==1.7.1", "mlserver-lightgbm==1.7.1", "uvloop==0.21.0"],
}
MODELS = ("bench-lgbm", "bench-lgbm-library", "bench-lgbm-onnx")


def train_lgbm(path: Path, trees: int, seed: int, rows: int) -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    logits = x[:, :8] @ rng.normal(size=8) + np.sin(3 * x[:, 8]) + x[:, 9] * x[:, 10]
    y = (logits + rng.normal(scale=0.5, size=len(x)) > 0).astype(np.float64)
    params = {
        "objective": "binary",
        "num_leaves": 63,
        "learning_rate": 0.05,
        "num_threads": 1,  # OpenMP training stalls on a busy shared machine
        "seed": seed,
        "verbose": -1,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=trees).save_model(str(path))


def write_repo(work: Path, train_rows: int) -> Path:
    """Our repository (the three models) and the booster file the peers load."""
    import yaml

    from serving.repository.export import export_booster

    booster = work / "boosters" / "bench-lgbm.txt"
    train_lgbm(booster, trees=200, seed=1, rows=train_rows)
    repo = work / "repo"
    for name, fast in (("bench-lgbm", True), ("bench-lgbm-library", False)):
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(booster, repo / name / "1" / "model.txt")
        config = {
            "platform": "lightgbm",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}],
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
            "fast_path": fast,
        }
        (repo / name / "config.yaml").write_text(yaml.safe_dump(config))
    report = export_booster(booster, repo, "bench-lgbm-onnx", version=1)
    log(f"export: {report.describe()}")
    return booster


class LightGBMBench(Bench):
    def run(self) -> list[Row]:
        args = self.args
        smoke = args.smoke
        conns = args.connections
        log(
            f"work dir {self.work}; server cpu {self.server_cpu}, client cpu {self.client_cpu}; load {os.getloadavg()}"
        )
        booster = write_repo(self.work, train_rows=2_000 if smoke else 5_000)
        expected: dict[str, float] = {}
        for model in MODELS:
            floor_row, expected[model] = self.in_process_floor(model, 0.5 if smoke else 3.0)
            self.rows.append(floor_row)
            log(
                f"  in-process {model}: p50 {floor_row.p50_us} µs, {floor_row.server_cpu_us_per_req} CPU µs/call"
            )
        py = sys.executable

        def points(protocols: list[str], model: str) -> list[Point]:
            return [Point(p, model, 1, c) for p in protocols for c in conns]

        port = free_port()
        raw = Target("raw-asgi", [py, str(HERE / "raw_asgi.py"), str(port)], port, ready_path="/",
                     points=points(["json"], "bench-lgbm"), check_value=False)  # fmt: skip
        self.run_target(raw, expected)

        http, grpc_port = free_port(), free_port()
        protocols = ["json", "grpc"] if smoke else ["json", "binary", "grpc"]
        ours = Target(
            "ours",
            [py, "-m", "serving.cli", "serve", "--model-repo", str(self.work / "repo"), "--host", "127.0.0.1",
             "--http-port", str(http), "--grpc-port", str(grpc_port), "--log-level", "warning"],
            http, grpc_port, points=[p for m in MODELS for p in points(protocols, m)], env={"SERVING_WORKERS": "1"},
        )  # fmt: skip
        self.run_target(ours, expected)
        if smoke:
            return self.rows

        gport = free_port()
        floor = Target("grpc-floor", [py, str(HERE / "grpc_floor.py"), str(gport)], -1, gport,
                       points=points(["grpc"], "bench-lgbm"))  # fmt: skip
        self.run_target(floor, expected)
        if not args.no_peers:
            self.run_lgbm_peers(booster, expected, points)
        return self.rows

    def run_lgbm_peers(self, booster: Path, expected: dict[str, float], points: Any) -> None:
        venv_dir: Path = self.args.venv_dir
        only = self.args.only  # checked before ensure_venv: never install a peer that will not run
        if not only or "kserve-lgbm" in only:
            try:
                kserve_py = ensure_venv(venv_dir, "kserve-lgbm")
            except subprocess.CalledProcessError as exc:
                log(f"kserve-lgbm venv failed: {exc}")
            else:
                http, grpc_port = free_port(), free_port()
                kserve = Target(
                    "kserve-lgbm",
                    [str(kserve_py), str(HERE / "peers" / "kserve_lgbm.py"), "--model_name", "bench-lgbm",
                     "--model_file", str(booster), "--http_port", str(http), "--grpc_port", str(grpc_port)],
                    http, grpc_port, points=points(["json"], "bench-lgbm"),
                )  # fmt: skip
                self.run_target(kserve, expected)
        if only and "mlserver-lgbm" not in only:
            return
        try:
            mlserver_py = ensure_venv(venv_dir, "mlserver-lgbm")
        except subprocess.CalledProcessError as exc:
            log(f"mlserver-lgbm venv failed: {exc}")
            return
        http, grpc_port, metrics_port = free_port(), free_port(), free_port()
        ml_dir = self.work / "mlserver"
        (ml_dir / "bench-lgbm").mkdir(parents=True)
        shutil.copy(booster, ml_dir / "bench-lgbm" / "model.bst")
        settings = {
            "name": "bench-lgbm",
            "implementation": "mlserver_lightgbm.LightGBMModel",
            "parameters": {"uri": "./model.bst", "version": "1"},
        }
        (ml_dir / "bench-lgbm" / "model-settings.json").write_text(json.dumps(settings))
        (ml_dir / "settings.json").write_text(
            json.dumps(
                {"http_port": http, "grpc_port": grpc_port, "metrics_port": metrics_port, "host": "127.0.0.1"}
            )
        )
        mlserver = Target(
            "mlserver-lgbm", [str(mlserver_py.parent / "mlserver"), "start", str(ml_dir)], http, grpc_port,
            cwd=ml_dir, points=points(["json"], "bench-lgbm"),
        )  # fmt: skip
        self.run_target(mlserver, expected)


def table(rows: list[Row], command: str) -> str:
    """Every row, with req/s ratios to raw-asgi and to the two peers at the same connections."""

    def find(target: str, conns: int) -> Row | None:
        return next((r for r in rows if r.target == target and r.connections == conns and r.rps), None)

    lines = [
        f"Command: `{command}`",
        "",
        "| target | protocol | model | conns | req/s | p50 µs | p99 µs | errors | cores srv/cli | x raw-asgi | x kserve-lgbm | x mlserver-lgbm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row.rps:
            lines.append(
                f"| {row.target} | {row.protocol} | {row.model} | {row.connections} | - | - | - | - | - | {row.note} | | |"
            )
            continue
        ratios = []
        for peer in ("raw-asgi", "kserve-lgbm", "mlserver-lgbm"):
            ref = find(peer, row.connections) if row.target not in ("in-process", peer) else None
            ratios.append(f"{row.rps / ref.rps:.2f}" if ref else "")
        lines.append(
            f"| {row.target} | {row.protocol} | {row.model} | {row.connections} | {row.rps:,.0f} | {row.p50_us:,.0f} | "
            f"{row.p99_us:,.0f} | {row.errors} | {row.server_cpu}/{row.client_cpu} | "
            + " | ".join(ratios)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results-lightgbm")
    parser.add_argument("--smoke", action="store_true", help="tiny durations, ours and raw-asgi only")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per payload")
    parser.add_argument("--connections", type=lambda s: [int(c) for c in s.split(",")], default=[1, 64])
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--no-peers", action="store_true", help="skip kserve-lgbm and mlserver-lgbm")
    parser.add_argument("--only", type=lambda s: s.split(","), default=[], help="run only these targets")
    parser.add_argument("--venv-dir", type=Path, default=Path.home() / ".cache" / "serving-bench")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.connections = min(args.duration, 1.0), 0.3, [1, 8]
    bench.PEER_PINS.update(PEERS)
    command = " ".join(
        ["python", "loadtests/bench_lightgbm.py", *(argv if argv is not None else sys.argv[1:])]
    )
    started_at = time.time()
    runner = LightGBMBench(args)
    try:
        rows = runner.run()
    finally:
        shutil.rmtree(runner.work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    bench.write_csv(rows, args.out / "results.csv")
    load = os.getloadavg()
    report = table(rows, command) + (
        f"\nRun {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started_at))}, {time.time() - started_at:.0f} s; "
        f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores.\n"
    )
    (args.out / "results.md").write_text(report)
    print(report)
    return (
        0
        if any(r.target == "ours" and r.rps for r in rows)
        and not any(r.target == "ours" and not r.rps for r in rows)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
