"""Checkpoints of the audit log: C2SP tlog-checkpoint text in a C2SP signed note (Ed25519).

A checkpoint commits to the log's Merkle tree at one size (c2sp.org/tlog-checkpoint)::

    <origin>\\n<tree size in decimal>\\n<base64 root hash>\\n[<extension line>\\n ...]

The hub signs it as a signed note (c2sp.org/signed-note): the text, a blank line, then
one line per signature ``— <key name> <base64(key id || Ed25519 signature)>``, where
``key id = SHA-256(key name || 0x0A || 0x01 || public key)[:4]``. Auditors configure the
hub's verifier key ``<key name>+<8 hex key id>+<base64(0x01 || public key)>``.

The Ed25519 signature covers the note text alone, with no context prefix, as the format
requires. It cannot be confused with another signature of the protocol: those sign a
context that contains a NUL byte, which a note never does.

Parsing is strict and bounded: the note size, every line's length and the number of
signatures are limited (constants below), the note must be UTF-8 without control
characters other than newline, and base64 must be canonical. Signatures by keys other
than the verifier's are ignored, as the format requires, but must be well formed.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Final

from keys import labels
from keys._suites import ED25519_KEY, SigningKey, VerifyKey, sha256
from keys.errors import InvalidProof, InvalidSignature, LimitExceeded, MalformedInput
from keys.merkle import HASH_SIZE, MAX_TREE_SIZE

__all__ = [
    "MAX_EXTENSIONS",
    "MAX_LINE_BYTES",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteVerifier",
    "note_key_id",
    "open_note",
    "open_signed_checkpoint",
    "sign_checkpoint",
    "sign_note",
    "verifier_key_string",
]

#: Largest signed note accepted, in bytes (room for 16 post-quantum cosignatures).
MAX_NOTE_BYTES: Final = 128 * 1024
#: Longest line of a note, in bytes, without its newline.
MAX_LINE_BYTES: Final = 8192
#: Most signature lines in one note (the format requires accepting at least 16).
MAX_SIGNATURES: Final = 32
#: Most extension lines in one checkpoint.
MAX_EXTENSIONS: Final = 16

_DASH: Final = "\u2014 "
_CONTROL: Final = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_KEY_ID_HEX: Final = re.compile("[0-9a-f]{8}")
_DECIMAL: Final = re.compile("0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    """One tree head: the log's ``origin``, its ``size`` and ``root_hash``, extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        if type(self.size) is not int or not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedInput("tree size: expected an integer from 0 to 2**64 - 1")
        if type(self.root_hash) is not bytes or len(self.root_hash) != HASH_SIZE:
            raise MalformedInput(f"root hash: expected {HASH_SIZE} bytes")
        if type(self.extensions) is not tuple:
            raise MalformedInput("extension lines: expected a tuple of strings")
        if len(self.extensions) > MAX_EXTENSIONS:
            raise LimitExceeded("checkpoint extension lines", MAX_EXTENSIONS)
        for line in self.extensions:
            _check_line("extension line", line)

    def serialize(self) -> bytes:
        """The note text (c2sp.org/tlog-checkpoint, "Note text")."""
        lines = [self.origin, str(self.size), _b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines).encode()

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Read a note text. This authenticates nothing: see :func:`open_signed_checkpoint`.

        Raises:
            MalformedInput: ``text`` is not exactly a checkpoint.
        """
        lines = _decode_text("checkpoint", text)[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedInput("checkpoint: expected origin, tree size and root hash lines")
        if len(lines) > 3 + MAX_EXTENSIONS:
            raise LimitExceeded("checkpoint extension lines", MAX_EXTENSIONS)
        origin, size, root_hash, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise MalformedInput("tree size: expected decimal digits without leading zeros")
        return cls(origin, int(size), _b64decode("root hash", root_hash), tuple(extensions))


@dataclass(frozen=True)
class NoteVerifier:
    """The Ed25519 public key a signed note must carry a signature from, and its name."""

    name: str
    public_key: bytes
    key_id: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if type(self.public_key) is not bytes or len(self.public_key) != ED25519_KEY:
            raise MalformedInput(f"verifier key: expected {ED25519_KEY} bytes")
        object.__setattr__(self, "key_id", note_key_id(self.name, self.public_key))

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Read ``<name>+<8 hex key id>+<base64(0x01 || public key)>``; check the key id.

        Raises:
            MalformedInput: not that form, not an Ed25519 key, or the key id is wrong.
        """
        if len(vkey) > MAX_LINE_BYTES:
            raise LimitExceeded("verifier key", MAX_LINE_BYTES)
        name, _, rest = vkey.partition("+")
        key_id, _, key = rest.partition("+")
        if not _KEY_ID_HEX.fullmatch(key_id):
            raise MalformedInput("verifier key: expected <name>+<8 lowercase hex>+<base64>")
        raw = _b64decode("verifier key", key)
        if raw[:1] != labels.NOTE_SIG_TYPE_ED25519:
            raise MalformedInput("verifier key: only Ed25519 keys (type 0x01) are supported")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != key_id:
            raise MalformedInput("verifier key: the key id does not match the key")
        return verifier

    def __str__(self) -> str:
        return verifier_key_string(self.name, self.public_key)

    @property
    def verify_key(self) -> VerifyKey:
        """The same key for the log's other signed statements: receipts and tombstones."""
        return VerifyKey(self.public_key)


