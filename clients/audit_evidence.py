"""Evidence for one note: everything needed to show, offline, who sent it and who read it.

An evidence file is one msgpack map::

    {"fmt": "siko-audit-evidence", "v": 1, "message_id": bin 16,
     "checkpoint": signed note,                 # the log's tree head it is proven in
     "note": item, "keys": [item, ...], "acks": [item, ...],
     "envelope": bin | nil}                     # the whole envelope, when a member gave it
    item = {"index", "leaf", "record", "salt", "proof": [hash, ...]}

:func:`check_evidence` needs only the file and the log's verifier key: the checkpoint
must be signed by that key; every item's record must match its leaf and the leaf be
included in the checkpoint's tree; the sender's card must be a key record of the log
before the note, and its signature over the envelope header must verify; each
acknowledgement must be signed by the reading agency's card, also from the log. With
the envelope, its digest must be the one the log recorded, and its signature verify.

The log does not record a note's stream id, so an acknowledgement is matched to the
note by channel, order and time: the first one each recipient signed after the note
was accepted, for a position at or after the note's acceptance time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from clients.audit_source import AuditSource, pages
from clients.audit_verify import decode_record, header_mismatches
from keys import AgencyCard, KeysError, labels, merkle, verify_envelope
from keys.checkpoint import Checkpoint, NoteVerifier, open_signed_checkpoint
from keys.leaf import EventKind, check_record
from keys.statements import ReadAck

FORMAT: Final = "siko-audit-evidence"
MAX_EVIDENCE_BYTES: Final = 64 * 1024 * 1024
_KEY_KINDS: Final = (EventKind.AGENCY_REGISTERED, EventKind.KEY_ADDED)


class EvidenceError(ValueError):
    """Evidence that does not prove what it claims; the message says which part fails."""


@dataclass(frozen=True)
class Item:
    """One leaf with its record, salt and inclusion proof."""

    index: int
    leaf: bytes
    record: bytes
    salt: bytes
    proof: tuple[bytes, ...] = ()

    def fields(self) -> tuple[EventKind, int, dict[str, Any]]:
        """The record's kind, time and fields (checked against the leaf beforehand)."""
        return decode_record(self.record)

    def to_map(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "leaf": self.leaf,
            "record": self.record,
            "salt": self.salt,
            "proof": list(self.proof),
        }


@dataclass(frozen=True)
class Evidence:
    """The parts of an evidence file (see the module docstring)."""

    message_id: bytes
    checkpoint: bytes
    note: Item
    keys: tuple[Item, ...]
    acks: tuple[Item, ...]
    envelope: bytes | None = None

    def serialize(self) -> bytes:
        """The evidence file's bytes."""
        value = {
            "fmt": FORMAT,
            "v": 1,
            "message_id": self.message_id,
            "checkpoint": self.checkpoint,
            "note": self.note.to_map(),
            "keys": [k.to_map() for k in self.keys],
            "acks": [a.to_map() for a in self.acks],
            "envelope": self.envelope,
        }
        return bytes(msgpack.packb(value, use_bin_type=True))

    @classmethod
    def parse(cls, data: bytes) -> Evidence:
        """Read an evidence file's bytes; :class:`EvidenceError` when it is not one."""
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
            if value.get("fmt") != FORMAT or value.get("v") != 1:
                raise EvidenceError("not a version 1 siko evidence file")
            return cls(
                bytes(value["message_id"]),
                bytes(value["checkpoint"]),
                _item(value["note"]),
                tuple(_item(k) for k in value["keys"]),
                tuple(_item(a) for a in value["acks"]),
                None if value.get("envelope") is None else bytes(value["envelope"]),
            )
        except EvidenceError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
            raise EvidenceError(f"the evidence file does not decode ({exc})") from None


def _item(value: Any) -> Item:
    proof = tuple(bytes(h) for h in value["proof"])
    return Item(
        int(value["index"]),
        bytes(value["leaf"]),
        bytes(value["record"]),
        bytes(value["salt"]),
        proof,
    )


