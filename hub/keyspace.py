"""Every Redis key name and every Lua script of the hub, in one place.

Key names are functions of typed ids. Everything that one atomic operation touches
shares a hash tag (the part in braces), so the same code runs on Redis Cluster:

* ``{dir}``        — the directory: agencies, their cards, the channel index;
* ``{ch:<id>}``    — one channel: its record, roster version, note stream, message-id
  index, read positions;
* ``{n:<key id>}`` — the request nonces of one key (replay protection);
* ``{log}``        — the audit log: leaves, perfect-subtree hashes, records and salts,
  checkpoints, and the cursor of every outbox it has taken events from.

Every action writes its audit event into an *outbox* stream in its own slot, in the
same Lua script as the action (``{dir}:events``, ``{ch:<id>}:events``; events with no
action, such as refused requests, go to ``{log}:inbox``). The sequencer
(:mod:`hub.auditlog`) moves events from outboxes into the log exactly once.

Lua scripts follow: each states its ``KEYS``, ``ARGV`` and return value. They are
registered once per connection pool (redis-py's ``Script`` runs them by SHA and reloads
them after a Redis restart).
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "siko"


# -- directory ({dir}) ------------------------------------------------------------


def agencies() -> str:
    """Hash: agency id -> AgencyRecord bytes."""
    return f"{PREFIX}:{{dir}}:agencies"


def cards() -> str:
    """Hash: key id (32 hex) -> card bytes, for every card ever registered."""
    return f"{PREFIX}:{{dir}}:cards"


def channel_index() -> str:
    """Hash: channel id -> creation time (ms); the list of channels."""
    return f"{PREFIX}:{{dir}}:channels"


def directory_events() -> str:
    """Stream: the outbox of directory events (agencies, keys)."""
    return f"{PREFIX}:{{dir}}:events"


def card_events() -> str:
    """Hash: key id (32 hex) -> id of the directory event that registered that card."""
    return f"{PREFIX}:{{dir}}:card-events"


# -- one channel ({ch:<id>}) ------------------------------------------------------


def _channel(channel: str) -> str:
    return f"{PREFIX}:{{ch:{channel}}}"


def channel_record(channel: str) -> str:
    """Hash: ``rec`` -> ChannelRecord bytes, ``ver`` -> roster version (int)."""
    return f"{_channel(channel)}:meta"


def channel_notes(channel: str) -> str:
    """Stream of notes; entry fields ``mid``, ``from``, ``dig``, ``env``."""
    return f"{_channel(channel)}:notes"


def channel_message(channel: str, message_id_hex: str) -> str:
    """String ``<stream id> <digest hex>``: the idempotency record of one message id."""
    return f"{_channel(channel)}:mid:{message_id_hex}"


def channel_events(channel: str) -> str:
    """Stream: the outbox of this channel's events (creation, members, notes, reads)."""
    return f"{_channel(channel)}:events"


def channel_reads(channel: str) -> str:
    """Hash: agency id -> last stream id it acknowledged (its read position)."""
    return f"{_channel(channel)}:reads"


# -- nonces ({n:<key id>}) --------------------------------------------------------


def nonce(key_id_hex: str, value: str) -> str:
    """String with expiry: present while this request nonce may not be reused."""
    return f"{PREFIX}:{{n:{key_id_hex}}}:{value}"


# -- the audit log ({log}) --------------------------------------------------------


def log_inbox() -> str:
    """Stream: events with no action of their own (refused requests, tombstones)."""
    return f"{PREFIX}:{{log}}:inbox"


def log_size() -> str:
    """String: the number of leaves."""
    return f"{PREFIX}:{{log}}:size"


def log_leaves() -> str:
    """Hash: leaf index -> leaf bytes."""
    return f"{PREFIX}:{{log}}:leaves"


def log_nodes() -> str:
    """Hash: ``<level>:<index>`` -> hash of that perfect subtree (level 0: leaf hashes)."""
    return f"{PREFIX}:{{log}}:nodes"


def log_records() -> str:
    """Hash: leaf index -> event record bytes (deleted by retention or erasure)."""
    return f"{PREFIX}:{{log}}:records"


def log_salts() -> str:
    """Hash: leaf index -> the record's salt (deleted with the record)."""
    return f"{PREFIX}:{{log}}:salts"


def log_cursors() -> str:
    """Hash: outbox key -> id of the last event taken into the log."""
    return f"{PREFIX}:{{log}}:cursors"


def log_sources() -> str:
    """Hash: ``<outbox key>|<event id>`` -> leaf index."""
    return f"{PREFIX}:{{log}}:sources"


def log_checkpoints() -> str:
    """Hash: tree size -> signed checkpoint note."""
    return f"{PREFIX}:{{log}}:checkpoints"


def log_latest_checkpoint() -> str:
    """String: the newest signed checkpoint note."""
    return f"{PREFIX}:{{log}}:checkpoint"


def log_retention_cursor() -> str:
    """String: the lowest leaf index whose record retention has not yet passed."""
    return f"{PREFIX}:{{log}}:retained-from"


# -- Lua scripts ------------------------------------------------------------------

