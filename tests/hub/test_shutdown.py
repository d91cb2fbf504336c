"""Graceful shutdown: subscribers are told to reconnect, requests in flight finish.

Two ways to stop a hub: in this process, ``AppRunner.cleanup()``, which closes the
listening socket, runs the hub's ``on_shutdown`` (503 from now on, a ``{"t":
"reconnect"}`` frame and close code 1012 to every subscriber), waits up to
``shutdown_grace_s`` for requests in flight, then releases Redis; and for real, SIGTERM
to a ``python -m hub`` child process, which runs ``on_shutdown`` first and keeps
listening (answering 503) for ``hub.app.DRAIN_S`` before that cleanup.

A post is held in flight deterministically by pausing Redis' writes (``CLIENT PAUSE
<ms> WRITE``): the hub has accepted the request and waits for Redis when the shutdown
begins, and Redis resumes by itself when the pause ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import STDOUT, Popen
from typing import Any, cast

import aiohttp
import msgpack
import pytest
import redis

from clients.errors import HubUnreachable, ShuttingDown
from clients.sdk import HubClient, Posted
from clients.subscription import Delivery
from clients.transport import Transport
from hub import keyspace
from hub.live import CLOSE_SERVICE_RESTART
from keys import MessageId, Note, seal
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    MARKS,
    POLICE,
    PROSECUTOR,
    RunningHub,
    hub_settings,
    identity,
    make_world,
    start_hub,
)

PAUSE_MS = 1200
STEP_S = 10.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def stoppable(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> AsyncIterator[RunningHub]:
    """A hub with the shared channel that the test itself shuts down."""
    running = await start_hub(hub_settings(tmp_path, redis_url))
    await make_world(running)
    yield running
    for client in running.clients:
        await client.__aexit__(None, None, None)
    running.clients.clear()
    if running.runner.server is not None:
        await running.runner.cleanup()


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), STEP_S)
    assert message.type is aiohttp.WSMsgType.BINARY, message
    frame = msgpack.unpackb(message.data, raw=False)
    assert isinstance(frame, dict)
    return frame


async def sealed(hub: RunningHub, agency: str, text: str) -> bytes:
    client = await hub.client(agency)
    roster = await client.roster(CHANNEL)
    return seal(
        Note(text),
        sender=client.identity,
        channel=CHANNEL,
        recipients=roster.reader_cards(),
        markings=MARKS,
        message_id=MessageId.new(),
    )


async def until(condition: Any, timeout: float = STEP_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def readyz(base_url: str) -> int | str:
    """The status of GET /readyz, or "refused" when no connection is accepted."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(f"{base_url}/readyz") as response:
                return response.status
        except aiohttp.ClientConnectionError:
            return "refused"


async def hold_a_post_in_flight(
    hub: RunningHub, redis_db: redis.Redis
) -> tuple[asyncio.Task[Posted], bytes]:
    """A post that the hub has started handling and that waits for Redis."""
    envelope = await sealed(hub, POLICE, "kurz vor Feierabend")
    police = await hub.client(POLICE)
    server = hub.runner.server
    assert server is not None
    seen = server.requests_count
    redis_db.client_pause(PAUSE_MS, all=False)  # CLIENT PAUSE <ms> WRITE
    post = asyncio.create_task(police.post_envelope(CHANNEL, envelope))
    await until(lambda: server.requests_count > seen)
    await asyncio.sleep(0.1)  # past the shutdown guard, waiting on the paused write
    assert not post.done()
    return post, envelope


