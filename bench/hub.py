"""Hub posts per second and post->delivery latency, each beside a same-run bare baseline.

Run from the repository root (docs/BENCHMARKS.md records a run)::

    .venv/bin/python bench/hub.py            # full run, bounded: 1-3 minutes
    .venv/bin/python bench/hub.py --quick    # small counts, a smoke run (< 60 s)
    .venv/bin/python bench/hub.py --tiny     # tiniest counts (tests/bench, ~10 s)

Everything runs on 127.0.0.1 on a Redis this script starts (:mod:`hub.embedded`,
append-only, ``everysec``). Two servers share it, each as ``--workers`` processes on one
port (SO_REUSEPORT, as ``siko hub serve --workers N``): the hub
(:func:`hub.app.build_app`) and the bare baseline (:class:`Bare`: ``POST`` XADDs the
body with no checks; a WebSocket fans out an ``XREAD BLOCK`` loop). The load generator
is this process; the WebSocket subscribers run in one more process. Every 1 KB note is
sealed for the channel's readers (hybrid suite), and every hub post's request signed
(:class:`Presigned`), before its run is timed.

1. Throughput: 64 concurrent clients post for a bounded count or time, closed loop. A
   hub post is verified (request and envelope signatures), checked, stored, audited and
   answered with a signed receipt; the baseline posts the same bytes with plain aiohttp.
   Each run prints the server process's CPU µs per post, and the cores used by the
   server, Redis, the load generator and everything else on the machine.
2. Latency: subscribers hold WebSockets; one poster posts at a fixed rate (open loop,
   at most 64 posts in flight). Latency runs from a note's *scheduled* send time to its
   arrival at each subscriber (CLOCK_MONOTONIC is shared by the processes), so a
   server that falls behind shows it instead of slowing the poster down.
3. Profile of the hub's post path: cProfile of the hub process over a separate pass,
   CPU µs per post of each step, and the Redis round trips and commands per post.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import inspect
import math
import multiprocessing
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, TypeAlias

# Run as a script, this file's folder heads sys.path and this file would shadow the
# ``hub`` package: put the repository root first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import msgpack
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web

import hub.api_notes
import hub.auditlog
import hub.auth
import hub.events
import hub.store
import keys.envelope
import keys.httpsig
import keys.logkey
from bench._floor import (
    Budget,
    FanOut,
    Step,
    Transfer,
    required_checks,
    sign_post,
    transfer,
)
from bench._harness import (
    CpuMeter,
    Dist,
    RedisHandle,
    embedded_redis,
    machine_lines,
    md_table,
    progress,
)
from clients.sdk import HubClient
from clients.transport import Transport
from hub.config import available_cores
from hub.embedded import free_loopback_port
from keys import AgencyCard, Identity, Markings, Note, Suite, VerifyKey, now_ms, save_card
from keys import seal as seal_note
from keys._suites import SigningKey
from keys.markings import Classification, HandlingCode

CHANNEL: Final = "bench"
ENVELOPE: Final = "application/vnd.siko.envelope"
MARKINGS: Final = Markings(Classification.VS_NFD, HandlingCode.H1)
CLIENTS: Final = 64
IN_FLIGHT: Final = 64
THROUGHPUT_GOAL: Final = 0.60
P99_GOAL_MS: Final = 10.0

Keys: TypeAlias = tuple[str, int, bytes, bytes]  # agency, created, signing, KEM (picklable)
Send: TypeAlias = Callable[[int, bytes], Awaitable[object]]
Pids: TypeAlias = dict[str, int | tuple[int, ...]]  # processes (or groups) whose CPU counts


@dataclass(frozen=True)
class Plan:
    """Counts and bounds of one run."""

    readers: int = 10  # agencies in the channel, each posts and reads
    posts: int = 3000  # per throughput run ...
    run_s: float = 15.0  # ... or this long, whichever ends first
    rounds: int = 2  # bare then hub, this many times
    rate: int = 1000  # notes per second in the latency runs
    live_s: float = 3.0
    subscribers: int = 100
    drain_s: float = 10.0
    profile_posts: int = 1000
    warmup: int = 128
    profile_out: Path | None = None  # also keep the hub's raw cProfile stats here
    workers: int = 2  # processes per server (hub and bare alike), on one port

    def quota(self) -> int:
        """Envelopes each client gets for one throughput run (warm-up included)."""
        return math.ceil((self.posts + self.warmup) / CLIENTS) + 1

    @property
    def live_notes(self) -> int:
        """Notes one latency run posts."""
        return int(self.rate * self.live_s)


FULL: Final = Plan()
QUICK: Final = Plan(
    posts=300, run_s=5.0, rounds=1, rate=100, live_s=1.0, subscribers=10, profile_posts=200
)
# The smoke test's (tests/bench): proves that the script runs, measures nothing. Fields:
# readers, posts, run_s, rounds, rate, live_s, subscribers, drain_s.
TINY: Final = Plan(2, 32, 3.0, 1, 50, 0.4, 2, 3.0, profile_posts=32, warmup=8, workers=1)


# -- the two servers, each in a process of its own ----------------------------------


class Bare:
    """The baseline: ``POST /bare/{stream}`` XADDs the body, ``GET /bare/ws`` fans out."""

    def __init__(self, redis_url: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url)
        self.sockets: set[web.WebSocketResponse] = set()

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=2**21)
        app.router.add_post("/bare/{stream}", self.post)
        app.router.add_get("/bare/ws", self.subscribe)
        app.router.add_get("/healthz", self.healthz)
        app.cleanup_ctx.append(self.lifecycle)
        return app

    async def post(self, request: web.Request) -> web.Response:
        """XADD the body, unchecked; answer with the entry id."""
        stream = f"siko-bench:bare:{request.match_info['stream']}"
        entry_id: Any = await self.client.xadd(stream, {"env": await request.read()})
        answer = msgpack.packb({"stream_id": entry_id.decode()})
        return web.Response(body=answer, status=201, content_type="application/msgpack")

    async def subscribe(self, request: web.Request) -> web.WebSocketResponse:
        """A WebSocket that gets every entry the pump reads."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(msgpack.packb({"t": "live", "ch": "bare"}))
        self.sockets.add(ws)
        async for _ in ws:
            pass
        self.sockets.discard(ws)
        return ws

    async def healthz(self, _: web.Request) -> web.Response:
        """Up."""
        return web.Response(text="ok")

    async def pump(self) -> None:
        """XREAD BLOCK the live stream; send each entry, packed once, to every socket."""
        last = "0-0"
        while True:
            streams: dict[Any, Any] = {"siko-bench:bare:live": last}
            reply: Any = await self.client.xread(streams, count=256, block=1000)
            for entry_id, fields in reply[0][1] if reply else ():
                last = entry_id.decode()
                frame = {"t": "note", "ch": "bare", "id": last, "env": fields[b"env"]}
                data = msgpack.packb(frame)
                for ws in tuple(self.sockets):
                    with contextlib.suppress(ConnectionError):
                        await ws.send_bytes(data)

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        """Run the pump while serving."""
        task = asyncio.create_task(self.pump())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for ws in tuple(self.sockets):
            await ws.close()
        await self.client.aclose()


