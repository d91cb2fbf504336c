"""Identity files (private, passphrase-protected) and card files (public).

An identity file is one canonical msgpack map (see docs/PROTOCOL.md)::

    {"agency", "card", "ct", "fmt": "siko-identity", "kdf": {...}, "key_id", "nonce", "v": 1}

The public part (agency, card, key id, KDF parameters) is readable without the
passphrase, so ``siko keys show`` can name the file's owner. The private keys are in
``ct``: AES-256-GCM under a key derived from the passphrase with Argon2id, the
parameters of which sit in the file. The associated data is ``AAD_KEYFILE`` followed by
the canonical encoding of every other field, so changing any byte of the file, public
or not, makes it fail to open, exactly like a wrong passphrase; after opening, the
stored card must equal the card derived from the private keys.

Files are written once, with mode 0600, through a temporary file that is linked into
place, so an existing file is never overwritten and a crash never leaves half a key.
Every failure is a :class:`~keys.errors.KeyFileError` naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from keys import _suites, codec, labels
from keys.errors import (
    DecryptionFailed,
    InvalidSignature,
    KeyFileError,
    MalformedInput,
    WrongPassphrase,
)
from keys.identity import MAX_CARD_BYTES, AgencyCard, Identity

__all__ = [
    "IdentityFileInfo",
    "KdfParams",
    "load_card",
    "load_identity",
    "lock_identity",
    "peek_identity_file",
    "save_card",
    "save_identity",
    "unlock_identity",
]

MAX_KEYFILE_BYTES: Final = 16 * 1024
MIN_PASSPHRASE_CHARS: Final = 8
SALT_BYTES: Final = 16
#: Upper bounds on parameters read from a file: a hostile file must not make us
#: allocate gigabytes or spin for minutes before the passphrase check.
MAX_MEMORY_KIB: Final = 256 * 1024
MAX_ITERATIONS: Final = 10
MAX_LANES: Final = 8


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost parameters; the default follows RFC 9106's second recommendation."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    def __post_init__(self) -> None:
        codec.expect_int(self.lanes, "kdf.lanes", low=1, high=MAX_LANES)
        codec.expect_int(self.memory_kib, "kdf.memory_kib", low=8 * self.lanes, high=MAX_MEMORY_KIB)
        codec.expect_int(self.iterations, "kdf.iterations", low=1, high=MAX_ITERATIONS)


@dataclass(frozen=True)
class IdentityFileInfo:
    """What an identity file says about itself without the passphrase."""

    card: AgencyCard
    kdf: KdfParams


def lock_identity(
    identity: Identity,
    passphrase: str,
    *,
    kdf: KdfParams | None = None,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt ``identity`` under ``passphrase``; returns the identity file's bytes.

    ``salt`` and ``nonce`` are random unless given (test vectors give them).

    Raises:
        MalformedInput: the passphrase is shorter than ``MIN_PASSPHRASE_CHARS``.
    """
    secret = _normalise(passphrase)
    if len(secret.decode("utf-8")) < MIN_PASSPHRASE_CHARS:
        raise MalformedInput(f"passphrase: use at least {MIN_PASSPHRASE_CHARS} characters")
    if salt is not None:
        codec.expect_bytes(salt, "salt", size=SALT_BYTES)
    if nonce is not None:
        codec.expect_bytes(nonce, "nonce", size=_suites.AEAD_NONCE)
    record = _kdf_record(kdf or KdfParams(), salt or _suites.random_bytes(SALT_BYTES))
    nonce = nonce or _suites.random_bytes(_suites.AEAD_NONCE)
    public: dict[str, codec.Value] = {
        "fmt": labels.KEYFILE_FORMAT,
        "v": labels.KEYFILE_VERSION,
        "agency": str(identity.agency),
        "key_id": bytes(identity.key_id),
        "card": identity.card.serialize(),
        "kdf": record,
        "nonce": nonce,
    }
    signing_key, kem_key = identity.private_keys()
    private = codec.encode({"sig_sk": signing_key, "kem_sk": kem_key})
    ct = _suites.aead_seal(_derive(secret, record), nonce, private, _aad(public))
    return codec.encode({**public, "ct": ct})


def unlock_identity(data: bytes, passphrase: str, *, source: str = "identity file") -> Identity:
    """Decrypt an identity file's bytes with ``passphrase``.

    Raises:
        KeyFileError: the bytes are not an identity file (truncated, damaged, other).
        WrongPassphrase: the passphrase is wrong, or the file was altered.
    """
    fields, info = _parse(data, source)
    key = _derive(_normalise(passphrase), fields["kdf"])
    public = {name: value for name, value in fields.items() if name != "ct"}
    try:
        private = _suites.aead_open(key, fields["nonce"], fields["ct"], _aad(public))
        identity = _identity_from(private, info.card)
    except (DecryptionFailed, MalformedInput):
        raise WrongPassphrase(source) from None
    if identity.card != info.card:
        raise WrongPassphrase(source)
    return identity


def peek_identity_file(data: bytes, *, source: str = "identity file") -> IdentityFileInfo:
    """The public part of an identity file, unverified until it is unlocked."""
    return _parse(data, source)[1]