async def test_subscribers_are_told_to_reconnect_with_close_code_1012(
    stoppable: RunningHub,
) -> None:
    prosecutor = await stoppable.client(PROSECUTOR)
    police = await stoppable.client(POLICE)
    posted = await police.post_note(CHANNEL, Note("vorher"), MARKS)
    raw = await prosecutor.transport.open_websocket(
        "/v1/subscribe", params=[("cursor", f"{CHANNEL}:0-0")]
    )
    subscription = police.subscribe({CHANNEL: "0-0"})
    try:
        assert (await next_frame(raw))["id"] == posted.stream_id
        assert await next_frame(raw) == {"t": "live", "ch": CHANNEL}
        delivery: Delivery = await asyncio.wait_for(anext(subscription), STEP_S)
        assert delivery.stream_id == posted.stream_id
        following = asyncio.ensure_future(anext(subscription))

        shutdown = asyncio.create_task(stoppable.runner.cleanup())
        frame = await next_frame(raw)
        assert frame["t"] == "reconnect"
        assert "reconnect" in frame["detail"] and "cursor" in frame["detail"]
        closing = await asyncio.wait_for(raw.receive(), STEP_S)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert closing.data == CLOSE_SERVICE_RESTART == 1012
        await asyncio.wait_for(shutdown, STEP_S)

        # the SDK subscription took the hint: it dropped the socket and is reconnecting
        await until(lambda: subscription.reconnects >= 1)
        assert not following.done()
        following.cancel()
    finally:
        await raw.close()
        await subscription.close()


async def test_a_post_in_flight_finishes_during_shutdown(
    stoppable: RunningHub, redis_db: redis.Redis, tmp_path: Path, redis_url: str
) -> None:
    post, envelope = await hold_a_post_in_flight(stoppable, redis_db)
    shutdown = asyncio.create_task(stoppable.runner.cleanup())
    await asyncio.sleep(0.2)
    assert not shutdown.done(), "the hub waits for the post"
    # no new work is taken on meanwhile
    async with Transport(stoppable.base_url, identity(POLICE), retries=0) as late:
        with pytest.raises((HubUnreachable, ShuttingDown)):
            await late.request("GET", f"/v1/channels/{CHANNEL}")

    posted = await asyncio.wait_for(post, STEP_S)
    assert not posted.duplicate and posted.channel == CHANNEL
    await asyncio.wait_for(shutdown, STEP_S)

    # the accepted note is stored: a fresh hub on the same Redis pages it
    successor = await start_hub(hub_settings(tmp_path, redis_url))
    try:
        reader = await successor.client(PROSECUTOR)
        page = await reader.page_notes(CHANNEL)
        assert [n.stream_id for n in page.notes] == [posted.stream_id]
        assert page.notes[0].envelope == envelope
    finally:
        await successor.stop()


async def test_once_shutting_down_the_hub_answers_503_and_readyz_says_so(
    stoppable: RunningHub,
) -> None:
    """What a client sees from a hub whose ``on_shutdown`` ran while it still listens."""
    assert await readyz(stoppable.base_url) == 200
    await stoppable.app.shutdown()  # the hub's on_shutdown hooks, listener still open
    assert await readyz(stoppable.base_url) == 503
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stoppable.base_url}/healthz") as response:
            assert response.status == 200
    async with Transport(stoppable.base_url, identity(POLICE), retries=0) as transport:
        with pytest.raises(ShuttingDown) as refused:
            await transport.request("GET", f"/v1/channels/{CHANNEL}")
    assert refused.value.status == 503
    assert refused.value.problem_type == "urn:siko:problem:shutting-down"
    await stoppable.runner.cleanup()


# -- the real process: SIGTERM to `python -m hub` ------------------------------------------


@contextlib.asynccontextmanager
async def hub_process(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[Popen[bytes], str]]:
    """``python -m hub`` serving on loopback against the session Redis, until SIGTERM."""
    settings = hub_settings(tmp_path, redis_url)
    env = os.environ | {
        "SIKO_HOST": "127.0.0.1",
        "SIKO_PORT": str(settings.port),
        "SIKO_REDIS_URL": redis_url,
        "SIKO_DATA_DIR": str(settings.data_dir),
        "SIKO_ADMIN_CARDS": str(settings.admin_cards[0]),
        "SIKO_SHUTDOWN_GRACE_S": "5",
        "SIKO_LOG_LEVEL": "WARNING",
    }
    env.pop("SIKO_CONFIG", None)
    log = (tmp_path / "hub.log").open("wb")
    process = Popen([sys.executable, "-m", "hub"], cwd=REPO, env=env, stdout=log, stderr=STDOUT)
    base_url = f"http://127.0.0.1:{settings.port}"
    try:
        async with asyncio.timeout(STEP_S):
            while await readyz(base_url) != 200:
                assert process.poll() is None, (tmp_path / "hub.log").read_text()
                await asyncio.sleep(0.05)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STEP_S)
        log.close()


