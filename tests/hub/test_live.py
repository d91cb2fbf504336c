"""Live notes over WebSocket: replay from a cursor, then live, in order, no gap, no duplicate.

Through the SDK's :class:`~clients.subscription.Subscription` and, for the protocol's
details, through raw signed WebSockets (``Transport.open_websocket``) and msgpack frames.
Acks are the agency's signed :class:`~keys.statements.ReadAck` statements, each moving
ack one ``note-acknowledged`` event of the audit log; a refused ack frame or a
subscription ended because the reader lost its right to read is one
``request-refused`` event. Access is re-checked while the socket is open: a reader
removed from the channel or suspended stops receiving at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import aiohttp
import msgpack
import pytest
import redis

from clients.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    NotMember,
    Unauthenticated,
)
from clients.sdk import HubClient, Posted
from clients.subscription import Delivery, Subscription
from clients.transport import Transport
from hub import keyspace
from hub.errors import AgencySuspended
from hub.feeds import Overflow, Subscriber
from hub.live import FEEDS
from hub.state import AUDIT
from keys import (
    Identity,
    Note,
    now_ms,
    peek_header_unverified,
)
from keys.leaf import EventRecord
from keys.statements import ReadAck
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    MARKS,
    POLICE,
    PROSECUTOR,
    RunningHub,
    identity,
)

OTHER = "lage-nrw"
STEP_S = 10.0  # the longest any single expected event may take


def message_id(delivery: Delivery) -> str:
    """The message id in a delivered envelope's header (what clients de-duplicate by)."""
    return str(peek_header_unverified(delivery.envelope).message_id)


def key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


async def take(subscription: Subscription, count: int) -> list[Delivery]:
    """The next ``count`` deliveries, each within :data:`STEP_S`."""
    return [await asyncio.wait_for(anext(subscription), STEP_S) for _ in range(count)]


async def post_many(
    client: HubClient, texts: Sequence[str], *, channel: str = CHANNEL
) -> list[Posted]:
    return [await client.post_note(channel, Note(text), MARKS) for text in texts]


def frame_of(message: aiohttp.WSMessage) -> dict[str, Any]:
    assert message.type is aiohttp.WSMsgType.BINARY, message
    frame = msgpack.unpackb(message.data, raw=False)
    assert isinstance(frame, dict)
    return frame


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return frame_of(await asyncio.wait_for(ws.receive(), STEP_S))


async def send(ws: aiohttp.ClientWebSocketResponse, frame: object) -> None:
    await ws.send_bytes(msgpack.packb(frame, use_bin_type=True))


def cursor(channel: str, stream_id: str) -> list[tuple[str, str]]:
    return [("cursor", f"{channel}:{stream_id}")]


def ack_frame(
    channel: str,
    stream_id: str,
    *,
    signer: Identity | None = None,
    at: int | None = None,
    signed_position: str | None = None,
) -> dict[str, Any]:
    """An ack frame as the SDK sends it: the prosecutor's signed ReadAck.

    ``signer``, ``at`` and ``signed_position`` make forgeries: another agency's key, a
    stale time, a signature over another position than the frame names.
    """
    at = now_ms() if at is None else at
    _, signature = ReadAck.make(
        signer or identity(PROSECUTOR), channel, signed_position or stream_id, at
    )
    return {"t": "ack", "ch": channel, "id": stream_id, "at": at, "sig": signature}


