"""Every Redis key name and every Lua script of the hub, in one place.

Key names are functions of typed ids. Everything that one atomic operation touches
shares a hash tag (the part in braces), so the same code runs on Redis Cluster:

* ``{dir}``        — the directory: agencies, their cards, the channel index;
* ``{ch:<id>}``    — one channel: its record, roster version, note stream, message-id
  index, read positions;
* ``{n:<key id>}`` — the request nonces of one key (replay protection).

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


def channel_reads(channel: str) -> str:
    """Hash: agency id -> last stream id it acknowledged (its read position)."""
    return f"{_channel(channel)}:reads"


# -- nonces ({n:<key id>}) --------------------------------------------------------


def nonce(key_id_hex: str, value: str) -> str:
    """String with expiry: present while this request nonce may not be reused."""
    return f"{PREFIX}:{{n:{key_id_hex}}}:{value}"


# -- Lua scripts ------------------------------------------------------------------

#: KEYS[1] channel record hash, KEYS[2] note stream, KEYS[3] message-id record
#: ARGV[1] roster version the policy check saw, ARGV[2] message id (16 bytes),
#: ARGV[3] sender agency, ARGV[4] envelope digest (hex), ARGV[5] envelope bytes,
#: ARGV[6] oldest stream id to keep (retention, as "<ms>-0"),
#: ARGV[7] lifetime of the message-id record in ms
#: Returns {"dup", "<stream id> <digest hex>"} when the message id was seen,
#: {"gone"} when the channel does not exist, {"stale"} when the roster changed since
#: the check, else {"ok", stream id}.
APPEND_NOTE: Final = """
local seen = redis.call('GET', KEYS[3])
if seen then return {'dup', seen} end
local version = redis.call('HGET', KEYS[1], 'ver')
if not version then return {'gone'} end
if version ~= ARGV[1] then return {'stale'} end
local id = redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[6], '*',
  'mid', ARGV[2], 'from', ARGV[3], 'dig', ARGV[4], 'env', ARGV[5])
redis.call('SET', KEYS[3], id .. ' ' .. ARGV[4], 'PX', ARGV[7])
return {'ok', id}
"""

#: KEYS[1] channel record hash
#: ARGV[1] expected roster version ("0" to create), ARGV[2] new record bytes
#: Returns the new version, or -1 when the expected version did not match
#: (someone else changed the channel, or it already exists when creating).
PUT_CHANNEL: Final = """
local version = redis.call('HGET', KEYS[1], 'ver') or '0'
if version ~= ARGV[1] then return -1 end
local next_version = tonumber(version) + 1
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'ver', next_version)
return next_version
"""

#: KEYS[1] read positions hash, KEYS[2] note stream
#: ARGV[1] agency, ARGV[2] stream id "<ms>-<seq>" being acknowledged
#: Returns {"ok", position} with the (possibly unchanged) read position, or
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
  return {'ok', ARGV[2]}
end
return {'ok', current}
"""

#: KEYS[1] agencies hash, KEYS[2] cards hash
#: ARGV[1] agency id, ARGV[2] record bytes, ARGV[3] key id hex, ARGV[4] card bytes,
#: ARGV[5] "new" to register (fails if present) or the expected current record bytes
#: Returns 1 on success, 0 when the expectation did not hold.
PUT_AGENCY: Final = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[5] == 'new' then
  if current then return 0 end
elseif current ~= ARGV[5] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
return 1
"""