async def exit_status(process: Popen[bytes]) -> int:
    async with asyncio.timeout(STEP_S):
        while (status := process.poll()) is None:
            await asyncio.sleep(0.02)
    return status


async def world_at(base_url: str, stack: contextlib.AsyncExitStack) -> dict[str, HubClient]:
    """The agencies and the shared channel (as conftest's make_world) on any hub URL."""
    agency = {
        name: await stack.enter_async_context(HubClient(base_url, identity(name)))
        for name in (ADMIN, POLICE, PROSECUTOR)
    }
    for name in (POLICE, PROSECUTOR, CITY):
        await agency[ADMIN].register_agency(identity(name).card)
    await agency[ADMIN].create_channel(
        CHANNEL,
        ceiling="VS-NfD",
        retention_days=30,
        members={POLICE: {"post", "read"}, PROSECUTOR: {"read"}, CITY: {"post", "read"}},
    )
    return agency


async def subscribed_while_posting(
    agency: dict[str, HubClient],
    stack: contextlib.AsyncExitStack,
    redis_db: redis.Redis,
    text: str,
) -> tuple[aiohttp.ClientWebSocketResponse, asyncio.Task[Posted]]:
    """The prosecutor subscribed and live; a police post held in the hub by paused Redis."""
    ws = await agency[PROSECUTOR].transport.open_websocket(
        "/v1/subscribe", params=[("cursor", f"{CHANNEL}:0-0")]
    )
    stack.push_async_callback(ws.close)
    assert await next_frame(ws) == {"t": "live", "ch": CHANNEL}
    roster = await agency[POLICE].roster(CHANNEL)
    envelope = seal(
        Note(text),
        sender=identity(POLICE),
        channel=CHANNEL,
        recipients=roster.reader_cards(),
        markings=MARKS,
    )
    redis_db.client_pause(PAUSE_MS, all=False)
    post = asyncio.create_task(agency[POLICE].post_envelope(CHANNEL, envelope))
    await asyncio.sleep(0.3)  # the hub holds it, waiting for the paused write
    assert not post.done()
    return ws, post


async def test_sigterm_finishes_the_post_in_flight_and_tells_subscribers(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    async with hub_process(tmp_path, redis_url) as (process, base_url):
        async with contextlib.AsyncExitStack() as stack:
            agency = await world_at(base_url, stack)
            ws, post = await subscribed_while_posting(agency, stack, redis_db, "letzte Meldung")

            process.send_signal(signal.SIGTERM)
            assert (await next_frame(ws))["t"] == "reconnect"
            closing = await asyncio.wait_for(ws.receive(), STEP_S)
            assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1012)
            posted = await asyncio.wait_for(post, STEP_S)
            assert not posted.duplicate
            assert await exit_status(process) == 0
    stored = cast(list[tuple[bytes, object]], redis_db.xrange(keyspace.channel_notes(CHANNEL)))
    assert [entry_id.decode() for entry_id, _ in stored] == [posted.stream_id]


async def test_readyz_answers_503_while_the_hub_shuts_down(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    """A draining hub still listens: probes and new requests get 503, not a refusal.

    (aiohttp's ``web.run_app`` closed the listener before ``on_shutdown`` ran, so during
    the grace period a load balancer saw refused connections and no draining signal;
    hub/app.py now says "shutting down" first and keeps listening for ``DRAIN_S``.)
    """
    async with hub_process(tmp_path, redis_url) as (process, base_url):
        async with contextlib.AsyncExitStack() as stack:
            agency = await world_at(base_url, stack)
            ws, post = await subscribed_while_posting(agency, stack, redis_db, "im Flug")

            process.send_signal(signal.SIGTERM)
            # the reconnect frame shows that the hub's on_shutdown has run: it is
            # shutting down, and still finishing the post
            assert (await next_frame(ws))["t"] == "reconnect"
            status = await readyz(base_url)
            assert not post.done(), "the hub is still finishing the post"
            await asyncio.wait_for(post, STEP_S)
            assert await exit_status(process) == 0
    assert status == 503, f"/readyz during shutdown: {status}"