def serve(kind: str, port: int, redis_url: str, folder: str, ready: Any) -> None:
    """Server process: serve until SIGTERM; SIGUSR1/SIGUSR2 start/stop cProfile.

    Every process of a server binds the same port with SO_REUSEPORT (the kernel spreads
    connections over them), as ``siko hub serve --workers N`` does; ``ready`` is set once
    this one listens.
    """
    asyncio.run(_serve(kind, port, redis_url, Path(folder), ready))


async def _serve(kind: str, port: int, redis_url: str, folder: Path, ready: Any) -> None:
    if kind == "hub":
        from hub.app import build_app
        from hub.config import Settings

        settings = Settings(
            port=port,
            redis_url=redis_url,
            data_dir=folder / "hub-data",
            admin_cards=(folder / "admin.card",),
            shutdown_grace_s=2.0,
            log_level="WARNING",
        )
        app = build_app(settings)
    else:
        app = Bare(redis_url).app()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    ready.set()
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    profiler = cProfile.Profile()

    def dump() -> None:
        # Written under another name, then renamed: the load generator waits for the
        # final name, so it never reads a half-written file.
        profiler.disable()
        partial = folder / f"{kind}-{os.getpid()}.prof.partial"
        profiler.dump_stats(partial)
        partial.replace(folder / f"{kind}-{os.getpid()}.prof")

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
    loop.add_signal_handler(signal.SIGUSR2, dump)
    await stop.wait()
    await runner.cleanup()


async def start_server(
    kind: str, redis_url: str, folder: Path, workers: int
) -> tuple[list[Any], str]:
    """Start a server's processes on one port; them and the base URL once all listen.

    The first one starts alone: a hub's first start makes the audit log key file and
    registers the administrator, which its replicas then find.
    """
    port = free_loopback_port()
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    try:
        for _ in range(workers):
            ready = ctx.Event()
            proc = ctx.Process(
                target=serve, args=(kind, port, redis_url, str(folder), ready), daemon=True
            )
            proc.start()
            procs.append(proc)
            if not await asyncio.to_thread(ready.wait, 30.0):
                raise RuntimeError(f"a {kind} server process did not listen within 30 s")
    except BaseException:
        stop_server(procs)
        raise
    return procs, f"http://127.0.0.1:{port}"


