"""Every domain-separation string and format version of the protocol, written once.

A signature, hash or HPKE ``info`` made for one purpose must never be accepted for
another. Each value below is prepended to the bytes it protects; each is quoted in
docs/PROTOCOL.md, and changing one is a backwards-incompatible protocol change.
All labels end with a NUL byte so that no label is a prefix of another's input.
"""

from __future__ import annotations

from typing import Final

# Format versions: the integer ``v`` field of each record.
ENVELOPE_VERSION: Final = 1
CARD_VERSION: Final = 1
KEYFILE_VERSION: Final = 1

# Format names: the ``fmt`` field of each self-describing file.
KEYFILE_FORMAT: Final = "siko-identity"
CARD_FORMAT: Final = "siko-agency-card"
ENVELOPE_FORMAT: Final = "siko-envelope"

# Signature contexts (Ed25519 signs ``context || message``).
SIG_ENVELOPE: Final = b"siko-hub/v1 envelope header\x00"
SIG_CARD: Final = b"siko-hub/v1 agency card\x00"

# Hash prefixes.
KEY_ID: Final = b"siko-hub/v1 key id\x00"
KEY_COMMITMENT: Final = b"siko-hub/v1 content key commitment\x00"
WRAPPED_KEYS_DIGEST: Final = b"siko-hub/v1 wrapped keys\x00"
BODY_DIGEST: Final = b"siko-hub/v1 body ciphertext\x00"
ENVELOPE_DIGEST: Final = b"siko-hub/v1 envelope\x00"

# HPKE ``info`` prefix for wrapping a content key to one recipient; followed by the
# canonical encoding of [channel, message id, recipient agency, recipient key id].
HPKE_INFO_CONTENT_KEY: Final = b"siko-hub/v1 content key\x00"

# AEAD associated data prefixes.
AAD_BODY: Final = b"siko-hub/v1 body\x00"
AAD_KEYFILE: Final = b"siko-hub/v1 identity file\x00"

# -- Transparency log (keys/merkle.py, keys/checkpoint.py) ---------------------------
# These bytes are fixed by external specifications, not chosen by siko-hub, so unlike
# the labels above they carry no NUL terminator: RFC 9162 section 2.1.1 hash prefixes,
# and the C2SP signed-note signature type of Ed25519 (c2sp.org/signed-note).
MERKLE_LEAF_PREFIX: Final = b"\x00"
MERKLE_NODE_PREFIX: Final = b"\x01"
NOTE_SIG_TYPE_ED25519: Final = b"\x01"

# -- HTTP request signatures (RFC 9421; keys/httpsig.py) ------------------------------
# The application tag (RFC 9421 section 2.3 ``tag`` parameter) of every request
# signature; a signature with any other tag, or none, is refused.
HTTPSIG_TAG: Final = "siko-hub"

# -- Audit log leaves and receipts (keys/leaf.py) -----------------------------------
LEAF_COMMITMENT: Final = b"siko-hub/v1 audit record commitment\x00"
SIG_TOMBSTONE: Final = b"siko-hub/v1 audit tombstone\x00"
SIG_RECEIPT: Final = b"siko-hub/v1 post receipt\x00"
SIG_ACK: Final = b"siko-hub/v1 read acknowledgement\x00"
