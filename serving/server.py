"""Composition root: builds repository, router, dataplane and protocol servers; runs them.

``build`` wires the parts for one process. ``serve`` runs REST (uvicorn) and gRPC in one
event loop, each optional part registering its own stop on one exit stack. ``run_worker`` is
one process's entry; serving/supervisor.py runs it in-process or keeps N of them alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import random
import signal
import socket
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import uvicorn

from serving.control.models import ModelControl
from serving.core.dataplane import DataPlane
from serving.core.faults import FaultInjector
from serving.core.feedback import FeedbackStore
from serving.core.limits import RequestLimits
from serving.core.router import Router
from serving.core.shadow import ShadowRunner
from serving.errors import ModelLoadError
from serving.observability.accesslog import AccessLog
from serving.observability.looplag import sample_loop_lag
from serving.observability.metrics import Metrics
from serving.observability.metricsport import start_metrics_server
from serving.protocol.rest.app import InferenceApp, create_rest_app
from serving.protocol.rest.direct import DirectProtocol, direct_protocol
from serving.protocol.rest.timeouts import TimedHttpToolsProtocol, timed_protocol
from serving.repository.predictors import predictor_factory
from serving.repository.store import ModelRepository
from serving.settings import Settings

log = logging.getLogger("serving.server")


class StartupError(Exception):
    """The server cannot start: one line for the operator, with what to do (serving.cli
    prints it without a traceback; the traceback goes to the log at debug level)."""


@dataclass
class Components:
    settings: Settings
    executor: ThreadPoolExecutor
    metrics: Metrics
    repository: ModelRepository
    dataplane: DataPlane
    rest_app: InferenceApp
    control: ModelControl | None = None


def build(settings: Settings, metrics: Metrics | None = None) -> Components:
    executor = ThreadPoolExecutor(max_workers=settings.predict_threads, thread_name_prefix="predict")
    metrics = metrics or Metrics(
        stage_versions=settings.stage_metrics == "version", exposition=settings.metrics_exposition
    )
    try:
        repository = ModelRepository(
            settings, executor, predictor_factory(executor, metrics, settings.inline_predict_us), metrics
        )
    except ModelLoadError as exc:  # an object-store URI it cannot use, an unwritable cache
        raise StartupError(f"{exc.message}; check --model-repo (env SERVING_MODEL_REPO)") from exc
    rng = random.Random(settings.router_seed) if settings.router_seed is not None else None
    tracing = None
    if settings.tracing:  # the SDK is imported only when tracing is on
        from serving.observability.tracing import Tracing

        try:
            tracing = Tracing()
        except ValueError as exc:
            raise StartupError(f"SERVING_TRACING: {exc}") from exc
    dataplane = DataPlane(
        repository,
        Router(rng),
        metrics,
        AccessLog.from_settings(settings),
        FaultInjector.from_settings(settings),
        RequestLimits.from_settings(settings),
        shadow=ShadowRunner(metrics, settings.shadow_queue_size),
        tracing=tracing,
        prediction_metrics=settings.prediction_metrics,
        feedback=FeedbackStore(metrics, settings.feedback_retention, settings.feedback_max_age_seconds)
        if settings.feedback_retention
        else None,
    )
    if settings.payload_log_url or settings.payload_log_dir is not None or settings.payload_log_sample_rate:
        from serving.observability.payloads import PayloadLogger

        try:
            dataplane.payloads = PayloadLogger.from_settings(settings, metrics, repository.models)
        except (ValueError, OSError) as exc:
            raise StartupError(f"payload logging: {exc}") from exc
    if settings.monitoring:
        from serving.observability.monitoring import DriftMonitor

        dataplane.monitor = DriftMonitor.from_settings(settings, metrics)
        metrics.timeline.health.append(dataplane.monitor.health)  # the status page's model health
    control = ModelControl(settings, dataplane)
    return Components(
        settings,
        executor,
        metrics,
        repository,
        dataplane,
        create_rest_app(settings, dataplane, control),
        control,
    )


async def close_predictors(repository: ModelRepository) -> None:
    """Stop every version's predict stage (batchers answer what is still queued)."""
    for model in list(repository.models.values()):
        for entry in list(model.versions.values()):
            if entry.predictor is not None:
                await entry.predictor.close()


