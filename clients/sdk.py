"""``HubClient``: what an agency, a liaison officer or an administrator does with the hub.

One async client over one :class:`~clients.transport.Transport` (and so one injectable
``aiohttp.ClientSession``). Sealing happens here, on the agency's side, with the cards
from the channel's roster; the hub only ever sees sealed envelopes.

    async with HubClient("https://hub.example", identity, state=StateFile(path)) as hub:
        posted = await hub.post("lage-ruhr", Note("..."), markings)
        async for received in hub.history("lage-ruhr"):      # resumes after a restart
            print(received.header.sender, received.note.text)

What :meth:`HubClient.post` checks about the cards it seals for (the hub hands them
out, and the hub's operator is not trusted to read notes):

* every reader card's self-signature, and that it is the card the roster names
  (agency and key id) — a card altered in transit or a key id that does not match;
* with a state file: the key id of every reader is pinned on first use; when it
  changes, the hub's directory must still list the pinned key before the new one (a
  rotation appends, it never rewrites), and the change is reported in
  :attr:`Posted.key_changes` so people can compare the new fingerprint by phone.

* that every reader card is the one the audit log registered for that agency and key
  id, proved into a checkpoint signed by the log key (:mod:`clients.keylog`), once per
  card (remembered in the state file, else for this client's life); and that every
  checkpoint seen extends the last one (no fork). The log key is the one given
  (``log_key``), else the one the hub states the first time, pinned from then on.

What it does not check: that the logged card really belongs to the agency it names.
An operator who registered its own card for an agency *at registration*, or logged a
fake rotation, is found by the auditor's replay of the log and by comparing
fingerprints out of band, not here. See docs/CLIENTS.md.

Everything read is verified before it is shown: a note that fails verification or
decryption raises :class:`NoteRefused`, never returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

import msgpack

from clients.errors import (
    ClientError,
    NotFound,
    ProtocolError,
    RecipientsMismatch,
    RosterChanged,
)
from clients.keylog import CardRefused as CardRefused  # re-exported: callers catch it here
from clients.readercards import KeyChange as KeyChange  # re-exported with Posted
from clients.readercards import ReaderCards
from clients.state import StateFile
from clients.subscription import Delivery, Subscription
from clients.transport import Transport
from keys import (
    AgencyCard,
    Envelope,
    Header,
    Identity,
    InvalidSignature,
    KeysError,
    Markings,
    MessageId,
    NotARecipient,
    Note,
    OpenedNote,
    now_ms,
    open_envelope,
    peek_header_unverified,
    seal,
)
from keys.checkpoint import NoteVerifier
from keys.statements import ReadAck, Receipt

MSGPACK: Final = "application/msgpack"
ENVELOPE: Final = "application/vnd.siko.envelope"


class NoteRefused(ClientError):
    """A delivered note did not verify or did not decrypt; it is not shown."""

    slug, title = "note-refused", "A note failed verification"
    hint = "It is not shown; tell the sender and the hub's operator its stream id."

    def __init__(self, channel: str, stream_id: str, reason: str) -> None:
        super().__init__(f"note {stream_id} in {channel} refused: {reason}")
        self.channel, self.stream_id, self.reason = channel, stream_id, reason


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
class Received:
    """A note read from a channel, verified and decrypted."""

    channel: str
    stream_id: str
    opened: OpenedNote

    @property
    def header(self) -> Header:
        return self.opened.header

    @property
    def note(self) -> Note:
        return self.opened.note


@dataclass(frozen=True)
class Posted:
    """Where the hub stored a note, and its signed receipt (leaf ``index`` of the log)."""

    channel: str
    message_id: str
    stream_id: str
    duplicate: bool
    receipt: Receipt
    receipt_signature: bytes
    key_changes: tuple[KeyChange, ...] = ()

    @property
    def index(self) -> int:
        """The note's leaf index in the audit log."""
        return int(self.receipt.index)


@dataclass(frozen=True)
class Page:
    """A page of notes and the cursor after it."""

    notes: tuple[Delivery, ...]
    next: str


def _card(agency: str, data: bytes) -> AgencyCard:
    try:
        return AgencyCard.parse(data)
    except InvalidSignature:
        raise CardRefused(f"the card the hub gives for {agency} is not self-signed") from None