def audit_records(client: redis.Redis) -> list[EventRecord]:
    """Every event record of the audit log, sequenced or still waiting in its inbox."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hget(keyspace.log_cursors(), keyspace.log_inbox())
        pipe.xrange(keyspace.log_inbox())
        pipe.hvals(keyspace.log_records())
        done, inbox, records = pipe.execute()
    waiting = [
        f[b"rec"]
        for entry_id, f in inbox
        if key(entry_id.decode()) > key((done or b"0-0").decode())
    ]
    return [EventRecord.parse(raw) for raw in [*records, *waiting]]


def audit_kinds(client: redis.Redis) -> Counter[str]:
    return Counter(record.kind.value for record in audit_records(client))


def read_positions(client: redis.Redis, channel: str = CHANNEL) -> dict[bytes, bytes]:
    return cast(dict[bytes, bytes], client.hgetall(keyspace.channel_reads(channel)))


async def create_other_channel(hub: RunningHub) -> None:
    admin = await hub.client(ADMIN)
    await admin.create_channel(
        OTHER,
        ceiling="VS-NfD",
        retention_days=30,
        members={POLICE: {"post", "read"}, PROSECUTOR: {"read"}},
    )


# -- through the SDK --------------------------------------------------------------------


async def test_replay_from_the_start_then_live(world: RunningHub) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    before = await post_many(police, ["eins", "zwei", "drei"])
    async with prosecutor.subscribe({CHANNEL: "0-0"}) as subscription:
        replayed = await take(subscription, 3)
        assert [d.stream_id for d in replayed] == [p.stream_id for p in before]
        assert all(d.channel == CHANNEL for d in replayed)
        assert [(await prosecutor.open(d)).note.text for d in replayed] == ["eins", "zwei", "drei"]
        after = await post_many(police, ["vier", "fünf"])
        live = await take(subscription, 2)
        assert [d.stream_id for d in live] == [p.stream_id for p in after]
        assert CHANNEL in subscription.live
        assert subscription.cursors == {CHANNEL: after[-1].stream_id}
        assert subscription.reconnects == 0


async def test_a_cursor_in_the_middle_gives_only_later_notes(world: RunningHub) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    posted = await post_many(police, [f"note {i}" for i in range(6)])
    async with prosecutor.subscribe({CHANNEL: posted[2].stream_id}) as subscription:
        got = await take(subscription, 3)
        assert [d.stream_id for d in got] == [p.stream_id for p in posted[3:]]
        (later,) = await post_many(police, ["later"])
        assert (await take(subscription, 1))[0].stream_id == later.stream_id


async def test_a_cursor_at_the_newest_note_gives_only_live_notes(world: RunningHub) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    posted = await post_many(police, ["alt", "auch alt"])
    async with prosecutor.subscribe({CHANNEL: posted[-1].stream_id}) as subscription:
        pending = asyncio.ensure_future(anext(subscription))
        await asyncio.sleep(0.3)
        assert not pending.done(), "nothing after the cursor yet"
        (new,) = await post_many(police, ["neu"])
        delivery = await asyncio.wait_for(pending, STEP_S)
        assert delivery.stream_id == new.stream_id


async def test_many_concurrent_notes_reach_every_subscriber_once_in_stream_order(
    world: RunningHub,
) -> None:
    total, per_poster, concurrency = 200, 100, 5
    posters = {POLICE: await world.client(POLICE), CITY: await world.client(CITY)}
    readers = {a: await world.client(a) for a in (POLICE, PROSECUTOR, CITY)}
    posted: list[Posted] = []
    subscriptions = {a: c.subscribe({CHANNEL: "0-0"}) for a, c in readers.items()}
    received: dict[str, list[Delivery]] = {a: [] for a in readers}

    async def listen(agency: str, start: asyncio.Event) -> None:
        await start.wait()
        subscription = subscriptions[agency]
        while len(received[agency]) < total:
            received[agency].append(await asyncio.wait_for(anext(subscription), STEP_S))

    async def post(agency: str) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                note = Note(f"{agency} {i}")
                posted.append(await posters[agency].post_note(CHANNEL, note, MARKS))

        await asyncio.gather(*(one(i) for i in range(per_poster)))

    now, later = asyncio.Event(), asyncio.Event()
    now.set()
    listeners = [
        asyncio.create_task(listen(POLICE, now)),
        asyncio.create_task(listen(PROSECUTOR, now)),
        # the city office joins while posts are under way: replay and live must meet
        asyncio.create_task(listen(CITY, later)),
    ]
    try:
        posting = asyncio.gather(post(POLICE), post(CITY))
        async with asyncio.timeout(30):
            while len(posted) < total // 4 and not posting.done():
                await asyncio.sleep(0.01)
        later.set()
        await asyncio.wait_for(posting, 60)
        await asyncio.wait_for(asyncio.gather(*listeners), 60)
    finally:
        for task in listeners:
            task.cancel()
        for subscription in subscriptions.values():
            await subscription.close()

    assert len(posted) == total and not any(p.duplicate for p in posted)
    stream_of = {p.message_id: p.stream_id for p in posted}
    in_stream_order = sorted(stream_of.values(), key=key)
    page = await readers[PROSECUTOR].page_notes(CHANNEL, limit=total)
    assert [n.stream_id for n in page.notes] == in_stream_order
    for agency, deliveries in received.items():
        ids = [d.stream_id for d in deliveries]
        assert ids == in_stream_order, f"{agency}: not every note once, in stream order"
        assert {message_id(d): d.stream_id for d in deliveries} == stream_of, agency


async def test_replay_longer_than_one_page(world: RunningHub) -> None:
    """More notes than the hub replays per Redis read (500) arrive complete and in order."""
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    gate = asyncio.Semaphore(10)

    async def one(i: int) -> Posted:
        async with gate:
            return await police.post_note(CHANNEL, Note(f"n{i}"), MARKS)

    posted = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(520))), 60)
    expected = sorted((p.stream_id for p in posted), key=key)
    async with prosecutor.subscribe({CHANNEL: "0-0"}) as subscription:
        got = await take(subscription, len(expected))
        assert [d.stream_id for d in got] == expected


async def test_several_channels_in_one_subscription(world: RunningHub) -> None:
    await create_other_channel(world)
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    first = await post_many(police, ["ruhr 1", "ruhr 2"])
    other = await post_many(police, ["nrw 1", "nrw 2", "nrw 3"], channel=OTHER)
    cursors = {CHANNEL: "0-0", OTHER: other[0].stream_id}
    async with prosecutor.subscribe(cursors) as subscription:
        got = await take(subscription, 4)
        for text, channel in (("ruhr 3", CHANNEL), ("nrw 4", OTHER), ("ruhr 4", CHANNEL)):
            await police.post_note(channel, Note(text), MARKS)
        got += await take(subscription, 3)
        assert subscription.live == {CHANNEL, OTHER}

    by_channel: dict[str, list[str]] = {CHANNEL: [], OTHER: []}
    for delivery in got:
        by_channel[delivery.channel].append((await prosecutor.open(delivery)).note.text)
    assert by_channel == {
        CHANNEL: ["ruhr 1", "ruhr 2", "ruhr 3", "ruhr 4"],
        OTHER: ["nrw 2", "nrw 3", "nrw 4"],
    }
    for channel in (CHANNEL, OTHER):
        ids = [d.stream_id for d in got if d.channel == channel]
        assert ids == sorted(ids, key=key) and len(set(ids)) == len(ids)
    assert first[0].stream_id in [d.stream_id for d in got]


# -- the raw protocol -------------------------------------------------------------------


async def test_frames_note_then_live_then_live_notes(world: RunningHub) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    posted = await post_many(police, ["a", "b"])
    ws = await prosecutor.transport.open_websocket("/v1/subscribe", params=cursor(CHANNEL, "0-0"))
    try:
        replay = [await next_frame(ws) for _ in range(2)]
        assert [f["t"] for f in replay] == ["note", "note"]
        assert [f["id"] for f in replay] == [p.stream_id for p in posted]
        assert {f["ch"] for f in replay} == {CHANNEL}
        assert all(isinstance(f["env"], bytes) for f in replay)
        assert str(peek_header_unverified(replay[0]["env"]).message_id) == posted[0].message_id
        assert await next_frame(ws) == {"t": "live", "ch": CHANNEL}
        (live,) = await post_many(police, ["c"])
        frame = await next_frame(ws)
        assert (frame["t"], frame["ch"], frame["id"]) == ("note", CHANNEL, live.stream_id)
    finally:
        await ws.close()


async def test_live_frame_comes_even_for_an_empty_channel(world: RunningHub) -> None:
    prosecutor = await world.client(PROSECUTOR)
    async with prosecutor.transport.websocket("/v1/subscribe", params=cursor(CHANNEL, "0-0")) as ws:
        assert await next_frame(ws) == {"t": "live", "ch": CHANNEL}


async def test_acks_are_answered_and_show_in_receipts(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    posted = await post_many(police, ["x", "y", "z"])
    async with prosecutor.transport.websocket("/v1/subscribe", params=cursor(CHANNEL, "0-0")) as ws:
        for _ in range(3):
            assert (await next_frame(ws))["t"] == "note"
        assert (await next_frame(ws))["t"] == "live"
        kinds_before = audit_kinds(redis_db)

        frame = ack_frame(CHANNEL, posted[1].stream_id)
        await send(ws, frame)
        assert await next_frame(ws) == {"t": "acked", "ch": CHANNEL, "pos": posted[1].stream_id}
        receipts = await police.receipts(CHANNEL, posted[1].message_id)
        assert receipts["read_by"] == [PROSECUTOR]
        assert receipts["stream_id"] == posted[1].stream_id
        assert (await police.receipts(CHANNEL, posted[0].message_id))["read_by"] == [PROSECUTOR]
        assert (await police.receipts(CHANNEL, posted[2].message_id))["read_by"] == []
        # the audit log keeps the agency's own signed statement, which verifies
        (logged,) = [r for r in audit_records(redis_db) if r.kind.value == "note-acknowledged"]
        assert (logged.fields["agency"], logged.fields["position"]) == (
            PROSECUTOR,
            posted[1].stream_id,
        )
        assert logged.fields["signature"] == frame["sig"]
        statement = ReadAck.parse(logged.fields["statement"])
        statement.verify(frame["sig"], identity(PROSECUTOR).card.sign_key)
        assert statement.at == frame["at"]

        # an older ack never moves the read position back, and writes no event
        await send(ws, ack_frame(CHANNEL, posted[0].stream_id))
        assert await next_frame(ws) == {"t": "acked", "ch": CHANNEL, "pos": posted[1].stream_id}

        await send(ws, ack_frame(CHANNEL, posted[2].stream_id))
        assert (await next_frame(ws))["pos"] == posted[2].stream_id
        assert (await police.receipts(CHANNEL, posted[2].message_id))["read_by"] == [PROSECUTOR]
    added = audit_kinds(redis_db) - kinds_before
    assert added == Counter({"note-acknowledged": 2})


async def test_the_sdk_acks_over_the_socket(world: RunningHub) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    posted = await post_many(police, ["eins", "zwei"])
    async with prosecutor.subscribe({CHANNEL: "0-0"}) as subscription:
        first, second = await take(subscription, 2)
        await subscription.ack(second)
        async with asyncio.timeout(STEP_S):
            while (await police.receipts(CHANNEL, posted[1].message_id))["read_by"] != [PROSECUTOR]:
                await asyncio.sleep(0.02)
    assert await prosecutor.read_position(CHANNEL) == second.stream_id
    assert first.stream_id == posted[0].stream_id


async def test_bad_client_frames_get_error_frames_and_the_socket_stays_usable(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    (first,) = await post_many(police, ["first"])
    stale = now_ms() - 3_600_000
    async with prosecutor.transport.websocket("/v1/subscribe", params=cursor(CHANNEL, "0-0")) as ws:
        assert (await next_frame(ws))["t"] == "note"
        assert (await next_frame(ws))["t"] == "live"
        kinds_before = audit_kinds(redis_db)
        good = ack_frame(CHANNEL, first.stream_id)
        bad_frames: list[bytes] = [
            b"\xc1",  # never used in msgpack
            b"",
            msgpack.packb([1, 2, 3]),
            msgpack.packb("ack"),
            msgpack.packb({"t": "hello"}),
            msgpack.packb({**good, "ch": "not-subscribed"}),
            msgpack.packb({**good, "id": "yesterday"}),
            msgpack.packb({**good, "id": 17}),
            msgpack.packb({k: v for k, v in good.items() if k != "id"}),
            msgpack.packb({**good, "id": b"1-0"}, use_bin_type=True),
            msgpack.packb({k: v for k, v in good.items() if k != "sig"}),
            msgpack.packb({k: v for k, v in good.items() if k != "at"}),
            msgpack.packb({**good, "at": str(good["at"])}),
            msgpack.packb({**good, "sig": "not bytes"}),
            msgpack.packb(good, use_bin_type=True) + b"\x00",  # trailing data
            b"\x91" * 5000 + b"\xc0",  # deeply nested arrays
        ]
        for data in bad_frames:
            await ws.send_bytes(data)
            answer = await next_frame(ws)
            assert answer["t"] == "error", data
            assert answer["type"] == "urn:siko:problem:bad-request", data
            assert answer["detail"]
        # signed, but not by the caller's key, or over another position, or long ago
        forged = [
            (ack_frame(CHANNEL, first.stream_id, signer=identity(CITY)), "unauthenticated"),
            (ack_frame(CHANNEL, first.stream_id, signed_position="1-0"), "unauthenticated"),
            ({**good, "sig": good["sig"][:32]}, "unauthenticated"),  # cut short
            (ack_frame(CHANNEL, first.stream_id, at=stale), "stale-request"),
            # acknowledging past the newest note is refused, but only that ack
            (ack_frame(CHANNEL, "99999999999999-0"), "conflict"),
        ]
        for frame, problem in forged:
            await send(ws, frame)
            answer = await next_frame(ws)
            assert (answer["t"], answer["type"]) == ("error", f"urn:siko:problem:{problem}")
            assert answer["detail"]
        # text frames are not part of the protocol and are ignored
        await ws.send_str("hello")

        # nothing moved, and each refusal is one request-refused event of the audit log
        assert read_positions(redis_db) == {}
        assert (await police.receipts(CHANNEL, first.message_id))["read_by"] == []
        async with asyncio.timeout(STEP_S):
            while audit_kinds(redis_db) - kinds_before != Counter(
                {"request-refused": len(bad_frames) + len(forged)}
            ):
                await asyncio.sleep(0.02)
        refused = [r for r in audit_records(redis_db) if r.kind.value == "request-refused"]
        assert {(r.fields["agency"], r.fields["path"]) for r in refused} == {
            (PROSECUTOR, "/v1/subscribe")
        }

        assert not ws.closed
        await send(ws, good)
        assert await next_frame(ws) == {"t": "acked", "ch": CHANNEL, "pos": first.stream_id}
        (later,) = await post_many(police, ["later"])
        frame = await next_frame(ws)
        assert (frame["t"], frame["id"]) == ("note", later.stream_id)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param([], id="no-cursor"),
        pytest.param([("cursor", CHANNEL)], id="no-colon"),
        pytest.param([("cursor", f"{CHANNEL}:abc")], id="not-a-stream-id"),
        pytest.param([("cursor", f"{CHANNEL}:1-")], id="no-sequence"),
        pytest.param([("cursor", f"{CHANNEL}:-1-0")], id="negative"),
        pytest.param([("cursor", f"{CHANNEL}:{'9' * 40}-0")], id="too-long"),
        pytest.param(
            [("cursor", f"{CHANNEL}:0-0"), ("cursor", f"{CHANNEL}:1-0")], id="channel-twice"
        ),
        pytest.param([("cursor", f"c{i:03d}:0-0") for i in range(65)], id="65-channels"),
    ],
)
async def test_bad_cursors_are_refused_at_upgrade(
    world: RunningHub, params: list[tuple[str, str]]
) -> None:
    prosecutor = await world.client(PROSECUTOR)
    with pytest.raises(BadRequest) as refused:
        await prosecutor.transport.open_websocket("/v1/subscribe", params=params)
    assert refused.value.status == 400
    # the same request without the upgrade shows the problem document
    with pytest.raises(BadRequest) as problem:
        await prosecutor.transport.request("GET", "/v1/subscribe", params=params)
    assert problem.value.problem_type == "urn:siko:problem:bad-request"
    assert "cursor" in problem.value.detail


async def test_only_readers_may_subscribe(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    await admin.create_channel(
        "lage-sued",
        ceiling="VS-NfD",
        retention_days=30,
        members={POLICE: {"post", "read"}, CITY: {"post"}},
    )
    city = await world.client(CITY)
    prosecutor = await world.client(PROSECUTOR)
    for client in (city, prosecutor):  # a poster who may not read, and a non-member
        # the hub's problem header names it, though the upgrade's body never arrives
        with pytest.raises(NotMember) as refused:
            await client.transport.open_websocket(
                "/v1/subscribe", params=cursor("lage-sued", "0-0")
            )
        assert refused.value.status == 403
    # one forbidden channel refuses the whole subscription
    with pytest.raises(Forbidden):
        await prosecutor.transport.open_websocket(
            "/v1/subscribe", params=cursor(CHANNEL, "0-0") + cursor("lage-sued", "0-0")
        )
    with pytest.raises(NotFound):
        await prosecutor.transport.open_websocket(
            "/v1/subscribe", params=cursor("no-such-channel", "0-0")
        )


async def test_unsigned_and_unknown_key_upgrades_are_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    url = f"{world.base_url}/v1/subscribe?cursor={CHANNEL}:0-0"
    pending = sum(world.app[AUDIT].refusals.pending().values())
    logged = len(audit_records(redis_db))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url)
        assert refused.value.status == 401
    stranger = identity("lka-nrw")  # never registered with this hub
    async with Transport(world.base_url, stranger) as transport:
        with pytest.raises(Unauthenticated) as unknown:
            await transport.open_websocket("/v1/subscribe", params=cursor(CHANNEL, "0-0"))
        assert unknown.value.status == 401
    # they name nobody: no leaf of their own, only counted for the next summary
    assert len(audit_records(redis_db)) == logged
    assert sum(world.app[AUDIT].refusals.pending().values()) - pending == 2


async def metric_text(hub: RunningHub) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.base_url}/metrics") as response:
            return await response.text()


async def test_the_subscribers_gauge_counts_open_subscriptions(world: RunningHub) -> None:
    prosecutor = await world.client(PROSECUTOR)
    assert "siko_subscribers 0.0" in await metric_text(world)
    async with prosecutor.subscribe({CHANNEL: "0-0"}) as subscription:
        pending = asyncio.ensure_future(anext(subscription))
        async with asyncio.timeout(STEP_S):
            while CHANNEL not in subscription.live:
                await asyncio.sleep(0.02)
        assert "siko_subscribers 1.0" in await metric_text(world)
        pending.cancel()
    async with asyncio.timeout(STEP_S):  # the hub sees the close a moment later
        while "siko_subscribers 0.0" not in await metric_text(world):
            await asyncio.sleep(0.02)


# -- access is re-checked while the socket is open ----------------------------------


async def live_socket(client: HubClient) -> aiohttp.ClientWebSocketResponse:
    ws = await client.transport.open_websocket("/v1/subscribe", params=cursor(CHANNEL, "0-0"))
    assert await next_frame(ws) == {"t": "live", "ch": CHANNEL}
    return ws


async def assert_ended_with(ws: aiohttp.ClientWebSocketResponse, problem: str) -> None:
    """The socket's next frame is the error ``problem``, then it closes: no note first."""
    frame = await next_frame(ws)
    assert (frame["t"], frame["type"]) == ("error", f"urn:siko:problem:{problem}"), frame
    assert frame["detail"]
    closing = await asyncio.wait_for(ws.receive(), STEP_S)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing


async def refusals_logged(redis_db: redis.Redis, problem: str) -> list[EventRecord]:
    return [
        r
        for r in audit_records(redis_db)
        if r.kind.value == "request-refused" and r.fields["problem"] == problem
    ]


async def test_a_reader_whose_role_is_removed_stops_receiving(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    city = await world.client(CITY)
    ws = await live_socket(prosecutor)
    watcher = await live_socket(city)  # a reader who keeps the role, for comparison
    try:
        (before,) = await post_many(police, ["noch lesbar"])
        assert (await next_frame(ws))["id"] == before.stream_id
        assert (await next_frame(watcher))["id"] == before.stream_id

        await admin.set_member(CHANNEL, PROSECUTOR, {"post"})  # may post, may not read
        (after,) = await post_many(police, ["nicht mehr für die StA"])
        await assert_ended_with(ws, "not-member")
        assert (await next_frame(watcher))["id"] == after.stream_id
        assert (await refusals_logged(redis_db, "not-member"))[0].fields["agency"] == PROSECUTOR
    finally:
        await ws.close()
        await watcher.close()
    # and a new subscription is refused at the upgrade (a 403 there has no problem body)
    with pytest.raises(Forbidden):
        await prosecutor.transport.open_websocket("/v1/subscribe", params=cursor(CHANNEL, "0-0"))


async def test_the_sdk_subscription_raises_when_the_role_is_removed(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    (before,) = await post_many(police, ["vorher"])
    async with prosecutor.subscribe({CHANNEL: "0-0"}) as subscription:
        assert (await take(subscription, 1))[0].stream_id == before.stream_id
        await admin.set_member(CHANNEL, PROSECUTOR, set())
        await post_many(police, ["nachher"])
        with pytest.raises(NotMember):
            await asyncio.wait_for(anext(subscription), STEP_S)
        assert subscription.cursors == {CHANNEL: before.stream_id}


async def test_a_suspended_agency_stops_receiving_and_its_acks_are_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    (before,) = await post_many(police, ["vor der Sperre"])
    async with prosecutor.transport.websocket("/v1/subscribe", params=cursor(CHANNEL, "0-0")) as ws:
        assert (await next_frame(ws))["id"] == before.stream_id
        assert (await next_frame(ws))["t"] == "live"
        await admin.set_status(PROSECUTOR, "suspended")
        # an ack over the socket that was opened before the suspension is refused
        await send(ws, ack_frame(CHANNEL, before.stream_id))
        answer = await next_frame(ws)
        assert (answer["t"], answer["type"]) == ("error", "urn:siko:problem:agency-suspended")
        assert read_positions(redis_db) == {}
        # the suspended agency is still a reader of the roster, so posts are sealed for it,
        # but the socket ends before it would deliver one
        await post_many(police, ["nach der Sperre"])
        await assert_ended_with(ws, "agency-suspended")
    assert len(await refusals_logged(redis_db, "agency-suspended")) == 2
    # refusals on a socket are counted by Prometheus too, as HTTP refusals are
    assert 'siko_refusals_total{problem="agency-suspended"} 2.0' in await metric_text(world)


async def test_a_replaced_key_ends_the_subscription_opened_with_the_old_one(
    world: RunningHub,
) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    ws = await live_socket(prosecutor)
    try:
        new_identity = Identity.generate(PROSECUTOR, suite=identity(PROSECUTOR).suite)
        await prosecutor.add_card(PROSECUTOR, new_identity.card)
        async with HubClient(world.base_url, new_identity) as renewed:
            roster = await renewed.roster(CHANNEL)
            assert roster.reader_cards()  # the police seal for the new key from now on
            await police.post_note(CHANNEL, Note("für den neuen Schlüssel"), MARKS)
            await assert_ended_with(ws, "unauthenticated")
    finally:
        await ws.close()


# -- bounded memory: a subscriber that falls behind ---------------------------------


async def test_a_subscriber_that_falls_behind_overflows_and_holds_no_notes(
    world: RunningHub,
) -> None:
    """The feed queues at most ``limit`` notes for a subscriber that does not take them.

    One more and the subscriber has overflowed: its queued notes are dropped (the hub
    holds nothing for it) and taking raises :class:`Overflow`, on which the socket tells
    its client to reconnect and resume from its cursor. A subscriber that keeps within
    its limit gets every note, in order, from the same feed.
    """
    feeds = world.app[FEEDS]
    police = await world.client(POLICE)
    slow = Subscriber(PROSECUTOR, str(identity(PROSECUTOR).card.key_id), limit=2)
    steady = Subscriber(CITY, str(identity(CITY).card.key_id), limit=3)
    await feeds.join(CHANNEL, slow)
    await feeds.join(CHANNEL, steady)
    try:
        posted = await post_many(police, ["eins", "zwei", "drei"])
        got: list[str] = []
        async with asyncio.timeout(STEP_S):
            while len(got) < len(posted):
                got += [note.stream_id for note in await steady.next_batch()]
        assert got == [p.stream_id for p in posted]
        assert slow.overflowed
        with pytest.raises(Overflow):
            await slow.next_batch()
        assert slow.queued == 0
    finally:
        feeds.leave(CHANNEL, slow)
        feeds.leave(CHANNEL, steady)


async def test_a_refusal_drops_the_notes_still_queued_for_the_subscriber(
    world: RunningHub,
) -> None:
    """Notes queued before the agency was suspended are not handed out after it.

    The feed checked them when it read them, but once it has found that the agency may
    no longer read, taking from the queue raises the refusal and nothing else.
    """
    feeds = world.app[FEEDS]
    admin = await world.client(ADMIN)
    police = await world.client(POLICE)
    subscriber = Subscriber(PROSECUTOR, str(identity(PROSECUTOR).card.key_id))
    await feeds.join(CHANNEL, subscriber)
    try:
        await post_many(police, ["vorher"])
        async with asyncio.timeout(STEP_S):
            while not subscriber.queued:
                await asyncio.sleep(0.01)
        await admin.set_status(PROSECUTOR, "suspended")
        await post_many(police, ["nachher"])
        async with asyncio.timeout(STEP_S):
            while subscriber.refusal is None:
                await asyncio.sleep(0.01)
        assert subscriber.queued == 0
        with pytest.raises(AgencySuspended):
            await subscriber.next_batch()
    finally:
        feeds.leave(CHANNEL, subscriber)
