"""Sealed envelopes: the unit the hub routes, verifiable by anyone, openable by recipients.

Theory of operation (byte layout in docs/PROTOCOL.md):

1. A fresh 256-bit content key and 96-bit nonce encrypt the note body once with
   AES-256-GCM; the associated data binds channel, message id and sender.
2. The content key is wrapped with HPKE for every recipient card, each wrap bound to
   channel, message id, recipient agency and recipient key id through the HPKE ``info``.
3. The header, readable by the hub and auditors, names everything routing and audit
   need and commits to the rest: SHA-256 of the body ciphertext, of the wrapped-key list
   and of the content key itself (the key commitment, so that every recipient provably
   opens the same plaintext, even if the sender is malicious).
4. The sender signs ``SIG_ENVELOPE || header bytes`` with Ed25519.

So the signature covers every byte of the envelope but itself, and an envelope can be
verified years later from the sender's card alone. :meth:`Envelope.parse` only checks
structure; nothing it returns is trusted until :func:`verify_envelope` has run, which
is why its header accessor is called :func:`peek_header_unverified`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from keys import _suites, codec, labels
from keys.errors import (
    DecryptionFailed,
    InvalidSignature,
    MalformedInput,
    NotARecipient,
    WrongKey,
)
from keys.identity import MAX_TIME_MS, AgencyCard, Identity, now_ms
from keys.ids import AgencyId, ChannelId, KeyId, MessageId
from keys.markings import (
    Classification,
    HandlingCode,
    InfoAssessment,
    SourceReliability,
    Tlp,
)

__all__ = [
    "Envelope",
    "Header",
    "Markings",
    "Note",
    "OpenedNote",
    "Recipient",
    "open_envelope",
    "peek_header_unverified",
    "seal",
    "verify_envelope",
]

MAX_ENVELOPE_BYTES: Final = 2 * 1024 * 1024
MAX_BODY_BYTES: Final = 1024 * 1024
MAX_HEADER_BYTES: Final = 32 * 1024
MAX_RECIPIENTS: Final = 256
MAX_TEXT_FIELD: Final = 1024  # subject and case reference, in characters


@dataclass(frozen=True)
class Note:
    """The secret part of a note: only recipients ever see it."""

    text: str
    subject: str | None = None
    case_ref: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise MalformedInput("note.text: expected text")
        for name in ("subject", "case_ref"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT_FIELD):
                raise MalformedInput(f"note.{name}: expected text of at most {MAX_TEXT_FIELD}")

    def serialize(self) -> bytes:
        """Canonical bytes of the body plaintext."""
        record: dict[str, codec.Value] = {"text": self.text}
        if self.subject is not None:
            record["subject"] = self.subject
        if self.case_ref is not None:
            record["case"] = self.case_ref
        return codec.encode(record)

    @classmethod
    def parse(cls, data: bytes) -> Note:
        """Decode a body plaintext strictly."""
        record = codec.expect_map(
            codec.decode(data, max_bytes=MAX_BODY_BYTES),
            "note",
            required={"text": str},
            optional={"subject": str, "case": str},
        )
        return cls(record["text"], record.get("subject"), record.get("case"))


@dataclass(frozen=True)
class Markings:
    """Protective markings every header carries (see :mod:`keys.markings`)."""

    classification: Classification
    handling: HandlingCode
    tlp: Tlp = Tlp.AMBER
    source: SourceReliability | None = None
    info: InfoAssessment | None = None


class Recipient(NamedTuple):
    """One reading agency and the key id of the card the content key was wrapped to.

    (A named tuple rather than a dataclass: an envelope's header holds up to
    ``MAX_RECIPIENTS`` of them, and they are built on every parse.)
    """

    agency: AgencyId
    key_id: KeyId


@dataclass(frozen=True)
class Header:
    """The part of an envelope the hub and auditors read. Signed by the sender."""

    message_id: MessageId
    channel: ChannelId
    sender: AgencyId
    sender_key: KeyId
    created: int
    markings: Markings
    recipients: tuple[Recipient, ...]
    body_nonce: bytes
    body_digest: bytes
    wrapped_digest: bytes
    key_commitment: bytes

    def serialize(self) -> bytes:
        """Canonical header bytes: exactly what the sender signs."""
        return codec.encode(_header_record(self))

    @classmethod
    def parse(cls, data: bytes) -> Header:
        """Decode header bytes strictly (structure only; nothing is verified)."""
        return _header_from_record(codec.decode(data, max_bytes=MAX_HEADER_BYTES))

    def recipient_agencies(self) -> frozenset[AgencyId]:
        """The set of agencies the note was sealed for."""
        return frozenset(r.agency for r in self.recipients)


@dataclass(frozen=True)
class Envelope:
    """A sealed note. Built by :func:`seal` or :meth:`parse`; checked by :func:`verify_envelope`."""

    header: Header
    header_bytes: bytes
    wrapped_keys: tuple[bytes, ...]
    ciphertext: bytes
    signature: bytes

    @classmethod
    def parse(cls, data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
        """Check the structure of ``data``; the result is NOT verified.

        Raises:
            LimitExceeded: larger than ``max_bytes`` or than a protocol limit.
            MalformedInput: anything else that is not a well-formed envelope.
        """
        outer = codec.expect_map(
            codec.decode(data, max_bytes=min(max_bytes, MAX_ENVELOPE_BYTES), max_depth=2),
            "envelope",
            required={"h": bytes, "wk": list, "ct": bytes, "sig": bytes},
        )
        header = Header.parse(codec.expect_bytes(outer["h"], "h", max_size=MAX_HEADER_BYTES))
        wrapped = codec.expect_list(outer["wk"], "wk", max_items=MAX_RECIPIENTS)
        if len(wrapped) != len(header.recipients):
            raise MalformedInput("wk: one wrapped key per recipient expected")
        largest = _suites.Suite.MLKEM768_X25519.wrapped_size
        for item in wrapped:
            codec.expect_bytes(item, "wk[]", max_size=largest)
        codec.expect_bytes(outer["ct"], "ct", max_size=MAX_BODY_BYTES + _suites.AEAD_TAG)
        signature = codec.expect_bytes(outer["sig"], "sig", size=_suites.ED25519_SIG)
        envelope = cls(header, outer["h"], tuple(wrapped), outer["ct"], signature)
        # decode() refused anything but the canonical form: ``data`` is what serialize()
        # would encode again, so it is kept rather than encoded once more (the hub
        # digests every envelope it accepts).
        envelope.__dict__["_canonical_bytes"] = data
        return envelope

    def serialize(self) -> bytes:
        """The envelope's canonical bytes."""
        return self._canonical_bytes

    @functools.cached_property
    def _canonical_bytes(self) -> bytes:
        return codec.encode(
            {
                "h": self.header_bytes,
                "wk": list(self.wrapped_keys),
                "ct": self.ciphertext,
                "sig": self.signature,
            }
        )

    def digest(self) -> bytes:
        """SHA-256 naming this envelope in the audit log."""
        return _suites.sha256(labels.ENVELOPE_DIGEST, self.serialize())


