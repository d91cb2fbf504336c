"""``siko hub admin ...``: the hub administrators' acts, over the hub's signed HTTP API.

Registering agencies, suspending and reactivating them, creating channels and setting
their members. The group is attached to the ``siko hub`` group at start-up by
:mod:`clients.cli` (``clients`` never imports ``hub``; the commands talk to the hub
over HTTP with the administrator's own identity file, like every other client).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import click

import keys
from clients.cli_agency import connect, connection, run
from clients.sdk import HubClient, Roster
from clients.terminal import AGENCY, CHANNEL, EXISTING, choice

__all__ = ["admin"]

ROLES: Final = ("post", "read")
KINDS: Final = ("agency", "admin", "auditor")


def _roles(text: str) -> frozenset[str]:
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = sorted(roles - set(ROLES))
    if not roles or unknown:
        raise click.BadParameter(f"roles are a comma-separated list of {' and '.join(ROLES)}")
    return roles


def _members(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, frozenset[str]]:
    """``--member agency=post,read`` (repeatable) as a mapping; checked while parsing."""
    members: dict[str, frozenset[str]] = {}
    for value in values:
        agency, equals, roles = value.partition("=")
        if not equals:
            raise click.BadParameter(f"{value!r}: expected AGENCY=ROLES, e.g. sta-essen=read")
        try:
            agency = str(keys.AgencyId(agency))
        except keys.MalformedInput as exc:
            raise click.BadParameter(f"{value!r}: {exc.what}") from None
        if agency in members:
            raise click.BadParameter(f"{agency} is named twice")
        members[agency] = _roles(roles)
    return members


def _echo_roster(roster: Roster) -> None:
    click.echo(
        f"{roster.channel}: ceiling {roster.ceiling}, kept {roster.retention_days} days, "
        f"roster version {roster.version}"
    )
    for agency, member in roster.members.items():
        click.echo(f"  {agency:<24} {','.join(sorted(member.roles)):<10} {member.status}")


def _echo_entry(entry: dict[str, Any]) -> None:
    click.echo(f"{entry['agency']}: {entry['kind']}, {entry['status']}, key {entry['fingerprint']}")


@click.group("admin", short_help="Administrators: agencies, channels, members.")
def admin() -> None:
    """Administer a running hub: register agencies, suspend them, manage channels.

    Every command is signed with an administrator's identity file; the hub records
    each act in its audit log under that administrator's name.

    \b
    A typical start:
      siko hub admin register sta-essen.card --key admin-lka.identity \\
          --hub https://hub.example
      siko hub admin channel-create lage-ruhr --ceiling VS-NfD --retention-days 90 \\
          --member pp-duisburg=post,read --member sta-essen=read --key admin-lka.identity
    """


@admin.command("register")
@connection
@click.argument("card", type=EXISTING)
@click.option("--kind", type=click.Choice(KINDS), default="agency", show_default=True)
def register(key: Path, hub_url: str, passphrase_env: str | None, card: Path, kind: str) -> None:
    """Register an agency, administrator or auditor at the hub from its public CARD.

    Compare the card's fingerprint with its owner by phone first (``siko keys show``).

    \b
    Example:
      siko hub admin register sta-essen.card --key admin-lka.identity \\
          --hub https://hub.example
    """
    agency_card = keys.load_card(card)
    client = connect(key, hub_url, passphrase_env)
    _echo_entry(run(_register(client, agency_card, kind)))


async def _register(client: HubClient, card: keys.AgencyCard, kind: str) -> dict[str, Any]:
    async with client:
        return await client.register_agency(card, kind=kind)


def _status_command(name: str, status: str, summary: str, example: str) -> click.Command:
    @connection
    @click.argument("agency", type=AGENCY)
    def command(key: Path, hub_url: str, passphrase_env: str | None, agency: str) -> None:
        client = connect(key, hub_url, passphrase_env)
        _echo_entry(run(_set_status(client, agency, status)))

    command.__doc__ = f"{summary}\n\n\b\nExample:\n  {example}\n"
    return admin.command(name)(command)


async def _set_status(client: HubClient, agency: str, status: str) -> dict[str, Any]:
    async with client:
        return await client.set_status(agency, status)


suspend = _status_command(
    "suspend",
    "suspended",
    "Suspend AGENCY: the hub refuses its requests until it is activated again.",
    "siko hub admin suspend stadt-essen --key admin-lka.identity --hub https://hub.example",
)
activate = _status_command(
    "activate",
    "active",
    "Activate a suspended AGENCY again, so the hub serves its requests.",
    "siko hub admin activate stadt-essen --key admin-lka.identity --hub https://hub.example",
)


@admin.command("channel-create")
@connection
@click.argument("name", type=CHANNEL)
@click.option(
    "--ceiling",
    required=True,
    type=choice(keys.Classification),
    help="The highest classification the channel carries.",
)
@click.option(
    "--retention-days",
    required=True,
    type=click.IntRange(min=1),
    help="Notes are deleted this many days after they were posted.",
)
@click.option(
    "--member",
    "members",
    multiple=True,
    callback=_members,
    metavar="AGENCY=ROLES",
    help="A member and its roles, e.g. sta-essen=read or pp-duisburg=post,read; repeat.",
)
def channel_create(
    key: Path,
    hub_url: str,
    passphrase_env: str | None,
    name: str,
    ceiling: str,
    retention_days: int,
    members: dict[str, frozenset[str]],
) -> None:
    """Create channel NAME with its members, classification ceiling and retention.

    \b
    Example:
      siko hub admin channel-create lage-ruhr --ceiling VS-NfD --retention-days 90 \\
          --member pp-duisburg=post,read --member sta-essen=read \\
          --key admin-lka.identity --hub https://hub.example
    """
    client = connect(key, hub_url, passphrase_env)
    _echo_roster(run(_create(client, name, ceiling, retention_days, members)))


async def _create(
    client: HubClient, name: str, ceiling: str, days: int, members: dict[str, frozenset[str]]
) -> Roster:
    async with client:
        return await client.create_channel(
            name, ceiling=ceiling, retention_days=days, members=members
        )


@admin.command("member")
@connection
@click.argument("channel", type=CHANNEL)
@click.argument("agency", type=AGENCY)
@click.option("--roles", metavar="ROLES", help="Comma-separated: post, read, or post,read.")
@click.option("--remove", is_flag=True, help="Remove AGENCY from the channel.")
def member(
    key: Path,
    hub_url: str,
    passphrase_env: str | None,
    channel: str,
    agency: str,
    roles: str | None,
    remove: bool,
) -> None:
    """Set the roles of AGENCY in CHANNEL, or remove it from the channel.

    Notes posted from then on are sealed for the new set of readers; notes posted
    before stay readable only by those they were sealed for.

    \b
    Example:
      siko hub admin member lage-ruhr stadt-essen --roles post,read \\
          --key admin-lka.identity --hub https://hub.example
      siko hub admin member lage-ruhr stadt-essen --remove --key admin-lka.identity
    """
    if remove == (roles is not None):
        raise click.UsageError("give either --roles ROLES or --remove")
    wanted = frozenset() if remove or roles is None else _roles(roles)
    client = connect(key, hub_url, passphrase_env)
    _echo_roster(run(_member(client, channel, agency, wanted)))


async def _member(client: HubClient, channel: str, agency: str, roles: frozenset[str]) -> Roster:
    async with client:
        return await client.set_member(channel, agency, roles)


@admin.command("agencies")
@connection
def agencies(key: Path, hub_url: str, passphrase_env: str | None) -> None:
    """List every agency, administrator and auditor the hub knows, with its status.

    \b
    Example:
      siko hub admin agencies --key admin-lka.identity --hub https://hub.example
    """
    client = connect(key, hub_url, passphrase_env)
    for entry in run(_agencies(client)):
        _echo_entry(entry)


async def _agencies(client: HubClient) -> list[dict[str, Any]]:
    async with client:
        return await client.agencies()