def note_key_id(name: str, public_key_raw: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4] (c2sp.org/signed-note)."""
    return sha256(name.encode(), b"\n", labels.NOTE_SIG_TYPE_ED25519, public_key_raw)[:4]


def verifier_key_string(name: str, public_key_raw: bytes) -> str:
    """The verifier key an auditor configures for an Ed25519 key named ``name``."""
    verifier = NoteVerifier(name, public_key_raw)
    key = _b64(labels.NOTE_SIG_TYPE_ED25519 + public_key_raw)
    return f"{name}+{verifier.key_id.hex()}+{key}"


def sign_note(text: bytes, name: str, signing_key: SigningKey) -> bytes:
    """Sign ``text`` (UTF-8, ending in a newline) as a signed note by key ``name``.

    Raises:
        MalformedInput: ``text`` or ``name`` is not allowed in a signed note.
    """
    _decode_text("note text", text)
    key_id = NoteVerifier(name, signing_key.public.raw).key_id
    signature = _b64(key_id + signing_key.sign(b"", text))
    note = text + f"\n{_DASH}{name} {signature}\n".encode()
    if len(note) > MAX_NOTE_BYTES:
        raise LimitExceeded("signed note bytes", MAX_NOTE_BYTES)
    return note


def open_note(note: bytes, verifier: NoteVerifier) -> bytes:
    """The text of ``note`` once a signature by ``verifier`` verifies (c2sp.org/signed-note).

    Signatures by other keys are ignored; every one by ``verifier`` must verify.

    Raises:
        MalformedInput: ``note`` is not a well-formed signed note (checked first).
        InvalidSignature: no signature by ``verifier``, or one that does not verify.
    """
    text, signatures = _split_note(note)
    key = VerifyKey(verifier.public_key)
    verified = False
    for name, key_id, signature in signatures:
        if name == verifier.name and key_id == verifier.key_id:
            key.verify(signature, b"", text)
            verified = True
    if not verified:
        raise InvalidSignature
    return text


def sign_checkpoint(checkpoint: Checkpoint, name: str, signing_key: SigningKey) -> bytes:
    """The signed note of ``checkpoint``; ``name`` should be the checkpoint's origin."""
    return sign_note(checkpoint.serialize(), name, signing_key)


def open_signed_checkpoint(
    note: bytes, verifier: NoteVerifier, *, origin: str | None = None
) -> Checkpoint:
    """The checkpoint in ``note``, signed by ``verifier`` and for ``origin``.

    ``origin`` defaults to the verifier's name, as c2sp.org/tlog-checkpoint recommends.

    Raises:
        MalformedInput: ``note`` is not a well-formed signed checkpoint.
        InvalidSignature: ``note`` carries no valid signature by ``verifier``.
        InvalidProof: the checkpoint is for another origin (another log).
    """
    checkpoint = Checkpoint.parse(open_note(note, verifier))
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        raise InvalidProof(f"checkpoint is for origin {checkpoint.origin!r}, not {expected!r}")
    return checkpoint


def _split_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
    """Text and (key name, key id, signature) of each signature line, checked for form."""
    _decode_text("signed note", note)
    split = note.rfind(b"\n\n") + 1
    lines = note[split + 1 :].decode().split("\n")[:-1]
    if not split or not lines:
        raise MalformedInput("signed note: expected text, a blank line, signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise LimitExceeded("signed note signatures", MAX_SIGNATURES)
    return note[:split], [_parse_signature_line(line) for line in lines]


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """``— <name> <base64(key id || signature)>`` (c2sp.org/signed-note, "Signatures")."""
    name, space, blob = line.removeprefix(_DASH).partition(" ")
    if not line.startswith(_DASH) or not space:
        raise MalformedInput("signed note: expected signature lines '— <name> <base64>'")
    _check_name(name)
    signature = _b64decode("signature", blob)
    if len(signature) < 5:
        raise MalformedInput("signature: expected a key id and a signature")
    return name, signature[:4], signature[4:]


def _decode_text(what: str, text: bytes) -> str:
    """``text`` as a string: UTF-8, ends in newline, bounded lines, no control characters."""
    if len(text) > MAX_NOTE_BYTES:
        raise LimitExceeded(f"{what} bytes", MAX_NOTE_BYTES)
    try:
        decoded = text.decode()
    except UnicodeDecodeError:
        raise MalformedInput(f"{what}: not valid UTF-8") from None
    if not decoded.endswith("\n") or _CONTROL.search(decoded):
        raise MalformedInput(f"{what}: must end in newline and hold no control characters")
    if max(len(line) for line in text.split(b"\n")) > MAX_LINE_BYTES:
        raise LimitExceeded(f"{what} line bytes", MAX_LINE_BYTES)
    return decoded


def _check_line(what: str, line: str) -> None:
    """One non-empty line of note text."""
    if type(line) is not str or not line or "\n" in line or _CONTROL.search(line):
        raise MalformedInput(f"{what}: expected a non-empty line without control characters")
    if len(line.encode()) > MAX_LINE_BYTES:
        raise LimitExceeded(f"{what} bytes", MAX_LINE_BYTES)


def _check_name(name: str) -> None:
    """A key name: non-empty, no Unicode spaces, no plus (c2sp.org/signed-note, "Format")."""
    _check_line("key name", name)
    if "+" in name or any(char.isspace() for char in name):
        raise MalformedInput("key name: must not contain spaces or '+'")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64decode(what: str, text: str) -> bytes:
    """Canonical standard base64 (RFC 4648 section 4) only."""
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        raise MalformedInput(f"{what}: not base64") from None
    if _b64(data) != text:
        raise MalformedInput(f"{what}: not canonical base64")
    return data