@dataclass(frozen=True)
class OpenedNote:
    """A verified, decrypted note."""

    header: Header
    note: Note


def peek_header_unverified(data: bytes) -> Header:
    """The header of an envelope, before any signature check: use it only for routing."""
    return Envelope.parse(data).header


def seal(
    note: Note,
    *,
    sender: Identity,
    channel: str,
    recipients: Sequence[AgencyCard],
    markings: Markings,
    message_id: MessageId | None = None,
    now: int | None = None,
) -> bytes:
    """Seal ``note`` from ``sender`` into ``channel`` for the ``recipients``' cards.

    Returns the envelope's bytes. The message id is random unless given (a retry of the
    same post must reuse it); ``now`` is the current time unless given.

    Raises:
        MalformedInput: a bad channel id, no or duplicate recipients, a note too large.
    """
    return _seal_from_parts(
        note,
        sender=sender,
        channel=ChannelId(channel),
        recipients=recipients,
        markings=markings,
        message_id=message_id or MessageId.new(),
        created=now_ms() if now is None else now,
        content_key=_suites.random_bytes(_suites.AEAD_KEY),
        body_nonce=_suites.random_bytes(_suites.AEAD_NONCE),
    ).serialize()


def _seal_from_parts(
    note: Note,
    *,
    sender: Identity,
    channel: ChannelId,
    recipients: Sequence[AgencyCard],
    markings: Markings,
    message_id: MessageId,
    created: int,
    content_key: bytes,
    body_nonce: bytes,
) -> Envelope:
    cards = _ordered_recipients(recipients)
    plaintext = note.serialize()
    if len(plaintext) > MAX_BODY_BYTES:
        raise MalformedInput(f"note: at most {MAX_BODY_BYTES} bytes once encoded")
    aad = _body_aad(channel, message_id, sender.agency)
    ciphertext = _suites.aead_seal(content_key, body_nonce, plaintext, aad)
    info = _HpkeInfo(channel, message_id)
    wrapped = tuple(
        card.kem_key.wrap(content_key, info.of(card.agency, card.key_id)) for card in cards
    )
    header = Header(
        message_id=message_id,
        channel=channel,
        sender=sender.agency,
        sender_key=sender.key_id,
        created=codec.expect_int(created, "created", low=0, high=MAX_TIME_MS),
        markings=markings,
        recipients=tuple(Recipient(card.agency, card.key_id) for card in cards),
        body_nonce=body_nonce,
        body_digest=_body_digest(ciphertext),
        wrapped_digest=_wrapped_digest(wrapped),
        key_commitment=_key_commitment(content_key),
    )
    header_bytes = header.serialize()
    signature = sender.signing.sign(labels.SIG_ENVELOPE, header_bytes)
    return Envelope(header, header_bytes, wrapped, ciphertext, signature)


