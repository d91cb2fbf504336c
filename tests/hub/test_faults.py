"""Faults: a dropped WebSocket, a hub restart, a Redis crash (kill -9) and restart.

Every test starts its own redis-server (``appendfsync always``, append-only file) in
``tmp_path`` and its own hub(s) on 127.0.0.1, so it can kill and restart them freely.

The property checked everywhere: every post that got a 2xx answer is in the stream and is
delivered exactly once (by message id) to every subscriber, in stream order, however the
connection, the hub or Redis failed meanwhile. A post that failed during the fault is
posted again afterwards with the same envelope (same message id), as a client would; that
retry must succeed and must not make a second copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis

from clients.errors import HubUnreachable, Unavailable
from clients.sdk import HubClient
from clients.subscription import Delivery, Subscription
from clients.transport import Transport
from hub import keyspace
from hub.embedded import EmbeddedRedis
from hub.live import FEEDS
from keys import (
    MessageId,
    Note,
    peek_header_unverified,
    seal,
)
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

STEP_S = 15.0  # the longest any single expected event may take


# -- helpers ----------------------------------------------------------------------------


async def until(condition: Callable[[], bool], what: str, timeout: float = STEP_S) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def readyz(base_url: str) -> int | None:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(f"{base_url}/readyz") as response:
                return response.status
        except aiohttp.ClientConnectionError:
            return None


async def wait_ready(base_url: str) -> None:
    async with asyncio.timeout(STEP_S):
        while await readyz(base_url) != 200:
            await asyncio.sleep(0.05)


async def seal_many(client: HubClient, count: int, label: str) -> list[tuple[str, bytes]]:
    """``count`` envelopes for the channel's current readers, with their message ids."""
    roster = await client.roster(CHANNEL)
    sealed = []
    for i in range(count):
        mid = MessageId.new()
        envelope = seal(
            Note(f"{label} {i}"),
            sender=client.identity,
            channel=CHANNEL,
            recipients=roster.reader_cards(),
            markings=MARKS,
            message_id=mid,
        )
        sealed.append((str(mid), envelope))
    return sealed


@dataclass
class Ledger:
    """What the posters tried and what the hub acknowledged (2xx) for each message id."""

    envelopes: dict[str, bytes] = field(default_factory=dict)
    acked: dict[str, str] = field(default_factory=dict)  # message id -> stream id
    failed: dict[str, BaseException] = field(default_factory=dict)
    duplicates: int = 0

    def has_acked(self, count: int) -> bool:
        return len(self.acked) >= count

    async def post(self, client: HubClient, mid: str, envelope: bytes) -> None:
        self.envelopes[mid] = envelope
        try:
            posted = await client.post_envelope(CHANNEL, envelope)
        except (Unavailable, HubUnreachable) as exc:  # the transport's retries ran out
            self.failed[mid] = exc
            return
        assert posted.message_id == mid
        if mid in self.acked:
            assert self.acked[mid] == posted.stream_id, "a retry moved the note"
        self.acked[mid] = posted.stream_id
        self.failed.pop(mid, None)
        self.duplicates += posted.duplicate

    async def post_all(
        self,
        client: HubClient,
        sealed: list[tuple[str, bytes]],
        *,
        concurrency: int,
        limit_s: float,
    ) -> None:
        """Post ``sealed`` with ``concurrency`` workers; stop starting posts after ``limit_s``."""
        pending = list(reversed(sealed))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s

        async def worker() -> None:
            while pending and loop.time() < deadline:
                mid, envelope = pending.pop()
                await self.post(client, mid, envelope)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def post_failed_again(self, client: HubClient) -> None:
        """Post every failed note again, as its client would once the hub answers."""
        for mid in list(self.failed):
            await self.post(client, mid, self.envelopes[mid])
        assert not self.failed, f"posts still failing after recovery: {self.failed}"
        assert self.acked.keys() == self.envelopes.keys()