#: KEYS[1] channel record hash, KEYS[2] note stream, KEYS[3] message-id record,
#: KEYS[4] channel event outbox
#: ARGV[1] roster version the policy check saw, ARGV[2] message id (16 bytes),
#: ARGV[3] sender agency, ARGV[4] envelope digest (hex), ARGV[5] envelope bytes,
#: ARGV[6] oldest stream id to keep (retention, as "<ms>-0"),
#: ARGV[7] lifetime of the message-id record in ms,
#: ARGV[8] audit leaf, ARGV[9] audit record, ARGV[10] record salt
#: Returns {"dup", "<stream id> <digest hex> <event id>"} when the message id was
#: seen, {"gone"} when the channel does not exist, {"stale"} when the roster changed
#: since the check, else {"ok", stream id, event id}.
APPEND_NOTE: Final = """
local seen = redis.call('GET', KEYS[3])
if seen then return {'dup', seen} end
local version = redis.call('HGET', KEYS[1], 'ver')
if not version then return {'gone'} end
if version ~= ARGV[1] then return {'stale'} end
local id = redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[6], '*',
  'mid', ARGV[2], 'from', ARGV[3], 'dig', ARGV[4], 'env', ARGV[5])
local event = redis.call('XADD', KEYS[4], '*', 'leaf', ARGV[8], 'rec', ARGV[9], 'salt', ARGV[10])
redis.call('SET', KEYS[3], id .. ' ' .. ARGV[4] .. ' ' .. event, 'PX', ARGV[7])
return {'ok', id, event}
"""

#: KEYS[1] channel record hash, KEYS[2] channel event outbox
#: ARGV[1] expected roster version ("0" to create), ARGV[2] new record bytes,
#: ARGV[3] audit leaf, ARGV[4] audit record, ARGV[5] record salt
#: Returns {new version, event id}, or {-1} when the expected version did not match
#: (someone else changed the channel, or it already exists when creating).
PUT_CHANNEL: Final = """
local version = redis.call('HGET', KEYS[1], 'ver') or '0'
if version ~= ARGV[1] then return {-1} end
local next_version = tonumber(version) + 1
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'ver', next_version)
local event = redis.call('XADD', KEYS[2], '*', 'leaf', ARGV[3], 'rec', ARGV[4], 'salt', ARGV[5])
return {next_version, event}
"""

#: KEYS[1] read positions hash, KEYS[2] note stream, KEYS[3] channel event outbox
#: ARGV[1] agency, ARGV[2] stream id "<ms>-<seq>" being acknowledged,
#: ARGV[3] audit leaf, ARGV[4] audit record, ARGV[5] record salt (the signed ack)
#: Returns {"ok", position, event id or ""} with the (possibly unchanged) read
#: position — an event is written only when the position moves — or
#: {"beyond", last id} when the id is after the newest note of the stream.
ADVANCE_READ: Final = """
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local newest = '0-0'
if last[1] then newest = last[1][1] end
if older(newest, ARGV[2]) then return {'beyond', newest} end
local current = redis.call('HGET', KEYS[1], ARGV[1]) or '0-0'
if older(current, ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  local event = redis.call('XADD', KEYS[3], '*', 'leaf', ARGV[3], 'rec', ARGV[4], 'salt', ARGV[5])
  return {'ok', ARGV[2], event}
end
return {'ok', current, ''}
"""

#: KEYS[1] agencies hash, KEYS[2] cards hash, KEYS[3] directory event outbox,
#: KEYS[4] card events hash (a new card's key id -> this event's id)
#: ARGV[1] agency id, ARGV[2] record bytes, ARGV[3] key id hex, ARGV[4] card bytes,
#: ARGV[5] "new" to register (fails if present) or the expected current record bytes,
#: ARGV[6] audit leaf, ARGV[7] audit record, ARGV[8] record salt
#: Returns the event id on success, 0 when the expectation did not hold.
PUT_AGENCY: Final = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[5] == 'new' then
  if current then return 0 end
elseif current ~= ARGV[5] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local added = redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
local event = redis.call('XADD', KEYS[3], '*', 'leaf', ARGV[6], 'rec', ARGV[7], 'salt', ARGV[8])
if added == 1 then redis.call('HSET', KEYS[4], ARGV[3], event) end
return event
"""

#: KEYS[1] log size, KEYS[2] leaves, KEYS[3] nodes, KEYS[4] records, KEYS[5] salts,
#: KEYS[6] cursors, KEYS[7] sources
#: ARGV[1] size the caller computed from, ARGV[2] outbox key, ARGV[3] the outbox's
#: cursor the caller read from, ARGV[4] the new cursor, ARGV[5] k = number of events,
#: then k groups (event id, leaf, record, salt), then m = number of completed nodes,
#: then m pairs ("<level>:<index>", hash). An empty record (a tombstone: the leaf is
#: all there is) stores no record and no salt, so it has nothing to delete.
#: Returns {"ok", first index} when size and cursor were as expected (the k leaves now
#: have indexes first .. first+k-1), else {"conflict"}: another sequencer went first.
SEQUENCE: Final = """
local size = tonumber(redis.call('GET', KEYS[1]) or '0')
if size ~= tonumber(ARGV[1]) then return {'conflict'} end
local cursor = redis.call('HGET', KEYS[6], ARGV[2]) or '0-0'
if cursor ~= ARGV[3] then return {'conflict'} end
local k = tonumber(ARGV[5])
for i = 0, k - 1 do
  local base = 6 + 4 * i
  local index = size + i
  redis.call('HSET', KEYS[2], index, ARGV[base + 1])
  if ARGV[base + 2] ~= '' then
    redis.call('HSET', KEYS[4], index, ARGV[base + 2])
    redis.call('HSET', KEYS[5], index, ARGV[base + 3])
  end
  redis.call('HSET', KEYS[7], ARGV[2] .. '|' .. ARGV[base], index)
end
local m_at = 6 + 4 * k
local m = tonumber(ARGV[m_at])
for j = 0, m - 1 do
  redis.call('HSET', KEYS[3], ARGV[m_at + 1 + 2 * j], ARGV[m_at + 2 + 2 * j])
end
redis.call('SET', KEYS[1], size + k)
redis.call('HSET', KEYS[6], ARGV[2], ARGV[4])
return {'ok', size}
"""
