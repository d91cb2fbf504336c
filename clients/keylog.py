"""Is the card a client encrypts to the one the audit log registered?

The hub hands out the cards a note is sealed for, and its operator is not trusted to
read notes. An operator who served its own card for a partner agency would read every
note sealed for it, unless the client checks the card against the audit log, which the
operator cannot rewrite unseen (auditors replay it, clients pin its checkpoints).

Every card enters the log as the record of the event that registered it
(``agency-registered`` or ``key-added``), which names the agency, the key id and holds
the card's bytes. ``GET /v1/audit/cards/{key id}`` serves that record with its salt, its
leaf index, a signed checkpoint covering it and the inclusion proof
(:class:`CardEntry`). :func:`verify_card_logged` checks, with no I/O:

1. the checkpoint is signed by the log key the client trusts;
2. the leaf commits to the record under the salt (:func:`keys.leaf.check_record`);
3. the leaf is in the tree the checkpoint signs (:func:`keys.merkle.verify_inclusion`);
4. the record registers exactly this card: its kind, agency, key id and card bytes.

:func:`check_consistent` checks that two checkpoints the client saw are of one history
(RFC 9162 consistency proof), so the hub cannot show one client a log made for it.
The fetches below are one request each through the client's
:class:`~clients.transport.Transport`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from clients.errors import ClientError, ProtocolError
from clients.transport import Transport
from keys import AgencyCard, InvalidProof, InvalidSignature, KeysError
from keys.checkpoint import Checkpoint, NoteVerifier, open_signed_checkpoint
from keys.leaf import EventKind, EventRecord, check_record
from keys.merkle import leaf_hash, verify_consistency, verify_inclusion

__all__ = [
    "CardEntry",
    "CardRefused",
    "check_consistent",
    "fetch_card_entry",
    "fetch_consistency_proof",
    "fetch_log_verifier",
    "verify_card_logged",
]

#: The records that put a card into the log.
KEY_EVENTS: Final = (EventKind.AGENCY_REGISTERED, EventKind.KEY_ADDED)


class CardRefused(ClientError):
    """A reader's card from the hub fails a check; nothing was sealed for it."""

    slug, title = "card-refused", "A card from the hub fails its checks"
    hint = "Nothing was posted. Compare fingerprints by phone and tell the hub's operator."


@dataclass(frozen=True)
class CardEntry:
    """A card's registration in the log, as ``GET /v1/audit/cards/{key id}`` serves it."""

    index: int
    leaf: bytes
    record: bytes
    salt: bytes
    checkpoint: bytes
    proof: tuple[bytes, ...]

    @classmethod
    def from_answer(cls, data: object) -> CardEntry:
        """Read the hub's answer; :class:`ProtocolError` if it is not of that shape."""
        if not isinstance(data, Mapping):
            raise ProtocolError("the hub's card proof is not a map")
        try:
            entry = cls(
                _typed(data, "index", int),
                _typed(data, "leaf", bytes),
                _typed(data, "record", bytes),
                _typed(data, "salt", bytes),
                _typed(data, "checkpoint", str).encode(),
                tuple(_typed(data, "proof", list)),
            )
        except KeyError as exc:
            raise ProtocolError(f"the hub's card proof lacks {exc}") from None
        if not all(isinstance(node, bytes) for node in entry.proof):
            raise ProtocolError("the hub's card proof has a proof node that is not bytes")
        return entry


def _typed(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data[name]
    if type(value) is not kind:
        raise ProtocolError(f"the hub's card proof: {name!r} is not {kind.__name__}")
    return value


def verify_card_logged(card: AgencyCard, entry: CardEntry, verifier: NoteVerifier) -> Checkpoint:
    """The checkpoint ``entry`` proves ``card``'s registration into; checks 1-4 above.

    Raises:
        CardRefused: any check fails; the reason names which one.
    """
    who = f"{card.agency}'s key {card.key_id}"
    try:
        checkpoint = open_signed_checkpoint(entry.checkpoint, verifier)
    except InvalidSignature:
        raise CardRefused(
            f"the checkpoint proving {who} is not signed by the log key you trust "
            f"({verifier.name}): the hub's log key changed, or the proof is forged"
        ) from None
    except KeysError as exc:
        raise CardRefused(f"the checkpoint proving {who} is unusable: {exc}") from None
    try:
        check_record(entry.leaf, entry.record, entry.salt)
    except KeysError:
        raise CardRefused(f"the log record of {who} does not match its leaf") from None
    try:
        verify_inclusion(
            leaf_hash(entry.leaf), entry.index, checkpoint.size, entry.proof, checkpoint.root_hash
        )
    except KeysError:
        raise CardRefused(
            f"the leaf of {who} is not proved into the log's signed checkpoint"
        ) from None
    _check_registers(card, entry.record, who)
    return checkpoint


def _check_registers(card: AgencyCard, record_bytes: bytes, who: str) -> None:
    """The record is a key event for exactly ``card``."""
    try:
        record = EventRecord.parse(record_bytes)
    except KeysError:
        raise CardRefused(f"the log record of {who} does not decode") from None
    fields = record.fields
    if (
        record.kind not in KEY_EVENTS
        or fields.get("agency") != str(card.agency)
        or fields.get("key_id") != bytes(card.key_id)
        or fields.get("card") != card.serialize()
    ):
        raise CardRefused(
            f"the log does not register the card the hub gives for {who}: "
            "the card was never logged, or was swapped"
        )


def check_consistent(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Raise :class:`CardRefused` unless the larger checkpoint extends the smaller one."""
    small, large = (old, new) if old.size <= new.size else (new, old)
    try:
        verify_consistency(small.size, large.size, small.root_hash, large.root_hash, proof)
    except (InvalidProof, KeysError):
        raise CardRefused(
            f"the hub's log at size {new.size} is not consistent with the one this client "
            f"saw at size {old.size}: it shows different histories (a fork)"
        ) from None


# -- fetches ------------------------------------------------------------------------


async def fetch_card_entry(transport: Transport, key_id: str) -> CardEntry:
    """``GET /v1/audit/cards/{key id}``; the hub's problems raise as usual."""
    response = await transport.request("GET", f"/v1/audit/cards/{key_id}")
    return CardEntry.from_answer(response.msgpack())


async def fetch_log_verifier(transport: Transport) -> NoteVerifier:
    """``GET /v1/audit/key``: the log key as the hub states it (trust on first use only)."""
    data = (await transport.request("GET", "/v1/audit/key")).msgpack()
    if not isinstance(data, dict) or not isinstance(data.get("verifier_key"), str):
        raise ProtocolError("the hub's log key answer is malformed")
    try:
        verifier = NoteVerifier.parse(data["verifier_key"])
    except KeysError as exc:
        raise ProtocolError(f"the hub's log key is malformed: {exc}") from None
    if verifier.name != data.get("origin"):
        raise ProtocolError("the hub's log key is named for another origin than its log")
    return verifier


async def fetch_consistency_proof(transport: Transport, old: int, new: int) -> list[bytes]:
    """``GET /v1/audit/proofs/consistency`` between trees of ``old`` and ``new`` leaves."""
    params = [("old", str(old)), ("new", str(new))]
    data = (await transport.request("GET", "/v1/audit/proofs/consistency", params=params)).msgpack()
    proof = data.get("proof") if isinstance(data, dict) else None
    if not isinstance(proof, list) or not all(isinstance(node, bytes) for node in proof):
        raise ProtocolError("the hub's consistency proof is malformed")
    return proof