class Collector:
    """Iterates a subscription in the background and keeps every delivery."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.deliveries: list[Delivery] = []
        self.mids: list[str] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for delivery in self.subscription:
            self.deliveries.append(delivery)
            self.mids.append(str(peek_header_unverified(delivery.envelope).message_id))

    async def wait_for(self, mids: set[str]) -> None:
        def done() -> bool:
            if self.task.done():
                self.task.result()  # raises what ended the iteration
                raise AssertionError("the subscription ended")
            return mids <= set(self.mids)

        await until(done, f"{len(mids - set(self.mids))} of {len(mids)} notes", timeout=30)
        await asyncio.sleep(0.2)  # anything arriving late would show as a duplicate below

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.subscription.close()

    def assert_exactly_once(self, acked: dict[str, str]) -> None:
        repeated = [mid for mid, n in Counter(self.mids).items() if n > 1]
        assert not repeated, f"delivered more than once: {repeated}"
        assert set(self.mids) == set(acked), "delivered notes differ from acknowledged ones"
        assert {m: d.stream_id for m, d in zip(self.mids, self.deliveries, strict=True)} == acked
        ids = [tuple(map(int, d.stream_id.split("-"))) for d in self.deliveries]
        assert ids == sorted(ids), "deliveries out of stream order"


def all_grew(collectors: list[Collector], counts: list[int]) -> bool:
    """True when every collector has more deliveries than its count."""
    return all(len(c.deliveries) > n for c, n in zip(collectors, counts, strict=True))


async def assert_stream_holds_exactly(client: HubClient, acked: dict[str, str]) -> None:
    """The channel's stream has every acknowledged note once, and nothing else."""
    stored: list[tuple[str, str]] = []
    after = "0-0"
    while True:
        page = await client.page_notes(CHANNEL, after=after, limit=500)
        stored += [
            (str(peek_header_unverified(n.envelope).message_id), n.stream_id) for n in page.notes
        ]
        if not page.notes:
            break
        after = page.next
    assert len(stored) == len({mid for mid, _ in stored}), "a message id is stored twice"
    assert dict(stored) == acked


