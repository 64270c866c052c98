"""The app factory: `create_app(settings)` wires settings, database, migrations, routes, middleware and the
background crash detector. `serve()` runs it under uvicorn after the bind check (see `auth.check_bind_allowed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Gauge
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import auth, errors, migrations
from .db import UnstorableText, make_engine, read_sessions, write_sessions
from .docs_ui import install_docs
from .logging import configure_logging, install_redaction
from .middleware import BodyLimits, RequestGuard
from .ratelimit import RateLimits
from .redact import redact, register_settings
from .routes import (
    artifacts,
    checkpoints,
    compare,
    events,
    experiments,
    health,
    heartbeats,
    logs,
    notes,
    pages,
    points,
    run_data,
    runs,
    sd,
    series,
)
from .routing import direct_routes
from .security import allowed_hosts
from .services import leadership, lifecycle, notifications, url_policy
from .services.retention import retention_job
from .settings import Settings, get_settings
from .telemetry import ApiMetrics
from .transactions import close_loop_writer
from .wal import WAL_BACKSTOP_PAGES, wal_checkpoint_job
from .web.assets import mount_assets

log = logging.getLogger("trainmon.metadata_api.app")
#: allocations (net) between two collections of the young generation in `serve` (CPython's default: 700)
GC_YOUNG_THRESHOLD = 50_000

# Routers the app includes; add a resource's router here. Every router under /api has prefix="/api" and declares
# full resource paths ("/runs/{run_id}/notes"); `health` serves top-level paths (/healthz, /readyz, /metrics).
# Metric ingest comes first: the most frequent request is matched against the fewest paths.
ROUTERS = [points.router, heartbeats.router, health.router, runs.router, experiments.router, sd.router,
           series.router, compare.router, notes.router, logs.router, checkpoints.router, artifacts.router,
           events.router, run_data.router, pages.router]  # the last three: the dashboard (web/)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured API. Migrations run and background jobs start when the app starts (lifespan)."""
    settings = settings or get_settings()
    register_settings(settings)
    install_redaction()
    hosts = allowed_hosts(settings)
    engine = make_engine(settings.database_url, settings.sqlite_busy_timeout_ms, wal_autocheckpoint=WAL_BACKSTOP_PAGES)
    app = FastAPI(title="trainmon metadata API", version="0.1.0", debug=settings.debug, lifespan=_lifespan,
                  docs_url=None, redoc_url=None, **_telemetry_option(settings.opentelemetry))
    app.state.settings = settings
    notifications.configure(settings)
    url_policy.configure(settings)
    app.state.engine = engine
    app.state.read_sessions = read_sessions(engine)
    app.state.write_sessions = write_sessions(engine)
    app.state.telemetry = ApiMetrics(app.state.read_sessions)
    lifecycle.count_status_changes(app.state.write_sessions, app.state.telemetry.status_changes)
    app.state.crash_detector = lifecycle.CrashDetector(app.state.write_sessions, settings.heartbeat_timeout_seconds)
    app.state.background_jobs = [_crash_detector, retention_job,
                                 *([wal_checkpoint_job] if engine.dialect.name == "sqlite" else [])]
    app.state.jobs_lock = leadership.JobsLock(app.state.engine)
    app.state.rate_limits = RateLimits(settings.auth_failures_per_minute, settings.writes_per_minute)
    Gauge("trainmon_api_background_jobs_leader", "1 in the one API process that runs the background jobs",
          registry=app.state.telemetry.registry).set_function(lambda: float(app.state.jobs_lock.held))
    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
    mount_assets(app)
    # One layer checks and marks every request (middleware.RequestGuard: security headers, latency, Host allowlist,
    # cross-site writes, content type, rate limits, chart gzip, body size, in that order), then answers the
    # well-formed trainer writes itself (routing.DirectRoutes) unless OPENTELEMETRY is on: FastAPI's spans take the
    # route from its own router.
    app.add_middleware(RequestGuard, telemetry=app.state.telemetry, allowed_hosts=hosts,
                       limits=app.state.rate_limits,
                       body_limits=BodyLimits(settings.max_body_bytes, settings.max_artifact_bytes,
                                              settings.max_checkpoint_bytes),
                       direct_routes=None if settings.opentelemetry else direct_routes(ROUTERS))
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(RequestValidationError, errors.validation_error)
    app.add_exception_handler(StarletteHTTPException, errors.http_error)
    app.add_exception_handler(UnstorableText, errors.unstorable_text)
    errors.document(app)
    return app


def _telemetry_option(enabled: bool) -> dict[str, Any]:
    """FastAPI's `telemetry` argument (FastAPI 0.16x+): its OpenTelemetry instrumentation on or off (OPENTELEMETRY).
    Off, no request pays for asking OpenTelemetry whether a provider is configured."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    return {} if enabled else {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.auto_migrate:
        await asyncio.to_thread(migrations.upgrade, app.state.engine)
    tasks = [asyncio.create_task(job(app), name=job.__name__) for job in app.state.background_jobs]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        app.state.jobs_lock.release()
        close_loop_writer(app.state.engine)
        app.state.engine.dispose()


async def _crash_detector(app: FastAPI) -> None:
    """Every CRASH_CHECK_INTERVAL_SECONDS, mark RUNNING runs without a recent heartbeat CRASHED."""
    settings: Settings = app.state.settings
    while True:
        await asyncio.sleep(settings.crash_check_interval_seconds)
        if not await asyncio.to_thread(app.state.jobs_lock.acquire):
            continue  # another replica runs the background jobs
        try:
            crashed = await asyncio.to_thread(app.state.crash_detector.sweep)
        except SQLAlchemyError as error:
            app.state.telemetry.db_errors.inc()
            log.warning("crash detection failed: %s", error)
            continue
        for run_id in crashed:
            log.warning("run crashed: no heartbeat for %ss", settings.heartbeat_timeout_seconds,
                        extra={"run_id": run_id})


async def _database_error(request: Request, error: Exception) -> JSONResponse:
    request.app.state.telemetry.db_errors.inc()
    log.error("database error on %s %s: %s", request.method, request.url.path, redact(str(error)))
    status, detail, headers = errors.database_answer(error)  # storage unusable, busy: 503 + Retry-After; else 500
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def serve(settings: Settings, insecure: bool = False) -> None:
    """Run the API under uvicorn on settings.host:settings.port, refusing an unsafe bind (BindNotAllowed; then
    HostsNotConfigured from `create_app` for a bind to every address without ALLOWED_HOSTS)."""
    import uvicorn

    configure_logging(settings.log_level)
    register_settings(settings)
    engine = make_engine(settings.database_url, settings.sqlite_busy_timeout_ms)
    try:
        if settings.auto_migrate:
            migrations.upgrade(engine)
        with read_sessions(engine)() as session:
            have_tokens = auth.tokens_exist(session)
    finally:
        engine.dispose()
    auth.check_bind_allowed(settings.host, have_tokens, insecure)
    app = create_app(settings)
    # Everything imported so far lives as long as the process: move it out of the collector's sight, so that
    # the collections a large metric batch triggers do not rescan it (halves ingest CPU time on big batches).
    gc.collect()
    gc.freeze()
    # A metric batch allocates a few objects per point, all alive until it is stored and freed by reference
    # counting, not by the collector: with the default threshold (700) a 5,000-point batch triggered ~18 young
    # collections, each rescanning the batch (4 % of its CPU time). Collect the young generation less often.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, log_level=settings.log_level.lower())
