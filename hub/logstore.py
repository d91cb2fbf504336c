"""Redis operations of the audit log (the ``{log}`` slot and the outboxes).

A companion of :mod:`hub.store`, whose ``_call`` translates every Redis error into
:class:`~hub.errors.Unavailable`; nothing here touches a Redis error itself.

What the sequencer runs for every batch (read the outbox and trim what the last batch
took, sequence, trim when done) goes over the link it is handed, the
:class:`~hub.store.Store`'s (:attr:`~hub.store.Store.link`), as in the hub. Reading the
log's size and subtree hashes (once at start, after a lost race, per checkpoint),
cursors, proofs and deletion stay on redis-py's pool. A LogStore handed no link (tests,
benchmarks) uses the pool throughout: a link of its own would need closing, and a
LogStore has no ``close``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

from hub import keyspace
from hub.events import AuditEvent
from hub.redislink import Arg, LinkScript, RedisLink
from hub.store import _call

#: KEYS[1] checkpoints hash, KEYS[2] latest checkpoint; ARGV[1] size, ARGV[2] note.
#: Stores the note for its size; makes it the latest unless a larger one is there.
#: Returns 1 when it became the latest.
_PUT_CHECKPOINT: Final = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local latest = redis.call('GET', KEYS[2])
if latest then
  local size = tonumber(string.match(latest, '^[^\\n]*\\n(%d+)\\n'))
  if size and size >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

#: KEYS[1] records hash, KEYS[2] salts hash, KEYS[3] the log's inbox stream
#: ARGV[1] leaf index, ARGV[2] the signed tombstone leaf naming that index
#: Removes record and salt and queues the tombstone together, so a record is never gone
#: without its tombstone. Returns the tombstone's event id, or 0 (nothing changed) when
#: there is no record: already deleted, or the leaf is itself a tombstone (an empty
#: record, as logs sequenced before tombstones stored none may still hold).
_DELETE_RECORD: Final = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record or record == '' then return 0 end
local event = redis.call('XADD', KEYS[3], '*', 'leaf', ARGV[2], 'rec', '', 'salt', '')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return event
"""


@dataclass(frozen=True)
class OutboxEvent:
    """An event waiting in an outbox."""

    event_id: str
    event: AuditEvent


@dataclass(frozen=True)
class StoredLeaf:
    """One leaf of the log, with its record and salt while they are kept."""

    index: int
    leaf: bytes
    record: bytes | None
    salt: bytes | None


_SEQUENCE: Final = LinkScript(keyspace.SEQUENCE)


def _event(fields: dict[bytes, bytes]) -> AuditEvent:
    """The audit event of an outbox entry's fields."""
    return AuditEvent(fields[b"leaf"], fields[b"rec"], fields[b"salt"])


def _after(stream_id: str) -> str:
    """The smallest stream id after ``stream_id`` (XTRIM's MINID keeps it and later)."""
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq) + 1}"


def node_field(level: int, index: int) -> str:
    """The field naming a perfect subtree in the nodes hash."""
    return f"{level}:{index}"


