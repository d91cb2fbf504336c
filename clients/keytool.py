"""The work behind ``siko keys``: identity, card, note and envelope files.

:mod:`clients.cli_keys` parses the command line and :mod:`clients.terminal` prints;
this module reads and writes files and calls the :mod:`keys` recipe, with no ``click``
in it. It raises :class:`keys.KeysError` as :mod:`keys` does, plus its own small tree,
every message of which is safe to print (file names and public facts, never a
passphrase, key or plaintext)::

    ToolError             a problem the user can fix (exit 1)
    ├── PassphraseError   no usable passphrase: unset variable, too short, not UTF-8 (3)
    └── EnvelopeRefused   an envelope that is not well-formed or does not verify (4)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import keys
from keys.envelope import MAX_BODY_BYTES, MAX_ENVELOPE_BYTES
from keys.keyfile import MAX_KEYFILE_BYTES, MIN_PASSPHRASE_CHARS

__all__ = [
    "MAX_NOTE_BYTES",
    "MIN_PASSPHRASE_CHARS",
    "EnvelopeRefused",
    "KeyFileReport",
    "PassphraseError",
    "ToolError",
    "check_addressed",
    "check_new_passphrase",
    "check_passphrase",
    "ensure_absent",
    "ensure_key_file_absent",
    "inspect_key_file",
    "is_utf8",
    "passphrase_from_env",
    "read_note_text",
    "verify_file",
    "write_new",
]

#: The most note text read from a file or stdin; keys.seal refuses more once encoded.
MAX_NOTE_BYTES: Final = MAX_BODY_BYTES


class ToolError(Exception):
    """A problem the user can fix; the message says what to do and holds no secret."""


class PassphraseError(ToolError):
    """No usable passphrase was given."""


class EnvelopeRefused(ToolError):
    """An envelope file is not well-formed, or its signature does not verify."""


@dataclass(frozen=True)
class KeyFileReport:
    """What ``siko keys show`` says about a file: public card, or private identity file."""

    card: keys.AgencyCard
    kdf: keys.KdfParams | None  # None for a card; identity files carry their KDF cost


# -- passphrases ----------------------------------------------------------------------


def passphrase_from_env(name: str) -> str:
    """The passphrase held in the environment variable ``name``, for scripts."""
    value = os.environ.get(name, "")
    if not value:
        raise PassphraseError(
            f"environment variable {name} is not set or is empty; set it to the "
            "passphrase, or leave out --passphrase-env to be asked for it"
        )
    return check_passphrase(value, f"the passphrase in {name}")


def check_passphrase(value: str, source: str = "the passphrase") -> str:
    """``value`` if it is UTF-8 text (undecodable bytes arrive as lone surrogates)."""
    if not is_utf8(value):
        raise PassphraseError(f"{source} is not valid UTF-8 text; check the terminal's encoding")
    return value


def check_new_passphrase(value: str) -> str:
    """``value`` if it is text, long enough to lock a new identity file."""
    check_passphrase(value)
    if len(value) < MIN_PASSPHRASE_CHARS:
        raise PassphraseError(
            f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
        )
    return value


def is_utf8(text: str) -> bool:
    """False for text holding lone surrogates (undecodable bytes from argv, env, tty)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- files ----------------------------------------------------------------------------

_EXISTS: Final = "already exists; choose another name or move it away"


def ensure_key_file_absent(path: Path) -> None:
    """Refuse early, before any prompt, to overwrite a key or card file."""
    if os.path.lexists(path):
        raise keys.KeyFileError(path, _EXISTS)


def ensure_absent(path: Path) -> None:
    """Refuse early, before any prompt, to overwrite a note or envelope file."""
    if os.path.lexists(path):
        raise ToolError(f"{path}: {_EXISTS}")


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600: it may hold a plaintext note); never overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        ensure_absent(path)
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError:
        os.unlink(path)
        raise


def read_note_text(data: bytes, source: str) -> str:
    """Note text from raw bytes: UTF-8, within the envelope's size limit."""
    if len(data) > MAX_NOTE_BYTES:
        raise ToolError(f"{source}: the note is too long (at most {MAX_NOTE_BYTES} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{source}: the note is not UTF-8 text") from None


def _read(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path``: the parser refuses one byte too many."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


def inspect_key_file(path: Path) -> KeyFileReport:
    """Name the owner of a card or identity file; no passphrase needed."""
    try:
        data = _read(path, MAX_KEYFILE_BYTES)
    except OSError as exc:
        raise keys.KeyFileError(path, f"cannot read: {exc.strerror}") from None
    try:
        return KeyFileReport(keys.AgencyCard.parse(data), None)
    except (keys.MalformedInput, keys.InvalidSignature):
        pass
    try:
        info = keys.peek_identity_file(data, source=str(path))
    except keys.KeyFileError:
        raise keys.KeyFileError(
            path, "neither a siko identity file nor a siko agency card (or it is damaged)"
        ) from None
    return KeyFileReport(info.card, info.kdf)


# -- envelopes ------------------------------------------------------------------------


def verify_file(path: Path, sender: keys.AgencyCard) -> keys.Envelope:
    """Read an envelope file and check its sender's signature (no private key)."""
    try:
        return keys.verify_envelope(keys.Envelope.parse(_read(path, MAX_ENVELOPE_BYTES)), sender)
    except keys.MalformedInput as exc:
        raise EnvelopeRefused(f"{path}: refused: not a well-formed siko envelope ({exc})") from None
    except keys.InvalidSignature:
        raise EnvelopeRefused(
            f"{path}: refused: the signature does not verify; the envelope was changed "
            f"after sealing, or {sender.agency} did not seal it"
        ) from None


def check_addressed(envelope: keys.Envelope, identity_file: Path) -> None:
    """Refuse, before asking for its passphrase, an identity the note is not sealed for."""
    card = inspect_key_file(identity_file).card  # unverified; open_envelope checks again
    if keys.Recipient(card.agency, card.key_id) not in envelope.header.recipients:
        raise keys.NotARecipient(card.agency)
