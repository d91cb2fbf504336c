"""The person at the terminal: what ``siko keys`` is given, asks for and shows.

Option values are checked while the command line is parsed. Passphrases are asked for
without echo and checked by :mod:`clients.keytool`, which does the file work and has
no ``click`` in it. A note's text, subject and case reference are chosen by its
sender; :func:`printable` shows their control characters as ``\\xNN`` so a sender
cannot drive the reader's terminal.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import click

import keys
from clients import keytool

__all__ = [
    "AGENCY",
    "CHANNEL",
    "EXISTING",
    "NEW",
    "PASSPHRASE_ENV",
    "choice",
    "echo_card",
    "echo_key_file",
    "header_lines",
    "new_passphrase",
    "passphrase",
    "printable",
    "read_note",
    "utc_iso",
    "utf8_text",
    "write_text",
]


# -- given: values checked while the command line is parsed -------------------------


class _Slug(click.ParamType[str]):
    """An agency or channel id, checked by :mod:`keys.ids` while the line is parsed."""

    def __init__(self, name: str, kind: Callable[[str], str]) -> None:
        self.name = name
        self._kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return self._kind(value)
        except keys.MalformedInput as exc:
            self.fail(exc.what, param, ctx)


def choice(values: Any) -> click.Choice[str]:
    """The values of the enum ``values``, one of which is to be typed."""
    return click.Choice([member.value for member in values])


def utf8_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse, while the line is parsed, an option value that is not UTF-8 text."""
    if value is not None and not keytool.is_utf8(value):
        raise click.BadParameter("not valid UTF-8 text; check the terminal's encoding")
    return value


AGENCY: Final = _Slug("id", keys.AgencyId)
CHANNEL: Final = _Slug("id", keys.ChannelId)
EXISTING: Final = click.Path(exists=True, dir_okay=False, path_type=Path)
NEW: Final = click.Path(dir_okay=False, path_type=Path)
PASSPHRASE_ENV: Final = click.option(
    "--passphrase-env",
    metavar="NAME",
    help="For scripts: read the passphrase from the environment variable NAME instead "
    "of asking for it.",
)


# -- asking: prompts and note text ----------------------------------------------------


def passphrase(path: Path, env: str | None) -> str:
    """The passphrase for identity file ``path``: from the variable ``env``, or asked for."""
    if env is not None:
        return keytool.passphrase_from_env(env)
    typed = click.prompt(f"Passphrase for {path}", hide_input=True, err=True)
    return keytool.check_passphrase(str(typed))


def new_passphrase(path: Path, env: str | None) -> str:
    """A passphrase for a new identity file: from ``env``, or asked for twice."""
    if env is not None:
        return keytool.check_new_passphrase(keytool.passphrase_from_env(env))
    minimum = keytool.MIN_PASSPHRASE_CHARS
    return str(
        click.prompt(
            f"New passphrase for {path} (at least {minimum} characters)",
            hide_input=True,
            confirmation_prompt="Repeat it",
            value_proc=_checked_passphrase,
            err=True,
        )
    )


def _checked_passphrase(value: str) -> str:
    try:
        return keytool.check_new_passphrase(value)
    except keytool.PassphraseError as exc:
        raise click.UsageError(str(exc)) from None


def read_note(stream: IO[bytes]) -> str:
    """Note text from a file or stdin, with a hint when a person is to type it."""
    if stream.isatty():
        click.echo("Type the note; end it with Ctrl-D on a line of its own.", err=True)
    source = getattr(stream, "name", "<stdin>")
    return keytool.read_note_text(stream.read(keytool.MAX_NOTE_BYTES + 1), str(source))


# -- showing --------------------------------------------------------------------------


def write_text(text: str, out: Path | None) -> None:
    """Note text into the new file ``out``, else to stdout (escaped if it is a terminal)."""
    if out is not None:
        keytool.write_new(out, text.encode("utf-8"))
        click.echo(f"The note text is in {out}.", err=True)
        return
    if sys.stdout.isatty():
        text = printable(text, keep_lines=True)
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def echo_key_file(path: Path, found: keytool.KeyFileReport) -> None:
    """Say whether ``path`` is a public card or a private identity file, and whose."""
    if found.kdf is None:
        echo_card(f"{path}: PUBLIC agency card (safe to share)", found.card)
        click.echo("Compare the fingerprint with its owner by phone before trusting it.")
        return
    echo_card(f"{path}: PRIVATE identity file (keep it secret)", found.card)
    kdf = found.kdf
    click.echo(
        f"  locked with: passphrase, Argon2id {kdf.memory_kib // 1024} MiB, "
        f"{kdf.iterations} passes, {kdf.lanes} lanes"
    )
    click.echo("These details are read without the passphrase; unlocking checks them.")


def echo_card(title: str, card: keys.AgencyCard) -> None:
    """Print ``title``, then whose card it is and its fingerprint."""
    click.echo(title)
    click.echo(f"  agency:      {card.agency}")
    click.echo(f"  suite:       {card.suite.value}")
    click.echo(f"  created:     {utc_iso(card.created)}")
    click.echo(f"  fingerprint: {card.key_id.fingerprint()}")


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
