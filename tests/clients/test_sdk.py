"""clients/sdk.py and clients/state.py against a real hub on a real Redis.

The world (tests/hub/conftest.py): police and city office post and read in
``lage-ruhr``, the prosecutor only reads. Every refusal the SDK can provoke is mapped
to its exception class, and changes nothing but the hub's own audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from clients import errors as sdk
from clients.errors import error_from_problem
from clients.sdk import CardRefused, HubClient, KeyChange, NoteRefused, Received
from clients.state import State, StateError, StateFile, default_state_path
from clients.transport import Transport
from hub import keyspace
from hub.embedded import EmbeddedRedis
from keys import Classification, HandlingCode, Identity, Markings, MessageId, Note, Suite
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
from tests.hub.test_refusals import nothing_written, sealed, send, sign

NOTES_KEY = keyspace.channel_notes(CHANNEL)


async def client(hub: RunningHub, agency: str, state: Path | None = None) -> HubClient:
    """A connected client acting as ``agency``, closed after the test."""
    made = HubClient(hub.base_url, identity(agency), state=StateFile(state) if state else None)
    await made.__aenter__()
    hub.clients.append(made)
    return made


async def post_texts(hub: RunningHub, *texts: str) -> list[str]:
    police = await hub.client(POLICE)
    return [(await police.post(CHANNEL, Note(t), MARKS)).stream_id for t in texts]


async def take(iterator: AsyncIterator[Received], n: int) -> list[Received]:
    """The first ``n`` items, then stop iterating (as a client that is stopped does)."""
    taken: list[Received] = []
    async for item in iterator:
        taken.append(item)
        if len(taken) == n:
            break
    await iterator.aclose()  # type: ignore[attr-defined]
    return taken


# -- round trips ------------------------------------------------------------------------


async def test_post_then_history_round_trip(world: RunningHub) -> None:
    police = await world.client(POLICE)
    marks = Markings(Classification.VS_NFD, HandlingCode.H2)
    posted = await police.post(CHANNEL, Note("Kontrolle", "Streife", "AZ 12/26"), marks)
    assert not posted.duplicate and posted.index == posted.receipt.index >= 0
    prosecutor = await world.client(PROSECUTOR)
    got = [r async for r in prosecutor.history(CHANNEL)]
    assert [r.stream_id for r in got] == [posted.stream_id]
    note, header = got[0].note, got[0].header
    assert (note.text, note.subject, note.case_ref) == ("Kontrolle", "Streife", "AZ 12/26")
    assert header.sender == POLICE and header.markings == marks
    assert str(header.message_id) == posted.message_id


async def test_history_pages_through_every_note_in_order(world: RunningHub) -> None:
    ids = await post_texts(world, *(f"Nr. {n}" for n in range(5)))
    city = await world.client(CITY)
    got = [r async for r in city.history(CHANNEL, page_size=2)]
    assert [r.stream_id for r in got] == ids
    assert [r.note.text for r in got] == [f"Nr. {n}" for n in range(5)]
    later = [r.stream_id async for r in city.history(CHANNEL, after=ids[2])]
    assert later == ids[3:]


async def test_a_restarted_client_resumes_from_its_state_file(
    world: RunningHub, tmp_path: Path
) -> None:
    ids = await post_texts(world, "eins", "zwei", "drei")
    path = tmp_path / "state" / "prosecutor.json"
    first = await client(world, PROSECUTOR, path)
    assert [r.note.text for r in await take(first.history(CHANNEL), 2)] == ["eins", "zwei"]
    await first.__aexit__(None, None, None)
    assert json.loads(path.read_text())["cursors"] == {CHANNEL: ids[1]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    restarted = await client(world, PROSECUTOR, path)
    assert [r.note.text async for r in restarted.history(CHANNEL)] == ["drei"]
    assert [r async for r in restarted.history(CHANNEL)] == []  # nothing is shown twice
    [new] = await post_texts(world, "vier")
    assert [r.stream_id async for r in restarted.history(CHANNEL)] == [new]


async def test_live_replays_after_the_cursor_then_follows_and_saves_it(
    world: RunningHub, tmp_path: Path
) -> None:
    [old] = await post_texts(world, "alt")
    path = tmp_path / "city.json"
    StateFile(path).advance(CHANNEL, old)
    city = await client(world, CITY, path)
    feed = city.live([CHANNEL])
    task = asyncio.ensure_future(take(feed, 2))
    await asyncio.sleep(0.2)
    await post_texts(world, "neu 1", "neu 2")
    got = await asyncio.wait_for(task, 10)
    assert [r.note.text for r in got] == ["neu 1", "neu 2"]
    assert StateFile(path).load().cursors[CHANNEL] == got[1].stream_id


# -- de-duplication and safe retries ------------------------------------------------------


async def test_the_same_envelope_posted_twice_is_one_note(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    envelope = sealed()
    first = await police.post_envelope(CHANNEL, envelope)
    again = await police.post_envelope(CHANNEL, envelope)
    assert again.duplicate and not first.duplicate
    assert (again.stream_id, again.index) == (first.stream_id, first.index)
    assert redis_db.xlen(NOTES_KEY) == 1


class DropFirstPostAnswer:
    """A TCP proxy in front of the hub that loses the answer to the first note posted.

    The hub stores the note; the client sees the connection close without an answer,
    exactly as when a network fails at the worst moment.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        drop = asyncio.Event()

        async def upstream() -> None:
            while data := await reader.read(65536):
                if b"POST /v1/channels/" in data and b"/notes" in data and not self.dropped:
                    self.dropped += 1
                    drop.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if drop.is_set():
                    writer.close()  # the answer is lost
                    return
                writer.write(data)
                await writer.drain()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(upstream(), downstream())
        for w in (writer, up_writer):
            w.close()


