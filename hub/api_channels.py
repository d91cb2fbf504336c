"""/v1/channels: channels, their rosters (members, roles, current keys) and changes.

Creating a channel and changing its members are administrators' acts; members read
the roster to know whom to seal for (every reader, under its current key).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hub import events, policy, wire
from hub.auth import CALLER
from hub.errors import BadRequest, NotFound
from hub.records import ChannelRecord, Kind, Role
from hub.state import AUDIT, DIRECTORY, STORE
from keys import AgencyId, ChannelId, Classification, KeysError, now_ms

routes = web.RouteTableDef()

#: How a directory entry that may not be a member is named in a refusal.
_NOT_AN_AGENCY = {Kind.ADMIN: "an administrator", Kind.AUDITOR: "an auditor"}


def _roles(value: Any, agency: str) -> frozenset[Role]:
    try:
        return Role.parse_all(value) if value != [] else frozenset()
    except KeysError as exc:
        raise BadRequest(f"members.{agency}: {exc}") from None


def _channel_from(body: dict[str, Any]) -> ChannelRecord:
    try:
        members = wire.field(body, "members", dict)
        return ChannelRecord(
            channel=ChannelId(wire.field(body, "channel", str)),
            ceiling=Classification.parse(wire.field(body, "ceiling", str)),
            retention_days=wire.field(body, "retention_days", int),
            members={AgencyId(a): _roles(r, a) for a, r in members.items()},
            created=now_ms(),
        )
    except KeysError as exc:
        raise BadRequest(str(exc)) from None


async def _require_agencies(request: web.Request, agencies: list[str]) -> None:
    directory = request.app[DIRECTORY]
    for agency in agencies:
        record = await directory.agency(agency)
        if record.kind is not Kind.AGENCY:
            raise BadRequest(f"{agency} is {_NOT_AN_AGENCY[record.kind]}, not an agency")


async def roster(request: web.Request, record: ChannelRecord, version: int) -> dict[str, Any]:
    """The channel as members see it: roles and the current key of every member."""
    directory = request.app[DIRECTORY]
    entries = [await directory.agency(a) for a in sorted(record.members)]
    cards = await directory.current_cards(entries)
    return {
        "channel": str(record.channel),
        "ceiling": record.ceiling.value,
        "retention_days": record.retention_days,
        "version": version,
        "members": {
            str(e.agency): {
                "roles": sorted(r.value for r in record.members[e.agency]),
                "status": e.status.value,
                "key_id": str(e.current_key),
                "card": cards[str(e.agency)].serialize(),
            }
            for e in entries
        },
        "readers": sorted(str(a) for a in record.readers()),
    }


@routes.post("/v1/channels")
async def post_channel(request: web.Request) -> web.Response:
    """Create a channel with members and roles, a ceiling and a retention. Admins only."""
    caller = request[CALLER]
    policy.require_admin(caller.record)
    record = _channel_from(await wire.read_map(request))
    await _require_agencies(request, sorted(record.members))
    event = events.channel_created(record, caller.agency, record.created)
    version, event_id = await request.app[STORE].create_channel(record, event)
    await request.app[AUDIT].settle_channel(str(record.channel), event_id)
    return wire.respond(request, await roster(request, record, version), status=201)


@routes.get("/v1/channels")
async def list_channels(request: web.Request) -> web.Response:
    """The channels the caller belongs to (every channel, for an administrator)."""
    caller = request[CALLER]
    store = request.app[STORE]
    visible = []
    for name in await store.list_channels():
        record, _ = await store.get_channel(name)
        roles = record.roles_of(caller.agency)
        if roles or caller.record.kind is Kind.ADMIN:
            visible.append({"channel": name, "roles": sorted(r.value for r in roles)})
    return wire.respond(request, {"channels": visible})


@routes.get("/v1/channels/{channel}")
async def get_channel(request: web.Request) -> web.Response:
    """The roster of a channel, for its members and administrators."""
    caller = request[CALLER]
    record, version = await request.app[STORE].get_channel(request.match_info["channel"])
    if not record.roles_of(caller.agency) and caller.record.kind is not Kind.ADMIN:
        raise NotFound(f"no channel {record.channel}")
    return wire.respond(request, await roster(request, record, version))


@routes.put("/v1/channels/{channel}/members/{agency}")
async def put_member(request: web.Request) -> web.Response:
    """Set an agency's roles in a channel; an empty list removes it. Admins only."""
    caller = request[CALLER]
    policy.require_admin(caller.record)
    agency = request.match_info["agency"]
    roles = _roles(wire.field(await wire.read_map(request), "roles", list), agency)
    if roles:
        await _require_agencies(request, [agency])
    store = request.app[STORE]
    record, version = await store.get_channel(request.match_info["channel"])
    try:
        updated = record.with_member(AgencyId(agency), roles)
    except KeysError as exc:
        raise BadRequest(str(exc)) from None
    event = events.member_changed(updated, agency, caller.agency, now_ms())
    version, event_id = await store.update_channel(updated, version, event)
    await request.app[AUDIT].settle_channel(str(updated.channel), event_id)
    return wire.respond(request, await roster(request, updated, version))
