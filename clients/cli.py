"""The ``siko`` command: one command group per kind of user.

``siko keys ...`` (identities, cards, notes sealed as files) is built in; the hub's
``siko hub ...`` and later groups are registered by their own packages through the
entry-point group ``siko.commands`` (see :class:`SikoGroup`), so ``clients`` never
imports ``hub``. The work behind ``siko keys`` is in :mod:`clients.keytool`.

Every :class:`keys.KeysError` and :class:`clients.keytool.ToolError` becomes one line on
stderr, ``siko: error: ...``, and an exit status listed in :data:`EXIT_STATUS`; never
a traceback, never a secret (see :func:`report`).
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import textwrap
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import IO, Any, Final

import click

import keys
from clients import keytool

__all__ = ["ENTRY_POINT_GROUP", "EXIT_STATUS", "SikoGroup", "main", "report", "root"]

ENTRY_POINT_GROUP: Final = "siko.commands"
EXIT_OTHER: Final = 1
EXIT_USAGE: Final = 2  # click's own status for a usage error
EXIT_KEY_FILE: Final = 3
EXIT_REFUSED: Final = 4
EXIT_STATUS: Final = f"""\b
Exit status:
  0  success
  {EXIT_OTHER}  other error (a file cannot be written, input that is not a note, ...)
  {EXIT_USAGE}  usage error: unknown option, missing or invalid value
  {EXIT_KEY_FILE}  key or card file problem: wrong passphrase, damaged file, file exists
  {EXIT_REFUSED}  refused: signature invalid, envelope altered, not addressed to you
"""
_KEY_FILE_PROBLEMS: Final = (keys.KeyFileError, keytool.PassphraseError)
_REFUSALS: Final = (
    keys.InvalidSignature,
    keys.DecryptionFailed,
    keys.NotARecipient,
    keys.WrongKey,
    keys.InvalidProof,
    keytool.EnvelopeRefused,
)


def report(exc: Exception) -> int:
    """Print ``exc`` as one line, ``siko: error: ...``, and return its exit status.

    The messages of :mod:`keys` and :mod:`clients.keytool` name files and public facts
    only, never a passphrase, key or note text; an ``OSError`` names its file.
    """
    code = EXIT_OTHER
    if isinstance(exc, _KEY_FILE_PROBLEMS):
        code = EXIT_KEY_FILE
    elif isinstance(exc, _REFUSALS):
        code = EXIT_REFUSED
    message = str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror}"
    click.echo(f"siko: error: {' '.join(message.split())}", err=True)
    return code


class SikoGroup(click.Group):
    """The root group: built-in command groups plus those other packages register.

    ``clients`` must never import ``hub`` (docs: dependency direction), yet a person
    types ``siko hub serve``. So any installed package can add a command group by
    declaring an entry point in the group ``siko.commands``, e.g. in pyproject.toml::

        [project.entry-points."siko.commands"]
        hub = "hub.cli:hub"

    The entry point's name is the word typed after ``siko``; its object is a click
    command or group. It is imported only when that command runs or ``siko --help``
    lists it, so ``siko keys ...`` never loads the hub. Built-in names win over
    registered ones, and a registered group that fails to import shows up as
    unavailable, with the reason, instead of breaking the other commands.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_registered()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (point := _registered().get(cmd_name)) is not None:
            command = _load(point)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # click handles a closed pipe (``siko ... | head``) itself
        except (keys.KeysError, keytool.ToolError, OSError) as exc:
            ctx.exit(report(exc))


def _registered() -> dict[str, EntryPoint]:
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def _load(point: EntryPoint) -> click.Command:
    try:
        command = point.load()
    except Exception as exc:  # a broken plug-in must not take `siko keys` down with it
        return _unavailable(point.name, f"{type(exc).__name__}: {exc}")
    if not isinstance(command, click.Command):
        return _unavailable(point.name, f"{point.value} is not a click command")
    return command