def stop_server(procs: Sequence[Any]) -> None:
    """SIGTERM, then wait (kill after 10 s)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


# -- identities and envelopes -----------------------------------------------------


def raw(identity: Identity) -> Keys:
    """An identity as picklable values (benchmark keys only)."""
    return (str(identity.agency), identity.created, *identity.private_keys())


def unraw(keys: Keys) -> Identity:
    """The identity of :func:`raw`."""
    agency, created, signing, kem = keys
    suite = Suite.MLKEM768_X25519
    return Identity.from_raw_keys(agency, suite, created, signing_key=signing, kem_key=kem)


def seal_many(sender: Keys, cards: Sequence[bytes], count: int) -> list[bytes]:
    """``count`` envelopes of one 1 KB note (runs in a worker process)."""
    words = "Lagebild Ruhr: Fahrzeug gesichtet, Halterabfrage veranlasst, Rueckmeldung folgt. "
    note = Note((words * 13)[:1024], subject="Bench", case_ref="AZ 1/26")
    identity, recipients = unraw(sender), [AgencyCard.parse(c) for c in cards]
    return [
        seal_note(note, sender=identity, channel=CHANNEL, recipients=recipients, markings=MARKINGS)
        for _ in range(count)
    ]


def seal_pools(agencies: Sequence[Identity], cards: Sequence[Any], total: int) -> list[list[bytes]]:
    """Envelopes per agency for ``total`` posts by 64 clients, sealed on every core.

    Client ``c`` posts as agency ``c % len(agencies)``, so some agencies have one client
    more than others; each gets enough for its busiest share.
    """
    per = math.ceil(total / CLIENTS) * math.ceil(CLIENTS / len(agencies))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        jobs = [pool.submit(seal_many, raw(a), cards, per) for a in agencies]
        return [job.result() for job in jobs]


class Bodies:
    """Each client takes fresh envelopes of its own agency (the hub refuses others)."""

    def __init__(self, pools: list[list[bytes]]) -> None:
        self.iters: list[Iterator[bytes]] = [iter(p) for p in pools]

    def take(self, client: int) -> bytes | None:
        """The next envelope for ``client`` (None when they ran out)."""
        return next(self.iters[client % len(self.iters)], None)


# -- throughput --------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """One closed-loop run."""

    name: str
    done: int
    errors: list[str]
    elapsed_s: float
    latency: Dist
    cpu: CpuMeter

    @property
    def rate(self) -> float:
        """Posts answered per second."""
        return self.done / max(self.elapsed_s, 1e-9)

    @property
    def server_us(self) -> float:
        """CPU µs of the server process per post."""
        return 1e6 * self.cpu.used[self.name] / max(self.done, 1)


async def closed_loop(
    send: Send, take: Callable[[int], bytes | None], posts: int, seconds: float
) -> tuple[int, list[str], float, list[int]]:
    """64 clients post until ``posts`` are sent or ``seconds`` passed."""
    left, errors, latencies = [posts], [], []
    clock = time.perf_counter_ns
    began = clock()
    deadline = began + int(seconds * 1e9)

    async def client(c: int) -> None:
        while left[0] > 0 and clock() < deadline and (body := take(c)) is not None:
            left[0] -= 1
            start = clock()
            try:
                await send(c, body)
            except Exception as exc:  # counted and reported; the run goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(clock() - start)

    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    return len(latencies), errors, (clock() - began) / 1e9, latencies


async def throughput(
    name: str, send: Send, take: Callable[[int], bytes | None], plan: Plan, pids: Pids
) -> Throughput:
    """Warm up, then one measured closed-loop run; ``name`` is also the server's."""
    await closed_loop(send, take, plan.warmup, plan.run_s)
    meter = CpuMeter(pids)
    meter.start()
    done, errors, elapsed, latencies = await closed_loop(send, take, plan.posts, plan.run_s)
    result = Throughput(name, done, errors, elapsed, Dist.of_ns(latencies), meter.stop())
    progress(f"  {name}: {result.rate:,.0f} posts/s, {len(errors)} errors; {meter.describe()}")
    return result


# -- latency: subscribers in their own process ---------------------------------------


@dataclass(frozen=True)
class SubSpec:
    """What the subscriber process connects to (picklable)."""

    kind: str
    base_url: str
    sockets: int
    readers: tuple[Keys, ...]
    tails: tuple[bytes, ...]  # last 32 bytes of each envelope: a note frame ends with it
    cursor: str
    drain_s: float  # how long to wait for the last deliveries


def subscriber_main(spec: SubSpec, conn: Connection) -> None:
    """Subscriber process: connect, say "ready", record arrivals, send them back."""
    asyncio.run(_subscribe(spec, conn))


async def _subscribe(spec: SubSpec, conn: Connection) -> None:
    index = {tail: i for i, tail in enumerate(spec.tails)}
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        session = await stack.enter_async_context(aiohttp.ClientSession())
        transports = [
            await stack.enter_async_context(Transport(spec.base_url, unraw(k), timeout=60))
            for k in spec.readers
        ]
        for s in range(spec.sockets):
            if spec.kind == "hub":
                params = {"cursor": f"{CHANNEL}:{spec.cursor}"}
                ws = await transports[s % len(transports)].open_websocket(
                    "/v1/subscribe", params=params
                )
            else:
                ws = await session.ws_connect(spec.base_url + "/bare/ws", max_msg_size=2**24)
            stack.push_async_callback(ws.close)
            while msgpack.unpackb(await ws.receive_bytes())["t"] != "live":
                pass
            sockets.append(ws)
        arrivals = [[0] * len(spec.tails) for _ in sockets]
        left = [len(sockets) * len(spec.tails)]
        all_in = asyncio.Event()

        async def receive(ws: Any, row: list[int]) -> None:
            async for message in ws:
                now = time.monotonic_ns()
                slot = index.get(message.data[-32:]) if message.type is WSMsgType.BINARY else None
                if slot is not None and not row[slot]:
                    row[slot] = now
                    left[0] -= 1
                    if not left[0]:
                        all_in.set()

        tasks = [
            asyncio.create_task(receive(ws, row)) for ws, row in zip(sockets, arrivals, strict=True)
        ]
        conn.send("ready")
        sent = await asyncio.to_thread(conn.recv)  # notes ``0 .. sent-1`` were posted
        left[0] -= len(sockets) * (len(spec.tails) - sent)
        if left[0] > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in.wait(), spec.drain_s)
        for task in tasks:
            task.cancel()
        conn.send(arrivals)


async def receive_from(conn: Connection, timeout: float) -> Any:
    """The next message on a pipe (None after ``timeout`` seconds)."""
    return conn.recv() if await asyncio.to_thread(conn.poll, timeout) else None


@dataclass(frozen=True)
class Latency:
    """One fixed-rate run."""

    name: str
    sent: int
    achieved: float
    expected: int
    delivery: Dist
    errors: int
    cpu: CpuMeter


