"""The only module that talks to Redis: named operations over :mod:`hub.keyspace`.

Handlers call ``append_note``, ``read_after``, ``advance_read`` and friends, never raw
commands. Every ``RedisError`` (and socket error) is translated here, once, into
:class:`~hub.errors.Unavailable`, which the hub answers with 503 and ``Retry-After``;
the client retries and nothing half-done is left behind, because every write that must
be atomic is one Lua script.

Two ways to Redis. The commands every post runs (the caller's directory entry and
nonce, the append, the retry look-up with the channel record) go over the store's
:class:`~hub.redislink.RedisLink`, one multiplexed connection at a few microseconds of
CPU per command; :class:`~hub.logstore.LogStore` is handed the same link
(:attr:`Store.link`) for the sequencer's per-batch commands. Everything else (blocking reads of
live feeds, administration, audit reads) stays on redis-py's pool, at about 75 us per
command. The link does not retry a command whose connection failed (it may have been
applied): the caller gets :class:`~hub.errors.Unavailable` and retries, which a post
may (idempotent by message id; the client signs a fresh nonce per attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub import keyspace
from hub.errors import Conflict, IdempotencyConflict, NotFound, RosterChanged, Unavailable
from hub.events import AuditEvent
from hub.records import AgencyRecord, ChannelRecord
from hub.redislink import Arg, LinkScript, RedisLink, pack

RETRY_AFTER_S: Final = 1
NEWEST: Final = "$"
#: Parsed directory entries and channel records kept by their bytes (see _remembered).
PARSE_CACHE_SIZE: Final = 4096
#: Connections of one hub process's redis-py pool, and how long a request waits for one.
MAX_POOL_CONNECTIONS: Final = 512
POOL_WAIT_S: Final = 5.0

_R = TypeVar("_R")

_APPEND_NOTE: Final = LinkScript(keyspace.APPEND_NOTE)


@dataclass(frozen=True)
class StoredNote:
    """One entry of a channel's stream."""

    stream_id: str
    message_id: bytes
    sender: str
    digest_hex: str
    envelope: bytes


@dataclass(frozen=True)
class AppendResult:
    """Where a note was stored, whether it was there already (a retry), and its event."""

    stream_id: str
    duplicate: bool
    event_id: str