def _unavailable(name: str, reason: str) -> click.Command:
    def fail() -> None:
        raise keytool.ToolError(f"'siko {name}' cannot be loaded ({reason}); reinstall it")

    return click.Command(
        name,
        callback=fail,
        help=f"Unavailable: {reason}",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


@click.group(
    cls=SikoGroup,
    epilog=EXIT_STATUS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="siko-hub", prog_name="siko")
def root() -> None:
    """siko: end-to-end encrypted case notes for police, prosecutors and city offices.

    Each agency keeps its own private identity file. Notes are sealed so that only the
    agencies they are addressed to can read them, and anyone can check who sent them
    and that nothing was changed.

    \b
    Command groups, by kind of user:
      keys   key officers, or anyone working offline: create an agency identity,
             hand out its public card, seal, open and verify notes as files
    More groups (hub, post, watch, audit) are listed below as they become available.

    \b
    New here? The guided tour needs no setup:
      siko keys demo

    Run 'siko COMMAND --help' for the details of each command.
    """


# -- siko keys ------------------------------------------------------------------------


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


def _choice(values: Any) -> click.Choice[str]:
    return click.Choice([member.value for member in values])


def _utf8(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
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


@root.group("keys", short_help="Identities, cards, and notes sealed as files (offline).")
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
    type=_choice(keys.Suite),
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
    passphrase = _new_passphrase(out, passphrase_env)
    identity = keys.Identity.generate(agency, suite=keys.Suite(suite))
    keys.save_identity(out, identity, passphrase)
    _echo_card(f"{out}: new private identity file", identity.card)
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
    found = keytool.inspect_key_file(file)
    if found.kdf is None:
        _echo_card(f"{file}: PUBLIC agency card (safe to share)", found.card)
        click.echo("Compare the fingerprint with its owner by phone before trusting it.")
        return
    _echo_card(f"{file}: PRIVATE identity file (keep it secret)", found.card)
    kdf = found.kdf
    click.echo(
        f"  locked with: passphrase, Argon2id {kdf.memory_kib // 1024} MiB, "
        f"{kdf.iterations} passes, {kdf.lanes} lanes"
    )
    click.echo("These details are read without the passphrase; unlocking checks them.")


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
    _echo_card(f"{out}: public card written", card)


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
@click.option("--classification", required=True, type=_choice(keys.Classification))
@click.option(
    "--handling",
    required=True,
    type=_choice(keys.HandlingCode),
    help="Conditions of use: H0 none, H1 no court use, H2 no passing on, "
    "H3 other (say which in the note); the last three without your consent.",
)
@click.option("--tlp", type=_choice(keys.Tlp), default="AMBER", show_default=True)
@click.option("--subject", callback=_utf8, help="Short subject, sealed with the note.")
@click.option("--case-ref", callback=_utf8, help="Case reference, sealed with the note.")
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
    note = keys.Note(_read_note(text_in), subject, case_ref)
    markings = keys.Markings(
        keys.Classification.parse(classification),
        keys.HandlingCode.parse(handling),
        keys.Tlp.parse(tlp),
    )
    sender = keys.load_identity(key, _passphrase(key, passphrase_env))
    data = keys.seal(note, sender=sender, channel=channel, recipients=recipients, markings=markings)
    keytool.write_new(out, data)
    names = ", ".join(sorted(card.agency for card in recipients))
    click.echo(f"{out}: sealed for {names} ({classification}, {handling}), {len(data)} bytes")


@keys_group.command("open")
@click.option("--key", required=True, type=EXISTING, help="Your identity file (a reader).")
@click.option("--from", "sender", required=True, type=EXISTING, help="The sender's card.")
@click.option("--in", "envelope", required=True, type=EXISTING, help="The envelope file.")
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
    me = keys.load_identity(key, _passphrase(key, passphrase_env))
    opened = keys.open_envelope(checked, me, card)
    for line in keytool.header_lines(opened.header, opened.note):
        click.echo(line, err=True)
    _write_text(opened.note.text, out)


@keys_group.command("verify")
@click.option("--from", "sender", required=True, type=EXISTING, help="The sender's card.")
@click.option("--in", "envelope", required=True, type=EXISTING, help="The envelope file.")
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
    for line in keytool.header_lines(checked.header):
        click.echo(line)
    click.echo(f"digest:     {checked.digest().hex()}")


@keys_group.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's files in this new or empty folder [default: a temporary one].",
)
def demo(folder: Path | None) -> None:
    """Guided walk-through: three agencies exchange a sealed note.

    Creates identities for a police headquarters, a prosecutor's office and a city
    office, exchanges their cards, seals a note from the police to the other two,
    opens it as each, and shows that an agency not addressed cannot open it and
    that a one-byte change is refused. Needs no setup and no network.

    \b
    Example:
      siko keys demo --dir siko-demo
    """
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="siko-demo-") as tmp:
            keytool.run_demo(Path(tmp), _stepper())
        click.echo("The temporary folder is removed again; use --dir DIR to keep the files.")
        return
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise keytool.ToolError(f"{folder}: not empty; choose a new or empty folder")
    keytool.run_demo(folder, _stepper())


# -- helpers of siko keys -------------------------------------------------------------


def _passphrase(path: Path, env: str | None) -> str:
    if env is not None:
        return keytool.passphrase_from_env(env)
    typed = click.prompt(f"Passphrase for {path}", hide_input=True, err=True)
    return keytool.check_passphrase(str(typed))


def _new_passphrase(path: Path, env: str | None) -> str:
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


def _read_note(stream: IO[bytes]) -> str:
    if stream.isatty():
        click.echo("Type the note; end it with Ctrl-D on a line of its own.", err=True)
    source = getattr(stream, "name", "<stdin>")
    return keytool.read_note_text(stream.read(keytool.MAX_NOTE_BYTES + 1), str(source))


def _write_text(text: str, out: Path | None) -> None:
    if out is not None:
        keytool.write_new(out, text.encode("utf-8"))
        click.echo(f"The note text is in {out}.", err=True)
        return
    if sys.stdout.isatty():
        text = keytool.printable(text, keep_lines=True)
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def _echo_card(title: str, card: keys.AgencyCard) -> None:
    click.echo(title)
    click.echo(f"  agency:      {card.agency}")
    click.echo(f"  suite:       {card.suite.value}")
    click.echo(f"  created:     {keytool.utc_iso(card.created)}")
    click.echo(f"  fingerprint: {card.key_id.fingerprint()}")


def _stepper() -> Callable[[str], None]:
    """Print each step of the demo numbered and wrapped for a terminal."""
    steps = itertools.count(1)

    def say(text: str) -> None:
        number = f"{next(steps):>2}. "
        click.echo(
            textwrap.fill(
                text,
                88,
                initial_indent=number,
                subsequent_indent="    ",
                break_on_hyphens=False,
                break_long_words=False,
            )
        )

    return say


def main() -> None:
    """Entry point of the ``siko`` console script."""
    root(prog_name="siko")


if __name__ == "__main__":
    main()