async def open_loop(
    send: Send, bodies: Sequence[bytes], plan: Plan
) -> tuple[list[int], int, float]:
    """Post note ``i`` at ``start + i / rate``; its scheduled time (0: never sent)."""
    due = [0] * len(bodies)
    errors, slots = [0], asyncio.Semaphore(IN_FLIGHT)
    began = time.monotonic_ns() + 10_000_000
    stop_at = began + int(2 * plan.live_s * 1e9)  # a server that falls behind: stop sending

    async def post(i: int) -> None:
        try:
            await send(i, bodies[i])
        except Exception:  # its deliveries count as missing
            errors[0] += 1
        finally:
            slots.release()

    tasks = set()
    for i in range(len(bodies)):
        at = began + int(i * 1e9 / plan.rate)
        await asyncio.sleep(max(0, at - time.monotonic_ns()) / 1e9)
        await slots.acquire()
        if time.monotonic_ns() > stop_at:
            break
        due[i] = at
        tasks.add(asyncio.create_task(post(i)))
    last = time.monotonic_ns()
    await asyncio.gather(*tasks)
    sent = sum(1 for d in due if d)
    return due, errors[0], sent / max((last - began) / 1e9, 1e-9)


async def latency(name: str, send: Send, bodies: Sequence[bytes], rig: Rig) -> Latency:
    """Subscribe in a separate process, post at a fixed rate, gather arrival times."""
    plan, readers = rig.plan, tuple(raw(a) for a in rig.agencies)
    tails = tuple(b[-32:] for b in bodies)
    cursor = f"{now_ms()}-0"
    spec = SubSpec(name, rig.urls[name], plan.subscribers, readers, tails, cursor, plan.drain_s)
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=subscriber_main, args=(spec, child), daemon=True
    )
    proc.start()
    if await receive_from(parent, 120.0) != "ready":
        raise RuntimeError(f"{name}: the subscribers did not connect")
    meter = CpuMeter(rig.pids(name) | {"subscribers": proc.pid or 0})
    meter.start()
    due, errors, achieved = await open_loop(send, bodies, plan)
    sent = sum(1 for d in due if d)  # a prefix: the poster stops, it never skips
    parent.send(sent)
    arrivals = await receive_from(parent, plan.drain_s + 60.0)
    meter.stop()
    proc.join(10)
    delays = [row[i] - due[i] for row in arrivals for i in range(sent) if row[i]]
    result = Latency(name, sent, achieved, sent * len(arrivals), Dist.of_ns(delays), errors, meter)
    progress(
        f"  {name}: p50 {result.delivery.p50:.1f} ms, p99 {result.delivery.p99:.1f} ms, "
        f"{result.delivery.n:,}/{result.expected:,} delivered; {meter.describe()}"
    )
    return result


# -- profile of the hub's post path --------------------------------------------------

_NOTES, _AUTH, _AUDIT = hub.api_notes, hub.auth, hub.auditlog
STEPS: Final = (
    ("auth middleware + handler (the whole request past aiohttp)", _AUTH.auth_middleware),
    ("  request authentication", _AUTH.Authenticator.authenticate),
    ("    request signature parse (httpsig.parse_signature)", keys.httpsig.parse_signature),
    ("    request signature verify (httpsig.verify_parsed)", keys.httpsig.verify_parsed),
    ("    caller + readers entries, nonce: one round trip", hub.store.Store.agencies_and_nonce),
    ("  handler post_note", _NOTES.post_note),
    ("    Envelope.parse", keys.envelope.Envelope.parse),
    ("    envelope signature verify (verify_envelope)", keys.envelope.verify_envelope),
    ("    audit event (events.note_accepted)", hub.events.note_accepted),
    ("    readers (prefetched), policy, append (_check_and_append)", _NOTES._check_and_append),
    ("      Store.append_note (Lua: note + audit event)", hub.store.Store.append_note),
    ("    receipt: wait for the sequencer, sign (_receipt)", _NOTES._receipt),
    ("      LogKey.sign_receipt", keys.logkey.LogKey.sign_receipt),
    ("  sequencer batches (AuditLog._drain_batch, any caller)", _AUDIT.AuditLog._drain_batch),
)


def _key(func: Any) -> tuple[str, int, str]:
    code = inspect.unwrap(getattr(func, "__func__", func)).__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def profile_report(
    profile: pstats.Stats, posts: int, cpu_us: float, commands: dict[str, int]
) -> str:
    """Per-post CPU of each step, Ed25519 calls, Redis round trips and commands."""
    stats: dict[Any, Any] = profile.stats  # type: ignore[attr-defined]
    idle = sum(v[2] for k, v in stats.items() if "of 'select.epoll' objects" in k[2])
    total = sum(row[2] for row in stats.values()) - idle  # waiting in epoll is not work

    def cells(seconds: float) -> list[str]:
        return [f"{1e6 * seconds / posts:,.0f}", f"{100 * seconds / total:.0f}%"]

    rows = []
    for label, func in STEPS:
        _, calls, _, cum, _ = stats.get(_key(func), (0, 0, 0.0, 0.0, {}))
        count = "" if inspect.iscoroutinefunction(func) else f"{calls / posts:.2f}"
        rows.append([label, count, *cells(cum)])
    primitives: tuple[tuple[str, Any], ...] = (
        ("verify", VerifyKey.verify),
        ("sign", SigningKey.sign),
    )
    for what, primitive in primitives:
        _, calls, _, cum, _ = stats.get(_key(primitive), (0, 0, 0.0, 0.0, {}))
        rows.append([f"Ed25519 {what}, all callers", f"{calls / posts:.2f}", *cells(cum)])
    own_by = {"redis-py": 0.0, "aiohttp, multidict, yarl": 0.0}
    for (file, _, _), row in stats.items():
        if "/redis/" in file:
            own_by["redis-py"] += row[2]
        elif any(p in file for p in ("/aiohttp/", "/multidict/", "/yarl/")):
            own_by["aiohttp, multidict, yarl"] += row[2]
    for name, own in own_by.items():
        rows.append([f"own time in {name}", "", *cells(own)])
    rows.append(["everything profiled but waiting in epoll", "", *cells(total)])
    table = md_table(["step", "calls/post", "µs/post", "share"], rows)
    trips = _round_trips(stats) / posts
    top = sorted(commands.items(), key=lambda kv: -kv[1])
    per = ", ".join(f"{name} {n / posts:.2f}" for name, n in top if n / posts >= 0.05)
    return (
        f"{table}\n\nTime per post while the hub's code runs (cProfile's wall clock: a "
        "shared machine's preemptions count too). The hub process used "
        f"{cpu_us:,.0f} µs of CPU per post in this pass, profiler included; cProfile "
        "inflates Python code, so read the shares. Coroutines count while they run, not "
        "while they wait.\n\n"
        f"Redis round trips per post (client side): {trips:.2f}. Commands per post seen by "
        f"Redis, including those inside Lua scripts: {per}."
    )


