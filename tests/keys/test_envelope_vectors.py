"""The published envelope vector (tests/vectors/envelope.json), checked byte for byte.

Another implementation can run the same checks: docs/PROTOCOL.md explains each value.
"""

from __future__ import annotations

from typing import Any

import pytest

from keys import AgencyCard, Envelope, Identity, Note, Suite, _suites, codec, labels, open_envelope
from keys.envelope import Markings, _seal_from_parts
from keys.ids import ChannelId, MessageId
from keys.markings import Classification, HandlingCode, InfoAssessment, SourceReliability, Tlp
from tests.vectors_util import load_vectors

V = load_vectors("envelope")


def identity(record: dict[str, Any]) -> Identity:
    return Identity.from_raw_keys(
        record["agency"],
        Suite.parse(record["suite"]),
        record["created"],
        signing_key=bytes.fromhex(record["signing_key"]),
        kem_key=bytes.fromhex(record["kem_key"]),
    )


@pytest.mark.parametrize("record", [V["sender"], *V["recipients"]], ids=lambda r: r["agency"])
def test_cards_and_key_ids_follow_from_the_private_keys(record: dict[str, Any]) -> None:
    made = identity(record)
    assert made.card.serialize().hex() == record["card"]
    assert str(made.key_id) == record["key_id"]
    assert made.key_id.fingerprint() == record["fingerprint"]
    assert AgencyCard.parse(bytes.fromhex(record["card"])) == made.card


def test_deterministic_parts_are_reproduced_byte_for_byte() -> None:
    sender = identity(V["sender"])
    readers = [identity(r) for r in V["recipients"]]
    note = Note(**V["note"])
    assert note.serialize().hex() == V["note_bytes"]
    envelope = _seal_from_parts(
        note,
        sender=sender,
        channel=ChannelId(V["channel"]),
        recipients=[r.card for r in readers],
        markings=Markings(
            Classification.VS_NFD,
            HandlingCode.H1,
            Tlp.AMBER,
            SourceReliability.B,
            InfoAssessment.KNOWN_PERSONALLY,
        ),
        message_id=MessageId.from_hex(V["message_id"]),
        created=V["created"],
        content_key=bytes.fromhex(V["content_key"]),
        body_nonce=bytes.fromhex(V["body_nonce"]),
    )
    assert envelope.ciphertext.hex() == V["body_ciphertext"]
    assert envelope.header.key_commitment.hex() == V["key_commitment"]
    # The body AAD and AES-256-GCM output are reproducible from the spec alone.
    aad = bytes.fromhex(V["body_aad"])
    assert aad == labels.AAD_BODY + codec.encode(
        [V["channel"], bytes.fromhex(V["message_id"]), V["sender"]["agency"]]
    )
    plain = _suites.aead_open(
        bytes.fromhex(V["content_key"]),
        bytes.fromhex(V["body_nonce"]),
        bytes.fromhex(V["body_ciphertext"]),
        aad,
    )
    assert plain.hex() == V["note_bytes"]


def test_pinned_envelope_verifies_opens_and_hashes() -> None:
    sender = identity(V["sender"])
    data = bytes.fromhex(V["envelope"])
    envelope = Envelope.parse(data)
    assert envelope.header_bytes.hex() == V["header_bytes"]
    assert envelope.signature.hex() == V["signature"]
    # Ed25519 is deterministic: re-signing the pinned header gives the pinned signature.
    assert sender.signing.sign(labels.SIG_ENVELOPE, envelope.header_bytes).hex() == V["signature"]
    assert envelope.digest().hex() == V["envelope_digest"]
    header = codec.decode(envelope.header_bytes, max_bytes=len(envelope.header_bytes))
    assert isinstance(header, dict)
    assert {k: header[k] for k in V["markings"]} == V["markings"]
    for record, info in zip(V["recipients"], V["hpke_info"], strict=True):
        reader = identity(record)
        index = [str(r.agency) for r in envelope.header.recipients].index(record["agency"])
        key = reader.kem.unwrap(envelope.wrapped_keys[index], bytes.fromhex(info))
        assert key.hex() == V["content_key"]
        assert open_envelope(data, reader, sender.card).note == Note(**V["note"])
