"""The process entry: serve in this process, or supervise N worker processes on shared ports.

Workers bind with SO_REUSEPORT, so the kernel spreads connections across them; a worker that
dies is replaced; SIGTERM/SIGINT are passed on to every worker, which drain (serving/server.py).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from serving.observability.metrics import setup_multiprocess_dir, worker_exited
from serving.server import StartupError, check_ports, run_worker
from serving.settings import Settings

log = logging.getLogger("serving.supervisor")

STARTUP_FAILED = 3
"""Exit code of a worker process that could not start (the supervisor then stops)."""


def _worker_process(settings: Settings) -> None:
    """A supervised worker: a start-up failure is one line and exit code STARTUP_FAILED."""
    try:
        run_worker(settings)
    except StartupError as exc:
        log.debug("worker start-up failed", exc_info=True)
        print(f"serving: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILED)


def share_threads(settings: Settings, cores: int | None = None) -> Settings:
    """Thread settings left at 0 ("all cores") become each worker's share of the cores, so
    N workers never run N x cores threads (oversubscription costs more than it gives)."""
    cores = cores or len(os.sched_getaffinity(0))
    share = max(1, cores // settings.workers)
    fields = ("onnx_intra_op_threads", "xgboost_nthread", "xgboost_large_batch_nthread")
    update = {name: share for name in fields if getattr(settings, name) == 0}
    return settings.model_copy(update=update) if update else settings


def private_policy_store(settings: Settings) -> Settings:
    """Workers without a traffic-policy store get a private one: a temporary directory of this
    supervisor (removed when it exits), so a traffic change through any worker reaches them all
    instead of being refused. An explicit SERVING_TRAFFIC_POLICY_DIR (several servers sharing
    one store, a mounted ConfigMap) is kept."""
    if settings.traffic_policy_dir is not None:
        return settings
    path = tempfile.mkdtemp(prefix="serving-policies-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    log.info("workers share a private traffic-policy store in %s (SERVING_TRAFFIC_POLICY_DIR unset)", path)
    return settings.model_copy(update={"traffic_policy_dir": Path(path)})


def run(settings: Settings) -> None:
    """Serve in this process, or supervise ``settings.workers`` processes on shared ports.

    Workers bind with SO_REUSEPORT, so the kernel spreads connections across them; a worker
    that dies is replaced; SIGTERM/SIGINT are passed on to every worker, which drain.
    """
    settings = share_threads(settings)
    check_ports(settings)
    if settings.workers == 1:
        run_worker(settings)
        return
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    metrics_dir = setup_multiprocess_dir()  # workers merge their metrics through it
    settings = private_policy_store(settings)

    def start() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_worker_process, args=(settings,), daemon=False)
        proc.start()
        return proc

    procs = [start() for _ in range(settings.workers)]
    log.info("supervising %d workers: %s", len(procs), [p.pid for p in procs])

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stopping:
        time.sleep(0.5)
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping and proc.exitcode == STARTUP_FAILED:
                forward(signal.SIGTERM, None)  # the others would fail the same way
                for other in procs:
                    other.join()
                raise StartupError("a worker could not start (its error is above)")
            if not proc.is_alive() and not stopping:
                log.error("worker %s exited with %s; starting a new one", proc.pid, proc.exitcode)
                if proc.pid is not None:
                    worker_exited(proc.pid, metrics_dir)
                procs[i] = start()
    for proc in procs:
        proc.join()
