"""``build_app(settings)``: routes, middlewares, typed state and paired lifecycles.

Each resource has one ``cleanup_ctx`` generator that creates it and, after ``yield``,
releases it, in reverse order on shutdown: the Redis connection (starting the embedded
``redis-server`` first when no URL is configured), the directory with the first
administrators, and the live feeds. On shutdown the hub first answers new requests with
503 ``shutting-down`` and tells every subscriber to reconnect; requests in flight finish
(aiohttp waits for them up to ``shutdown_grace_s``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from aiohttp import web

from hub import api_audit, api_channels, api_directory, api_notes, events, live, metrics, openapi
from hub.auditlog import AuditLog
from hub.auth import AUTHENTICATOR, CALLER, PREFETCH, Authenticator, auth_middleware
from hub.bootstrap import register_first_admins
from hub.config import Settings
from hub.directory import Directory
from hub.embedded import EmbeddedRedis
from hub.errors import HubError, ShuttingDown
from hub.feeds import Feeds
from hub.logstore import LogStore
from hub.metrics import METRICS, SHUTTING_DOWN, Metrics, metrics_middleware
from hub.problems import REFUSAL_RECORDER, problems_middleware
from hub.records import Kind
from hub.state import AUDIT, DIRECTORY, SETTINGS, STORE
from hub.store import Store
from keys import now_ms
from keys.logkey import LogKey

log = logging.getLogger("hub")

#: After SIGTERM, how long the hub keeps listening while answering 503 before it closes.
DRAIN_S: Final = 1.0


class StartError(Exception):
    """The hub cannot start with these settings and files; the message says why."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def shutdown_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse new work while shutting down, so a load balancer moves it elsewhere."""
    if request.app[SHUTTING_DOWN]["now"] and request.path not in ("/healthz", "/readyz"):
        raise ShuttingDown("this hub is shutting down; retry, another replica will answer")
    return await handler(request)


async def _storage(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    embedded = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(
            settings.data_dir / "redis",
            binary=settings.redis_server,
            appendfsync=settings.appendfsync,
        )
        url = await embedded.start()
        log.info("embedded redis-server started on 127.0.0.1:%d", embedded.port)
    store = Store.connect(url)
    app[STORE] = store
    app[DIRECTORY] = Directory(store)
    app[AUTHENTICATOR] = Authenticator(
        app[DIRECTORY], store, settings.base_url, settings.clock_skew_s
    )
    try:
        await register_first_admins(store, settings.admin_cards)
        await _announce(store, settings)
        yield
    finally:
        await store.close()
        if embedded is not None:
            await embedded.stop()


async def _announce(store: Store, settings: Settings) -> None:
    admins = [a for a in await store.list_agencies() if a.kind is Kind.ADMIN]
    log.info("siko hub serving on %s with %d administrator(s)", settings.base_url, len(admins))
    if not admins:
        log.warning(
            "no administrator yet: run 'siko keys new --agency admin-NAME --out admin.key', "
            "'siko keys export-card admin.key --out admin.card', then restart the hub with "
            "--admin-card admin.card"
        )


def _log_key(settings: Settings) -> LogKey:
    """The audit log's key: loaded, or made at first start (mode 0600)."""
    path = settings.log_key_path
    if path.exists():
        key = LogKey.load(path)
        if key.origin != settings.origin:
            raise StartError(
                f"{path} signs for log {key.origin!r}, but this hub is configured as "
                f"{settings.origin!r}; fix --log-origin or use the right key file"
            )
        return key
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = LogKey.generate(settings.origin)
    key.save(path)
    log.info("made the audit log key %s", path)
    return key


async def _audit(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    audit = AuditLog(
        LogStore(app[STORE].client),
        _log_key(settings),
        checkpoint_interval_s=settings.checkpoint_interval_s,
    )
    app[AUDIT] = audit
    log.info("audit log %s, verifier key %s", audit.key.origin, audit.key.verifier_key)
    await audit.start()
    yield
    await audit.stop()


async def _feeds(app: web.Application) -> AsyncIterator[None]:
    app[live.FEEDS] = Feeds(app[STORE])
    yield
    await app[live.FEEDS].close()


async def _on_shutdown(app: web.Application) -> None:
    app[SHUTTING_DOWN]["now"] = True
    await live.close_all(app, "the hub is shutting down; reconnect and resume from your cursor")


async def _record_refusal(request: web.Request, error: HubError) -> None:
    """Log a refused request in the audit log: who (when known), what, and why."""
    caller = request.get(CALLER)
    event = events.request_refused(
        agency=caller.agency if caller is not None else None,
        method=request.method,
        path=request.path,
        problem=error.slug,
        status=error.status,
        at=now_ms(),
    )
    await request.app[AUDIT].record_refusal(event)


def build_app(settings: Settings) -> web.Application:
    """The hub as an aiohttp application (not yet started)."""
    app = web.Application(
        middlewares=[metrics_middleware, problems_middleware, shutdown_guard, auth_middleware],
        client_max_size=settings.max_envelope_bytes + 64 * 1024,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[SHUTTING_DOWN] = {"now": False}
    app[live.SOCKETS] = live.OpenSockets()
    app[REFUSAL_RECORDER] = _record_refusal
    app[PREFETCH] = api_notes.prefetch_readers
    for table in (
        metrics.routes,
        api_directory.routes,
        api_channels.routes,
        api_notes.routes,
        live.routes,
        api_audit.routes,
        openapi.routes,
    ):
        app.add_routes(table)
    app.cleanup_ctx.extend([_storage, _audit, _feeds])
    app.on_shutdown.append(_on_shutdown)
    return app


def run(settings: Settings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM), then shut down gracefully."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info("starting siko hub: %s", settings.describe())
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    """Serve; on a signal, drain while still listening, then close.

    Not ``web.run_app``: its cleanup closes the listener before the app's on_shutdown
    runs, so while requests in flight finish, probes and new requests would meet a
    refused connection instead of the 503 that tells a load balancer to move traffic.
    Here the hub first says it is shutting down (503, subscribers told to reconnect),
    keeps listening for :data:`DRAIN_S` (at most the grace period), and only then lets
    aiohttp close the listener and wait up to ``shutdown_grace_s`` for what is in flight.
    """
    app = build_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_grace_s, access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("shutting down: draining for %.1f s", min(DRAIN_S, settings.shutdown_grace_s))
        await _on_shutdown(app)
        await asyncio.sleep(min(DRAIN_S, settings.shutdown_grace_s))
    finally:
        await runner.cleanup()
