"""The ``siko`` command: one command group per kind of user.

``siko keys ...`` (identities, cards, notes sealed as files) is built in, from
:mod:`clients.cli_keys`; the hub's ``siko hub ...`` and later groups are registered by
their own packages through the entry-point group ``siko.commands`` (see
:class:`SikoGroup`), so ``clients`` never imports ``hub``.

Every :class:`keys.KeysError` and :class:`clients.keytool.ToolError` becomes one line on
stderr, ``siko: error: ...``, and an exit status listed in :data:`EXIT_STATUS`; never
a traceback, never a secret (see :func:`report`).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

import click

import keys
from clients import keytool
from clients.cli_keys import keys_group

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


root.add_command(keys_group)


def main() -> None:
    """Entry point of the ``siko`` console script."""
    root(prog_name="siko")


if __name__ == "__main__":
    main()
