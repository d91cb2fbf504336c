"""/v1/agencies and /v1/cards: the directory of agencies, administrators and their keys.

Registering an agency and suspending it are administrators' acts (four-eyes approval
wraps them in a later step: :func:`register_agency` and :func:`set_status` are the
actions a proposal will carry out). An agency may rotate its own key, signing the
request with its current key.
"""

from __future__ import annotations

from aiohttp import web

from hub import events, policy, wire
from hub.auth import CALLER
from hub.errors import BadRequest, Conflict, Forbidden
from hub.records import AgencyRecord, Kind, Status
from hub.state import AUDIT, DIRECTORY, STORE
from keys import AgencyCard, KeysError, now_ms

routes = web.RouteTableDef()


def _parse_card(data: bytes) -> AgencyCard:
    try:
        return AgencyCard.parse(data)
    except KeysError as exc:
        raise BadRequest(f"card: {exc}") from None


def _describe(record: AgencyRecord) -> dict[str, object]:
    return {
        "agency": str(record.agency),
        "kind": record.kind.value,
        "status": record.status.value,
        "key_id": str(record.current_key),
        "fingerprint": record.current_key.fingerprint(),
        "keys": [str(k) for k in record.key_ids],
    }


async def register_agency(request: web.Request, card: AgencyCard, kind: Kind) -> AgencyRecord:
    """Add ``card``'s agency to the directory, and log it."""
    at = now_ms()
    record = AgencyRecord(card.agency, kind, Status.ACTIVE, (card.key_id,), at)
    event = events.agency_registered(record, card, request[CALLER].agency, at)
    event_id = await request.app[STORE].register_agency(record, card.serialize(), event)
    await request.app[AUDIT].settle_directory(event_id)
    return record


@routes.post("/v1/agencies")
async def post_agency(request: web.Request) -> web.Response:
    """Register an agency (or administrator) from its public card. Admins only."""
    policy.require_admin(request[CALLER].record)
    body = await wire.read_map(request)
    card = _parse_card(wire.binary(body, "card"))
    kind_name = wire.field(body, "kind", str, required=False) or Kind.AGENCY.value
    if kind_name not in {k.value for k in Kind}:
        raise BadRequest("kind must be 'agency', 'admin' or 'auditor'")
    record = await register_agency(request, card, Kind(kind_name))
    return wire.respond(request, _describe(record), status=201)


@routes.get("/v1/agencies")
async def list_agencies(request: web.Request) -> web.Response:
    """Every registered agency and administrator, with its current key id."""
    records = await request.app[STORE].list_agencies()
    return wire.respond(request, {"agencies": [_describe(r) for r in records]})


@routes.get("/v1/agencies/{agency}")
async def get_agency(request: web.Request) -> web.Response:
    """One directory entry with its current card."""
    directory = request.app[DIRECTORY]
    record = await directory.agency(request.match_info["agency"])
    card = await directory.current_card(record)
    return wire.respond(request, {**_describe(record), "card": card.serialize()})


@routes.get("/v1/cards/{key_id}")
async def get_card(request: web.Request) -> web.Response:
    """Any card ever registered, by key id: to verify old notes after a rotation."""
    card = await request.app[DIRECTORY].card(request.match_info["key_id"].lower())
    if card is None:
        raise web.HTTPNotFound
    return wire.respond(request, {"agency": str(card.agency), "card": card.serialize()})


@routes.post("/v1/agencies/{agency}/status")
async def post_status(request: web.Request) -> web.Response:
    """Suspend or reactivate an agency. Admins only."""
    caller = request[CALLER]
    policy.require_admin(caller.record)
    body = await wire.read_map(request)
    status_name = wire.field(body, "status", str)
    if status_name not in {s.value for s in Status}:
        raise BadRequest("status must be 'active' or 'suspended'")
    directory = request.app[DIRECTORY]
    old = await directory.agency(request.match_info["agency"])
    if old.agency == caller.agency:
        raise Forbidden("an administrator cannot change its own status")
    new = AgencyRecord(old.agency, old.kind, Status(status_name), old.key_ids, old.registered)
    card = await directory.current_card(old)
    event = events.agency_status(str(old.agency), status_name, caller.agency, now_ms())
    event_id = await request.app[STORE].replace_agency(old, new, card.serialize(), event)
    await request.app[AUDIT].settle_directory(event_id)
    return wire.respond(request, _describe(new))


@routes.post("/v1/agencies/{agency}/cards")
async def post_card(request: web.Request) -> web.Response:
    """Rotate an agency's key: the agency itself, or an administrator, adds a new card."""
    caller = request[CALLER]
    agency = request.match_info["agency"]
    if caller.agency != agency:
        policy.require_admin(caller.record)
    card = _parse_card(wire.binary(await wire.read_map(request), "card"))
    old = await request.app[DIRECTORY].agency(agency)
    if card.agency != old.agency:
        raise BadRequest(f"the card is for {card.agency}, not {agency}")
    if card.key_id in old.key_ids:
        raise Conflict("this card is already registered; make a new one to rotate")
    new = AgencyRecord(
        old.agency, old.kind, old.status, (*old.key_ids, card.key_id), old.registered
    )
    event = events.key_added(agency, card, caller.agency, now_ms())
    event_id = await request.app[STORE].replace_agency(old, new, card.serialize(), event)
    await request.app[AUDIT].settle_directory(event_id)
    return wire.respond(request, _describe(new), status=201)