class _HiredisPacking(AbstractConnection):
    """redis-py's connection, packing commands in C and bounding writes with a timer.

    redis-py's synchronous client packs commands with hiredis (C) when it is installed
    (it is a dependency of the hub); its asyncio client always packs them in Python, a
    third of the CPU of a round trip. This connection uses the same hiredis packer.

    With ``socket_timeout`` set, redis-py bounds every write with ``asyncio.wait_for``,
    which on Python 3.11 runs the write in a Task of its own: a Task and two more turns
    of the event loop for every command. :func:`asyncio.timeout` bounds it just as well
    (redis-py bounds its reads that way), and a write that does not wait (the usual
    case: only ``drain`` waits, when the socket's buffer is full) costs no loop turn.
    Errors are as redis-py's: a write that times out or fails drops the connection and
    raises :class:`redis.exceptions.TimeoutError` or ``ConnectionError``.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """One command in the Redis protocol, packed by hiredis (:func:`hub.redislink.pack`)."""
        return [pack(args)]

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """Send one packed command or pipeline (as redis-py does, see the class)."""
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        writer = self._writer
        if writer is None:
            raise RedisConnectionError("the connection closed before the write")
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            async with asyncio.timeout(self.socket_timeout):
                writer.writelines(command)
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # A write cut short (cancelled) leaves the stream mid-command: never reuse it.
            await self.disconnect(nowait=True)
            raise


class StoreConnection(_HiredisPacking, aioredis.Connection):
    """A TCP connection (``redis://``) packing with hiredis (see :class:`_HiredisPacking`)."""


class StoreSSLConnection(_HiredisPacking, aioredis.SSLConnection):
    """A TLS connection (``rediss://``) packing with hiredis."""


class StoreUnixConnection(_HiredisPacking, aioredis.UnixDomainSocketConnection):
    """A Unix-socket connection (``unix://``) packing with hiredis."""


#: The connection class of each URL scheme: redis-py picks one by scheme, but a class
#: passed to ``from_url`` replaces its pick, so the pick is made here.
_CONNECTION_CLASSES: Final[dict[str, type[AbstractConnection]]] = {
    "redis": StoreConnection,
    "rediss": StoreSSLConnection,
    "unix": StoreUnixConnection,
}


def _unavailable() -> Unavailable:
    return Unavailable(
        "the hub cannot reach its storage right now; retry shortly", retry_after=RETRY_AFTER_S
    )


@contextlib.asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise _unavailable() from exc


async def _call(awaitable: Awaitable[Any]) -> Any:
    """Await one Redis reply; replies are parsed by the caller, so they are ``Any`` here.

    As :func:`_translated`, written out: this runs for every command.
    """
    try:
        return await awaitable
    except (RedisError, OSError) as exc:
        raise _unavailable() from exc


class Store:
    """Named Redis operations of the hub."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._link = RedisLink.for_client(client)
        self._put_channel = client.register_script(keyspace.PUT_CHANNEL)
        self._advance = client.register_script(keyspace.ADVANCE_READ)
        self._put_agency = client.register_script(keyspace.PUT_AGENCY)
        self._agency_parses: dict[bytes, AgencyRecord] = {}
        self._channel_parses: dict[bytes, ChannelRecord] = {}
        self._channels_seen: dict[str, tuple[ChannelRecord, int]] = {}

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        max_connections: int = MAX_POOL_CONNECTIONS,
        pool_wait_s: float = POOL_WAIT_S,
    ) -> Store:
        """A store over a new connection pool to ``url`` (retries reconnects briefly).

        The pool holds at most ``max_connections``: a live feed holds one while it waits
        for notes (at most :data:`hub.feeds.MAX_FEEDS` of them), and without a bound a
        burst of requests could open connections until Redis refuses every client (its
        ``maxclients``), the link included. A request that finds them all busy waits up
        to ``pool_wait_s``, then is answered 503 (``Unavailable``). The link takes its
        address, credentials and timeouts from the same settings.
        """
        scheme = url.partition("://")[0].lower()
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_wait_s,
            connection_class=_CONNECTION_CLASSES.get(scheme, StoreConnection),
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
        )
        return cls(aioredis.Redis.from_pool(pool))

    @property
    def link(self) -> RedisLink:
        """The multiplexed connection of the post path, shared with the audit log's
        :class:`~hub.logstore.LogStore`; :meth:`close` closes it."""
        return self._link

    @property
    def client(self) -> aioredis.Redis:
        """The connection pool, shared with :class:`hub.logstore.LogStore`."""
        return self._redis

    async def close(self) -> None:
        """Close the link and the connection pool (pending calls fail: Unavailable)."""
        try:
            await self._link.close()
        finally:
            await self._redis.aclose()

    async def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def server_info(self) -> dict[str, object]:
        """The server's ``INFO`` (every default section), for :mod:`hub.redischeck`."""
        info: dict[str, object] = await _call(self._redis.info())
        return info

    # -- directory ------------------------------------------------------------------

    async def get_agency(self, agency: str) -> AgencyRecord | None:
        """The directory entry of ``agency``, if registered."""
        data = await _call(self._redis.hget(keyspace.agencies(), agency))
        return None if data is None else self.parse_agency(data)

    async def get_agencies(self, agencies: Sequence[str]) -> list[AgencyRecord | None]:
        """Several directory entries, read fresh in one round trip (``HMGET``)."""
        if not agencies:
            return []
        found = await _call(self._redis.hmget(keyspace.agencies(), list(agencies)))
        return [None if data is None else self.parse_agency(data) for data in found]

    def parse_agency(self, data: bytes) -> AgencyRecord:
        """Parse an entry's bytes, remembering the result for the same bytes.

        The bytes are always read fresh; only parsing them again is saved (a post reads
        every reader's entry, a live feed every subscribed agency's, for every batch).
        Equal bytes parse to an equal, frozen record. Raises KeysError, as the parse does.
        """
        return _remembered(self._agency_parses, data, AgencyRecord.parse)

    def parse_channel(self, data: bytes) -> ChannelRecord:
        """Parse a channel record's bytes, remembered as :meth:`parse_agency` does."""
        return _remembered(self._channel_parses, data, ChannelRecord.parse)

    async def list_agencies(self) -> list[AgencyRecord]:
        """Every directory entry, sorted by id."""
        entries = await _call(self._redis.hgetall(keyspace.agencies()))
        return sorted((AgencyRecord.parse(v) for v in entries.values()), key=lambda r: r.agency)

    async def get_card(self, key_id_hex: str) -> bytes | None:
        """The card registered under ``key_id_hex``, current or historical."""
        data: bytes | None = await _call(self._redis.hget(keyspace.cards(), key_id_hex))
        return data

    async def get_cards(self, key_ids_hex: list[str]) -> list[bytes | None]:
        """Several cards in one round trip."""
        if not key_ids_hex:
            return []
        found: list[bytes | None] = await _call(self._redis.hmget(keyspace.cards(), key_ids_hex))
        return found

    async def card_event(self, key_id_hex: str) -> str | None:
        """The id of the directory event that registered the card ``key_id_hex``, if any."""
        value = await _call(self._redis.hget(keyspace.card_events(), key_id_hex))
        return None if value is None else str(value.decode())

    async def register_agency(self, record: AgencyRecord, card: bytes, event: AuditEvent) -> str:
        """Add a new directory entry with its first card; :class:`Conflict` if it exists."""
        event_id = await self._put_agency_record(record, card, b"new", event)
        if event_id is None:
            raise Conflict(f"{record.agency} is already registered")
        return event_id

    async def replace_agency(
        self, old: AgencyRecord, new: AgencyRecord, card: bytes, event: AuditEvent
    ) -> str:
        """Replace a directory entry if it is still ``old``; :class:`Conflict` otherwise."""
        event_id = await self._put_agency_record(new, card, old.serialize(), event)
        if event_id is None:
            raise Conflict(f"{new.agency} was changed meanwhile; retry")
        return event_id

    async def _put_agency_record(
        self, record: AgencyRecord, card: bytes, expect: bytes, event: AuditEvent
    ) -> str | None:
        keys = [
            keyspace.agencies(),
            keyspace.cards(),
            keyspace.directory_events(),
            keyspace.card_events(),
        ]
        args: list[bytes | str] = [
            str(record.agency),
            record.serialize(),
            str(record.current_key),
            card,
            expect,
            event.leaf,
            event.record,
            event.salt,
        ]
        outcome = await _call(self._put_agency(keys=keys, args=args))
        return outcome.decode() if isinstance(outcome, bytes) else None

    # -- channels -------------------------------------------------------------------

    async def get_channel(self, channel: str) -> tuple[ChannelRecord, int]:
        """The channel record and its roster version; :class:`NotFound` if absent."""
        rec, ver = await _call(self._redis.hmget(keyspace.channel_record(channel), ["rec", "ver"]))
        return self._channel(channel, rec, ver)

    async def post_context(
        self, channel: str, message_id_hex: str, digest_hex: str
    ) -> AppendResult | tuple[ChannelRecord, int]:
        """What a post needs from its channel's slot, in one round trip.

        The first result when the message id is stored already (a retry, as
        :meth:`stored_append`), else the channel record and its roster version
        (:class:`NotFound` if there is no such channel). Both keys share the channel's
        hash tag, so the pipeline stays within one slot.
        """
        seen, (rec, ver) = await _call(
            self._link.batch(
                [
                    ("GET", keyspace.channel_message(channel, message_id_hex)),
                    ("HMGET", keyspace.channel_record(channel), "rec", "ver"),
                ]
            )
        )
        if seen is not None:
            return _append_result("dup", [seen], channel, digest_hex)
        return self._channel(channel, rec, ver)

    def known_channel(self, channel: str) -> tuple[ChannelRecord, int] | None:
        """The channel record and roster version as last read here, if any; maybe stale.

        Only for a check whose write re-checks the roster version atomically (as
        :meth:`append_note` does, answering :class:`RosterChanged`): the version proves
        the record current at the moment of the write, or the caller reads it afresh.
        """
        return self._channels_seen.get(channel)

    def _channel(
        self, channel: str, rec: bytes | None, ver: bytes | None
    ) -> tuple[ChannelRecord, int]:
        if rec is None or ver is None:
            self._channels_seen.pop(channel, None)
            raise NotFound(f"no channel {channel}")
        seen = self.parse_channel(rec), int(ver)
        if len(self._channels_seen) >= PARSE_CACHE_SIZE:
            self._channels_seen.clear()
        self._channels_seen[channel] = seen
        return seen

    async def list_channels(self) -> list[str]:
        """Every channel id, sorted."""
        names = await _call(self._redis.hkeys(keyspace.channel_index()))
        return sorted(n.decode() for n in names)

    async def create_channel(self, record: ChannelRecord, event: AuditEvent) -> tuple[int, str]:
        """Create a channel; :class:`Conflict` if it exists. Returns version and event id.

        The index entry is written first: the audit sequencer finds channel outboxes
        through the index, so a channel must never exist without its entry. It is only
        added, never overwritten, so a refused second creation changes nothing.
        """
        index = keyspace.channel_index()
        await _call(self._redis.hsetnx(index, str(record.channel), record.created))
        reply = await self._put(record, 0, event)
        if reply is None:
            raise Conflict(f"channel {record.channel} already exists")
        return reply

    async def update_channel(
        self, record: ChannelRecord, expected_version: int, event: AuditEvent
    ) -> tuple[int, str]:
        """Replace a channel record if unchanged since ``expected_version``."""
        reply = await self._put(record, expected_version, event)
        if reply is None:
            raise Conflict(f"channel {record.channel} was changed meanwhile; retry")
        return reply

    async def _put(
        self, record: ChannelRecord, expected: int, event: AuditEvent
    ) -> tuple[int, str] | None:
        keys = [keyspace.channel_record(record.channel), keyspace.channel_events(record.channel)]
        args: list[bytes | str | int] = [
            expected,
            record.serialize(),
            event.leaf,
            event.record,
            event.salt,
        ]
        reply = await _call(self._put_channel(keys=keys, args=args))
        if int(reply[0]) < 0:
            return None
        return int(reply[0]), reply[1].decode()

    # -- notes ----------------------------------------------------------------------

    async def append_note(
        self,
        channel: ChannelRecord,
        roster_version: int,
        *,
        message_id: bytes,
        sender: str,
        digest_hex: str,
        envelope: bytes,
        now_ms: int,
        event: AuditEvent,
    ) -> AppendResult:
        """Store a note once per message id, if the roster is still ``roster_version``."""
        name = str(channel.channel)
        keys = [
            keyspace.channel_record(name),
            keyspace.channel_notes(name),
            keyspace.channel_message(name, message_id.hex()),
            keyspace.channel_events(name),
        ]
        oldest = f"{max(0, now_ms - channel.retention_ms)}-0"
        args: list[Arg] = [
            roster_version,
            message_id,
            sender,
            digest_hex,
            envelope,
            oldest,
            channel.retention_ms,
            event.leaf,
            event.record,
            event.salt,
        ]
        outcome, *rest = await _call(self._link.script(_APPEND_NOTE, keys, args))
        return _append_result(outcome.decode(), rest, name, digest_hex)

    async def stored_append(
        self, channel: str, message_id_hex: str, digest_hex: str
    ) -> AppendResult | None:
        """The first result for a message id that is stored already (a retry), else None.

        :class:`IdempotencyConflict` when the id was used for another envelope.
        """
        seen = await _call(self._redis.get(keyspace.channel_message(channel, message_id_hex)))
        return None if seen is None else _append_result("dup", [seen], channel, digest_hex)

    async def read_after(self, channel: str, after: str, count: int) -> list[StoredNote]:
        """Up to ``count`` notes with stream ids after ``after``, oldest first."""
        start = "-" if after == "0-0" else f"({after}"
        entries = await _call(
            self._redis.xrange(keyspace.channel_notes(channel), start, "+", count)
        )
        return [_stored(entry_id, fields) for entry_id, fields in entries]

    async def wait_after(
        self, channel: str, after: str, *, count: int, block_ms: int
    ) -> list[StoredNote]:
        """Like :meth:`read_after`, but waits up to ``block_ms`` for new notes."""
        reply = await _call(
            self._redis.xread({keyspace.channel_notes(channel): after}, count=count, block=block_ms)
        )
        if not reply:
            return []
        return [_stored(entry_id, fields) for entry_id, fields in reply[0][1]]

    async def newest_id(self, channel: str) -> str:
        """The stream id of the newest note, or ``0-0`` for an empty channel."""
        entries = await _call(self._redis.xrevrange(keyspace.channel_notes(channel), count=1))
        return entries[0][0].decode() if entries else "0-0"

    async def find_message(self, channel: str, message_id_hex: str) -> str | None:
        """The stream id of a message id, while its record lives."""
        seen = await _call(self._redis.get(keyspace.channel_message(channel, message_id_hex)))
        return None if seen is None else seen.decode().split(" ")[0]

    async def find_message_event(self, channel: str, message_id_hex: str) -> str | None:
        """The audit event id of a message id's note, while its record lives."""
        seen = await _call(self._redis.get(keyspace.channel_message(channel, message_id_hex)))
        return None if seen is None else seen.decode().split(" ")[2]

    # -- read positions -------------------------------------------------------------

    async def advance_read(
        self, channel: str, agency: str, stream_id: str, event: AuditEvent
    ) -> tuple[str, str | None]:
        """Move ``agency``'s read position forward to ``stream_id``.

        Returns the position and the id of the audit event (None when it did not move).
        """
        keys = [
            keyspace.channel_reads(channel),
            keyspace.channel_notes(channel),
            keyspace.channel_events(channel),
        ]
        args: list[bytes | str] = [agency, stream_id, event.leaf, event.record, event.salt]
        outcome, position, *rest = await _call(self._advance(keys=keys, args=args))
        if outcome == b"beyond":
            raise Conflict(f"{stream_id} is after the newest note ({position.decode()})")
        event_id = rest[0].decode() if rest and rest[0] else None
        return position.decode(), event_id

    async def read_positions(self, channel: str) -> dict[str, str]:
        """Each agency's read position in ``channel``."""
        raw = await _call(self._redis.hgetall(keyspace.channel_reads(channel)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    # -- nonces ---------------------------------------------------------------------

    async def agencies_and_nonce(
        self, agencies: Sequence[str], key_id_hex: str, value: str, ttl_s: int
    ) -> tuple[list[AgencyRecord | None], bool]:
        """:meth:`get_agencies` and :meth:`remember_nonce`, in one round trip.

        Two slots, so not atomic; it need not be: the nonce is recorded whatever the
        entries say (a verified request is used up even when it is refused).
        """
        found, stored = await _call(
            self._link.batch(
                [
                    ("HMGET", keyspace.agencies(), *agencies),
                    ("SET", keyspace.nonce(key_id_hex, value), b"1", "NX", "EX", ttl_s),
                ]
            )
        )
        records = [None if data is None else self.parse_agency(data) for data in found]
        return records, bool(stored)

    async def remember_nonce(self, key_id_hex: str, value: str, ttl_s: int) -> bool:
        """Record a request nonce; False when it was already seen (a replay)."""
        stored = await _call(
            self._redis.set(keyspace.nonce(key_id_hex, value), b"1", nx=True, ex=ttl_s)
        )
        return bool(stored)

    # -- live access checks ---------------------------------------------------------

    async def access_records(
        self, channel: str, agencies: list[str]
    ) -> tuple[bytes | None, list[bytes | None]]:
        """The channel record and the directory entries of ``agencies``, unparsed.

        One round trip (a pipeline of two ``HMGET``), so a live feed can re-check all
        its subscribers before each batch at the cost of one read, not two per socket.
        """
        async with _translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keyspace.channel_record(channel), ["rec"])
                if agencies:
                    pipe.hmget(keyspace.agencies(), agencies)
                replies = await pipe.execute()
        return replies[0][0], list(replies[1]) if agencies else []

    async def wait_after_with_access(
        self, channel: str, after: str, agencies: list[str], *, count: int, block_ms: int
    ) -> tuple[list[StoredNote], bytes | None, list[bytes | None]]:
        """:meth:`wait_after`, then :meth:`access_records`, in one round trip.

        Redis runs the pipelined reads only once the blocking ``XREAD`` has returned, so
        the records are read after the notes were: as fresh as a separate read, without
        its round trip.
        """
        async with _translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xread({keyspace.channel_notes(channel): after}, count=count, block=block_ms)
                pipe.hmget(keyspace.channel_record(channel), ["rec"])
                if agencies:
                    pipe.hmget(keyspace.agencies(), agencies)
                replies = await pipe.execute()
        notes = (
            [_stored(entry_id, fields) for entry_id, fields in replies[0][0][1]]
            if replies[0]
            else []
        )
        return notes, replies[1][0], list(replies[2]) if agencies else []


def _remembered(parses: dict[bytes, _R], data: bytes, parse: Callable[[bytes], _R]) -> _R:
    """``parse(data)``, from ``parses`` when these exact bytes were parsed before.

    Records are frozen values of their bytes, so a parse never goes stale; the dict is
    emptied when it grows past :data:`PARSE_CACHE_SIZE` (old records are rare by then).
    """
    record = parses.get(data)
    if record is None:
        if len(parses) >= PARSE_CACHE_SIZE:
            parses.clear()
        record = parses[data] = parse(data)
    return record


def _append_result(outcome: str, rest: list[Any], channel: str, digest_hex: str) -> AppendResult:
    if outcome == "ok":
        return AppendResult(rest[0].decode(), duplicate=False, event_id=rest[1].decode())
    if outcome == "dup":
        stream_id, seen_digest, event_id = rest[0].decode().split(" ")
        if seen_digest != digest_hex:
            raise IdempotencyConflict("this message id was used for another note; use a new one")
        return AppendResult(stream_id, duplicate=True, event_id=event_id)
    if outcome == "stale":
        raise RosterChanged(f"the roster of {channel} changed meanwhile; fetch it and seal again")
    raise NotFound(f"no channel {channel}")


def _stored(entry_id: bytes, fields: dict[bytes, bytes]) -> StoredNote:
    return StoredNote(
        stream_id=entry_id.decode(),
        message_id=fields[b"mid"],
        sender=fields[b"from"].decode(),
        digest_hex=fields[b"dig"].decode(),
        envelope=fields[b"env"],
    )