async def test_a_lost_answer_is_retried_with_the_same_envelope_and_answered_duplicate(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    hub_port_settings = hub_settings(tmp_path, redis_url)
    proxy = DropFirstPostAnswer(hub_port_settings.port)
    proxy_port = await proxy.start()
    url = f"http://127.0.0.1:{proxy_port}"
    running = await start_hub(hub_settings(tmp_path, redis_url, port=hub_port_settings.port,
                                           public_url=url))  # fmt: skip
    running.base_url = url  # every request through the proxy
    try:
        await make_world(running)
        police = HubClient(url, identity(POLICE))
        async with police:
            posted = await police.post(CHANNEL, Note("genau einmal"), MARKS)
        assert proxy.dropped == 1 and posted.duplicate
        assert redis_db.xlen(NOTES_KEY) == 1
    finally:
        await running.stop()
        await proxy.stop()


# -- reader cards -----------------------------------------------------------------------


async def test_post_pins_reader_keys_and_reports_a_rotation(
    world: RunningHub, tmp_path: Path
) -> None:
    path = tmp_path / "police.json"
    police = await client(world, POLICE, path)
    first = await police.post(CHANNEL, Note("vorher"), MARKS)
    assert first.key_changes == ()
    pinned = StateFile(path).load().keys
    assert pinned == {a: str(identity(a).key_id) for a in (POLICE, PROSECUTOR, CITY)}

    rotated = Identity.generate(PROSECUTOR, suite=Suite.X25519)
    await (await world.client(PROSECUTOR)).add_card(PROSECUTOR, rotated.card)
    second = await police.post(CHANNEL, Note("nachher"), MARKS)
    old, new = str(identity(PROSECUTOR).key_id), str(rotated.key_id)
    assert second.key_changes == (KeyChange(PROSECUTOR, old, new),)
    assert StateFile(path).load().keys[PROSECUTOR] == new
    assert (await police.post(CHANNEL, Note("danach"), MARKS)).key_changes == ()


async def test_a_key_history_the_hub_rewrote_is_refused_before_sealing(
    world: RunningHub, tmp_path: Path, redis_db: redis.Redis
) -> None:
    path = tmp_path / "police.json"
    never_registered = str(Identity.generate(PROSECUTOR, suite=Suite.X25519).key_id)
    StateFile(path).update(lambda s: s.keys.update({PROSECUTOR: never_registered}))
    police = await client(world, POLICE, path)
    with nothing_written(redis_db, nonces=None, refusals=0), pytest.raises(CardRefused) as exc:
        await police.post(CHANNEL, Note("darf nicht raus"), MARKS)
    assert PROSECUTOR in str(exc.value) and "Nothing was posted" in str(exc.value)
    assert redis_db.xlen(NOTES_KEY) == 0
    assert StateFile(path).load().keys[PROSECUTOR] == never_registered


# -- verification of what is read ---------------------------------------------------------


def tamper_newest_note(client: redis.Redis) -> str:
    """What a malicious operator could do: flip one bit of the newest stored envelope."""
    entries: Any = client.xrevrange(NOTES_KEY, count=2)
    (raw_id, fields), older = entries[0], entries[1:]
    envelope = bytearray(fields[b"env"])
    envelope[-5] ^= 1
    client.xdel(NOTES_KEY, raw_id)
    previous = older[0][0] if older else b"0-0"
    client.execute_command("XSETID", NOTES_KEY, previous)  # type: ignore[no-untyped-call]
    client.xadd(NOTES_KEY, {**fields, b"env": bytes(envelope)}, id=raw_id)
    return str(raw_id.decode())


async def test_an_altered_note_is_refused_never_shown(
    world: RunningHub, redis_db: redis.Redis, tmp_path: Path
) -> None:
    ids = await post_texts(world, "gut", "verändert")
    assert tamper_newest_note(redis_db) == ids[1]
    ids += await post_texts(world, "auch gut")
    path = tmp_path / "city.json"
    city = await client(world, CITY, path)
    shown: list[str] = []
    with pytest.raises(NoteRefused) as excinfo:
        async for received in city.history(CHANNEL):
            shown.append(received.note.text)
    assert shown == ["gut"]
    error = excinfo.value
    assert (error.channel, error.stream_id) == (CHANNEL, ids[1])
    assert "verändert" not in str(error)
    assert StateFile(path).load().cursors[CHANNEL] == ids[0]

    refused: list[NoteRefused] = []
    rest = [r.note.text async for r in city.history(CHANNEL, on_refused=refused.append)]
    assert rest == ["auch gut"] and [e.stream_id for e in refused] == [ids[1]]


async def test_a_note_sealed_for_an_old_key_is_refused(world: RunningHub) -> None:
    await post_texts(world, "für den alten Schlüssel")
    rotated = Identity.generate(CITY, suite=Suite.X25519)
    await (await world.client(CITY)).add_card(CITY, rotated.card)
    city = HubClient(world.base_url, rotated)
    async with city:
        with pytest.raises(NoteRefused, match="not sealed for stadt-essen's current key"):
            await anext(city.history(CHANNEL))


# -- read positions, inbox, receipts --------------------------------------------------------


async def test_unread_counts_follow_the_read_position(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    ids = await post_texts(world, "a", "b", "c")
    prosecutor = await world.client(PROSECUTOR)
    assert await prosecutor.unread(CHANNEL) == 3
    with nothing_written(redis_db, nonces=1, refusals=0):
        assert await prosecutor.read_position(CHANNEL) == "0-0"
    assert await prosecutor.ack(CHANNEL, ids[1]) == ids[1]
    assert await prosecutor.read_position(CHANNEL) == ids[1]
    assert await prosecutor.unread(CHANNEL, page_size=1) == 1
    receipts = await prosecutor.receipts(CHANNEL, (await message_id(prosecutor, ids[0])))
    assert receipts["read_by"] == [PROSECUTOR]
    assert receipts["unread_by"] == [POLICE, CITY]


async def message_id(reader: HubClient, stream_id: str) -> str:
    async for received in reader.history(CHANNEL):
        if received.stream_id == stream_id:
            return str(received.header.message_id)
    raise AssertionError(stream_id)


# -- every refusal mapped to its exception ----------------------------------------------------

Action = Callable[[RunningHub], Awaitable[object]]
GEHEIM = Markings(Classification.GEHEIM, HandlingCode.H1)


async def _unregistered(hub: RunningHub) -> object:
    stranger = HubClient(hub.base_url, Identity.generate("stadt-bochum", suite=Suite.X25519))
    async with stranger:
        return await stranger.channels()


async def _stale(hub: RunningHub) -> object:
    transport = Transport(hub.base_url, identity(POLICE), clock=lambda: 1_000_000)
    async with HubClient(hub.base_url, identity(POLICE), transport=transport) as police:
        return await police.channels()


async def _conflict_same_id(hub: RunningHub) -> object:
    police, mid = await hub.client(POLICE), MessageId.new()
    await police.post_envelope(CHANNEL, sealed(message_id=mid))
    return await police.post_envelope(CHANNEL, sealed(message_id=mid, text="anders"))


def _altered_envelope() -> bytes:
    data = bytearray(sealed())
    data[-5] ^= 1
    return bytes(data)


REFUSALS: dict[str, tuple[type[sdk.ClientError], Action, int | None]] = {
    # name: (exception, action, nonces the refused requests leave; None: any)
    "not-member": (
        sdk.NotMember,
        lambda h: _as(h, PROSECUTOR, lambda c: c.post(CHANNEL, Note("x"), MARKS)),
        None,
    ),
    "above-ceiling": (
        sdk.AboveCeiling,
        lambda h: _as(h, POLICE, lambda c: c.post(CHANNEL, Note("x"), GEHEIM)),
        None,
    ),
    "forbidden": (
        sdk.Forbidden,
        lambda h: _as(h, POLICE, lambda c: c.set_member(CHANNEL, CITY, [])),
        1,
    ),
    "not-found": (sdk.NotFound, lambda h: _as(h, POLICE, lambda c: c.roster("gibt-es-nicht")), 1),
    "bad-request": (
        sdk.BadRequest,
        lambda h: _as(h, POLICE, lambda c: c.page_notes(CHANNEL, limit=0)),
        1,
    ),
    "malformed-envelope": (
        sdk.MalformedEnvelope,
        lambda h: _as(h, POLICE, lambda c: c.post_envelope(CHANNEL, b"\x81\xa1x\x01")),
        1,
    ),
    "bad-envelope-signature": (
        sdk.BadEnvelopeSignature,
        lambda h: _as(h, POLICE, lambda c: c.post_envelope(CHANNEL, _altered_envelope())),
        1,
    ),
    "sender-mismatch": (
        sdk.SenderMismatch,
        lambda h: _as(h, POLICE, lambda c: c.post_envelope(CHANNEL, sealed(CITY))),
        1,
    ),
    "recipients-mismatch": (
        sdk.RecipientsMismatch,
        lambda h: _as(h, POLICE, lambda c: c.post_envelope(CHANNEL, sealed(readers=(POLICE,)))),
        1,
    ),
    "conflict": (
        sdk.Conflict,
        lambda h: _as(h, ADMIN, lambda c: c.register_agency(identity(POLICE).card)),
        1,
    ),
    "unauthenticated": (sdk.Unauthenticated, _unregistered, 0),
    "stale-request": (sdk.StaleRequest, _stale, 0),
}


async def _as(
    hub: RunningHub, agency: str, act: Callable[[HubClient], Awaitable[object]]
) -> object:
    return await act(await hub.client(agency))


@pytest.mark.parametrize("name", sorted(REFUSALS))
async def test_every_refusal_raises_its_exception_and_changes_nothing(
    world: RunningHub, redis_db: redis.Redis, name: str
) -> None:
    error_class, action, nonces = REFUSALS[name]
    await world.client(POLICE)  # connected before the snapshot
    with nothing_written(redis_db, nonces=nonces), pytest.raises(error_class) as excinfo:
        await action(world)
    error = excinfo.value
    assert type(error) is error_class
    assert error.problem_type == f"urn:siko:problem:{name}"
    assert error.detail and str(error).endswith(error.hint)


async def test_a_suspended_agency_gets_agency_suspended(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    await (await world.client(ADMIN)).set_status(CITY, "suspended")
    city = await world.client(CITY)
    with nothing_written(redis_db, nonces=None), pytest.raises(sdk.AgencySuspended):
        await city.post(CHANNEL, Note("gesperrt"), MARKS)


async def test_the_same_message_id_for_another_note_is_an_idempotency_conflict(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    with pytest.raises(sdk.IdempotencyConflict):
        await _conflict_same_id(world)
    assert redis_db.xlen(NOTES_KEY) == 1


async def test_a_too_large_envelope_is_refused(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    running = await start_hub(hub_settings(tmp_path, redis_url, max_envelope_bytes=2048))
    try:
        await make_world(running)
        police = await running.client(POLICE)
        with nothing_written(redis_db, nonces=None), pytest.raises(sdk.TooLarge):
            await police.post(CHANNEL, Note("x" * 4000), MARKS)
    finally:
        await running.stop()


async def test_a_replayed_request_maps_to_replayed_request(world: RunningHub) -> None:
    headers = {"Accept": "application/json", **sign(world, "GET", "/v1/channels")}
    async with aiohttp.ClientSession() as http:
        first = await send(http, world.base_url + "/v1/channels", "GET", headers, b"")
        again = await send(http, world.base_url + "/v1/channels", "GET", headers, b"")
    assert first.status == 200
    error = error_from_problem(again.status, again.body, again.content_type)
    assert type(error) is sdk.ReplayedRequest


# -- the state file itself ------------------------------------------------------------------


def test_state_file_is_written_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    state = StateFile(path)
    assert state.load() == State()
    state.advance("lage-ruhr", "5-1")
    state.advance("lage-ruhr", "5-0")  # never backwards
    state.advance("lage-ruhr", "12-0")
    assert state.load().cursors == {"lage-ruhr": "12-0"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["state.json", "state.json.lock"]


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[]", b'{"v": 2}', b'{"v": 1, "cursors": {"a": "x"}}', b"\xff"]
)
def test_a_damaged_state_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateError, match="damaged") as excinfo:
        StateFile(path).load()
    assert "delete it to start over" in str(excinfo.value)
    with pytest.raises(StateError):
        StateFile(path).advance("lage-ruhr", "1-0")
    assert path.read_bytes() == content


def test_default_state_path_names_agency_and_hub(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    path = default_state_path("https://hub.example:8443/", "pp-duisburg", env)
    assert path == tmp_path / "siko" / "pp-duisburg@hub.example_8443.json"
    assert default_state_path("http://x", "a", {"SIKO_STATE": "/s.json"}) == Path("/s.json")


async def test_a_hub_whose_redis_is_down_raises_unavailable(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    running = await start_hub(hub_settings(tmp_path, await server.start()))
    try:
        await make_world(running)
        await server.stop()
        transport = Transport(running.base_url, identity(POLICE), retries=0)
        async with HubClient(running.base_url, identity(POLICE), transport=transport) as police:
            with pytest.raises(sdk.Unavailable) as excinfo:
                await police.channels()
        assert excinfo.value.status == 503 and excinfo.value.retry_after is not None
    finally:
        await running.stop()
        await server.stop()


# -- a hostile hub handing out bad cards ------------------------------------------------------


def roster_with(card: bytes, key_id: str) -> dict[str, Any]:
    member = {"roles": ["read"], "status": "active", "key_id": key_id, "card": card}
    return {"channel": CHANNEL, "ceiling": "VS-NfD", "retention_days": 30, "version": 1,
            "members": {PROSECUTOR: member}, "readers": [PROSECUTOR]}  # fmt: skip


async def serve_roster(roster: dict[str, Any]) -> tuple[TestServer, list[str]]:
    """A fake hub that answers the roster and records every other request it gets."""
    others: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        if request.method == "GET" and request.path == f"/v1/channels/{CHANNEL}":
            body = msgpack.packb(roster, use_bin_type=True)
            return web.Response(body=body, content_type="application/msgpack")
        others.append(f"{request.method} {request.path}")
        return web.Response(status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server, others


@pytest.mark.parametrize(
    ("case", "error"), [("not self-signed", CardRefused), ("another key id", sdk.ProtocolError)]
)
async def test_a_reader_card_that_fails_its_checks_is_never_sealed_for(
    case: str, error: type[sdk.ClientError]
) -> None:
    card = identity(PROSECUTOR).card
    data, key_id = bytearray(card.serialize()), str(card.key_id)
    if case == "not self-signed":
        data[-3] ^= 1  # inside the self-signature
    else:
        key_id = str(identity(CITY).key_id)
    server, others = await serve_roster(roster_with(bytes(data), key_id))
    try:
        url = str(server.make_url("")).rstrip("/")
        async with HubClient(url, identity(POLICE)) as police:
            with pytest.raises(error, match=PROSECUTOR):
                await police.post(CHANNEL, Note("nie versiegelt"), MARKS)
    finally:
        await server.close()
    assert others == []  # nothing was posted
