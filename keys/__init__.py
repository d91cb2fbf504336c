"""siko-hub's cryptography, with no I/O: the one safe recipe for every operation.

Identities and cards::

    alice = Identity.generate("pp-duisburg")            # ML-KEM-768+X25519 by default
    card = alice.card                                    # public: give it to partners
    save_identity(path, alice, passphrase)               # Argon2id + AES-256-GCM, mode 0600

Sealed notes::

    data = seal(Note("text"), sender=alice, channel="lage-ruhr", recipients=[card_b],
                markings=Markings(Classification.VS_NFD, HandlingCode.H1))
    verify_envelope(data, alice.card)                    # anyone: structure + signature
    opened = open_envelope(data, bob, alice.card)        # a recipient: verify + decrypt

Primitives (HPKE, Ed25519, AES-GCM, Argon2id) stay behind ``keys._suites``; callers
never choose nonces, ``info`` strings or encodings. Every error is a :class:`KeysError`.
"""

from keys._suites import Suite, VerifyKey
from keys.envelope import (
    Envelope,
    Header,
    Markings,
    Note,
    OpenedNote,
    Recipient,
    open_envelope,
    peek_header_unverified,
    seal,
    verify_envelope,
)
from keys.errors import (
    DecryptionFailed,
    InvalidProof,
    InvalidSignature,
    KeyFileError,
    KeysError,
    LimitExceeded,
    MalformedInput,
    NotARecipient,
    OutsideTimeWindow,
    WrongKey,
    WrongPassphrase,
)
from keys.identity import AgencyCard, Identity, now_ms
from keys.ids import AgencyId, ChannelId, KeyId, MessageId
from keys.keyfile import (
    IdentityFileInfo,
    KdfParams,
    load_card,
    load_identity,
    lock_identity,
    peek_identity_file,
    save_card,
    save_identity,
    unlock_identity,
)
from keys.markings import Classification, HandlingCode, InfoAssessment, SourceReliability, Tlp

__all__ = [
    "AgencyCard",
    "AgencyId",
    "ChannelId",
    "Classification",
    "DecryptionFailed",
    "Envelope",
    "HandlingCode",
    "Header",
    "Identity",
    "IdentityFileInfo",
    "InfoAssessment",
    "InvalidProof",
    "InvalidSignature",
    "KdfParams",
    "KeyFileError",
    "KeyId",
    "KeysError",
    "LimitExceeded",
    "MalformedInput",
    "Markings",
    "MessageId",
    "NotARecipient",
    "Note",
    "OpenedNote",
    "OutsideTimeWindow",
    "Recipient",
    "SourceReliability",
    "Suite",
    "Tlp",
    "VerifyKey",
    "WrongKey",
    "WrongPassphrase",
    "load_card",
    "load_identity",
    "lock_identity",
    "now_ms",
    "open_envelope",
    "peek_header_unverified",
    "peek_identity_file",
    "save_card",
    "save_identity",
    "seal",
    "unlock_identity",
    "verify_envelope",
]