def load_models(parts: Components, stop: threading.Event | None = None) -> None:
    """Load every model version (``stop`` set: finish the current version, load no more).
    Raises StartupError for an unreadable repository and, with ``strict``, a failed model."""
    root = parts.repository.root
    try:
        parts.repository.load_all(stop)
    except ModelLoadError as exc:
        raise StartupError(f"{exc.message}; check --model-repo (env SERVING_MODEL_REPO)") from exc
    except OSError as exc:
        raise StartupError(f"cannot read the model repository {root}: {exc.strerror or exc}") from exc
    for model in parts.repository.models.values():
        for entry in model.versions.values():
            parts.metrics.set_model_state(model.name, entry.version, entry.state.value)
            parts.metrics.model_load_duration.labels(model.name, entry.version).set(entry.load_seconds)
            if entry.ready:
                parts.metrics.set_monitoring(model.name, entry.version, entry.monitoring.split(":", 1)[0])
            if entry.predict_paths:
                parts.metrics.set_predict_paths(
                    model.name, entry.version, {k: v.path for k, v in entry.predict_paths.items()}
                )
    failed = [row for row in parts.repository.index(detail=True) if row["state"] != "READY"]
    if failed and parts.settings.strict and not (stop is not None and stop.is_set()):
        raise StartupError(
            f"--strict: {len(failed)} model version(s) failed to load: "
            + "; ".join(
                f"{r['name']}{'/' + r['version'] if 'version' in r else ''}: {r.get('reason', '')}"
                for r in failed
            )
            + " (fix them, or start without --strict to serve the others)"
        )


def _port_hint(settings: Settings, port: int, exc: OSError) -> StartupError:
    flag = "--http-port" if port == settings.http_port else "--grpc-port"
    if port == settings.metrics_port:
        flag = "SERVING_METRICS_PORT"
    elif port == settings.admin_port:
        flag = "SERVING_ADMIN_PORT"
    reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror or exc})"
    return StartupError(
        f"port {port} on {settings.host} {reason}: stop the other process or pick another port with {flag}"
    )


def check_ports(settings: Settings) -> None:
    """Fail fast, before loading models, when a port is taken. Binds without SO_REUSEPORT,
    so another server sharing its port with its own workers counts as taken too."""
    for port in (settings.http_port, settings.grpc_port, settings.metrics_port, settings.admin_port):
        if port <= 0:
            continue
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, port))
            except OSError as exc:
                raise _port_hint(settings, port, exc) from exc


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def rest_protocol(settings: Settings, app: InferenceApp) -> type[TimedHttpToolsProtocol]:
    """The REST listener's HTTP protocol: inference routes answered in it
    (``rest_infer_path=protocol``) or everything through the ASGI app."""
    header, body = settings.http_header_timeout_seconds, settings.http_body_timeout_seconds
    if settings.rest_infer_path == "protocol":
        protocol = direct_protocol(app.inference, header, body)
        if issubclass(protocol, DirectProtocol):
            log.info("REST inference routes answered in the HTTP protocol (rest_infer_path=protocol)")
            return protocol
    log.info("REST inference routes answered through ASGI")
    return timed_protocol(header, body)


