"""Regenerate tests/vectors/envelope.json (run once; the file is committed).

    .venv/bin/python tests/vectors/make_envelope.py > tests/vectors/envelope.json

Private keys, times, ids, the content key and the body nonce are fixed, so everything
but the HPKE wraps (whose ephemeral keys come from the library's randomness) is
deterministic; tests/keys/test_envelope_vectors.py recomputes every deterministic value
and opens the pinned envelope with the pinned recipient keys.
"""

from __future__ import annotations

import json

from keys import (
    Classification,
    HandlingCode,
    Identity,
    InfoAssessment,
    Markings,
    MessageId,
    Note,
    SourceReliability,
    Suite,
    Tlp,
    codec,
    labels,
)
from keys.envelope import _seal_from_parts
from keys.ids import ChannelId


def _fixed_identity(agency: str, suite: Suite, seed: int) -> Identity:
    return Identity.from_raw_keys(
        agency,
        suite,
        1_764_000_000_000 + seed,
        signing_key=bytes([seed]) * 32,
        kem_key=bytes([seed + 1]) * suite.private_size,
    )


def _identity_json(identity: Identity) -> dict[str, object]:
    signing_key, kem_key = identity.private_keys()
    return {
        "agency": str(identity.agency),
        "suite": identity.suite.value,
        "created": identity.created,
        "signing_key": signing_key.hex(),
        "kem_key": kem_key.hex(),
        "card": identity.card.serialize().hex(),
        "key_id": str(identity.key_id),
        "fingerprint": identity.key_id.fingerprint(),
    }


def main() -> None:
    sender = _fixed_identity("pp-duisburg", Suite.MLKEM768_X25519, 1)
    readers = [
        _fixed_identity("sta-essen", Suite.MLKEM768_X25519, 3),
        _fixed_identity("stadt-essen-ordnungsamt", Suite.X25519, 5),
    ]
    note = Note(
        "Kennzeichen E-XY 123 am 24.11. vor Shisha-Bar gesehen.", "Lagebild", "4711 Js 1/26"
    )
    markings = Markings(
        Classification.VS_NFD,
        HandlingCode.H1,
        Tlp.AMBER,
        SourceReliability.B,
        InfoAssessment.KNOWN_PERSONALLY,
    )
    message_id = MessageId(bytes(range(16)))
    content_key = bytes(range(32, 64))
    body_nonce = bytes(range(64, 76))
    envelope = _seal_from_parts(
        note,
        sender=sender,
        channel=ChannelId("clan-lage-ruhr"),
        recipients=[r.card for r in readers],
        markings=markings,
        message_id=message_id,
        created=1_764_100_000_000,
        content_key=content_key,
        body_nonce=body_nonce,
    )
    hpke_infos = [
        (
            labels.HPKE_INFO_CONTENT_KEY
            + codec.encode(["clan-lage-ruhr", bytes(message_id), str(r.agency), bytes(r.key_id)])
        ).hex()
        for r in readers
    ]
    vector = {
        "comment": "siko-hub envelope v1 vector; see docs/PROTOCOL.md. HPKE wraps are "
        "randomised: check them by opening, everything else byte for byte.",
        "sender": _identity_json(sender),
        "recipients": [_identity_json(r) for r in readers],
        "channel": "clan-lage-ruhr",
        "message_id": str(message_id),
        "created": 1_764_100_000_000,
        "note": {"text": note.text, "subject": note.subject, "case_ref": note.case_ref},
        "note_bytes": note.serialize().hex(),
        "markings": {"cls": "VS-NfD", "hc": "H1", "tlp": "AMBER", "src": "B", "inf": "2"},
        "content_key": content_key.hex(),
        "body_nonce": body_nonce.hex(),
        "body_aad": (
            labels.AAD_BODY + codec.encode(["clan-lage-ruhr", bytes(message_id), "pp-duisburg"])
        ).hex(),
        "body_ciphertext": envelope.ciphertext.hex(),
        "hpke_info": hpke_infos,
        "key_commitment": envelope.header.key_commitment.hex(),
        "header_bytes": envelope.header_bytes.hex(),
        "signature": envelope.signature.hex(),
        "envelope": envelope.serialize().hex(),
        "envelope_digest": envelope.digest().hex(),
    }
    print(json.dumps(vector, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
