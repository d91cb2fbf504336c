"""The work behind ``siko keys``: identity, card, note and envelope files.

:mod:`clients.cli` parses the command line and prints; this module reads and writes
files and calls the :mod:`keys` recipe, with no ``click`` in it. It raises
:class:`keys.KeysError` as :mod:`keys` does, plus its own small tree, every message of
which is safe to print (file names and public facts, never a passphrase, key or
plaintext)::

    ToolError             a problem the user can fix (exit 1)
    ├── PassphraseError   no usable passphrase: unset variable, too short, not UTF-8 (3)
    └── EnvelopeRefused   an envelope that is not well-formed or does not verify (4)
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
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
    "header_lines",
    "inspect_key_file",
    "is_utf8",
    "passphrase_from_env",
    "printable",
    "read_note_text",
    "run_demo",
    "utc_iso",
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


def ensure_key_file_absent(path: Path) -> None:
    """Refuse early, before any prompt, to overwrite a key or card file."""
    if os.path.lexists(path):
        raise keys.KeyFileError(path, "already exists; choose another name or move it away")


def ensure_absent(path: Path) -> None:
    """Refuse early, before any prompt, to overwrite a note or envelope file."""
    if os.path.lexists(path):
        raise ToolError(f"{path}: already exists; choose another name or move it away")


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


# -- presentation ---------------------------------------------------------------------


def utc_iso(ms: int) -> str:
    """Protocol time (ms since the epoch) as UTC ISO 8601, e.g. 2025-03-01T08:30:00Z."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def printable(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with control characters shown as ``\\xNN``: a sender cannot drive the terminal."""
    allowed = "\n\t" if keep_lines else ""
    return "".join(_shown(ch, allowed) for ch in text)


def _shown(ch: str, allowed: str) -> str:
    if ch in allowed or not unicodedata.category(ch).startswith("C"):
        return ch
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def header_lines(header: keys.Header, note: keys.Note | None = None) -> list[str]:
    """The header of a verified envelope for people, markings first."""
    marks = header.markings
    lines = [
        f"*** {marks.classification.value} / handling {marks.handling.value}"
        f" / TLP:{marks.tlp.value} ***",
        f"from:       {header.sender} (key {header.sender_key.fingerprint()}), signature valid",
        f"to:         {', '.join(sorted(header.recipient_agencies()))}",
        f"channel:    {header.channel}",
        f"sealed at:  {utc_iso(header.created)}",
        f"message id: {header.message_id}",
    ]
    if note is not None and note.subject is not None:
        lines.append(f"subject:    {printable(note.subject)}")
    if note is not None and note.case_ref is not None:
        lines.append(f"case ref:   {printable(note.case_ref)}")
    return lines