def verify_envelope(data: bytes | Envelope, sender_card: AgencyCard) -> Envelope:
    """Check an envelope's structure and its sender's signature; no private key needed.

    Raises:
        MalformedInput: not a well-formed envelope.
        WrongKey: ``sender_card`` is not the card the header names.
        InvalidSignature: the envelope is not exactly what the sender signed.
    """
    envelope = data if isinstance(data, Envelope) else Envelope.parse(data)
    header = envelope.header
    if header.sender != sender_card.agency or header.sender_key != sender_card.key_id:
        raise WrongKey(
            f"envelope is from {header.sender} key {header.sender_key.fingerprint()}, "
            f"card is {sender_card.agency} key {sender_card.key_id.fingerprint()}"
        )
    sender_card.sign_key.verify(envelope.signature, labels.SIG_ENVELOPE, envelope.header_bytes)
    if _body_digest(envelope.ciphertext) != header.body_digest:
        raise InvalidSignature
    if _wrapped_digest(envelope.wrapped_keys) != header.wrapped_digest:
        raise InvalidSignature
    return envelope


def open_envelope(
    data: bytes | Envelope, recipient: Identity, sender_card: AgencyCard
) -> OpenedNote:
    """Verify an envelope, then decrypt it as ``recipient``.

    Raises:
        MalformedInput, WrongKey, InvalidSignature: as :func:`verify_envelope`.
        NotARecipient: the envelope holds no wrapped key for this identity.
        DecryptionFailed: the wrapped key or body does not open (opaque).
    """
    envelope = verify_envelope(data, sender_card)
    header = envelope.header
    me = Recipient(recipient.agency, recipient.key_id)
    if me not in header.recipients:
        raise NotARecipient(recipient.agency)
    wrapped = envelope.wrapped_keys[header.recipients.index(me)]
    info = _hpke_info(header.channel, header.message_id, me.agency, me.key_id)
    content_key = recipient.kem.unwrap(wrapped, info)
    if _key_commitment(content_key) != header.key_commitment:
        raise DecryptionFailed
    aad = _body_aad(header.channel, header.message_id, header.sender)
    plaintext = _suites.aead_open(content_key, header.body_nonce, envelope.ciphertext, aad)
    return OpenedNote(header, Note.parse(plaintext))