def _round_trips(stats: dict[Any, Any]) -> float:
    """Requests the hub sent to Redis: on its multiplexed link (a command, a batch or a
    script, each one round trip), plus commands and pipelines through redis-py's pool."""
    from hub.redislink import _Connection as Link
    from hub.store import StoreConnection as Conn

    def calls(func: Any) -> int:
        return int(stats.get(_key(func), (0, 0))[1])

    # Plain functions, counted once a call (cProfile counts a coroutine once a resume).
    link = calls(Link.request) + calls(Link.request_many)
    single = stats.get(_key(Conn.pack_command), (0, 0, 0, 0, {}))
    batch_key = _key(Conn.pack_commands)
    in_batches = single[4].get(batch_key, (0,))[0]
    return float(link + single[1] - in_batches + calls(Conn.pack_commands))


async def command_counts(url: str) -> dict[str, int]:
    """Redis's own count of every command it ran so far, by name."""
    client = aioredis.Redis.from_url(url)
    info = await client.info("commandstats")
    await client.aclose()
    return {name.removeprefix("cmdstat_").upper(): int(v["calls"]) for name, v in info.items()}


# -- the run -------------------------------------------------------------------------


class Presigned:
    """Hub posts signed (RFC 9421, as :class:`clients.transport.Transport` signs) before a
    run, then sent with plain aiohttp like the baseline's.

    The load generator shares the machine's cores with the servers. Signing a request
    (Ed25519, the 13 KB body's digest, the structured headers) and checking the hub's
    receipt cost the SDK client about three times the CPU of a plain post; done inside
    the run, that CPU would be taken from the hub being measured. Envelopes are sealed
    in advance for the same reason. A run lasts seconds, well inside the hub's window
    of ``clock_skew_s`` for a request's ``created`` time, and every nonce is fresh.
    """

    def __init__(self, url: str, sessions: Sequence[aiohttp.ClientSession]) -> None:
        self.url, self.sessions = url, sessions
        self._headers: dict[int, dict[str, str]] = {}  # by id() of the body

    def sign(self, agency: Identity, body: bytes) -> bytes:
        """Sign the post of ``body`` by ``agency`` now; ``body``, to be sent later."""
        self._headers[id(body)] = sign_post(agency, self.url, body) | {"Content-Type": ENVELOPE}
        return body

    async def send(self, c: int, body: bytes) -> object:
        """Post ``body`` (signed by :meth:`sign`) on client ``c``'s connection."""
        headers = self._headers.pop(id(body))
        async with self.sessions[c % CLIENTS].post(self.url, data=body, headers=headers) as resp:
            answer = await resp.read()
            if resp.status != 201:
                raise RuntimeError(f"the hub answered {resp.status}: {answer[:200]!r}")
            return answer

    def batches(self, rig: Rig, bodies: Bodies, quota: int) -> Callable[[int], bytes | None]:
        """``quota`` signed posts per client; ``take(c)`` hands out client ``c``'s."""
        signed = [
            iter([self.sign(rig.agency_of(c), b) for _ in range(quota) if (b := bodies.take(c))])
            for c in range(CLIENTS)
        ]
        return lambda c: next(signed[c], None)


