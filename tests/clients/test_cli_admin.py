"""``siko hub admin ...`` against a real hub: registration, status, channels, members."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from click.testing import Result

from keys import save_card
from tests.clients.conftest import Siko
from tests.clients.helpers import assert_refused
from tests.clients.test_cli_agency import ENV, POST, Agencies
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    POLICE,
    RunningHub,
    identity,
)
from tests.hub.test_refusals import nothing_written

NEWCOMER = "stadt-bochum"


@pytest.fixture
def agencies(siko: Siko, world: RunningHub, tmp_path: Path) -> Agencies:
    return Agencies(siko, world, tmp_path)


async def as_admin(agencies: Agencies, command: str, *args: str, who: str = ADMIN) -> Result:
    """``siko hub admin COMMAND --key <who's identity file> ARGS``, SIKO_HUB set."""
    key = str(agencies.key(who))
    argv = ("hub", "admin", command, "--key", key, "--passphrase-env", "SIKO_TEST_PASS", *args)
    env = {**ENV, "SIKO_HUB": agencies.hub.base_url}
    return await asyncio.to_thread(agencies.siko, *argv, env=env)


def newcomer_card(folder: Path, agency: str = NEWCOMER) -> Path:
    path = folder / f"{agency}.card"
    save_card(path, identity(agency).card)
    return path


# -- registration and status ---------------------------------------------------------


async def test_register_a_card_then_the_agency_can_act(agencies: Agencies, tmp_path: Path) -> None:
    result = await as_admin(agencies, "register", str(newcomer_card(tmp_path)))
    assert result.exit_code == 0, result.output
    fingerprint = identity(NEWCOMER).key_id.fingerprint()
    assert result.stdout == f"{NEWCOMER}: agency, active, key {fingerprint}\n"
    inbox = await agencies.run(NEWCOMER, "inbox")
    assert inbox.exit_code == 0 and inbox.stdout == "You read no channel yet.\n"
    again = await as_admin(agencies, "register", str(newcomer_card(tmp_path, "stadt-herne")),
                           "--kind", "auditor")  # fmt: skip
    assert again.stdout.startswith("stadt-herne: auditor, active")
    listing = await as_admin(agencies, "agencies")
    assert f"{NEWCOMER}: agency, active" in listing.stdout and f"{ADMIN}: admin" in listing.stdout


async def test_registering_twice_is_refused_and_changes_nothing(
    agencies: Agencies, tmp_path: Path, redis_db: redis.Redis
) -> None:
    card = tmp_path / "police.card"
    save_card(card, identity(POLICE).card)
    agencies.key(ADMIN)
    with nothing_written(redis_db, nonces=1):
        result = await as_admin(agencies, "register", str(card))
    assert_refused(result, 4, POLICE)


async def test_suspend_and_activate(agencies: Agencies) -> None:
    suspended = await as_admin(agencies, "suspend", CITY)
    assert suspended.exit_code == 0 and f"{CITY}: agency, suspended" in suspended.stdout
    refused = await agencies.run(CITY, *POST, "--text", "gesperrt")
    assert_refused(refused, 4, "suspended")
    activated = await as_admin(agencies, "activate", CITY)
    assert f"{CITY}: agency, active" in activated.stdout
    assert (await agencies.run(CITY, *POST, "--text", "wieder da")).exit_code == 0


async def test_an_agency_key_cannot_administer(agencies: Agencies, redis_db: redis.Redis) -> None:
    agencies.key(POLICE)
    with nothing_written(redis_db, nonces=1):
        result = await as_admin(agencies, "suspend", CITY, who=POLICE)
    assert_refused(result, 4, "administrator")


# -- channels and members ------------------------------------------------------------------


async def test_channel_create_with_members_then_post_and_read(agencies: Agencies) -> None:
    result = await as_admin(agencies, "channel-create", "jugend-essen", "--ceiling", "OFFEN",
                            "--retention-days", "7", "--member", f"{POLICE}=post,read",
                            "--member", f"{CITY}=read")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("jugend-essen: ceiling OFFEN, kept 7 days")
    assert any(line.split()[:3] == [CITY, "read", "active"] for line in lines[1:])
    posted = await agencies.run(POLICE, "post", "jugend-essen", "--classification", "OFFEN",
                                "--handling", "H0", "--text", "Hinweis")  # fmt: skip
    assert posted.exit_code == 0, posted.output
    inbox = await agencies.run(CITY, "inbox", "--json")
    assert inbox.stdout.strip() == '{"jugend-essen": 1, "lage-ruhr": 0}'
    above = await agencies.run(POLICE, "post", "jugend-essen", *POST[2:], "--text", "x")
    assert_refused(above, 4, "ceiling")


async def test_member_set_roles_and_remove(agencies: Agencies, tmp_path: Path) -> None:
    await as_admin(agencies, "register", str(newcomer_card(tmp_path)))
    added = await as_admin(agencies, "member", CHANNEL, NEWCOMER, "--roles", "read")
    assert added.exit_code == 0, added.output
    assert any(line.split()[:2] == [NEWCOMER, "read"] for line in added.stdout.splitlines())
    await agencies.run(POLICE, *POST, "--text", "für vier")
    watched = await agencies.run(NEWCOMER, "watch", CHANNEL, "--json", "--count", "1")
    assert watched.exit_code == 0 and '"text": "für vier"' in watched.stdout

    removed = await as_admin(agencies, "member", CHANNEL, NEWCOMER, "--remove")
    assert removed.exit_code == 0 and NEWCOMER not in removed.stdout
    gone = await agencies.run(NEWCOMER, "inbox", "--json")
    assert gone.stdout.strip() == "{}"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("member", CHANNEL, CITY), "either --roles ROLES or --remove"),
        (("member", CHANNEL, CITY, "--roles", "read", "--remove"), "either --roles"),
        (("member", CHANNEL, CITY, "--roles", "write"), "comma-separated list"),
        (
            (
                "channel-create",
                "x-y",
                "--ceiling",
                "OFFEN",
                "--retention-days",
                "1",
                "--member",
                "sta-essen",
            ),
            "AGENCY=ROLES",
        ),
        (("channel-create", "x-y", "--ceiling", "OFFEN", "--retention-days", "0"), "0"),
        (("register", "/nonexistent.card"), "does not exist"),
    ],
)
async def test_usage_errors_are_exit_status_2(
    agencies: Agencies, args: tuple[str, ...], needle: str
) -> None:
    result = await as_admin(agencies, *args)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


# -- the group itself ----------------------------------------------------------------------


def test_hub_group_has_admin_and_serve(siko: Siko) -> None:
    listing = siko("hub", "--help")
    assert listing.exit_code == 0
    assert "admin" in listing.stdout and "serve" in listing.stdout
    for command in ("register", "suspend", "activate", "channel-create", "member", "agencies"):
        result = siko("hub", "admin", command, "--help")
        assert result.exit_code == 0, result.output
        assert "Example" in result.stdout and f"siko hub admin {command}" in result.stdout


def test_without_the_hub_package_siko_hub_admin_still_works() -> None:
    code = (
        "import sys; sys.modules['hub'] = None; from clients.cli import root; "
        "root.main(['hub', '--help'], prog_name='siko')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "admin" in result.stdout and "'siko hub serve' is unavailable" in result.stdout
    assert "serve " not in result.stdout.split("Commands:")[1]
