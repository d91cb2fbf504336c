"""Operational endpoints: /healthz, /readyz and Prometheus /metrics.

``/healthz`` says the process is serving; ``/readyz`` says it can reach Redis and is not
shutting down (a load balancer sends traffic only while it is 200). Metrics live in a
registry of this application, not the global one, so several hubs in one process (the
tests) never mix their counts. Labels carry problem slugs and route names, never ids of
agencies or notes.

The workers of ``siko hub serve --workers N`` are one hub, so a scrape must count all of
them, whichever worker answers it: there each worker writes its values to files in one
folder (prometheus_client's multiprocess mode, which ``PROMETHEUS_MULTIPROC_DIR`` in the
worker's environment switches on before the library is imported) and ``/metrics`` adds up
every worker's files, those of workers that have exited included, so counters never go
back. The subscriber gauge counts live workers only (``livesum``; the supervisor removes
an exited worker's gauge file).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from hub.problems import REFUSAL
from hub.state import STORE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Metrics:
    """The hub's Prometheus metrics; ``registry`` is what ``/metrics`` exposes.

    Args:
        multiprocess_dir: a worker of several: the folder of every worker's values.
            ``registry`` then reads them all, and this process's metrics are in no
            registry (their values go to its file there).

    Raises:
        RuntimeError: ``multiprocess_dir`` without multiprocess mode switched on.
    """

    multiprocess_dir: Path | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        owner: CollectorRegistry | None = self.registry
        if self.multiprocess_dir is not None:
            if not values.ValueClass._multiprocess:
                raise RuntimeError(
                    "metrics of several workers need PROMETHEUS_MULTIPROC_DIR in the "
                    "environment before prometheus_client is imported"
                )
            MultiProcessCollector(self.registry, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
            owner = None
        self.requests = Counter(
            "siko_requests", "Requests answered", ["route", "status"], registry=owner
        )
        self.refusals = Counter(
            "siko_refusals", "Requests refused, by problem type", ["problem"], registry=owner
        )
        self.latency = Histogram(
            "siko_request_seconds",
            "Time to answer a request",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=owner,
        )
        self.subscribers = Gauge(
            "siko_subscribers",
            "Open WebSocket subscriptions",
            registry=owner,
            multiprocess_mode="livesum",
        )
        self._answered: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def answered(self, route: str, status: int, seconds: float) -> None:
        """Count and time one answered request.

        The labelled children are looked up once per route and status, not per request:
        ``labels()`` takes a lock and checks its values every time.
        """
        children = self._answered.get((route, status))
        if children is None:
            children = self.requests.labels(route, str(status)), self.latency.labels(route)
            self._answered[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)


METRICS = web.AppKey("metrics", Metrics)
SHUTTING_DOWN = web.AppKey("shutting_down", dict[str, bool])

routes = web.RouteTableDef()


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by route, and every refusal by problem type."""
    started = time.perf_counter()
    response = await handler(request)
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    metrics = request.app[METRICS]
    metrics.answered(name, response.status, time.perf_counter() - started)
    refusal = request.get(REFUSAL)
    if refusal is not None:
        metrics.refusals.labels(refusal.slug).inc()
    return response


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready for traffic: Redis answers and the hub is not shutting down."""
    if request.app[SHUTTING_DOWN]["now"]:
        return web.json_response({"status": "shutting down"}, status=503)
    if not await request.app[STORE].ping():
        return web.json_response({"status": "storage unreachable"}, status=503)
    return web.json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
