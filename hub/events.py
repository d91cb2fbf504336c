"""The audit events of the hub's actions, as records ready for the log.

Pure: each function builds the :class:`keys.leaf.EventRecord` of one action and seals it
into an :class:`AuditEvent` (record bytes, a fresh salt, and the leaf that commits to
both). The store writes the event into the action's outbox in the same Lua script as
the action, so an action and its event exist together or not at all.

Records hold identifiers, digests, headers and signatures, never note content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hub.records import AgencyRecord, ChannelRecord
from keys import AgencyCard, Envelope
from keys.leaf import EventKind, EventRecord, RefusalSummary, event_leaf
from keys.statements import ReadAck


@dataclass(frozen=True)
class AuditEvent:
    """An event as it travels through an outbox: leaf, record and salt."""

    leaf: bytes
    record: bytes
    salt: bytes

    @classmethod
    def of(cls, kind: EventKind, at: int, **fields: object) -> AuditEvent:
        """Seal a record of ``kind`` with ``fields``."""
        record = EventRecord(kind, at, fields).serialize()
        leaf, salt = event_leaf(record)
        return cls(leaf, record, salt)


def agency_registered(record: AgencyRecord, card: AgencyCard, by: str, at: int) -> AuditEvent:
    """An agency, administrator or auditor was added to the directory with its first card."""
    return AuditEvent.of(
        EventKind.AGENCY_REGISTERED,
        at,
        agency=str(record.agency),
        role=record.kind.value,
        key_id=bytes(card.key_id),
        card=card.serialize(),
        by=by,
    )


def key_added(agency: str, card: AgencyCard, by: str, at: int) -> AuditEvent:
    """An agency's key was rotated: ``card`` is now in force."""
    return AuditEvent.of(
        EventKind.KEY_ADDED,
        at,
        agency=agency,
        key_id=bytes(card.key_id),
        card=card.serialize(),
        by=by,
    )


def agency_status(agency: str, status: str, by: str, at: int) -> AuditEvent:
    """An agency was suspended or reactivated."""
    return AuditEvent.of(EventKind.AGENCY_STATUS, at, agency=agency, status=status, by=by)


def _members(record: ChannelRecord) -> dict[str, object]:
    return {str(a): sorted(r.value for r in roles) for a, roles in record.members.items()}


def channel_created(record: ChannelRecord, by: str, at: int) -> AuditEvent:
    """A channel was created with its members, ceiling and retention."""
    return AuditEvent.of(
        EventKind.CHANNEL_CREATED,
        at,
        channel=str(record.channel),
        ceiling=record.ceiling.value,
        retention_days=record.retention_days,
        members=_members(record),
        by=by,
    )


def member_changed(record: ChannelRecord, agency: str, by: str, at: int) -> AuditEvent:
    """An agency's roles in a channel changed (none: it was removed)."""
    roles = sorted(r.value for r in record.roles_of(agency))
    return AuditEvent.of(
        EventKind.MEMBER_CHANGED, at, channel=str(record.channel), agency=agency, roles=roles, by=by
    )


def note_accepted(envelope: Envelope, digest: bytes, at: int) -> AuditEvent:
    """A note was accepted: its header and the sender's signature, never its content."""
    header = envelope.header
    return AuditEvent.of(
        EventKind.NOTE_ACCEPTED,
        at,
        channel=str(header.channel),
        message_id=bytes(header.message_id),
        sender=str(header.sender),
        sender_key=bytes(header.sender_key),
        recipients=[[str(r.agency), bytes(r.key_id)] for r in header.recipients],
        classification=header.markings.classification.value,
        handling=header.markings.handling.value,
        digest=digest,
        header=envelope.header_bytes,
        signature=envelope.signature,
    )


def note_acknowledged(ack: ReadAck, signature: bytes, at: int) -> AuditEvent:
    """An agency acknowledged reading a channel up to a stream id, signed by its key."""
    return AuditEvent.of(
        EventKind.NOTE_ACKNOWLEDGED,
        at,
        channel=str(ack.channel),
        agency=str(ack.agency),
        position=ack.position,
        statement=ack.statement(),
        signature=signature,
    )


def request_refused(
    *, agency: str | None, method: str, path: str, problem: str, status: int, at: int
) -> AuditEvent:
    """A request was refused: who (if known), what, and why.

    The hub logs a refusal one by one only when it can name the agency (the request's
    signature verified and its nonce was fresh); others are :func:`refusals_summarized`.
    """
    fields: Mapping[str, object] = {
        "method": method,
        "path": path[:512],
        "problem": problem,
        "status": status,
    }
    if agency is not None:
        fields = {**fields, "agency": agency}
    return AuditEvent.of(EventKind.REQUEST_REFUSED, at, **fields)


def refusals_summarized(summary: RefusalSummary, at: int) -> AuditEvent:
    """Refusals nobody can be named for, counted by problem and status over an interval."""
    return AuditEvent.of(EventKind.REFUSALS_SUMMARIZED, at, **summary.fields())