async def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Run one serving process until it is told to stop. Each optional part starts here and
    registers how it stops on one exit stack, so teardown (in reverse order of start) is
    written once, for a normal drain and for a stop during start-up alike."""
    loop = asyncio.get_running_loop()
    # The REST port first: a clash is reported before minutes of model loading.
    try:
        sock = sock or bind_socket(settings.host, settings.http_port, reuse_port=settings.workers > 1)
    except OSError as exc:
        raise _port_hint(settings, settings.http_port, exc) from exc
    parts = build(settings)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(close_core, parts)  # registered first: runs last
        stack.callback(sock.close)
        stop = threading.Event()
        early = _stop_on_signals(loop, stop)  # SIGTERM while loading: load no more, exit 0
        try:
            await loop.run_in_executor(None, load_models, parts, stop)
        finally:
            _restore_signals(loop, early)
        if stop.is_set():
            log.info("stopped during start-up")
            return
        policies = parts.control.policies if parts.control is not None else None
        if policies is not None:
            # The store's policies apply before this process turns ready (or, as a worker, takes
            # connections): a replica or worker that starts mid-rollout serves the current split.
            await loop.run_in_executor(None, policies.sync_now)
        grpc_server = await start_grpc(settings, parts)
        parts.dataplane.started = True
        server = DrainingServer(rest_config(settings, parts))
        log.info("REST listening on http://%s:%d", settings.host, sock.getsockname()[1])
        drain = Drain(settings, parts.dataplane, server, grpc_server)
        stack.push_async_callback(drain.stop_grpc)
        stack.push_async_callback(parts.dataplane.shadow.close)
        stack.callback(setattr, parts.dataplane, "draining", True)
        drain.install()
        stack.callback(drain.uninstall)
        if settings.repository_poll_seconds > 0 and parts.control is not None:
            background(stack, parts.control.poll(settings.repository_poll_seconds))
        if policies is not None and settings.traffic_policy_dir is not None:
            background(stack, policies.watch())
        if settings.loop_lag_interval_seconds > 0:
            lag = sample_loop_lag(parts.metrics.event_loop_lag, settings.loop_lag_interval_seconds)
            background(stack, lag)
        if settings.admin_port >= 0 and parts.control is not None:
            admin_server, admin_task = start_admin_server(settings, parts.control)
            stack.push_async_callback(stop_uvicorn, admin_server, admin_task)
        if settings.metrics_port >= 0:
            try:
                metrics_sock = bind_socket(
                    settings.host, settings.metrics_port, reuse_port=settings.workers > 1
                )
            except OSError as exc:
                raise _port_hint(settings, settings.metrics_port, exc) from exc
            metrics_server = await start_metrics_server(metrics_sock, parts.metrics)
            stack.callback(metrics_server.close)
        # Modules, models and config live as long as the process: freeze them out of the cyclic
        # collector, so its full collections scan only per-request garbage. Without this a full
        # collection walks the whole heap (100+ ms): measured p99 at 64 connections 129 ms -> ~10 ms.
        gc.collect()
        gc.freeze()
        await server.serve(sockets=[sock])


def rest_config(settings: Settings, parts: Components) -> uvicorn.Config:
    return uvicorn.Config(
        parts.rest_app,
        host=settings.host,
        port=settings.http_port,
        loop="none",
        http=rest_protocol(settings, parts.rest_app),
        lifespan="off",
        access_log=False,
        log_config=None,
        # No X-Forwarded-* rewriting (nothing reads the client address) and no Server
        # header: both cost time on every request.
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        timeout_graceful_shutdown=math.ceil(settings.drain_grace_seconds),
        backlog=2048,
    )


async def start_grpc(settings: Settings, parts: Components) -> Any:
    """The gRPC server, or None when ``grpc_port`` is negative (its stop is the drain's)."""
    if settings.grpc_port < 0:
        return None
    from serving.protocol.grpc.server import start_grpc_server

    try:
        return await start_grpc_server(settings, parts.dataplane, parts.control)
    except RuntimeError as exc:  # grpc's bind failure (the port was free at check_ports)
        raise StartupError(
            f"gRPC port {settings.grpc_port} on {settings.host} cannot be bound: stop the other "
            "process or pick another port with --grpc-port"
        ) from exc


def background(stack: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None]) -> None:
    """A loop that runs until the process stops (pollers, syncers): cancelled on the way out."""
    task = asyncio.get_running_loop().create_task(work)
    stack.callback(task.cancel)


