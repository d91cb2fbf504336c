"""``HubClient``: what an agency, a liaison officer or an administrator does with the hub.

One async client over one :class:`~clients.transport.Transport` (and so one injectable
``aiohttp.ClientSession``). Sealing happens here, on the agency's side, with the cards
from the channel's roster; the hub only ever sees sealed envelopes.

    async with HubClient("https://hub.example", identity) as hub:
        posted = await hub.post_note("lage-ruhr", Note("..."), markings)
        async for delivery in hub.subscribe({"lage-ruhr": "0-0"}):
            opened = await hub.open(delivery)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

import msgpack

from clients.errors import ProtocolError, RecipientsMismatch, RosterChanged
from clients.subscription import Delivery, Subscription
from clients.transport import Transport
from keys import (
    AgencyCard,
    Envelope,
    Identity,
    KeysError,
    Markings,
    MessageId,
    Note,
    OpenedNote,
    now_ms,
    open_envelope,
    peek_header_unverified,
    seal,
)
from keys.statements import ReadAck, Receipt

MSGPACK: Final = "application/msgpack"
ENVELOPE: Final = "application/vnd.siko.envelope"


def envelope_digest(envelope: bytes) -> bytes:
    """The digest naming an envelope in the audit log."""
    return Envelope.parse(envelope).digest()


@dataclass(frozen=True)
class Member:
    """One member of a channel as the roster shows it."""

    roles: frozenset[str]
    status: str
    card: AgencyCard


@dataclass(frozen=True)
class Roster:
    """A channel's members, roles and current cards, as the hub reports them."""

    channel: str
    ceiling: str
    retention_days: int
    version: int
    members: Mapping[str, Member]

    def reader_cards(self) -> list[AgencyCard]:
        """The cards to seal every note of this channel for."""
        return [m.card for m in self.members.values() if "read" in m.roles]


@dataclass(frozen=True)
class Posted:
    """Where the hub stored a note, and its signed receipt (leaf ``index`` of the log)."""

    channel: str
    message_id: str
    stream_id: str
    duplicate: bool
    receipt: Receipt
    receipt_signature: bytes

    @property
    def index(self) -> int:
        """The note's leaf index in the audit log."""
        return int(self.receipt.index)


@dataclass(frozen=True)
class Page:
    """A page of notes and the cursor after it."""

    notes: tuple[Delivery, ...]
    next: str


def _roster_from(data: Mapping[str, Any]) -> Roster:
    try:
        members = {}
        for agency, entry in data["members"].items():
            card = AgencyCard.parse(entry["card"])
            if card.agency != agency or str(card.key_id) != entry["key_id"]:
                raise ProtocolError(f"the hub's roster names a wrong card for {agency}")
            members[agency] = Member(frozenset(entry["roles"]), entry["status"], card)
        return Roster(
            data["channel"], data["ceiling"], data["retention_days"], data["version"], members
        )
    except (KeyError, TypeError, KeysError) as exc:
        raise ProtocolError(f"the hub sent a malformed roster: {exc}") from None


