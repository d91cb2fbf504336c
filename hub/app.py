"""``build_app(settings)``: routes, middlewares, typed state and paired lifecycles.

Each resource has one ``cleanup_ctx`` generator that creates it and, after ``yield``,
releases it, in reverse order on shutdown: the Redis connection (starting the embedded
``redis-server`` first when no URL is configured), the directory with the first
administrators, and the live feeds. On shutdown the hub first answers new requests with
503 ``shutting-down`` and tells every subscriber to reconnect; requests in flight finish
(aiohttp waits for them up to ``shutdown_grace_s``).

A lone hub (``workers = 1``) does its once-only start work itself: it starts the
embedded Redis, makes the audit log key at first start and registers the first
administrators. A worker of ``siko hub serve --workers N`` is a :class:`Replica`: its
supervisor (:mod:`hub.workers`) did that work once, with :func:`prepare`, and the worker
only connects and loads the key, so a worker restarted later can never make a second
log key or start a second Redis. Start failures are one :class:`StartError` with a
message for the operator.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web

from hub import (
    api_audit,
    api_channels,
    api_directory,
    api_notes,
    events,
    live,
    metrics,
    openapi,
    redischeck,
)
from hub.auditlog import AuditLog
from hub.auth import AUTHENTICATOR, PREFETCH, VERIFIED_AGENCY, Authenticator, auth_middleware
from hub.bootstrap import BootstrapError, register_first_admins
from hub.config import Settings, mask_redis_url
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
from keys import KeysError, now_ms
from keys.logkey import LogKey

log = logging.getLogger("hub")

#: After SIGTERM, how long the hub keeps listening while answering 503 before it closes.
DRAIN_S: Final = 1.0


class StartError(Exception):
    """The hub cannot start with these settings and files; the message says why."""


@dataclass(frozen=True)
class Replica:
    """What a worker of ``siko hub serve --workers N`` is told by its supervisor.

    Attributes:
        redis_url: the Redis to use, the embedded one's included (it holds a password:
            it is never in a ``repr``, a log line or a command line).
        metrics_dir: where every worker keeps its metric values (prometheus_client's
            multiprocess mode), so that any worker's ``/metrics`` reports the whole hub.
    """

    redis_url: str = field(repr=False)
    metrics_dir: Path


REPLICA = web.AppKey("replica", Replica)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def shutdown_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse new work while shutting down, so a load balancer moves it elsewhere."""
    if request.app[SHUTTING_DOWN]["now"] and request.path not in ("/healthz", "/readyz"):
        raise ShuttingDown("this hub is shutting down; retry, another replica will answer")
    return await handler(request)


async def start_embedded_redis(settings: Settings) -> EmbeddedRedis:
    """Start the embedded redis-server in the data folder (no Redis URL configured)."""
    embedded = EmbeddedRedis(
        settings.data_dir / "redis",
        binary=settings.redis_server,
        appendfsync=settings.appendfsync,
    )
    await embedded.start()
    log.info("embedded redis-server started on 127.0.0.1:%d", embedded.port)
    return embedded


