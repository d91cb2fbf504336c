"""``siko keys``: agency identities, public cards, and notes sealed as files (offline).

Each command parses its line, then reads and writes files through
:mod:`clients.keytool`, asks and prints through :mod:`clients.terminal`; the guided
tour is :mod:`clients.demo`. Errors propagate to :func:`clients.cli.report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Final

import click

import keys
from clients import keytool, terminal
from clients.demo import demo
from clients.terminal import AGENCY, CHANNEL, EXISTING, NEW, PASSPHRASE_ENV, choice, utf8_text

__all__ = ["keys_group"]

SENDER_CARD: Final = click.option(
    "--from", "sender", required=True, type=EXISTING, help="The sender's card."
)
ENVELOPE: Final = click.option(
    "--in", "envelope", required=True, type=EXISTING, help="The envelope file."
)


@click.group("keys", short_help="Identities, cards, and notes sealed as files (offline).")
def keys_group() -> None:
    """Agency identities, public cards, and notes sealed as files (works offline).

    An agency's IDENTITY FILE is private: its signing and decryption keys, locked with
    a passphrase. Its CARD is public: give it to partner agencies so they can seal
    notes to you and check your signature. Before trusting a partner's card, compare
    its fingerprint (key id) with them by phone.

    \b
    A typical day:
      siko keys new --agency pp-duisburg --out pp-duisburg.identity
      siko keys export-card pp-duisburg.identity --out pp-duisburg.card
      siko keys seal --key pp-duisburg.identity --channel clan-lagebild-ruhr \\
          --to sta-essen.card --classification VS-NfD --handling H1 \\
          --in report.txt --out report.sealed
      siko keys open --key sta-essen.identity --from pp-duisburg.card --in report.sealed

    Try 'siko keys demo' for a guided walk-through.
    """


@keys_group.command("new")
@click.option("--agency", required=True, type=AGENCY, help="Your agency id, e.g. pp-duisburg.")
@click.option(
    "--suite",
    type=choice(keys.Suite),
    default=keys.Suite.MLKEM768_X25519.value,
    show_default=True,
    help="Encryption: post-quantum hybrid (default) or classic x25519.",
)
@click.option("--out", required=True, type=NEW, help="The identity file to create.")
@PASSPHRASE_ENV
def new(agency: str, suite: str, out: Path, passphrase_env: str | None) -> None:
    """Create a new agency identity (a passphrase-locked file).

    Asks for a new passphrase twice (not shown while typing). Never overwrites an
    existing file. Keep the file secret and keep a backup: lost keys cannot be
    recovered, and notes sealed to them can then no longer be read.

    \b
    Example:
      siko keys new --agency pp-duisburg --out pp-duisburg.identity
    """
    keytool.ensure_key_file_absent(out)
    passphrase = terminal.new_passphrase(out, passphrase_env)
    identity = keys.Identity.generate(agency, suite=keys.Suite(suite))
    keys.save_identity(out, identity, passphrase)
    terminal.echo_card(f"{out}: new private identity file", identity.card)
    click.echo(f"Next: siko keys export-card {out} --out {agency}.card")


@keys_group.command("show")
@click.argument("file", type=EXISTING)
def show(file: Path) -> None:
    """Show whose identity or card FILE it is; no passphrase needed.

    Says whether FILE is a private identity file or a public card, and prints the
    agency, encryption suite, creation time (UTC) and fingerprint.

    \b
    Example:
      siko keys show sta-essen.card
    """
    terminal.echo_key_file(file, keytool.inspect_key_file(file))


@keys_group.command("export-card")
@click.argument("file", type=EXISTING)
@click.option("--out", required=True, type=NEW, help="The card file to create.")
def export_card(file: Path, out: Path) -> None:
    """Write the public card of identity FILE, for partner agencies.

    No passphrase needed: the card holds only public keys, signed by their owner.

    \b
    Example:
      siko keys export-card pp-duisburg.identity --out pp-duisburg.card
    """
    keytool.ensure_key_file_absent(out)
    card = keys.load_card(file)
    keys.save_card(out, card)
    terminal.echo_card(f"{out}: public card written", card)


@keys_group.command("seal")
@click.option("--key", required=True, type=EXISTING, help="Your identity file (the sender).")
@click.option(
    "--channel",
    required=True,
    type=CHANNEL,
    metavar="CHANNEL",
    help="Channel id, e.g. clan-lagebild-ruhr.",
)
@click.option(
    "--to",
    "cards",
    required=True,
    multiple=True,
    type=EXISTING,
    help="Card of a reading agency; repeat for each. Add your own to read it later.",
)
@click.option("--classification", required=True, type=choice(keys.Classification))
@click.option(
    "--handling",
    required=True,
    type=choice(keys.HandlingCode),
    help="Conditions of use: H0 none, H1 no court use, H2 no passing on, "
    "H3 other (say which in the note); the last three without your consent.",
)
@click.option("--tlp", type=choice(keys.Tlp), default="AMBER", show_default=True)
@click.option("--subject", callback=utf8_text, help="Short subject, sealed with the note.")
@click.option("--case-ref", callback=utf8_text, help="Case reference, sealed with the note.")
@click.option(
    "--in",
    "text_in",
    type=click.File("rb"),
    default="-",
    metavar="FILE",
    help="Note text file [default: stdin].",
)
@click.option("--out", required=True, type=NEW, help="The envelope file to create.")
@PASSPHRASE_ENV
def seal(
    key: Path,
    channel: str,
    cards: tuple[Path, ...],
    classification: str,
    handling: str,
    tlp: str,
    subject: str | None,
    case_ref: str | None,
    text_in: IO[bytes],
    out: Path,
    passphrase_env: str | None,
) -> None:
    """Seal and sign a note for the agencies whose cards are given.

    Only those agencies can open the envelope; anyone with your card can check that
    you sealed it and that nothing was changed. The classification, handling code,
    channel and recipients stay readable (the hub routes by them); the text, subject
    and case reference do not.

    \b
    Example:
      siko keys seal --key pp-duisburg.identity --channel clan-lagebild-ruhr \\
          --to sta-essen.card --to stadt-essen-ordnungsamt.card \\
          --classification VS-NfD --handling H1 --subject "Patrol report" \\
          --in report.txt --out report.sealed
    """
    keytool.ensure_absent(out)
    recipients = [keys.load_card(path) for path in cards]
    note = keys.Note(terminal.read_note(text_in), subject, case_ref)
    markings = keys.Markings(
        keys.Classification.parse(classification),
        keys.HandlingCode.parse(handling),
        keys.Tlp.parse(tlp),
    )
    sender = keys.load_identity(key, terminal.passphrase(key, passphrase_env))
    data = keys.seal(note, sender=sender, channel=channel, recipients=recipients, markings=markings)
    keytool.write_new(out, data)
    names = ", ".join(sorted(card.agency for card in recipients))
    click.echo(f"{out}: sealed for {names} ({classification}, {handling}), {len(data)} bytes")


@keys_group.command("open")
@click.option("--key", required=True, type=EXISTING, help="Your identity file (a reader).")
@SENDER_CARD
@ENVELOPE
@click.option("--out", type=NEW, help="File for the note text [default: stdout].")
@PASSPHRASE_ENV
def open_(
    key: Path, sender: Path, envelope: Path, out: Path | None, passphrase_env: str | None
) -> None:
    """Check and decrypt a note addressed to your agency.

    The signature is checked first: an altered envelope, one not sealed by the
    holder of the sender's card, or one not addressed to you is refused before you
    are asked for a passphrase. The markings (classification, handling code) go to
    stderr, the text to stdout or to --out.

    \b
    Example:
      siko keys open --key sta-essen.identity --from pp-duisburg.card \\
          --in report.sealed --out report.txt
    """
    if out is not None:
        keytool.ensure_absent(out)
    card = keys.load_card(sender)
    checked = keytool.verify_file(envelope, card)
    keytool.check_addressed(checked, key)
    me = keys.load_identity(key, terminal.passphrase(key, passphrase_env))
    opened = keys.open_envelope(checked, me, card)
    for line in terminal.header_lines(opened.header, opened.note):
        click.echo(line, err=True)
    terminal.write_text(opened.note.text, out)


@keys_group.command("verify")
@SENDER_CARD
@ENVELOPE
def verify(sender: Path, envelope: Path) -> None:
    """Check who sealed a note, and that it is unchanged.

    Needs no private key: for auditors, the hub, or anyone holding the sender's
    card. Prints the readable header; the text stays sealed.

    \b
    Example:
      siko keys verify --from pp-duisburg.card --in report.sealed
    """
    checked = keytool.verify_file(envelope, keys.load_card(sender))
    click.echo(f"{envelope}: signature valid; unchanged since it was sealed")
    for line in terminal.header_lines(checked.header):
        click.echo(line)
    click.echo(f"digest:     {checked.digest().hex()}")


keys_group.add_command(demo)