class HubClient:
    """The agency's client of one hub."""

    def __init__(self, base_url: str, identity: Identity, *, transport: Transport | None = None):
        self.identity = identity
        self.transport = transport or Transport(base_url, identity)

    async def __aenter__(self) -> Self:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.transport.__aexit__(*exc_info)

    async def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, **kw: Any
    ) -> Any:
        payload = b"" if body is None else msgpack.packb(body, use_bin_type=True)
        response = await self.transport.request(
            method, path, body=payload, content_type=MSGPACK if body is not None else None, **kw
        )
        return response.msgpack()

    # -- directory ------------------------------------------------------------------

    async def register_agency(self, card: AgencyCard, *, kind: str = "agency") -> dict[str, Any]:
        """Register an agency (or administrator) from its card. Administrators only."""
        return dict(
            await self._call("POST", "/v1/agencies", {"card": card.serialize(), "kind": kind})
        )

    async def agencies(self) -> list[dict[str, Any]]:
        """The directory: every agency and administrator with its current key id."""
        return list((await self._call("GET", "/v1/agencies"))["agencies"])

    async def card(self, key_id: str) -> AgencyCard:
        """Any card ever registered, by key id (for verifying old notes)."""
        data = await self._call("GET", f"/v1/cards/{key_id}")
        card = AgencyCard.parse(data["card"])
        if str(card.key_id) != key_id:
            raise ProtocolError("the hub answered with another card than asked for")
        return card

    async def set_status(self, agency: str, status: str) -> dict[str, Any]:
        """Suspend or reactivate an agency. Administrators only."""
        return dict(await self._call("POST", f"/v1/agencies/{agency}/status", {"status": status}))

    async def add_card(self, agency: str, card: AgencyCard) -> dict[str, Any]:
        """Rotate an agency's key to ``card`` (the agency itself, or an administrator)."""
        path = f"/v1/agencies/{agency}/cards"
        return dict(await self._call("POST", path, {"card": card.serialize()}))

    # -- channels -------------------------------------------------------------------

    async def create_channel(
        self,
        channel: str,
        *,
        ceiling: str,
        retention_days: int,
        members: Mapping[str, Iterable[str]],
    ) -> Roster:
        """Create a channel. Administrators only."""
        body = {
            "channel": channel,
            "ceiling": ceiling,
            "retention_days": retention_days,
            "members": {agency: sorted(roles) for agency, roles in members.items()},
        }
        return _roster_from(await self._call("POST", "/v1/channels", body))

    async def set_member(self, channel: str, agency: str, roles: Iterable[str]) -> Roster:
        """Give ``agency`` these roles in ``channel`` (none removes it). Administrators only."""
        path = f"/v1/channels/{channel}/members/{agency}"
        return _roster_from(await self._call("PUT", path, {"roles": sorted(roles)}))

    async def channels(self) -> list[dict[str, Any]]:
        """The channels this agency belongs to."""
        return list((await self._call("GET", "/v1/channels"))["channels"])

    async def roster(self, channel: str) -> Roster:
        """A channel's members, roles and current cards."""
        return _roster_from(await self._call("GET", f"/v1/channels/{channel}"))

    # -- notes ----------------------------------------------------------------------

    async def post_note(
        self, channel: str, note: Note, markings: Markings, *, message_id: MessageId | None = None
    ) -> Posted:
        """Seal ``note`` for the channel's current readers and post it.

        A retry with the same ``message_id`` never makes a second copy. When the roster
        changed under the post, the note is sealed again for the new readers, once.
        """
        message_id = message_id or MessageId.new()
        for attempt in (1, 2):
            roster = await self.roster(channel)
            envelope = seal(
                note,
                sender=self.identity,
                channel=channel,
                recipients=roster.reader_cards(),
                markings=markings,
                message_id=message_id,
            )
            try:
                return await self.post_envelope(channel, envelope)
            except (RosterChanged, RecipientsMismatch):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def post_envelope(self, channel: str, envelope: bytes) -> Posted:
        """Post an already sealed envelope (idempotent by its message id)."""
        response = await self.transport.request(
            "POST",
            f"/v1/channels/{channel}/notes",
            body=envelope,
            content_type=ENVELOPE,
            idempotent=True,
        )
        data = response.msgpack()
        if not isinstance(data, dict):
            raise ProtocolError("the hub's answer to a post is not a map")
        try:
            receipt = Receipt.parse(data["receipt"]["statement"])
            signature = data["receipt"]["signature"]
            posted = Posted(
                data["channel"],
                data["message_id"],
                data["stream_id"],
                data["duplicate"],
                receipt,
                signature,
            )
        except (KeyError, TypeError, KeysError) as exc:
            raise ProtocolError(f"the hub's answer to a post is malformed: {exc}") from None
        if str(receipt.message_id) != posted.message_id or receipt.digest != envelope_digest(
            envelope
        ):
            raise ProtocolError("the hub's receipt names another note than the one posted")
        return posted

    async def page_notes(self, channel: str, *, after: str = "0-0", limit: int = 100) -> Page:
        """Notes after ``after``, oldest first."""
        params = {"after": after, "limit": str(limit)}
        data = await self._call("GET", f"/v1/channels/{channel}/notes", params=params)
        notes = tuple(Delivery(channel, n["id"], n["envelope"]) for n in data["notes"])
        return Page(notes, data["next"])

    async def ack(self, channel: str, stream_id: str) -> str:
        """Sign and send that this agency has read ``channel`` up to ``stream_id``."""
        at = now_ms()
        _, signature = ReadAck.make(self.identity, channel, stream_id, at)
        body = {"id": stream_id, "at": at, "sig": signature}
        data = await self._call("POST", f"/v1/channels/{channel}/reads", body, idempotent=True)
        return str(data["position"])

    async def receipts(self, channel: str, message_id: str) -> dict[str, Any]:
        """Which readers have read a note."""
        return dict(await self._call("GET", f"/v1/channels/{channel}/notes/{message_id}/receipts"))

    def subscribe(self, cursors: Mapping[str, str]) -> Subscription:
        """Live notes of these channels after their cursors, resuming after disconnects."""
        return Subscription(self.transport, cursors)

    async def open(self, delivery: Delivery) -> OpenedNote:
        """Verify and decrypt a delivered note with the sender's card from the hub."""
        header = peek_header_unverified(delivery.envelope)
        sender_card = await self.card(str(header.sender_key))
        return open_envelope(delivery.envelope, self.identity, sender_card)