# -- checking ------------------------------------------------------------------------


def check_evidence(evidence: Evidence, verifier: NoteVerifier) -> list[str]:
    """Check everything offline; the findings as sentences, or :class:`EvidenceError`."""
    try:
        checkpoint = open_signed_checkpoint(evidence.checkpoint, verifier)
    except KeysError as exc:
        raise EvidenceError(f"the checkpoint is not signed by the log key ({exc})") from None
    for item in (evidence.note, *evidence.keys, *evidence.acks):
        _check_item(item, checkpoint)
    kind, at, note = evidence.note.fields()
    if kind is not EventKind.NOTE_ACCEPTED or note.get("message_id") != evidence.message_id:
        raise EvidenceError("the note's leaf is not the acceptance of this message id")
    if wrong := header_mismatches(note):
        raise EvidenceError(f"the signed header disagrees with the record on {wrong}")
    cards = _cards(evidence.keys)
    sender = _card_before(cards, note["sender_key"], note["sender"], evidence.note.index)
    try:
        sender.sign_key.verify(note.get("signature", b""), labels.SIG_ENVELOPE, note["header"])
    except KeysError:
        raise EvidenceError("the sender's signature over the header does not verify") from None
    found = [
        f"message {evidence.message_id.hex()} is leaf {evidence.note.index} of the log "
        f"{checkpoint.origin}, included in its signed checkpoint of {checkpoint.size} leaves",
        f"accepted at {at} ms in channel {note['channel']} from {note['sender']}, signed "
        f"with key {sender.key_id} (registered at leaf {cards[bytes(sender.key_id)][0]})",
        f"recipients: {', '.join(r[0] for r in note['recipients'])}",
    ]
    if evidence.envelope is not None:
        found.append(_check_envelope(evidence.envelope, note, sender))
    found += [_check_ack(item, note, cards, evidence.note.index) for item in evidence.acks]
    return found


def _check_item(item: Item, checkpoint: Checkpoint) -> None:
    try:
        check_record(item.leaf, item.record, item.salt)
        merkle.verify_inclusion(
            merkle.leaf_hash(item.leaf),
            item.index,
            checkpoint.size,
            item.proof,
            checkpoint.root_hash,
        )
    except KeysError as exc:
        raise EvidenceError(f"leaf {item.index} is not proven in the checkpoint ({exc})") from None


def _cards(items: Sequence[Item]) -> dict[bytes, tuple[int, AgencyCard]]:
    cards = {}
    for item in items:
        kind, _, fields = item.fields()
        if kind not in _KEY_KINDS:
            raise EvidenceError(f"leaf {item.index} is not a key record")
        try:
            card = AgencyCard.parse(fields["card"])
        except (KeysError, KeyError) as exc:
            raise EvidenceError(f"the card of leaf {item.index} does not verify ({exc})") from None
        cards[bytes(card.key_id)] = (item.index, card)
    return cards


def _card_before(
    cards: dict[bytes, tuple[int, AgencyCard]], key_id: object, agency: object, index: int
) -> AgencyCard:
    known = cards.get(key_id) if isinstance(key_id, bytes) else None
    if known is None or known[0] >= index or known[1].agency != agency:
        raise EvidenceError(f"no key record of {agency} for its key before leaf {index}")
    return known[1]


def _check_envelope(data: bytes, note: dict[str, Any], sender: AgencyCard) -> str:
    try:
        envelope = verify_envelope(data, sender)
    except KeysError as exc:
        raise EvidenceError(f"the envelope does not verify ({exc or 'bad signature'})") from None
    if envelope.digest() != note.get("digest") or envelope.header_bytes != note.get("header"):
        raise EvidenceError("the envelope is not the one the log recorded (digest differs)")
    return f"the envelope (digest {envelope.digest().hex()}) is the one the log recorded"