class Rig:
    """Redis, both servers, the channel, the sealed envelopes and 64 client connections."""

    def __init__(self, plan: Plan, folder: Path, redis_server: RedisHandle) -> None:
        self.plan, self.folder, self.redis = plan, folder, redis_server
        suite = Suite.MLKEM768_X25519
        self.admin = Identity.generate("bench-admin", suite=suite)
        self.agencies = [
            Identity.generate(f"bench-{i:02d}", suite=suite) for i in range(plan.readers)
        ]
        self.stack = contextlib.AsyncExitStack()
        self.procs: dict[str, list[Any]] = {}
        self.urls: dict[str, str] = {}
        self.sessions: list[aiohttp.ClientSession] = []

    async def __aenter__(self) -> Rig:
        save_card(self.folder / "admin.card", self.admin.card)
        for kind in ("hub", "bare"):
            self.procs[kind], self.urls[kind] = await start_server(
                kind, self.redis.url, self.folder, self.plan.workers
            )
            self.stack.callback(stop_server, self.procs[kind])
        enter = self.stack.enter_async_context
        for _ in range(CLIENTS):
            self.sessions.append(await enter(aiohttp.ClientSession()))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stack.aclose()

    async def seal(self) -> Bodies:
        """Register the agencies, create the channel, seal every envelope of the run."""
        async with HubClient(self.urls["hub"], self.admin) as client:
            for agency in self.agencies:
                await client.register_agency(agency.card)
            members = {str(a.agency): {"post", "read"} for a in self.agencies}
            roster = await client.create_channel(
                CHANNEL, ceiling="VS-NfD", retention_days=30, members=members
            )
        cards = [card.serialize() for card in roster.reader_cards()]
        plan = self.plan
        total = plan.rounds * CLIENTS * plan.quota() + plan.live_notes + plan.profile_posts
        total += plan.warmup + CLIENTS
        progress(f"sealing {total:,} envelopes for {len(cards)} readers ...")
        return Bodies(seal_pools(self.agencies, cards, total))

    def pids(self, server: str) -> Pids:
        """The processes whose CPU time a run reports."""
        workers = tuple(p.pid for p in self.procs[server])
        return {server: workers, "redis": self.redis.pid, "loadgen": os.getpid()}

    def agency_of(self, c: int) -> Identity:
        """The agency client ``c`` posts as (its envelopes are that agency's)."""
        return self.agencies[c % len(self.agencies)]

    def required_checks(self, body: bytes) -> tuple[Step, ...]:
        """The checks every post needs (:func:`bench._floor.required_checks`), on ``body``."""
        url = f"{self.urls['hub']}/v1/channels/{CHANNEL}/notes"
        sender = self.agency_of(0)
        headers = sign_post(sender, url, body)
        log_key = keys.logkey.LogKey.generate("bench")
        audit = (
            "audit: the note-accepted record and its leaf hash (decision 6)",
            lambda envelope, digest: hub.events.note_accepted(envelope, digest, now_ms()),
        )
        steps = required_checks(
            body=body, headers=headers, url=url, card=sender.card, log_key=log_key, also=[audit]
        )
        return tuple(steps)

    def presigned(self) -> Presigned:
        """Hub posts whose request signatures are made before the clock starts."""
        return Presigned(f"{self.urls['hub']}/v1/channels/{CHANNEL}/notes", self.sessions)

    def bare_post(self, stream: str) -> Send:
        """Client ``c`` posts the bytes to the bare endpoint with plain aiohttp."""
        url = f"{self.urls['bare']}/bare/{stream}"

        async def post(c: int, body: bytes) -> object:
            session = self.sessions[c % CLIENTS]
            async with session.post(url, data=body, headers={"Content-Type": ENVELOPE}) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"bare endpoint answered {resp.status}")
                return msgpack.unpackb(await resp.read())

        return post


async def measure(rig: Rig) -> str:
    """Throughput, latency, profile; the report."""
    plan, bodies = rig.plan, await rig.seal()
    live = [bodies.take(i % CLIENTS) or b"" for i in range(plan.live_notes)]
    sample = [bodies.take(c) or b"" for c in range(CLIENTS)]
    progress("the required checks, each alone ...")
    checks = rig.required_checks(sample[0])
    runs: list[Throughput] = []
    for r in range(plan.rounds):
        progress(f"throughput, round {r + 1} of {plan.rounds} ...")
        bare = rig.bare_post("post")
        runs.append(await throughput("bare", bare, lambda c: sample[c], plan, rig.pids("bare")))
        presigned = rig.presigned()
        take = presigned.batches(rig, bodies, plan.quota())
        runs.append(await throughput("hub", presigned.send, take, plan, rig.pids("hub")))
    progress(f"latency, {plan.rate}/s to {plan.subscribers} subscribers ...")
    lat = [await latency("bare", rig.bare_post("live"), live, rig)]
    presigned = rig.presigned()
    lat.append(
        await latency(
            "hub",
            presigned.send,
            [presigned.sign(rig.agency_of(i % CLIENTS), body) for i, body in enumerate(live)],
            rig,
        )
    )
    progress("the latency goal's bytes over raw loopback sockets ...")
    transfers = [
        await transfer(
            sockets=plan.subscribers,
            rate=plan.rate,
            size=len(live[0]),
            seconds=plan.live_s,
            per_write=per_write,
        )
        for per_write in (1, 8)
    ]
    progress("profile of the hub's post path ...")
    profile = await profile_pass(rig, bodies)
    return report(plan, runs, lat, profile, len(live[0]), checks, transfers)


async def profile_pass(rig: Rig, bodies: Bodies) -> str:
    """cProfile the hub process over ``profile_posts`` posts (SIGUSR1 .. SIGUSR2)."""
    workers = [p.pid for p in rig.procs["hub"]]
    paths = [rig.folder / f"hub-{pid}.prof" for pid in workers]
    presigned = rig.presigned()
    take = presigned.batches(rig, bodies, math.ceil(rig.plan.profile_posts / CLIENTS))
    before = await command_counts(rig.redis.url)
    meter = CpuMeter(rig.pids("hub"))
    for pid in workers:
        os.kill(pid, signal.SIGUSR1)
    meter.start()
    done, errors, _, _ = await closed_loop(presigned.send, take, rig.plan.profile_posts, 60)
    meter.stop()
    for pid in workers:
        os.kill(pid, signal.SIGUSR2)
    for _ in range(100):
        if all(path.exists() for path in paths):
            break
        await asyncio.sleep(0.1)
    stats = pstats.Stats(*map(str, paths))
    if rig.plan.profile_out is not None:
        stats.dump_stats(rig.plan.profile_out)
    after = await command_counts(rig.redis.url)
    commands = {name: n - before.get(name, 0) for name, n in after.items() if name != "INFO"}
    cpu_us = 1e6 * meter.used["hub"] / max(done, 1)
    head = f"{done:,} posts by {CLIENTS} clients, {len(errors)} errors.\n\n"
    return head + profile_report(stats, max(done, 1), cpu_us, commands)