def _read(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path``: the parser refuses one byte too many."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


# -- the guided demo ------------------------------------------------------------------

#: The demo's identity files are locked with this fixed, published passphrase...
DEMO_PASSPHRASE: Final = "demo passphrase - never for real keys"
#: ...and with a cheap Argon2id cost (8 MiB, 1 pass) so the demo runs in a blink. This is
#: the demo's only: ``siko keys new`` always uses the full default (64 MiB, 3 passes).
DEMO_KDF: Final = keys.KdfParams(memory_kib=8192, iterations=1, lanes=1)
DEMO_CHANNEL: Final = "clan-lagebild-ruhr"
DEMO_SENDER: Final = ("pp-duisburg", "the police headquarters Duisburg")
DEMO_READERS: Final = (
    ("sta-essen", "the public prosecutor's office Essen"),
    ("stadt-essen-ordnungsamt", "the public-order office of the city of Essen"),
)
DEMO_NOTE: Final = keys.Note(
    "Patrol report: vehicle checked at 02:10 on Altendorfer Strasse, three occupants.",
    subject="Patrol report, night shift",
    case_ref="PP-DU 4711/25",
)


def run_demo(folder: Path, say: Callable[[str], None]) -> None:
    """Walk through identities, cards, sealing and opening in ``folder``, via ``say``."""
    say(
        f"Working in {folder}. The demo's identity files are locked with the published "
        f"passphrase {DEMO_PASSPHRASE!r} and, to run fast, with a cheap key derivation "
        "that 'siko keys new' never uses."
    )
    cards = {
        agency: _demo_identity(folder, agency, role, say)
        for agency, role in (DEMO_SENDER, *DEMO_READERS)
    }
    sealed = _demo_seal(folder, cards, say)
    for agency, _role in DEMO_READERS:
        note = _demo_open(sealed, _demo_unlock(folder, agency), cards[DEMO_SENDER[0]])
        say(f"{agency} opens it: signature valid, and it reads: {printable(note.text)!r}")
    _demo_outsider(sealed, cards[DEMO_SENDER[0]], say)
    _demo_tamper(folder, sealed, cards[DEMO_SENDER[0]], say)
    say("Done. Everything above runs offline; the hub will only ever see sealed envelopes.")


def _demo_identity(
    folder: Path, agency: str, role: str, say: Callable[[str], None]
) -> keys.AgencyCard:
    identity = keys.Identity.generate(agency)
    keys.save_identity(folder / f"{agency}.identity", identity, DEMO_PASSPHRASE, kdf=DEMO_KDF)
    keys.save_card(folder / f"{agency}.card", identity.card)
    say(
        f"{agency} ({role}) creates its private identity file {agency}.identity and hands "
        f"its public card {agency}.card to the partners; key id {identity.key_id.fingerprint()}"
    )
    return keys.load_card(folder / f"{agency}.card")


def _demo_unlock(folder: Path, agency: str) -> keys.Identity:
    return keys.load_identity(folder / f"{agency}.identity", DEMO_PASSPHRASE)


def _demo_open(sealed: Path, reader: keys.Identity, sender: keys.AgencyCard) -> keys.Note:
    return keys.open_envelope(verify_file(sealed, sender), reader, sender).note


def _demo_seal(folder: Path, cards: dict[str, keys.AgencyCard], say: Callable[[str], None]) -> Path:
    readers = [cards[agency] for agency, _role in DEMO_READERS]
    data = keys.seal(
        DEMO_NOTE,
        sender=_demo_unlock(folder, DEMO_SENDER[0]),
        channel=DEMO_CHANNEL,
        recipients=readers,
        markings=keys.Markings(keys.Classification.VS_NFD, keys.HandlingCode.H1),
    )
    write_new(folder / "note.sealed", data)
    say(
        f"{DEMO_SENDER[0]} seals a VS-NfD note (handling H1) in channel {DEMO_CHANNEL} for "
        f"{' and '.join(c.agency for c in readers)} and signs it: note.sealed, {len(data)} bytes"
    )
    return folder / "note.sealed"


def _demo_outsider(sealed: Path, sender: keys.AgencyCard, say: Callable[[str], None]) -> None:
    outsider = keys.Identity.generate("stadt-gelsenkirchen-jugendamt")
    try:
        _demo_open(sealed, outsider, sender)
    except keys.NotARecipient as exc:
        say(f"{outsider.agency}, not addressed, tries to open it and is refused: {exc}")
        return
    raise ToolError("demo: an agency that was not addressed opened the note; do not use this build")


def _demo_tamper(
    folder: Path, sealed: Path, sender: keys.AgencyCard, say: Callable[[str], None]
) -> None:
    data = sealed.read_bytes()
    where = len(data) // 2
    write_new(
        folder / "note-altered.sealed", data[:where] + bytes([data[where] ^ 1]) + data[where + 1 :]
    )
    try:
        verify_file(folder / "note-altered.sealed", sender)
    except EnvelopeRefused as exc:
        say(f"One byte of a copy is changed (note-altered.sealed); it is refused: {exc}")
        return
    raise ToolError("demo: an altered envelope was accepted; do not use this build")