def save_identity(
    path: Path, identity: Identity, passphrase: str, *, kdf: KdfParams | None = None
) -> None:
    """Write ``identity`` to a new file at ``path`` (mode 0600); never overwrites."""
    try:
        data = lock_identity(identity, passphrase, kdf=kdf)
    except MalformedInput as exc:
        raise KeyFileError(path, exc.what) from None
    write_new_file(path, data, mode=0o600)


def load_identity(path: Path, passphrase: str) -> Identity:
    """Read and unlock the identity file at ``path``."""
    return unlock_identity(_read(path, MAX_KEYFILE_BYTES), passphrase, source=str(path))


def save_card(path: Path, card: AgencyCard) -> None:
    """Write a public card file; never overwrites."""
    write_new_file(path, card.serialize(), mode=0o644)


def load_card(path: Path) -> AgencyCard:
    """Read a card file; an identity file is accepted too (its public card is used)."""
    data = _read(path, MAX_KEYFILE_BYTES)
    try:
        return AgencyCard.parse(data)
    except (MalformedInput, InvalidSignature):
        pass
    try:
        return peek_identity_file(data, source=str(path)).card
    except KeyFileError:
        raise KeyFileError(path, "not a siko agency card (or it is damaged)") from None


def write_new_file(path: Path, data: bytes, *, mode: int) -> None:
    """Create ``path`` holding ``data`` atomically with ``mode``; refuse if it exists."""
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise KeyFileError(path, "already exists; choose another name or move it away") from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot write: {exc.strerror}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# -- internals ----------------------------------------------------------------------


def _normalise(passphrase: str) -> bytes:
    """NFC-normalised UTF-8, so the same typed passphrase works on every system."""
    if not isinstance(passphrase, str):
        raise MalformedInput("passphrase: expected text")
    try:
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedInput("passphrase: not valid Unicode text") from None


def _kdf_record(params: KdfParams, salt: bytes) -> dict[str, codec.Value]:
    return {
        "alg": "argon2id",
        "salt": salt,
        "memory_kib": params.memory_kib,
        "iterations": params.iterations,
        "lanes": params.lanes,
    }


def _derive(secret: bytes, record: dict[str, Any]) -> bytes:
    return _suites.argon2id(
        secret,
        record["salt"],
        memory_kib=record["memory_kib"],
        iterations=record["iterations"],
        lanes=record["lanes"],
    )


def _aad(public: dict[str, codec.Value]) -> bytes:
    return labels.AAD_KEYFILE + codec.encode(public)


def _parse(data: bytes, source: str) -> tuple[dict[str, Any], IdentityFileInfo]:
    try:
        return _parse_fields(data)
    except (MalformedInput, InvalidSignature) as exc:
        detail = f" ({exc})" if isinstance(exc, MalformedInput) else ""
        raise KeyFileError(
            source, f"not a siko identity file, or it is truncated or damaged{detail}"
        ) from None


def _parse_fields(data: bytes) -> tuple[dict[str, Any], IdentityFileInfo]:
    fields = codec.expect_map(
        codec.decode(data, max_bytes=MAX_KEYFILE_BYTES),
        "identity file",
        required={
            "fmt": str,
            "v": int,
            "agency": str,
            "key_id": bytes,
            "card": bytes,
            "kdf": dict,
            "nonce": bytes,
            "ct": bytes,
        },
    )
    if fields["fmt"] != labels.KEYFILE_FORMAT or fields["v"] != labels.KEYFILE_VERSION:
        raise MalformedInput("not a version 1 siko identity file")
    record = codec.expect_map(
        fields["kdf"],
        "kdf",
        required={"alg": str, "salt": bytes, "memory_kib": int, "iterations": int, "lanes": int},
    )
    if record["alg"] != "argon2id":
        raise MalformedInput("kdf.alg: only argon2id is supported")
    codec.expect_bytes(record["salt"], "kdf.salt", size=SALT_BYTES)
    params = KdfParams(record["memory_kib"], record["iterations"], record["lanes"])
    codec.expect_bytes(fields["nonce"], "nonce", size=_suites.AEAD_NONCE)
    codec.expect_bytes(fields["card"], "card", max_size=MAX_CARD_BYTES)
    card = AgencyCard.parse(fields["card"])
    if card.agency != fields["agency"] or bytes(card.key_id) != fields["key_id"]:
        raise MalformedInput("agency or key id does not match the card")
    return fields, IdentityFileInfo(card=card, kdf=params)


def _identity_from(private: bytes, card: AgencyCard) -> Identity:
    record = codec.expect_map(
        codec.decode(private, max_bytes=MAX_KEYFILE_BYTES),
        "private keys",
        required={"sig_sk": bytes, "kem_sk": bytes},
    )
    return Identity.from_raw_keys(
        card.agency,
        card.suite,
        card.created,
        signing_key=record["sig_sk"],
        kem_key=record["kem_sk"],
    )


def _read(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise KeyFileError(path, f"cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise KeyFileError(path, f"too large to be a key file (at most {limit} bytes)")
    return data