def _check_ack(
    item: Item, note: dict[str, Any], cards: dict[bytes, tuple[int, AgencyCard]], after: int
) -> str:
    kind, _, fields = item.fields()
    try:
        ack = ReadAck.parse(fields["statement"])
    except (KeysError, KeyError, TypeError) as exc:
        raise EvidenceError(f"leaf {item.index} is not an acknowledgement ({exc})") from None
    if kind is not EventKind.NOTE_ACKNOWLEDGED or item.index <= after:
        raise EvidenceError(f"leaf {item.index} is not an acknowledgement after the note")
    if str(ack.channel) != note["channel"]:
        raise EvidenceError(f"leaf {item.index} acknowledges another channel")
    card = _card_before(cards, bytes(ack.key_id), str(ack.agency), item.index)
    try:
        ack.verify(fields.get("signature", b""), card.sign_key)
    except KeysError:
        raise EvidenceError(f"the acknowledgement at leaf {item.index} is not signed") from None
    return (
        f"{ack.agency} acknowledged {ack.channel} up to {ack.position} at {ack.at} ms "
        f"(leaf {item.index}, signed with key {ack.key_id})"
    )


# -- gathering -----------------------------------------------------------------------


async def gather_evidence(
    source: AuditSource, verifier: NoteVerifier, message_id: bytes, envelope: bytes | None
) -> Evidence:
    """Find the note's leaf, its sender's and readers' key records and acknowledgements."""
    note_bytes = await source.latest_checkpoint()
    try:
        checkpoint = open_signed_checkpoint(note_bytes, verifier)
    except KeysError as exc:
        raise EvidenceError(f"the hub's checkpoint is not signed by the log key ({exc})") from None
    found = _Finder(message_id)
    for low, high in pages(0, checkpoint.size):
        for entry in await source.leaves(low, high):
            if entry.record is not None and entry.salt is not None:
                found.see(Item(entry.index, entry.leaf, entry.record, entry.salt))
    if found.note is None:
        raise EvidenceError(f"no note {message_id.hex()} is in the log's first {checkpoint.size}")

    async def proven(item: Item) -> Item:
        proof = await source.inclusion_proof(item.index, checkpoint.size)
        return Item(item.index, item.leaf, item.record, item.salt, tuple(proof or ()))

    return Evidence(
        message_id,
        note_bytes,
        await proven(found.note),
        tuple([await proven(i) for i in found.needed_keys()]),
        tuple([await proven(i) for i in found.acks.values()]),
        envelope,
    )


class _Finder:
    """Collects, in one pass over the log, what the evidence of one note needs."""

    def __init__(self, message_id: bytes) -> None:
        self.message_id = message_id
        self.note: Item | None = None
        self.fields: dict[str, Any] = {}
        self.keys: dict[bytes, Item] = {}
        self.acks: dict[str, Item] = {}
        self.accepted = 0

    def see(self, item: Item) -> None:
        try:
            kind, at, fields = item.fields()
        except ValueError:
            return
        if kind in _KEY_KINDS and isinstance(fields.get("key_id"), bytes):
            self.keys.setdefault(fields["key_id"], item)
        elif kind is EventKind.NOTE_ACCEPTED and fields.get("message_id") == self.message_id:
            self.note, self.fields, self.accepted = item, fields, at
        elif kind is EventKind.NOTE_ACKNOWLEDGED and self.note is not None:
            self._ack(item, fields)

    def _ack(self, item: Item, fields: dict[str, Any]) -> None:
        agency = fields.get("agency")
        readers = {r[0] for r in self.fields.get("recipients", []) if isinstance(r, list)}
        position = str(fields.get("position", "0-0"))
        if (
            fields.get("channel") == self.fields.get("channel")
            and agency in readers
            and agency not in self.acks
            and int(position.partition("-")[0] or 0) >= self.accepted
        ):
            self.acks[str(agency)] = item

    def needed_keys(self) -> list[Item]:
        wanted = {self.fields.get("sender_key")}
        for item in self.acks.values():
            try:
                wanted.add(bytes(ReadAck.parse(item.fields()[2]["statement"]).key_id))
            except (KeysError, KeyError, ValueError):
                continue
        return [item for key_id, item in self.keys.items() if key_id in wanted]
