"""/v1/audit: checkpoints, leaves, records and proofs for auditors and agencies.

Any registered party may read checkpoints, leaves (commitments only) and proofs: an
agency checks its receipts and the cards it encrypts to. Event records, which name
agencies and channels, are served to auditors (and administrators) only, with one
exception: the record that registered a card (cards are public), served by key id with
its salt and an inclusion proof, so a client can check before sealing that the card it
encrypts to is the one in the log.
"""

from __future__ import annotations

import re

from aiohttp import web

from hub import policy, wire
from hub.auditlog import AuditLog
from hub.auth import CALLER
from hub.errors import BadRequest, NotFound, Unavailable
from hub.records import Kind
from hub.state import AUDIT, STORE
from keys import now_ms
from keys.checkpoint import Checkpoint

routes = web.RouteTableDef()

MAX_INDEX = 2**63 - 1
#: ASCII digits only: ``str.isdigit`` also accepts "²", which ``int`` then refuses.
_NUMBER = re.compile(r"[0-9]{1,19}")
_KEY_ID = re.compile(r"[0-9a-f]{32}")


def _parse_number(text: str) -> int | None:
    """``text`` as a leaf index or tree size, or ``None`` if it is not one."""
    if _NUMBER.fullmatch(text) is None or int(text) > MAX_INDEX:
        return None
    return int(text)


def _number(request: web.Request, name: str) -> int:
    value = _parse_number(request.query.get(name, ""))
    if value is None:
        raise BadRequest(f"query parameter {name!r} must be a non-negative integer")
    return value


@routes.get("/v1/audit/checkpoint")
async def get_checkpoint(request: web.Request) -> web.Response:
    """The newest signed checkpoint (C2SP tlog-checkpoint in a signed note)."""
    note = await request.app[AUDIT].latest_checkpoint()
    return web.Response(body=note, content_type="text/plain", charset="utf-8")


@routes.get("/v1/audit/checkpoints/{size}")
async def get_checkpoint_at(request: web.Request) -> web.Response:
    """The signed checkpoint of a given tree size, if the hub signed one."""
    size = _parse_number(request.match_info["size"])
    if size is None:
        raise BadRequest("the size must be a non-negative integer")
    note = await request.app[AUDIT].checkpoint_at(size)
    if note is None:
        raise NotFound(f"no checkpoint was signed at size {size}")
    return web.Response(body=note, content_type="text/plain", charset="utf-8")


@routes.get("/v1/audit/key")
async def get_key(request: web.Request) -> web.Response:
    """The log's origin and verifier key (compare it with the one published out of band)."""
    key = request.app[AUDIT].key
    return wire.respond(request, {"origin": key.origin, "verifier_key": key.verifier_key})


@routes.get("/v1/audit/leaves")
async def get_leaves(request: web.Request) -> web.Response:
    """Leaves ``start .. end-1``; auditors also get each record and salt still kept."""
    start, end = _number(request, "start"), _number(request, "end")
    leaves = await request.app[AUDIT].leaves(start, end)
    with_records = request[CALLER].record.kind in (Kind.AUDITOR, Kind.ADMIN)
    entries = []
    for item in leaves:
        entry: dict[str, object] = {"index": item.index, "leaf": item.leaf}
        if with_records and item.record:
            entry["record"], entry["salt"] = item.record, item.salt
        entries.append(entry)
    return wire.respond(request, {"start": start, "end": end, "leaves": entries})


@routes.get("/v1/audit/cards/{key_id}")
async def get_card_event(request: web.Request) -> web.Response:
    """The log leaf, record and salt that registered a card, proved into a checkpoint."""
    key_id = request.match_info["key_id"]
    if _KEY_ID.fullmatch(key_id) is None:
        raise BadRequest("a key id is 32 lower-case hex digits")
    store, audit = request.app[STORE], request.app[AUDIT]
    event_id = await store.card_event(key_id)
    if event_id is None:
        if await store.get_card(key_id) is None:
            raise NotFound(f"no card {key_id} is registered")
        raise NotFound(f"card {key_id} predates the hub's index of key events; ask an auditor")
    index = await audit.settle_directory(event_id)
    (stored,) = await audit.leaves(index, index + 1)
    if not stored.record or not stored.salt:
        raise NotFound(
            f"the log record of card {key_id} (leaf {index}) was deleted by retention or "
            "erasure; its tombstone is in the log. Compare the fingerprint by phone"
        )
    note, size = await _checkpoint_covering(audit, index)
    proof = await audit.inclusion_proof(index, size)
    answer = {"index": index, "leaf": stored.leaf, "record": stored.record, "salt": stored.salt}
    return wire.respond(request, {**answer, "checkpoint": note.decode(), "proof": proof})


async def _checkpoint_covering(audit: AuditLog, index: int) -> tuple[bytes, int]:
    """The latest signed checkpoint and its size, signing one if it does not cover ``index``.

    A leaf newer than the checkpointer's last round (at most a checkpoint interval old)
    gets a checkpoint at once rather than making the client wait. The note is served as
    stored: checking its signature is the client's job.
    """
    for _ in range(2):
        note = await audit.latest_checkpoint()
        size = Checkpoint.parse(note[: note.index(b"\n\n") + 1]).size
        if size > index:
            return note, size
        await audit.sign_checkpoint()
    raise Unavailable("no checkpoint covers this card's leaf yet; retry", retry_after=1)


@routes.get("/v1/audit/proofs/inclusion")
async def get_inclusion(request: web.Request) -> web.Response:
    """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    index, size = _number(request, "index"), _number(request, "size")
    proof = await request.app[AUDIT].inclusion_proof(index, size)
    return wire.respond(request, {"index": index, "size": size, "proof": proof})


@routes.get("/v1/audit/proofs/consistency")
async def get_consistency(request: web.Request) -> web.Response:
    """The RFC 9162 consistency proof between trees of ``old`` and ``new`` leaves."""
    old, new = _number(request, "old"), _number(request, "new")
    proof = await request.app[AUDIT].consistency_proof(old, new)
    return wire.respond(request, {"old": old, "new": new, "proof": proof})


@routes.post("/v1/audit/erasures")
async def post_erasure(request: web.Request) -> web.Response:
    """Erase one record (an approved erasure request); its leaf stays, a tombstone is added.

    Administrators only; the four-eyes approval of erasures wraps this action later.
    """
    policy.require_admin(request[CALLER].record)
    body = await wire.read_map(request)
    index = wire.field(body, "index", int)
    reason = wire.field(body, "reason", str)
    if not 0 < len(reason) <= 200:
        raise BadRequest("give a reason of 1-200 characters (it is kept in the log)")
    tombstone_index = await request.app[AUDIT].delete_record(index, f"erasure: {reason}", now_ms())
    return wire.respond(request, {"index": index, "tombstone": tombstone_index}, status=201)