def _roster_from(data: Mapping[str, Any]) -> Roster:
    try:
        members = {}
        for agency, entry in data["members"].items():
            card = _card(agency, entry["card"])
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

    def __init__(
        self,
        base_url: str,
        identity: Identity,
        *,
        transport: Transport | None = None,
        state: StateFile | None = None,
        log_key: NoteVerifier | str | None = None,
    ):
        """``log_key``: the audit log's verifier key, from its operator out of band.

        Without it, the key the hub states the first time is trusted and pinned (in the
        state file if there is one): a later change of key is then refused.
        """
        self.identity = identity
        self.transport = transport or Transport(base_url, identity)
        self.state = state
        self.reader_cards = ReaderCards(
            self.transport,
            state,
            NoteVerifier.parse(log_key) if isinstance(log_key, str) else log_key,
            self._key_history,
        )
        self._cards: dict[str, AgencyCard] = {}  # by key id: a key id names one card forever

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

    async def agency(self, agency: str) -> dict[str, Any]:
        """One directory entry: kind, status, current key id and every key id, oldest first."""
        return dict(await self._call("GET", f"/v1/agencies/{agency}"))

    async def _key_history(self, agency: str) -> list[str]:
        return [str(k) for k in (await self.agency(agency)).get("keys", [])]

    async def card(self, key_id: str) -> AgencyCard:
        """Any card ever registered, by key id (for verifying old notes)."""
        if key_id in self._cards:
            return self._cards[key_id]
        data = await self._call("GET", f"/v1/cards/{key_id}")
        card = AgencyCard.parse(data["card"])
        if str(card.key_id) != key_id:
            raise ProtocolError("the hub answered with another card than asked for")
        self._cards[key_id] = card
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

    async def post(
        self, channel: str, note: Note, markings: Markings, *, message_id: MessageId | None = None
    ) -> Posted:
        """Check the readers' cards, seal ``note`` for them, and post it.

        The message id is chosen once: the transport's retries after a lost answer send
        the same envelope, which the hub answers as a duplicate with the first receipt.
        When the roster changed under the post, the note is sealed again for the new
        readers under the same message id, once. See the module docstring for what is
        checked about the cards.

        Raises:
            CardRefused: a reader's card fails a check; nothing was posted.
            HubProblem: the hub refused (its subclass names why), e.g. ``NotMember``.
        """
        message_id = message_id or MessageId.new()
        for attempt in (1, 2):
            roster = await self.roster(channel)
            changes = await self.reader_cards.changed_keys(roster.reader_cards())
            await self.reader_cards.check_logged(roster.reader_cards())
            envelope = seal(
                note,
                sender=self.identity,
                channel=channel,
                recipients=roster.reader_cards(),
                markings=markings,
                message_id=message_id,
            )
            try:
                posted = await self.post_envelope(channel, envelope)
            except (RosterChanged, RecipientsMismatch):
                if attempt == 2:
                    raise
                continue
            self.reader_cards.pin(roster.reader_cards())
            return dataclasses.replace(posted, key_changes=changes)
        raise AssertionError("unreachable")  # pragma: no cover

    async def post_note(
        self, channel: str, note: Note, markings: Markings, *, message_id: MessageId | None = None
    ) -> Posted:
        """The same as :meth:`post` (its first name)."""
        return await self.post(channel, note, markings, message_id=message_id)

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

    # -- reading: verified notes, cursors kept in the state file -------------------

    def cursor(self, channel: str) -> str:
        """The last stream id handed over in ``channel`` (``0-0`` without a state file)."""
        if self.state is None:
            return "0-0"
        return self.state.load().cursors.get(channel, "0-0")

    def handed_over(self, channel: str, stream_id: str) -> None:
        """Persist the cursor: every note of ``channel`` up to ``stream_id`` was handled.

        Also the way past a :class:`NoteRefused` note (``exc.channel, exc.stream_id``).
        """
        if self.state is not None:
            self.state.advance(channel, stream_id)

    async def history(
        self,
        channel: str,
        *,
        after: str | None = None,
        page_size: int = 100,
        on_refused: Callable[[NoteRefused], None] | None = None,
    ) -> AsyncIterator[Received]:
        """Every note of ``channel`` after ``after`` (default: the saved cursor), verified.

        The cursor is saved when the caller comes back for the next note, or stops
        iterating: a client that crashes while handling a note sees it again, one that
        restarts later resumes after the last note it handled. Stops at the newest note.

        Raises:
            NoteRefused: a note did not verify or decrypt; iteration stops before it,
                unless ``on_refused`` is given: it is then called and the note skipped.
        """
        cursor = self.cursor(channel) if after is None else after
        handled: str | None = None
        try:
            while True:
                page = await self.page_notes(channel, after=cursor, limit=page_size)
                if not page.notes:
                    return
                for delivery in page.notes:
                    cursor = delivery.stream_id
                    received = await self._checked(delivery, on_refused)
                    if received is None:
                        continue
                    handled = delivery.stream_id
                    yield received
                    self.handed_over(channel, handled)
                    handled = None
        finally:
            if handled is not None:
                self.handed_over(channel, handled)

    async def live(
        self,
        channels: Iterable[str],
        *,
        from_start: bool = False,
        on_refused: Callable[[NoteRefused], None] | None = None,
    ) -> AsyncIterator[Received]:
        """Notes of ``channels`` after their saved cursors, then live; survives disconnects.

        Saves cursors like :meth:`history`. Never ends by itself; stop iterating (or
        cancel) to leave. ``from_start`` replays everything the hub still keeps.

        Raises:
            NoteRefused: as :meth:`history`.
        """
        cursors = {ch: "0-0" if from_start else self.cursor(ch) for ch in channels}
        handled: Delivery | None = None
        async with self.subscribe(cursors) as subscription:
            try:
                async for delivery in subscription:
                    received = await self._checked(delivery, on_refused)
                    if received is None:
                        continue
                    handled = delivery
                    yield received
                    self.handed_over(delivery.channel, delivery.stream_id)
                    handled = None
            finally:
                if handled is not None:
                    self.handed_over(handled.channel, handled.stream_id)

    async def _checked(
        self, delivery: Delivery, on_refused: Callable[[NoteRefused], None] | None
    ) -> Received | None:
        """The opened note; or, for a refused one with ``on_refused``, None (skipped)."""
        try:
            return await self.open_delivery(delivery)
        except NoteRefused as exc:
            if on_refused is None:
                raise
            on_refused(exc)
            self.handed_over(delivery.channel, delivery.stream_id)
            return None

    async def open_delivery(self, delivery: Delivery) -> Received:
        """Verify and decrypt a delivered note; :class:`NoteRefused` if anything is wrong."""
        return Received(delivery.channel, delivery.stream_id, await self.open(delivery))

    async def open(self, delivery: Delivery) -> OpenedNote:
        """Verify and decrypt a delivered note with the sender's card from the hub.

        Raises:
            NoteRefused: malformed, not from the card's agency, altered, not for this
                agency, for another channel, or from a key the hub does not know.
        """

        def refused(reason: str) -> NoteRefused:
            return NoteRefused(delivery.channel, delivery.stream_id, reason)

        try:
            header = peek_header_unverified(delivery.envelope)
            sender_card = await self.card(str(header.sender_key))
            opened = open_envelope(delivery.envelope, self.identity, sender_card)
        except NotFound:
            raise refused("the hub does not know the sender's key") from None
        except NotARecipient:
            raise refused(f"not sealed for {self.identity.agency}'s current key") from None
        except InvalidSignature:
            raise refused("the signature does not verify: altered or forged") from None
        except KeysError as exc:
            raise refused(f"{type(exc).__name__}: {exc}") from None
        if str(opened.header.channel) != delivery.channel:
            raise refused(f"it was sealed for channel {opened.header.channel}")
        return opened

    # -- read receipts --------------------------------------------------------------

    async def ack(self, channel: str, stream_id: str) -> str:
        """Sign and send that this agency has read ``channel`` up to ``stream_id``."""
        at = now_ms()
        _, signature = ReadAck.make(self.identity, channel, stream_id, at)
        body = {"id": stream_id, "at": at, "sig": signature}
        data = await self._call("POST", f"/v1/channels/{channel}/reads", body, idempotent=True)
        return str(data["position"])

    async def read_position(self, channel: str) -> str:
        """This agency's read position in ``channel`` (``0-0`` before its first ack).

        The hub has no route to read a position, but an acknowledgement never moves it
        backwards and answers the position: acknowledging ``0-0`` asks without changing
        anything (no audit event is written for a position that does not move).
        """
        return await self.ack(channel, "0-0")

    async def unread(self, channel: str, *, page_size: int = 100) -> int:
        """How many notes of ``channel`` are after this agency's read position."""
        cursor, count = await self.read_position(channel), 0
        while True:
            page = await self.page_notes(channel, after=cursor, limit=page_size)
            count += len(page.notes)
            if len(page.notes) < page_size:
                return count
            cursor = page.next

    async def receipts(self, channel: str, message_id: str) -> dict[str, Any]:
        """Which readers have read a note."""
        return dict(await self._call("GET", f"/v1/channels/{channel}/notes/{message_id}/receipts"))

    def subscribe(self, cursors: Mapping[str, str]) -> Subscription:
        """Live notes of these channels after their cursors, resuming after disconnects."""
        return Subscription(self.transport, cursors)