# -- report ------------------------------------------------------------------------


def throughput_section(runs: Sequence[Throughput]) -> str:
    """Every run, then the verdict on the totals."""
    rows = [
        [
            r.name,
            f"{r.done:,}",
            str(len(r.errors)),
            f"{r.rate:,.0f}",
            f"{r.latency.p50:.1f} / {r.latency.p99:.1f}",
            f"{r.server_us:,.0f}",
            r.cpu.describe(),
        ]
        for r in runs
    ]
    headers = ["run", "posts", "errors", "posts/s", "p50 / p99 ms", "server CPU µs/post"]
    table = md_table([*headers, "cores used"], rows)

    def total(name: str) -> tuple[float, float]:
        mine = [r for r in runs if r.name == name]
        done, cpu = sum(r.done for r in mine), sum(r.cpu.used[name] for r in mine)
        return done / sum(r.elapsed_s for r in mine), 1e6 * cpu / max(done, 1)

    (bare, bare_us), (hub_rate, hub_us) = total("bare"), total("hub")
    share = hub_rate / max(bare, 1e-9)
    met = "MET" if share >= THROUGHPUT_GOAL else "NOT MET"
    errors = [f"\nfirst error of a {r.name} run: {r.errors[0]}" for r in runs if r.errors]
    return (
        f"{table}\n\n**Goal: hub >= {THROUGHPUT_GOAL:.0%} of the baseline: {met}** "
        f"(hub {hub_rate:,.0f} posts/s = {share:.0%} of bare {bare:,.0f} posts/s; server "
        f"CPU per post {hub_us:,.0f} µs against {bare_us:,.0f} µs, {hub_us / bare_us:.1f}x)"
        + "".join(errors[:2])
    )


def _bare_us(runs: Sequence[Throughput]) -> float:
    bare = [r for r in runs if r.name == "bare"]
    return 1e6 * sum(r.cpu.used["bare"] for r in bare) / max(sum(r.done for r in bare), 1)


def budget_of(runs: Sequence[Throughput], checks: Sequence[Step]) -> Budget:
    """The throughput goal's budget per post, from this run's figures."""
    bare = [r for r in runs if r.name == "bare"]
    hubs = [r for r in runs if r.name == "hub"]
    hub_done = max(sum(r.done for r in hubs), 1)

    def per_hub_post(name: str) -> float:
        return 1e6 * sum(r.cpu.used[name] for r in hubs) / hub_done

    return Budget(
        cores=available_cores(),
        goal=THROUGHPUT_GOAL,
        bare_rate=sum(r.done for r in bare) / max(sum(r.elapsed_s for r in bare), 1e-9),
        bare_us=_bare_us(runs),
        loadgen_us=per_hub_post("loadgen"),
        redis_us=per_hub_post("redis"),
        checks=tuple(checks),
        measured_us=per_hub_post("hub"),
    )


def budget_section(budget: Budget) -> str:
    """What 60 % of this run's bare rate leaves the hub per post, against its floor."""
    rows = [
        [
            f"{budget.cores} cores at {budget.goal:.0%} of bare "
            f"({budget.goal * budget.bare_rate:,.0f} posts/s)",
            f"{budget.machine_us:,.0f}",
        ],
        ["  less the load generator, per hub post", f"-{budget.loadgen_us:,.0f}"],
        ["  less Redis, per hub post", f"-{budget.redis_us:,.0f}"],
        ["**budget left for the hub**", f"**{budget.hub_us:,.0f}**"],
        ["the bare endpoint's own work (aiohttp, XADD), per post", f"{budget.bare_us:,.0f}"],
        *([f"  + {s.name}", f"{s.us:,.1f}"] for s in budget.checks),
        [
            "**floor: the bare endpoint's work + the required checks**",
            f"**{budget.floor_us:,.0f}**",
        ],
        ["the hub measured in these runs, per post", f"{budget.measured_us:,.0f}"],
        ["  of which beyond its floor", f"{budget.beyond_floor_us:,.0f}"],
    ]
    return (
        md_table(["CPU per post", "µs"], rows)
        + f"\n\n**Verdict: {budget.verdict()}.** (Each check timed alone in the load "
        "generator's process before the runs: the best of 5 loops of 200 calls.)"
    )


def fan_out_of(
    runs: Sequence[Latency], plan: Plan, budget: Budget, transfers: Sequence[Transfer]
) -> FanOut:
    """The latency goal's load priced three ways, from this run's figures."""
    bare = next(r for r in runs if r.name == "bare")
    posts = budget.bare_us * bare.sent / 1e6  # the bare server's CPU for its posts
    spent = bare.cpu.used["bare"] - posts + bare.cpu.used["subscribers"]
    return FanOut(
        cores=available_cores(),
        rate=plan.rate,
        subscribers=plan.subscribers,
        frame_us=1e6 * spent / max(bare.delivery.n, 1),
        post_us=budget.floor_us + budget.loadgen_us + budget.redis_us,
        transfers=tuple(transfers),
    )