# -- byte-level helpers -------------------------------------------------------------


def _ordered_recipients(cards: Sequence[AgencyCard]) -> list[AgencyCard]:
    if not cards:
        raise MalformedInput("recipients: at least one is required")
    if len(cards) > MAX_RECIPIENTS:
        raise MalformedInput(f"recipients: at most {MAX_RECIPIENTS}")
    ordered = sorted(cards, key=lambda card: card.agency)
    if len({card.agency for card in ordered}) != len(ordered):
        raise MalformedInput("recipients: each agency at most once")
    return ordered


def _hpke_info(channel: str, message_id: bytes, agency: str, key_id: bytes) -> bytes:
    return labels.HPKE_INFO_CONTENT_KEY + codec.encode(
        [str(channel), bytes(message_id), str(agency), bytes(key_id)]
    )


_EMPTY_AGENCY_AND_KEY: Final = codec.encode("") + codec.encode(b"")


class _HpkeInfo:
    """:func:`_hpke_info` for one seal's recipients: the channel and message id part is
    encoded once. A canonical array is its header followed by its items' encodings, so
    the bytes are those of :func:`_hpke_info` (a test compares them)."""

    __slots__ = ("_prefix",)

    def __init__(self, channel: str, message_id: bytes) -> None:
        head = _hpke_info(channel, message_id, "", b"")
        self._prefix = head[: -len(_EMPTY_AGENCY_AND_KEY)]

    def of(self, agency: str, key_id: bytes) -> bytes:
        # The pair's encoding after its one-byte array header (0x92).
        return self._prefix + codec.encode([str(agency), bytes(key_id)])[1:]


def _body_aad(channel: str, message_id: bytes, sender: str) -> bytes:
    return labels.AAD_BODY + codec.encode([str(channel), bytes(message_id), str(sender)])


def _body_digest(ciphertext: bytes) -> bytes:
    return _suites.sha256(labels.BODY_DIGEST, ciphertext)


def _wrapped_digest(wrapped: Sequence[bytes]) -> bytes:
    return _suites.sha256(labels.WRAPPED_KEYS_DIGEST, codec.encode(list(wrapped)))


def _key_commitment(content_key: bytes) -> bytes:
    return _suites.sha256(labels.KEY_COMMITMENT, content_key)


def _header_record(header: Header) -> dict[str, codec.Value]:
    marks = header.markings
    record: dict[str, codec.Value] = {
        "v": labels.ENVELOPE_VERSION,
        "mid": bytes(header.message_id),
        "ch": str(header.channel),
        "from": str(header.sender),
        "kid": bytes(header.sender_key),
        "ts": header.created,
        "cls": marks.classification.value,
        "hc": marks.handling.value,
        "tlp": marks.tlp.value,
        "rcpt": [[str(r.agency), bytes(r.key_id)] for r in header.recipients],
        "nonce": header.body_nonce,
        "ctd": header.body_digest,
        "wkd": header.wrapped_digest,
        "kcm": header.key_commitment,
    }
    if marks.source is not None:
        record["src"] = marks.source.value
    if marks.info is not None:
        record["inf"] = marks.info.value
    return record


_HEADER_FIELDS: Final[dict[str, type]] = {
    "v": int,
    "mid": bytes,
    "ch": str,
    "from": str,
    "kid": bytes,
    "ts": int,
    "cls": str,
    "hc": str,
    "tlp": str,
    "rcpt": list,
    "nonce": bytes,
    "ctd": bytes,
    "wkd": bytes,
    "kcm": bytes,
}