async def _storage(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    replica = app.get(REPLICA)
    embedded = None
    if replica is not None:
        url = replica.redis_url
    elif settings.redis_url is not None:
        url = settings.redis_url
    else:
        embedded = await start_embedded_redis(settings)
        url = embedded.url
    store = Store.connect(url)
    app[STORE] = store
    app[DIRECTORY] = Directory(store)
    app[AUTHENTICATOR] = Authenticator(
        app[DIRECTORY], store, settings.base_url, settings.clock_skew_s
    )
    try:
        if replica is None:
            await _first_admins(store, url, settings)
            await _announce(store, settings)
        else:  # a restarted worker starts, and answers 503, while Redis is away
            log.info("serving on %s, one of %d workers", settings.base_url, settings.workers)
        yield
    finally:
        await store.close()
        if embedded is not None:
            await embedded.stop()


async def _first_admins(store: Store, url: str, settings: Settings) -> None:
    """Check that Redis answers and can keep the hub's data, then register the first
    administrators.

    Raises:
        StartError: Redis does not answer or cannot keep the data (:mod:`hub.redischeck`),
            or a card cannot be registered.
    """
    if not await store.ping():
        raise StartError(
            f"Redis at {mask_redis_url(url)} does not answer; check the address and "
            "password in --redis (SIKO_REDIS_URL) and that the server is running"
        )
    verdict = redischeck.judge(await store.server_info())
    if verdict.refusals:
        raise StartError(
            f"the hub cannot keep its data in Redis at {mask_redis_url(url)}: "
            + "; ".join(verdict.refusals)
        )
    for warning in verdict.warnings:
        log.warning("Redis at %s: %s", mask_redis_url(url), warning)
    try:
        await register_first_admins(store, settings.admin_cards)
    except (BootstrapError, HubError) as exc:
        raise StartError(f"cannot register the first administrators: {exc}") from None


async def prepare(settings: Settings, redis_url: str) -> None:
    """The once-only start work of a supervisor, done before its workers start.

    The same steps a lone hub takes while it starts: the audit log key is loaded or made,
    Redis must answer, the first administrators are registered. Its workers, as
    :class:`Replica` s, then neither make a key nor register anyone.

    Raises:
        StartError: as :func:`build_app`'s start would, with the same messages.
    """
    _log_key(settings, make=True)
    store = Store.connect(redis_url)
    try:
        await _first_admins(store, redis_url, settings)
        await _announce(store, settings)
    finally:
        await store.close()


async def _announce(store: Store, settings: Settings) -> None:
    admins = [a for a in await store.list_agencies() if a.kind is Kind.ADMIN]
    log.info("siko hub serving on %s with %d administrator(s)", settings.base_url, len(admins))
    if not admins:
        log.warning(
            "no administrator yet: run 'siko keys new --agency admin-NAME --out admin.key', "
            "'siko keys export-card admin.key --out admin.card', then restart the hub with "
            "--admin-card admin.card"
        )


def _log_key(settings: Settings, *, make: bool) -> LogKey:
    """The audit log's key: loaded, or made at first start (mode 0600) when ``make``.

    A worker of several never makes it (``make=False``): its supervisor did at start, and
    a key missing later means the file was moved away, not that the log is new.
    """
    path = settings.log_key_path
    if path.exists() or not make:
        try:
            key = LogKey.load(path)
        except KeysError as exc:
            raise StartError(
                f"audit log key {exc}; restore the file from backup, or point --log-key at it"
            ) from None
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
        LogStore(app[STORE].client, app[STORE].link),
        _log_key(settings, make=REPLICA not in app),
        checkpoint_interval_s=settings.checkpoint_interval_s,
        refusal_summary_s=settings.refusal_summary_s,
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
    """Log a refused request in the audit log: who, what, and why.

    Only a request its agency provably sent once (signature verified, nonce fresh) is
    logged on its own. Any other is counted for the next ``refusals-summarized`` record:
    anyone can send those, and each must not cost the log a leaf.
    """
    agency = request.get(VERIFIED_AGENCY)
    if agency is None:
        request.app[AUDIT].count_refusal(error.slug, error.status)
        return
    event = events.request_refused(
        agency=agency,
        method=request.method,
        path=request.path,
        problem=error.slug,
        status=error.status,
        at=now_ms(),
    )
    await request.app[AUDIT].record_refusal(event)


def build_app(settings: Settings, *, replica: Replica | None = None) -> web.Application:
    """The hub as an aiohttp application (not yet started); a worker passes its ``replica``."""
    app = web.Application(
        middlewares=[metrics_middleware, problems_middleware, shutdown_guard, auth_middleware],
        client_max_size=settings.max_envelope_bytes + 64 * 1024,
    )
    app[SETTINGS] = settings
    if replica is not None:
        app[REPLICA] = replica
    app[METRICS] = Metrics(multiprocess_dir=replica.metrics_dir if replica else None)
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


def configure_logging(settings: Settings, *, tag: str = "") -> None:
    """Log lines to stderr at the configured level; ``tag`` names the process of several."""
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s",
    )


def run(settings: Settings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM), then shut down gracefully.

    Raises:
        StartError: the hub cannot start with these settings, files or Redis.
        EmbeddedRedisError: the embedded redis-server cannot be found or started.
    """
    configure_logging(settings)
    log.info("starting siko hub: %s", settings.describe())
    asyncio.run(serve(settings))


async def serve(settings: Settings, *, replica: Replica | None = None) -> None:
    """Serve; on a signal, drain while still listening, then close.

    Not ``web.run_app``: its cleanup closes the listener before the app's on_shutdown
    runs, so while requests in flight finish, probes and new requests would meet a
    refused connection instead of the 503 that tells a load balancer to move traffic.
    Here the hub first says it is shutting down (503, subscribers told to reconnect),
    keeps listening for :data:`DRAIN_S` (at most the grace period), and only then lets
    aiohttp close the listener and wait up to ``shutdown_grace_s`` for what is in flight.
    A worker (``replica``) binds with SO_REUSEPORT, beside its siblings on the same port.
    """
    app = build_app(settings, replica=replica)
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_grace_s, access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=replica is not None)
        try:
            await site.start()
        except OSError as exc:
            where = f"{settings.host}:{settings.port}"
            raise StartError(f"cannot listen on {where}: {exc.strerror}") from None
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