class LogStore:
    """Named Redis operations of the audit log."""

    def __init__(self, client: aioredis.Redis, link: RedisLink | None = None) -> None:
        self._redis = client
        self._link = link
        self._sequence = client.register_script(keyspace.SEQUENCE)
        self._put_checkpoint = client.register_script(_PUT_CHECKPOINT)
        self._delete_record = client.register_script(_DELETE_RECORD)

    async def outboxes(self) -> list[str]:
        """Every outbox the sequencer must drain: directory, inbox, each channel."""
        names = await _call(self._redis.hkeys(keyspace.channel_index()))
        channels = sorted(keyspace.channel_events(n.decode()) for n in names)
        return [keyspace.directory_events(), keyspace.log_inbox(), *channels]

    async def size(self) -> int:
        """The number of leaves."""
        return int(await _call(self._redis.get(keyspace.log_size())) or 0)

    async def cursor(self, outbox: str) -> str:
        """The id of the last event of ``outbox`` taken into the log."""
        value = await _call(self._redis.hget(keyspace.log_cursors(), outbox))
        return "0-0" if value is None else str(value.decode())

    async def read_outbox(
        self, outbox: str, after: str, count: int, *, trim_upto: str | None = None
    ) -> list[OutboxEvent]:
        """Events of ``outbox`` after ``after``, oldest first.

        With ``trim_upto``, first drops the events up to it (as :meth:`trim_outbox`) in
        the same round trip: both commands name the one outbox key, so one slot.
        """
        start = "-" if after == "0-0" else f"({after}"
        if self._link is not None:
            commands: list[tuple[Arg, ...]] = [("XRANGE", outbox, start, "+", "COUNT", count)]
            if trim_upto is not None:
                commands.insert(0, ("XTRIM", outbox, "MINID", "~", _after(trim_upto)))
            replies = await _call(self._link.batch(commands))
            return [
                OutboxEvent(i.decode(), _event(dict(zip(f[::2], f[1::2], strict=True))))
                for i, f in replies[-1]
            ]
        if trim_upto is None:
            entries = await _call(self._redis.xrange(outbox, start, "+", count))
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xtrim(outbox, minid=_after(trim_upto))
                pipe.xrange(outbox, start, "+", count)
                _, entries = await _call(pipe.execute())
        return [OutboxEvent(i.decode(), _event(f)) for i, f in entries]

    async def sequence(
        self,
        *,
        size: int,
        outbox: str,
        cursor: str,
        events: Sequence[OutboxEvent],
        nodes: Sequence[tuple[int, int, bytes]],
    ) -> int | None:
        """Append ``events`` as leaves ``size ..`` if nobody else did; the first index."""
        keys = [
            keyspace.log_size(),
            keyspace.log_leaves(),
            keyspace.log_nodes(),
            keyspace.log_records(),
            keyspace.log_salts(),
            keyspace.log_cursors(),
            keyspace.log_sources(),
        ]
        args: list[Arg] = [size, outbox, cursor, events[-1].event_id, len(events)]
        for item in events:
            args += [item.event_id, item.event.leaf, item.event.record, item.event.salt]
        args.append(len(nodes))
        for level, index, digest in nodes:
            args += [node_field(level, index), digest]
        if self._link is not None:
            reply = await _call(self._link.script(_SEQUENCE, keys, args))
        else:
            reply = await _call(self._sequence(keys=keys, args=args))
        return int(reply[1]) if reply[0] == b"ok" else None

    async def trim_outbox(self, outbox: str, upto: str) -> None:
        """Drop events of ``outbox`` up to ``upto``: they are in the log."""
        if self._link is not None:
            await _call(self._link.call("XTRIM", outbox, "MINID", "~", _after(upto)))
        else:
            await _call(self._redis.xtrim(outbox, minid=_after(upto)))

    async def append_inbox(self, event: AuditEvent) -> str:
        """Put an event with no action of its own into the log's inbox."""
        fields: dict[Any, Any] = {
            "leaf": event.leaf,
            "rec": event.record,
            "salt": event.salt,
        }
        return str((await _call(self._redis.xadd(keyspace.log_inbox(), fields))).decode())

    async def nodes(self, ids: Sequence[tuple[int, int]]) -> list[bytes | None]:
        """Hashes of perfect subtrees, in order (None where absent)."""
        if not ids:
            return []
        fields = [node_field(level, index) for level, index in ids]
        return list(await _call(self._redis.hmget(keyspace.log_nodes(), fields)))

    async def leaves(self, start: int, end: int) -> list[StoredLeaf]:
        """Leaves ``start .. end-1`` with their records and salts."""
        indexes = [str(i) for i in range(start, end)]
        if not indexes:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keyspace.log_leaves(), indexes)
            pipe.hmget(keyspace.log_records(), indexes)
            pipe.hmget(keyspace.log_salts(), indexes)
            leaves, records, salts = await _call(pipe.execute())
        return [
            StoredLeaf(start + i, leaf, records[i], salts[i])
            for i, leaf in enumerate(leaves)
            if leaf is not None
        ]

    async def source_index(self, outbox: str, event_id: str) -> int | None:
        """The leaf index an outbox event became, once sequenced."""
        value = await _call(self._redis.hget(keyspace.log_sources(), f"{outbox}|{event_id}"))
        return None if value is None else int(value)

    async def delete_record(self, index: int, tombstone: bytes) -> str | None:
        """Remove a record and its salt and queue its ``tombstone`` leaf, in one step.

        Returns the tombstone's inbox event id, or None (nothing changed) when leaf
        ``index`` has no record to delete.
        """
        keys = [keyspace.log_records(), keyspace.log_salts(), keyspace.log_inbox()]
        reply = await _call(self._delete_record(keys=keys, args=[index, tombstone]))
        return reply.decode() if isinstance(reply, bytes) else None

    async def put_checkpoint(self, size: int, note: bytes) -> None:
        """Keep a signed checkpoint; it becomes the latest unless a larger one exists."""
        keys = [keyspace.log_checkpoints(), keyspace.log_latest_checkpoint()]
        await _call(self._put_checkpoint(keys=keys, args=[size, note]))

    async def latest_checkpoint(self) -> bytes | None:
        """The newest signed checkpoint."""
        value: bytes | None = await _call(self._redis.get(keyspace.log_latest_checkpoint()))
        return value

    async def checkpoint_at(self, size: int) -> bytes | None:
        """The signed checkpoint of ``size`` leaves, if one was made."""
        value: bytes | None = await _call(self._redis.hget(keyspace.log_checkpoints(), str(size)))
        return value

    async def retention_cursor(self) -> int:
        """The lowest index whose record's retention has not been checked yet."""
        return int(await _call(self._redis.get(keyspace.log_retention_cursor())) or 0)

    async def set_retention_cursor(self, index: int) -> None:
        """Move the retention cursor."""
        await _call(self._redis.set(keyspace.log_retention_cursor(), index))