def _header_from_record(value: codec.Value) -> Header:
    record = codec.expect_map(
        value, "header", required=_HEADER_FIELDS, optional={"src": str, "inf": str}
    )
    if record["v"] != labels.ENVELOPE_VERSION:
        raise MalformedInput(f"header.v: only version {labels.ENVELOPE_VERSION} is supported")
    return Header(
        message_id=MessageId(record["mid"]),
        channel=ChannelId(record["ch"]),
        sender=AgencyId(record["from"]),
        sender_key=KeyId(record["kid"]),
        created=codec.expect_int(record["ts"], "header.ts", low=0, high=MAX_TIME_MS),
        markings=_markings_from(record),
        recipients=_recipients_from(record["rcpt"]),
        body_nonce=codec.expect_bytes(record["nonce"], "nonce", size=_suites.AEAD_NONCE),
        body_digest=codec.expect_bytes(record["ctd"], "ctd", size=_suites.DIGEST),
        wrapped_digest=codec.expect_bytes(record["wkd"], "wkd", size=_suites.DIGEST),
        key_commitment=codec.expect_bytes(record["kcm"], "kcm", size=_suites.DIGEST),
    )


#: Markings already parsed, by their decoded text (at most the 2,000 valid combinations).
_MARKINGS_SEEN: dict[tuple[object, ...], Markings] = {}
_TEXT: Final = frozenset({str, type(None)})


def _markings_from(record: dict[str, Any]) -> Markings:
    source = record.get("src")
    info = record.get("inf")
    seen = (record["cls"], record["hc"], record["tlp"], source, info)
    known = _MARKINGS_SEEN.get(seen) if all(type(v) in _TEXT for v in seen) else None
    if known is not None:
        return known
    markings = Markings(
        classification=Classification.parse(record["cls"]),
        handling=HandlingCode.parse(record["hc"]),
        tlp=Tlp.parse(record["tlp"]),
        source=None if source is None else SourceReliability.parse(source),
        info=None if info is None else InfoAssessment.parse(info),
    )
    # Only valid markings get here, and there are 2,000 of them: the table stays small.
    _MARKINGS_SEEN[seen] = markings
    return markings


#: Recipients already checked, by their exact decoded values (bounded; see below).
_RECIPIENTS_SEEN: dict[tuple[str, bytes], Recipient] = {}
_RECIPIENTS_SEEN_MAX: Final = 4096


def _recipient(agency: object, key_id: object) -> Recipient:
    """``Recipient(AgencyId(agency), KeyId(key_id))``, remembered once built.

    Every post and every opened note parses the same few recipients again; a hit skips
    the two checks. Only values of the exact decoded types are looked up, and only
    values that passed the checks are kept; the table is emptied when full, so hostile
    input cannot grow it.
    """
    if type(agency) is str and type(key_id) is bytes:
        known = _RECIPIENTS_SEEN.get((agency, key_id))
        if known is not None:
            return known
    made = Recipient(AgencyId(agency), KeyId(key_id))  # type: ignore[arg-type]
    if len(_RECIPIENTS_SEEN) >= _RECIPIENTS_SEEN_MAX:
        _RECIPIENTS_SEEN.clear()
    _RECIPIENTS_SEEN[(str(made.agency), bytes(made.key_id))] = made
    return made


def _recipients_from(items: list[Any]) -> tuple[Recipient, ...]:
    codec.expect_list(items, "rcpt", max_items=MAX_RECIPIENTS)
    recipients = []
    for pair in items:
        if type(pair) is not list or len(pair) != 2:
            raise MalformedInput("rcpt[]: expected [agency, key id]")
        recipients.append(_recipient(pair[0], pair[1]))
    if not recipients:
        raise MalformedInput("rcpt: at least one recipient is required")
    agencies = [r.agency for r in recipients]
    if agencies != sorted(set(agencies)):
        raise MalformedInput("rcpt: agencies must be unique and in ascending order")
    return tuple(recipients)