async def stop_uvicorn(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    with contextlib.suppress(Exception):
        await task


async def close_core(parts: Components) -> None:
    """The last steps of every stop: predictors answer what is queued, runtimes close, the
    pool stops, buffered spans and payload events are flushed."""
    await close_predictors(parts.repository)
    parts.repository.close()
    parts.executor.shutdown(wait=False, cancel_futures=True)
    await close_observability(parts)


async def close_observability(parts: Components) -> None:
    """Flush the spans and payload events still buffered (bounded waits, off the loop)."""
    loop = asyncio.get_running_loop()
    if parts.dataplane.tracing is not None:
        await loop.run_in_executor(None, parts.dataplane.tracing.shutdown)
    if parts.dataplane.payloads is not None:
        await loop.run_in_executor(None, parts.dataplane.payloads.close)
    if parts.dataplane.monitor is not None:
        parts.dataplane.monitor.close()


def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: threading.Event) -> bool:
    """Until ``Drain`` takes over: SIGTERM/SIGINT set ``stop`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return False

    def stopping(sig: signal.Signals) -> None:
        log.info("%s during start-up: loading no more models, exiting", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping, sig)
    return True


def _restore_signals(loop: asyncio.AbstractEventLoop, installed: bool) -> None:
    if installed:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def start_admin_server(
    settings: Settings, control: ModelControl
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """The model control API on ``SERVING_ADMIN_PORT`` (shared by workers like the REST port)."""
    from serving.protocol.rest.app import create_admin_app

    config = uvicorn.Config(
        create_admin_app(settings, control),
        host=settings.host,
        port=settings.admin_port,
        loop="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
    )
    server = DrainingServer(config)
    try:
        sock = bind_socket(settings.host, settings.admin_port, reuse_port=settings.workers > 1)
    except OSError as exc:
        raise _port_hint(settings, settings.admin_port, exc) from exc
    log.info("admin API listening on http://%s:%d", settings.host, sock.getsockname()[1])
    return server, asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))


class DrainingServer(uvicorn.Server):
    """uvicorn's server without its own signal handlers: ``Drain`` decides when it stops
    (uvicorn's handler would stop at once and re-raise the signal, exiting non-zero)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Drain:
    """Graceful shutdown on SIGTERM/SIGINT.

    1. At once: the dataplane turns not-ready (``/v2/health/ready`` 503, gRPC health
       NOT_SERVING) while requests are still accepted and served.
    2. After ``drain_delay_seconds`` (time for the endpoint to leave the Service): the REST
       listener closes, idle connections close, and requests in flight finish (uvicorn waits
       up to ``drain_grace_seconds``, then cancels); gRPC stops with the same grace.
    A second signal skips the wait and exits at once.
    """

    def __init__(
        self, settings: Settings, dataplane: DataPlane, server: uvicorn.Server, grpc_server: Any
    ) -> None:
        self._delay = settings.drain_delay_seconds
        self._grace = settings.drain_grace_seconds
        self._dataplane = dataplane
        self._server = server
        self._grpc = grpc_server
        self._grpc_stopping: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread gets signals (tests may serve from another thread)
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.begin, sig)

    def uninstall(self) -> None:
        if self._loop is not None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def begin(self, sig: int = signal.SIGTERM) -> None:
        if self._task is not None:
            log.warning("second %s: stopping now", signal.Signals(sig).name)
            self._server.force_exit = True
            self._server.should_exit = True
            self._grace = 0
            return
        log.info(
            "%s: draining; not ready now, closing listeners in %.1f s",
            signal.Signals(sig).name,
            self._delay,
        )
        self._dataplane.draining = True
        self._task = asyncio.get_running_loop().create_task(self._stop_later())

    async def _stop_later(self) -> None:
        await asyncio.sleep(self._delay)
        log.info("drain delay over: closing listeners, finishing requests in flight")
        self._server.should_exit = True
        await self.stop_grpc()

    async def stop_grpc(self) -> None:
        """Stop gRPC (once): no new RPCs, those in flight get up to the grace period."""
        if self._grpc is None:
            return
        if self._grpc_stopping is None:
            self._grpc_stopping = asyncio.get_running_loop().create_task(self._grpc.stop(grace=self._grace))
        await asyncio.shield(self._grpc_stopping)


def run_worker(settings: Settings) -> None:
    """One serving process: its own event loop, runtimes and thread pool."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
