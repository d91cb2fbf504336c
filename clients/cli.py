"""The ``siko`` command: one command group per kind of user.

``siko keys ...`` (identities, cards, notes sealed as files) is built in, from
:mod:`clients.cli_keys`; so are the agencies' ``siko post/watch/inbox/channels/
read-receipts`` from :mod:`clients.cli_agency`. The hub's ``siko hub ...`` and later
groups are registered by their own packages through the entry-point group
``siko.commands`` (see :class:`SikoGroup`), so ``clients`` never imports ``hub``; the
administrators' ``siko hub admin ...`` (:mod:`clients.cli_admin`, plain HTTP clients)
is attached to that group when it loads, or to a stand-in ``hub`` group when the hub is
not installed.

Every :class:`keys.KeysError`, :class:`clients.keytool.ToolError` and
:class:`clients.errors.ClientError` becomes one line on stderr, ``siko: error: ...``,
and an exit status listed in :data:`EXIT_STATUS`; never a traceback, never a secret
(see :func:`report`).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

import click

import keys
from clients import keytool
from clients.cli_admin import admin
from clients.cli_agency import AGENCY_COMMANDS
from clients.cli_audit import audit_group
from clients.cli_keys import keys_group
from clients.cli_ui import ui
from clients.demo_hub import demo
from clients.errors import ClientError, HubProblem, HubUnreachable, InternalError, ProtocolError
from clients.errors import Unavailable as HubUnavailable
from clients.sdk import CardRefused, NoteRefused

__all__ = ["ENTRY_POINT_GROUP", "EXIT_STATUS", "SikoGroup", "main", "report", "root"]

ENTRY_POINT_GROUP: Final = "siko.commands"
EXIT_OTHER: Final = 1
EXIT_USAGE: Final = 2  # click's own status for a usage error
EXIT_KEY_FILE: Final = 3
EXIT_REFUSED: Final = 4
EXIT_HUB_DOWN: Final = 5
EXIT_STATUS: Final = f"""\b
Exit status:
  0  success
  {EXIT_OTHER}  other error (a file cannot be written, input that is not a note, ...)
  {EXIT_USAGE}  usage error: unknown option, missing or invalid value
  {EXIT_KEY_FILE}  key or card file problem: wrong passphrase, damaged file, file exists
  {EXIT_REFUSED}  refused: signature invalid, envelope altered, not addressed to you,
     or the hub refused the request (not allowed, not a member, ...)
  {EXIT_HUB_DOWN}  the hub cannot be reached, is unavailable or failed: retry later
"""
_KEY_FILE_PROBLEMS: Final = (keys.KeyFileError, keytool.PassphraseError)
_REFUSALS: Final = (
    keys.InvalidSignature,
    keys.DecryptionFailed,
    keys.NotARecipient,
    keys.WrongKey,
    keys.InvalidProof,
    keytool.EnvelopeRefused,
    HubProblem,
    NoteRefused,
    CardRefused,
)
_HUB_DOWN: Final = (HubUnreachable, HubUnavailable, InternalError, ProtocolError)


def report(exc: Exception) -> int:
    """Print ``exc`` as one line, ``siko: error: ...``, and return its exit status.

    The messages of :mod:`keys`, :mod:`clients.keytool` and :mod:`clients.errors` name
    files and public facts only, never a passphrase, key or note text (a hub's detail
    is cleaned of control characters there); an ``OSError`` names its file.
    """
    code = EXIT_OTHER
    if isinstance(exc, _KEY_FILE_PROBLEMS):
        code = EXIT_KEY_FILE
    elif isinstance(exc, _HUB_DOWN):
        code = EXIT_HUB_DOWN
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
        return sorted({*super().list_commands(ctx), *_registered(), "hub"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (point := _registered().get(cmd_name)) is not None:
            command = _load(point)
        if cmd_name == "hub":
            command = _with_admin(command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # click handles a closed pipe (``siko ... | head``) itself
        except (keys.KeysError, keytool.ToolError, ClientError, OSError) as exc:
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


def _with_admin(command: click.Command | None) -> click.Command:
    """The ``hub`` group with ``admin`` in it; a stand-in group when hub is not usable."""
    if isinstance(command, click.Group):
        if "admin" not in command.commands:
            command.add_command(admin)
        return command
    reason = "the hub package is not installed" if command is None else command.help
    stand_in = click.Group(
        "hub",
        help=f"Administer a hub over its API. ('siko hub serve' is unavailable: {reason}.)",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    stand_in.add_command(admin)
    return stand_in


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
    Commands, by kind of user:
      keys      key officers, or anyone working offline: create an agency identity,
                hand out its public card, seal, open and verify notes as files
      post      agencies: seal a note for a channel's readers and post it
      watch     liaison officers: live notes, decrypted and checked; inbox counts
                the unread ones, read-receipts shows who read a note
      hub       operators run the hub (serve); administrators manage it (admin)
      audit     auditors: verify the audit log, export it, report, collect evidence
      ui        liaison officers: the local web page of one agency

    \b
    New here? The guided tours need no setup:
      siko demo        a hub, three agencies, notes, receipts and an audit (10 s)
      siko keys demo   the key tooling alone, offline

    Run 'siko COMMAND --help' for the details of each command.
    """


root.add_command(keys_group)
for _command in AGENCY_COMMANDS:
    root.add_command(_command)
root.add_command(audit_group)
root.add_command(ui)
root.add_command(demo)


def main() -> None:
    """Entry point of the ``siko`` console script."""
    root(prog_name="siko")


if __name__ == "__main__":
    main()
