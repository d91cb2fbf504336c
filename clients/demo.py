"""``siko keys demo``: three agencies exchange a sealed note, narrated step by step.

The demo drives the same :mod:`keys` recipe and :mod:`clients.keytool` file work as the
real commands, in a folder of its own, and shows what is refused as well as what works.
"""

from __future__ import annotations

import itertools
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Final

import click

import keys
from clients.keytool import EnvelopeRefused, ToolError, verify_file, write_new
from clients.terminal import printable

__all__ = ["demo", "run_demo"]

Say = Callable[[str], None]

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


@click.command("demo")
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
    if folder is not None:
        run_demo(_empty(folder), _stepper())
        return
    with tempfile.TemporaryDirectory(prefix="siko-demo-") as tmp:
        run_demo(Path(tmp), _stepper())
    click.echo("The temporary folder is removed again; use --dir DIR to keep the files.")


def _empty(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ToolError(f"{folder}: not empty; choose a new or empty folder")
    return folder


def _stepper() -> Say:
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


def run_demo(folder: Path, say: Say) -> None:
    """Walk through identities, cards, sealing and opening in ``folder``, via ``say``."""
    say(
        f"Working in {folder}. The demo's identity files are locked with the published "
        f"passphrase {DEMO_PASSPHRASE!r} and, to run fast, with a cheap key derivation "
        "that 'siko keys new' never uses."
    )
    cards = {
        agency: _identity(folder, agency, role, say)
        for agency, role in (DEMO_SENDER, *DEMO_READERS)
    }
    sender = cards[DEMO_SENDER[0]]
    sealed = _seal(folder, cards, say)
    for agency, _role in DEMO_READERS:
        note = _open(sealed, _unlock(folder, agency), sender)
        say(f"{agency} opens it: signature valid, and it reads: {printable(note.text)!r}")
    _outsider(sealed, sender, say)
    _tamper(folder, sealed, sender, say)
    say("Done. Everything above runs offline; the hub will only ever see sealed envelopes.")


def _identity(folder: Path, agency: str, role: str, say: Say) -> keys.AgencyCard:
    identity = keys.Identity.generate(agency)
    keys.save_identity(folder / f"{agency}.identity", identity, DEMO_PASSPHRASE, kdf=DEMO_KDF)
    keys.save_card(folder / f"{agency}.card", identity.card)
    say(
        f"{agency} ({role}) creates its private identity file {agency}.identity and hands "
        f"its public card {agency}.card to the partners; key id {identity.key_id.fingerprint()}"
    )
    return keys.load_card(folder / f"{agency}.card")


def _unlock(folder: Path, agency: str) -> keys.Identity:
    return keys.load_identity(folder / f"{agency}.identity", DEMO_PASSPHRASE)


def _open(sealed: Path, reader: keys.Identity, sender: keys.AgencyCard) -> keys.Note:
    return keys.open_envelope(verify_file(sealed, sender), reader, sender).note


def _seal(folder: Path, cards: dict[str, keys.AgencyCard], say: Say) -> Path:
    readers = [cards[agency] for agency, _role in DEMO_READERS]
    data = keys.seal(
        DEMO_NOTE,
        sender=_unlock(folder, DEMO_SENDER[0]),
        channel=DEMO_CHANNEL,
        recipients=readers,
        markings=keys.Markings(keys.Classification.VS_NFD, keys.HandlingCode.H1),
    )
    sealed = folder / "note.sealed"
    write_new(sealed, data)
    say(
        f"{DEMO_SENDER[0]} seals a VS-NfD note (handling H1) in channel {DEMO_CHANNEL} for "
        f"{' and '.join(c.agency for c in readers)} and signs it: note.sealed, {len(data)} bytes"
    )
    return sealed


def _outsider(sealed: Path, sender: keys.AgencyCard, say: Say) -> None:
    outsider = keys.Identity.generate("stadt-gelsenkirchen-jugendamt")
    refusal = _refused(
        lambda: _open(sealed, outsider, sender),
        keys.NotARecipient,
        "an agency that was not addressed opened the note",
    )
    say(f"{outsider.agency}, not addressed, tries to open it and is refused: {refusal}")


def _tamper(folder: Path, sealed: Path, sender: keys.AgencyCard, say: Say) -> None:
    data = sealed.read_bytes()
    where = len(data) // 2
    altered = folder / "note-altered.sealed"
    write_new(altered, data[:where] + bytes([data[where] ^ 1]) + data[where + 1 :])
    refusal = _refused(
        lambda: verify_file(altered, sender), EnvelopeRefused, "an altered envelope was accepted"
    )
    say(f"One byte of a copy is changed (note-altered.sealed); it is refused: {refusal}")


def _refused(attempt: Callable[[], object], refusal: type[Exception], failure: str) -> Exception:
    """The ``refusal`` that ``attempt`` must meet; a build that lets it through is broken."""
    try:
        attempt()
    except refusal as exc:
        return exc
    raise ToolError(f"demo: {failure}; do not use this build")
