"""Regenerate tests/vectors/leaf.json (run once; the file is committed).

    .venv/bin/python tests/vectors/make_leaf.py

Every input is fixed (keys, salt, times, ids) and Ed25519 is deterministic, so every value
is reproducible byte for byte; tests/keys/test_leaf.py, test_statements.py and
test_logkey.py recompute them. These are regression vectors made by keys/ itself, not
independent data: the layouts are those of docs/PROTOCOL.md and the module docstrings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from keys import codec, labels
from keys._suites import SigningKey, Suite
from keys.identity import Identity
from keys.ids import ChannelId, MessageId
from keys.leaf import EventKind, EventRecord, Tombstone, commit, event_leaf
from keys.logkey import LogKey
from keys.statements import ReadAck, Receipt

OUTPUT = Path(__file__).with_name("leaf.json")

# The log key of tests/vectors/checkpoint.json "generated": seed 00 01 .. 1f.
LOG_ORIGIN = "siko-hub.example/audit"
LOG_SEED = bytes(range(32))
# The root of the size-8 tree of tests/vectors/merkle.json.
ROOT_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def _record() -> tuple[dict[str, Any], EventRecord, bytes]:
    fields: dict[str, object] = {
        "channel": "clan-lage-ruhr",
        "sender": "pp-duisburg",
        "message_id": bytes(range(16)),
        "digest": bytes(range(0x80, 0xA0)),
    }
    record = EventRecord(EventKind.NOTE_ACCEPTED, 1_764_100_000_000, fields)
    salt = bytes(range(0x40, 0x60))
    leaf, _ = event_leaf(record.serialize(), salt)
    vector = {
        "kind": record.kind.value,
        "at": record.at,
        "fields": {k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()},
        "bytes_fields": sorted(k for k, v in fields.items() if isinstance(v, bytes)),
        "record": record.serialize().hex(),
        "salt": salt.hex(),
        "commitment_input": (labels.LEAF_COMMITMENT + salt + record.serialize()).hex(),
        "commitment": commit(record.serialize(), salt).hex(),
        "leaf": leaf.hex(),
    }
    return vector, record, leaf


def _tombstone(log_key: LogKey) -> dict[str, object]:
    unsigned = Tombstone(5, "Löschfrist abgelaufen (BDSG § 76 Abs. 4)", 1_795_000_000_000)
    tombstone = log_key.sign_tombstone(unsigned)
    body = codec.encode(
        {"v": 1, "t": "tombstone", "index": 5, "reason": unsigned.reason, "at": unsigned.at}
    )
    return {
        "index": tombstone.index,
        "reason": tombstone.reason,
        "at": tombstone.at,
        "body": body.hex(),
        "signed_message": (labels.SIG_TOMBSTONE + body).hex(),
        "signature": tombstone.signature.hex(),
        "leaf": tombstone.leaf().hex(),
    }


def _receipt(log_key: LogKey, leaf: bytes) -> dict[str, object]:
    receipt = Receipt(
        ChannelId("clan-lage-ruhr"),
        MessageId(bytes(range(16))),
        bytes(range(0x80, 0xA0)),
        3,
        leaf,
        1_764_100_000_123,
    )
    return {
        "channel": str(receipt.channel),
        "message_id": str(receipt.message_id),
        "digest": receipt.digest.hex(),
        "index": receipt.index,
        "leaf": receipt.leaf.hex(),
        "at": receipt.at,
        "statement": receipt.statement().hex(),
        "signed_message": (labels.SIG_RECEIPT + receipt.statement()).hex(),
        "signature": log_key.sign_receipt(receipt).hex(),
    }


def _read_ack() -> dict[str, object]:
    reader = Identity.from_raw_keys(
        "sta-essen",
        Suite.X25519,
        1_764_000_000_003,
        signing_key=bytes([3]) * 32,
        kem_key=bytes([4]) * 32,
    )
    ack, signature = ReadAck.make(reader, "clan-lage-ruhr", "1764100000000-0", 1_764_100_060_000)
    signing_key, kem_key = reader.private_keys()
    return {
        "agency": str(reader.agency),
        "suite": reader.suite.value,
        "created": reader.created,
        "signing_key": signing_key.hex(),
        "kem_key": kem_key.hex(),
        "verify_key": reader.signing.public.raw.hex(),
        "card": reader.card.serialize().hex(),
        "key_id": str(reader.key_id),
        "channel": str(ack.channel),
        "position": ack.position,
        "at": ack.at,
        "statement": ack.statement().hex(),
        "signed_message": (labels.SIG_ACK + ack.statement()).hex(),
        "signature": signature.hex(),
    }


def main() -> None:
    log_key = LogKey(LOG_ORIGIN, SigningKey(LOG_SEED))
    record, _, leaf = _record()
    vector = {
        "comment": "siko-hub audit leaf, tombstone, post receipt and read acknowledgement "
        "vectors (keys/leaf.py, keys/statements.py, keys/logkey.py). Regression vectors made "
        "by keys/ itself with fixed inputs; Ed25519 is deterministic, so every value is "
        "checked byte for byte. 'record.fields' holds bytes values as hex: those named in "
        "'bytes_fields'. The log key is the one of checkpoint.json 'generated'; the "
        "receipt's leaf is the record's leaf.",
        "log_key": {
            "origin": LOG_ORIGIN,
            "signing_seed": LOG_SEED.hex(),
            "verify_key": log_key.verifier.public_key.hex(),
            "verifier_key": log_key.verifier_key,
            "key_file": log_key.serialize().hex(),
            "checkpoint": {
                "size": 8,
                "root_hash": ROOT_8,
                "note": log_key.sign_checkpoint(8, bytes.fromhex(ROOT_8)).decode(),
            },
        },
        "record": record,
        "tombstone": _tombstone(log_key),
        "receipt": _receipt(log_key, leaf),
        "read_ack": _read_ack(),
    }
    OUTPUT.write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