def fan_out_section(fan_out: FanOut, size: int) -> str:
    """What the latency goal's load takes of the machine, at the least."""
    rows = [
        [
            f"{fan_out.frames_per_s:,} frames/s at the bare run's {fan_out.frame_us:.1f} µs "
            "per delivered frame (its server less its posts, plus the subscriber process)",
            f"{fan_out.bare_cores:.2f}",
        ],
        *(
            [
                f"the same bytes over raw loopback sockets, {t.per_write} note(s) per write "
                f"(sender {t.sender_cores:.2f} + receiver {t.receiver_cores:.2f})",
                f"{t.cores:.2f}",
            ]
            for t in fan_out.transfers
        ),
        [
            f"posting {fan_out.rate:,} notes/s at the floor, with the load generator and "
            f"Redis ({fan_out.post_us:,.0f} µs per post)",
            f"{fan_out.post_cores:.2f}",
        ],
    ]
    return (
        md_table([f"the goal's load ({size:,}-byte notes)", "cores"], rows) + "\n\n"
        f"**Verdict: {fan_out.verdict()}.** Batching notes into fewer writes costs "
        "latency too: at this rate, 8 notes per write hold the first of them back "
        f"{7_000 / fan_out.rate:.0f} ms."
    )


def latency_section(runs: Sequence[Latency], plan: Plan) -> str:
    """Both runs, then the verdict on the hub's."""
    rows = [
        [
            r.name,
            f"{r.sent:,} at {r.achieved:,.0f}/s",
            f"{r.delivery.n:,} / {r.expected:,}",
            f"{r.delivery.p50:.1f}",
            f"{r.delivery.p99:.1f}",
            f"{r.delivery.max:.1f}",
            str(r.errors),
            r.cpu.describe(),
        ]
        for r in runs
    ]
    headers = ["run", "notes sent", "delivered", "p50 ms", "p99 ms", "max ms", "failed posts"]
    table = md_table([*headers, "cores used"], rows)
    hub_run = runs[-1]
    complete = hub_run.delivery.n == hub_run.expected == plan.live_notes * plan.subscribers
    met = "MET" if hub_run.delivery.p99 < P99_GOAL_MS and complete else "NOT MET"
    return (
        f"{table}\n\n**Goal: hub p99 < {P99_GOAL_MS:.0f} ms at {plan.rate:,} notes/s to "
        f"{plan.subscribers} subscribers, every note delivered: {met}** (a note that was "
        "never sent or never arrived counts against the goal but not in the percentiles)"
    )


def report(
    plan: Plan,
    runs: Sequence[Throughput],
    lat: Sequence[Latency],
    profile: str,
    size: int,
    checks: Sequence[Step],
    transfers: Sequence[Transfer],
) -> str:
    """The whole report, Markdown."""
    command = " ".join(["bench/hub.py", *sys.argv[1:]])
    budget = budget_of(runs, checks)
    return "\n".join(
        [
            f"# Hub benchmark: `{command}`\n",
            *machine_lines(),
            f"- layout: hub and bare server each as {plan.workers} process(es) on one port, "
            "on one embedded Redis (appendfsync everysec); the load generator in the main "
            "process, hub requests signed before each run; the subscribers in one more "
            "process. All of them share the machine's cores.",
            f"- channel: {plan.readers} agencies that post and read, hybrid suite; a 1 KB "
            f"note sealed for its readers is a {size:,}-byte envelope.",
            f"\n## Throughput: {CLIENTS} clients, closed loop, up to {plan.posts:,} posts or "
            f"{plan.run_s:g} s per run after {plan.warmup} warm-up posts\n",
            throughput_section(runs),
            "\n### What the throughput goal leaves the hub on this machine\n",
            budget_section(budget),
            f"\n## Post -> delivery latency: {plan.rate:,} notes/s for {plan.live_s:g} s to "
            f"{plan.subscribers} WebSocket subscribers, at most {IN_FLIGHT} posts in flight\n",
            latency_section(lat, plan),
            "\n### What the latency goal's load takes of this machine, at the least\n",
            fan_out_section(fan_out_of(lat, plan, budget, transfers), size),
            "\n## Where the hub's post path spends its CPU (cProfile of the hub process)\n",
            profile,
        ]
    )


# -- main ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Plan:
    """The command line, as a :class:`Plan`."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (< 60 s)")
    parser.add_argument("--tiny", action="store_true", help="tiniest counts (smoke test)")
    parser.add_argument("--rate", type=int, help="notes/s of the latency runs (1-2000)")
    parser.add_argument("--readers", type=int, help="agencies in the channel (1-30)")
    parser.add_argument("--profile-out", type=Path, help="also keep the hub's raw profile here")
    parser.add_argument(
        "--workers", type=int, help="processes per server, hub and bare alike (1-8; default 2)"
    )
    args = parser.parse_args(argv)
    plan = TINY if args.tiny else QUICK if args.quick else FULL
    plan = replace(plan, profile_out=args.profile_out)
    if args.workers is not None:
        if not 0 < args.workers <= 8:
            parser.error("--workers must be 1-8")
        plan = replace(plan, workers=args.workers)
    if args.rate is not None:
        if not 0 < args.rate <= 2000:
            parser.error("--rate must be 1-2000")
        plan = replace(plan, rate=args.rate)
    if args.readers is not None:
        if not 0 < args.readers <= 30:
            parser.error("--readers must be 1-30")
        plan = replace(plan, readers=args.readers)
    return plan


async def run(plan: Plan) -> str:
    """Start Redis and both servers, measure, stop everything."""
    with tempfile.TemporaryDirectory(prefix="siko-bench-hub-") as tmp:
        async with embedded_redis(Path(tmp) / "redis") as redis_server:
            async with Rig(plan, Path(tmp), redis_server) as rig:
                return await measure(rig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the report on stdout."""
    machine_lines()  # the machine as the run starts
    print(asyncio.run(run(parse_args(argv))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