class Proxy:
    """A TCP relay on 127.0.0.1 whose connections the test cuts, as a network drop would."""

    def __init__(self) -> None:
        self.target_port = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> int:
        """Abort every relayed connection at once (both sides see a reset)."""
        links = list(self._links)
        for down, up in links:
            down.transport.abort()
            up.transport.abort()
        return len(links)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.cut()
        await asyncio.sleep(0.05)

    async def _relay(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            down_w.transport.abort()
            return
        link = (down_w, up_w)
        self._links.add(link)
        try:
            await asyncio.gather(_pipe(down_r, up_w), _pipe(up_r, down_w))
        finally:
            self._links.discard(link)
            down_w.transport.abort()
            up_w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


@contextlib.asynccontextmanager
async def clients(base_url: str, *agencies: str) -> AsyncIterator[dict[str, HubClient]]:
    """SDK clients that outlive any one hub process (the hub's own ones are closed by it)."""
    async with contextlib.AsyncExitStack() as stack:
        yield {
            agency: await stack.enter_async_context(HubClient(base_url, identity(agency)))
            for agency in agencies
        }


# -- a dropped WebSocket ----------------------------------------------------------------


async def test_subscribers_resume_after_dropped_connections(
    tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    proxy = Proxy()
    await proxy.start()
    settings = hub_settings(tmp_path, own_redis.url, public_url=proxy.url)
    proxy.target_port = settings.port
    running = await start_hub(settings)
    running.base_url = proxy.url  # every client goes through the proxy
    collectors: list[Collector] = []
    try:
        await make_world(running)
        async with clients(proxy.url, POLICE, PROSECUTOR, CITY) as agency:
            collectors = [
                Collector(agency[PROSECUTOR].subscribe({CHANNEL: "0-0"})),
                Collector(agency[CITY].subscribe({CHANNEL: "0-0"})),
            ]
            ledger = Ledger()
            sealed = await seal_many(agency[POLICE], 150, "drop")
            posting = asyncio.create_task(
                ledger.post_all(agency[POLICE], sealed, concurrency=3, limit_s=30)
            )
            cuts = 0
            seen_at_cut = [0 for _ in collectors]
            for threshold in (20, 60, 100):
                await until(functools.partial(ledger.has_acked, threshold), f"{threshold} posts")
                # every subscriber is connected again and mid-stream (it got a note since
                # the last cut); then drop every connection at once
                fresh = functools.partial(all_grew, collectors, seen_at_cut)
                await until(fresh, "deliveries over fresh connections")
                seen_at_cut = [len(c.deliveries) for c in collectors]
                cuts += proxy.cut()
            await asyncio.wait_for(posting, 40)
            await ledger.post_failed_again(agency[POLICE])

            for collector in collectors:
                await collector.wait_for(set(ledger.acked))
                collector.assert_exactly_once(ledger.acked)
                assert collector.subscription.reconnects >= 3
            await assert_stream_holds_exactly(agency[PROSECUTOR], ledger.acked)
            assert cuts >= 6  # at least both subscribers' sockets, three times
            for collector in collectors:
                await collector.close()
    finally:
        for collector in collectors:
            await collector.close()
        await running.stop()
        await proxy.close()


async def test_a_socket_closed_under_the_subscription_is_reopened(
    tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    """The client's own socket closed mid-stream (not by the subscription): it resumes."""
    running = await start_hub(hub_settings(tmp_path, own_redis.url))
    try:
        await make_world(running)
        police = await running.client(POLICE)
        prosecutor = await running.client(PROSECUTOR)
        ledger = Ledger()
        collector = Collector(prosecutor.subscribe({CHANNEL: "0-0"}))
        for round_ in range(3):
            for mid, envelope in await seal_many(police, 10, f"round {round_}"):
                await ledger.post(police, mid, envelope)
            await collector.wait_for(set(ledger.acked))
            socket = collector.subscription._ws  # the test reaches in to break the socket
            assert socket is not None
            await socket.close()
        for mid, envelope in await seal_many(police, 10, "after"):
            await ledger.post(police, mid, envelope)
        await collector.wait_for(set(ledger.acked))
        collector.assert_exactly_once(ledger.acked)
        assert collector.subscription.reconnects >= 3
        await collector.close()
    finally:
        await running.stop()


# -- a hub restart ----------------------------------------------------------------------


async def test_subscribers_resume_after_a_hub_restart(
    tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    settings = hub_settings(tmp_path, own_redis.url)
    first = await start_hub(settings)
    second: RunningHub | None = None
    collectors: list[Collector] = []
    try:
        await make_world(first)
        async with clients(first.base_url, POLICE, PROSECUTOR, CITY) as agency:
            collectors = [
                Collector(agency[PROSECUTOR].subscribe({CHANNEL: "0-0"})),
                Collector(agency[CITY].subscribe({CHANNEL: "0-0"})),
            ]
            ledger = Ledger()
            sealed = await seal_many(agency[POLICE], 150, "restart")
            posting = asyncio.create_task(
                ledger.post_all(agency[POLICE], sealed, concurrency=3, limit_s=30)
            )
            await until(lambda: len(ledger.acked) >= 40, "40 posts before the restart")
            await until(lambda: all(c.deliveries for c in collectors), "first deliveries")
            await first.stop()  # graceful, as on SIGTERM, while posts continue
            at_restart = len(ledger.acked)
            await asyncio.sleep(random.uniform(0.1, 0.5))  # nobody answers meanwhile
            second = await start_hub(hub_settings(tmp_path, own_redis.url, port=settings.port))
            await asyncio.wait_for(posting, 40)
            await ledger.post_failed_again(agency[POLICE])
            assert len(ledger.acked) > at_restart, "posts continued on the new hub"

            for collector in collectors:
                await collector.wait_for(set(ledger.acked))
                collector.assert_exactly_once(ledger.acked)
                assert collector.subscription.reconnects >= 1
            await assert_stream_holds_exactly(agency[PROSECUTOR], ledger.acked)
            for collector in collectors:
                await collector.close()
    finally:
        for collector in collectors:
            await collector.close()
        if second is not None:
            await second.stop()
        if first.runner.server is not None:
            await first.stop()


# -- a Redis crash and restart ----------------------------------------------------------


async def test_kill_9_of_redis_loses_no_acknowledged_note(
    tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    running = await start_hub(hub_settings(tmp_path, own_redis.url))
    collectors: list[Collector] = []
    try:
        await make_world(running)
        async with clients(running.base_url, POLICE, PROSECUTOR, CITY) as agency:
            # the prosecutor listens throughout; the city office subscribes during the outage
            collectors.append(Collector(agency[PROSECUTOR].subscribe({CHANNEL: "0-0"})))
            await until(lambda: CHANNEL in collectors[0].subscription.live, "a live subscriber")
            ledger = Ledger()
            sealed = await seal_many(agency[POLICE], 300, "crash")
            ((probe_mid, probe_envelope),) = await seal_many(agency[POLICE], 1, "probe")
            posting = asyncio.create_task(
                ledger.post_all(agency[POLICE], sealed, concurrency=3, limit_s=30)
            )
            await until(lambda: len(ledger.acked) >= 60, "60 posts before the crash")
            await own_redis.kill()
            outage_started = asyncio.get_running_loop().time()

            # while Redis is away: 503 with Retry-After, and not ready
            assert await readyz(running.base_url) == 503
            async with Transport(running.base_url, identity(POLICE), retries=0) as probe:
                with pytest.raises(Unavailable) as refused:
                    await probe.request("GET", f"/v1/channels/{CHANNEL}")
                # a post is refused the same way, and is not half-stored: posted again
                # after recovery (below), it is accepted once
                poster = HubClient(running.base_url, identity(POLICE), transport=probe)
                with pytest.raises(Unavailable) as post_refused:
                    await poster.post_envelope(CHANNEL, probe_envelope)
            for error in (refused.value, post_refused.value):
                assert error.status == 503
                assert error.retry_after == 1
                assert error.problem_type == "urn:siko:problem:unavailable"
            ledger.envelopes[probe_mid] = probe_envelope
            ledger.failed[probe_mid] = post_refused.value
            collectors.append(Collector(agency[CITY].subscribe({CHANNEL: "0-0"})))
            await asyncio.sleep(
                max(0.0, 1.2 - (asyncio.get_running_loop().time() - outage_started))
            )

            await own_redis.start()  # same folder, port and password; the AOF brings it back
            await wait_ready(running.base_url)  # the hub recovers by itself
            await asyncio.wait_for(posting, 40)
            await ledger.post_failed_again(agency[POLICE])

            for collector in collectors:
                await collector.wait_for(set(ledger.acked))
                collector.assert_exactly_once(ledger.acked)
            assert collectors[0].subscription.reconnects == 0, "the live socket never dropped"
            await assert_stream_holds_exactly(agency[PROSECUTOR], ledger.acked)
            # and Redis itself has them: the append-only file survived the crash
            with redis.Redis.from_url(own_redis.url) as direct:
                assert direct.xlen(keyspace.channel_notes(CHANNEL)) == len(ledger.acked)
            for collector in collectors:
                await collector.close()
    finally:
        for collector in collectors:
            await collector.close()
        await running.stop()


async def test_a_paused_redis_is_a_503_within_the_timeout_and_the_retry_is_stored_once(
    tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    """Redis stopped (SIGSTOP), not gone: no connection error ever comes, so only a
    timeout can answer. The hub answers a post 503 with Retry-After within the storage
    timeout (5 s) instead of holding it; once Redis runs again, the client's retry of
    the same envelope is stored once."""
    running = await start_hub(hub_settings(tmp_path, own_redis.url))
    with redis.Redis.from_url(own_redis.url) as direct:
        pid = int(direct.info("server")["process_id"])
    try:
        await make_world(running)
        police = await running.client(POLICE)
        first = await police.post_note(CHANNEL, Note("vorher"), MARKS)
        ((mid, envelope),) = await seal_many(police, 1, "paused")
        loop = asyncio.get_running_loop()
        os.kill(pid, signal.SIGSTOP)
        try:
            paused_at = loop.time()
            async with Transport(running.base_url, identity(POLICE), retries=0) as probe:
                poster = HubClient(running.base_url, identity(POLICE), transport=probe)
                with pytest.raises(Unavailable) as refused:
                    await asyncio.wait_for(poster.post_envelope(CHANNEL, envelope), STEP_S)
            waited = loop.time() - paused_at
        finally:
            os.kill(pid, signal.SIGCONT)
        assert waited < 8.0, f"answered after {waited:.1f} s"
        assert refused.value.status == 503 and refused.value.retry_after == 1
        ledger = Ledger(acked={str(first.message_id): first.stream_id})
        ledger.envelopes = {str(first.message_id): b"", mid: envelope}
        ledger.failed[mid] = refused.value
        await wait_ready(running.base_url)
        await ledger.post_failed_again(police)
        assert ledger.duplicates == 0
        await assert_stream_holds_exactly(police, ledger.acked)
    finally:
        await running.stop()


async def test_an_ack_during_a_redis_outage_does_not_end_the_subscription(
    tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    """An ack refused with "unavailable" (Redis away) is transient for the SDK.

    The hub answers the ack with an ``unavailable`` error frame and keeps the socket; the
    subscription must carry on (not raise) and deliver what is posted after recovery.
    """
    running = await start_hub(hub_settings(tmp_path, own_redis.url))
    try:
        await make_world(running)
        police = await running.client(POLICE)
        prosecutor = await running.client(PROSECUTOR)
        await police.post_note(CHANNEL, Note("vorher"), MARKS)
        async with prosecutor.subscribe({CHANNEL: "0-0"}) as subscription:
            first = await asyncio.wait_for(anext(subscription), STEP_S)
            await own_redis.kill()
            await subscription.ack(first)  # the socket is open: the frame goes out
            await asyncio.sleep(0.3)
            await own_redis.start()
            await wait_ready(running.base_url)
            later = await police.post_note(CHANNEL, Note("nachher"), MARKS)
            delivery = await asyncio.wait_for(anext(subscription), STEP_S)
            assert delivery.stream_id == later.stream_id
            assert subscription.unavailable == 1, "the ack was answered 'unavailable'"
            assert subscription.reconnects == 0, "and the socket stayed open"
            # acknowledged again once Redis is back, the position moves
            await subscription.ack(delivery)
            async with asyncio.timeout(STEP_S):
                while (await police.receipts(CHANNEL, later.message_id))["read_by"] != [PROSECUTOR]:
                    await asyncio.sleep(0.02)
    finally:
        await running.stop()


async def test_a_subscriber_that_leaves_while_its_feed_starts_is_forgotten(
    tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    """A socket that ends while its channel's feed cannot start leaves no subscriber.

    Joining a feed registers the subscriber, then waits for the feed to start (which
    needs Redis); a socket closed meanwhile must still unregister it, or every later note
    would be queued for a dead subscriber for the life of the process. To make the feed's
    start fail deterministically, the channel's stream key gets the wrong type (every
    Redis error is "unavailable" to the feed, as an unreachable Redis is).
    """
    running = await start_hub(hub_settings(tmp_path, own_redis.url))
    try:
        await make_world(running)
        admin = await running.client(ADMIN)
        await admin.create_channel(
            "lage-leer", ceiling="VS-NfD", retention_days=30, members={PROSECUTOR: {"read"}}
        )
        with redis.Redis.from_url(own_redis.url) as direct:
            direct.set(keyspace.channel_notes("lage-leer"), "not a stream")
            prosecutor = await running.client(PROSECUTOR)
            ws = await prosecutor.transport.open_websocket(
                "/v1/subscribe", params=[("cursor", "lage-leer:0-0")]
            )
            await asyncio.sleep(0.3)  # the feed keeps failing to start
            feeds = running.app[FEEDS]
            assert feeds.following == {"lage-leer"}
            await ws.close()
            # its only subscriber gone, the feed stops (it never started) and is forgotten
            await until(lambda: not feeds.following, "the feed to be forgotten")
            direct.delete(keyspace.channel_notes("lage-leer"))
    finally:
        await running.stop()
