"""``siko post``, ``watch``, ``inbox``, ``channels``, ``read-receipts`` against a real hub.

The command line runs in a worker thread (it runs its own event loop, as in a
terminal) while the hub serves on the test's loop. Identity files are locked with a
cheap KDF so that each command unlocks quickly.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import Result

from keys import KdfParams, Note, save_identity
from tests.clients.conftest import Siko
from tests.clients.helpers import assert_refused
from tests.clients.test_sdk import NOTES_KEY, tamper_newest_note
from tests.hub.conftest import (
    CHANNEL,
    CITY,
    MARKS,
    POLICE,
    PROSECUTOR,
    RunningHub,
    hub_settings,
    identity,
    make_world,
    start_hub,
)

PASSPHRASE = "correct horse battery staple"
ENV = {"SIKO_TEST_PASS": PASSPHRASE}
CHEAP = KdfParams(memory_kib=8, iterations=1, lanes=1)


class Agencies:
    """Identity files and state files of the world's agencies, and a runner for siko."""

    def __init__(self, siko: Siko, hub: RunningHub, folder: Path) -> None:
        self.siko, self.hub, self.folder = siko, hub, folder

    def key(self, agency: str) -> Path:
        path = self.folder / f"{agency}.identity"
        if not path.exists():
            save_identity(path, identity(agency), PASSPHRASE, kdf=CHEAP)
        return path

    def state(self, agency: str) -> Path:
        return self.folder / "state" / f"{agency}.json"

    async def run(self, agency: str, *args: str, input: str | None = None) -> Result:
        """``siko COMMAND --key <agency's file> ARGS`` with SIKO_HUB and the passphrase set."""
        command, *rest = args
        argv = [command, "--key", str(self.key(agency)), "--passphrase-env", "SIKO_TEST_PASS"]
        env = {**ENV, "SIKO_HUB": self.hub.base_url, "SIKO_STATE": str(self.state(agency))}
        return await asyncio.to_thread(self.siko, *argv, *rest, input=input, env=env)


@pytest.fixture
def agencies(siko: Siko, world: RunningHub, tmp_path: Path) -> Agencies:
    return Agencies(siko, world, tmp_path)


def json_lines(result: Result) -> list[Any]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


POST = ("post", CHANNEL, "--classification", "VS-NfD", "--handling", "H1")


# -- siko post ------------------------------------------------------------------------


async def test_post_prints_stream_id_message_id_and_receipt(
    agencies: Agencies, redis_db: redis.Redis
) -> None:
    result = await agencies.run(POLICE, *POST, "--text", "Kontrolle Altendorfer Str.")
    assert result.exit_code == 0, result.output
    entries: Any = redis_db.xrange(NOTES_KEY)
    [(stream_id, _)] = entries
    assert f"stream id:  {stream_id.decode()}" in result.stdout
    assert "receipt:    leaf " in result.stdout and "message id: " in result.stdout
    assert "Kontrolle" not in result.output  # the text is never echoed


async def test_post_reads_the_body_from_stdin_or_a_file_and_prints_json(
    agencies: Agencies, tmp_path: Path
) -> None:
    from_stdin = await agencies.run(POLICE, *POST, "--json", input="aus stdin\n")
    body = tmp_path / "bericht.txt"
    body.write_text("aus der Datei")
    from_file = await agencies.run(POLICE, *POST, "--json", "--in", str(body),
                                   "--subject", "Bericht", "--case-ref", "AZ 7/26",
                                   "--source", "B", "--info", "2", "--tlp", "RED")  # fmt: skip
    first, second = json_lines(from_stdin)[0], json_lines(from_file)[0]
    assert first["index"] < second["index"] and not second["duplicate"]
    watched = json_lines(await agencies.run(PROSECUTOR, "watch", CHANNEL, "--json", "--count", "2"))
    assert [w["text"] for w in watched] == ["aus stdin\n", "aus der Datei"]
    assert [w["message_id"] for w in watched] == [first["message_id"], second["message_id"]]
    marks = {k: watched[1][k] for k in ("subject", "case_ref", "source", "info", "tlp")}
    assert marks == {"subject": "Bericht", "case_ref": "AZ 7/26", "source": "B", "info": "2",
                     "tlp": "RED"}  # fmt: skip


# -- siko watch -----------------------------------------------------------------------


async def test_watch_json_shows_verified_notes_then_resumes_after_a_restart(
    agencies: Agencies,
) -> None:
    for text in ("eins", "zwei"):
        assert (await agencies.run(POLICE, *POST, "--text", text)).exit_code == 0
    first = json_lines(await agencies.run(PROSECUTOR, "watch", CHANNEL, "--json", "--count", "2"))
    assert [(n["text"], n["sender"], n["classification"], n["handling"]) for n in first] == [
        ("eins", POLICE, "VS-NfD", "H1"),
        ("zwei", POLICE, "VS-NfD", "H1"),
    ]
    assert all(n["verified"] and n["sent_at"].endswith("Z") for n in first)

    idle = await agencies.run(PROSECUTOR, "watch", CHANNEL, "--json", "--until-idle", "0.5")
    assert json_lines(idle) == []  # nothing is shown twice
    await agencies.run(CITY, *POST, "--text", "drei")
    [third] = json_lines(await agencies.run(PROSECUTOR, "watch", CHANNEL, "--json", "--count", "1"))
    assert (third["text"], third["sender"]) == ("drei", CITY)
    again = await agencies.run(
        PROSECUTOR, "watch", CHANNEL, "--json", "--from-start", "--until-idle", "0.5"
    )
    assert [n["text"] for n in json_lines(again)] == ["eins", "zwei", "drei"]


async def test_watch_follows_notes_posted_while_it_runs(agencies: Agencies) -> None:
    agencies.key(PROSECUTOR)
    watching = asyncio.ensure_future(
        agencies.run(PROSECUTOR, "watch", CHANNEL, "--count", "2", "--until-idle", "20")
    )
    await asyncio.sleep(0.5)
    police = await agencies.hub.client(POLICE)
    await police.post(CHANNEL, Note("live 1", subject="Betreff"), MARKS)
    await police.post(CHANNEL, Note("live 2\x1b[2J"), MARKS)
    result = await asyncio.wait_for(watching, 30)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    headers = [line for line in lines if line.startswith(f"=== {CHANNEL}")]
    assert len(headers) == 2 and all(f"from {POLICE}  VS-NfD / H1" in h for h in headers)
    assert "subject:  Betreff" in lines and "live 1" in lines
    assert "live 2\\x1b[2J" in lines  # a sender cannot drive the reader's terminal


async def test_watch_never_shows_an_altered_note_and_exits_4(
    agencies: Agencies, redis_db: redis.Redis
) -> None:
    await agencies.run(POLICE, *POST, "--text", "gut")
    await agencies.run(POLICE, *POST, "--text", "verändert")
    tamper_newest_note(redis_db)
    await agencies.run(POLICE, *POST, "--text", "auch gut")
    result = await agencies.run(CITY, "watch", CHANNEL, "--json", "--until-idle", "1")
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["gut", "auch gut"]
    assert "verändert" not in result.output
    assert "siko: refused: note " in result.stderr and "does not verify" in result.stderr
    assert_refused(result, 4, "1 note(s) failed their checks")


# -- inbox, read receipts, channels -----------------------------------------------------


async def test_inbox_counts_unread_notes_until_watch_acks_them(agencies: Agencies) -> None:
    for text in ("a", "b", "c"):
        await agencies.run(POLICE, *POST, "--text", text)
    inbox = await agencies.run(PROSECUTOR, "inbox", "--json")
    assert json_lines(inbox) == [{CHANNEL: 3}]
    watched = await agencies.run(PROSECUTOR, "watch", CHANNEL, "--ack", "--json", "--count", "2")
    assert len(json_lines(watched)) == 2
    human = await agencies.run(PROSECUTOR, "inbox")
    assert human.exit_code == 0 and human.stdout == f"{CHANNEL}: 1 unread\n"
    assert json_lines(await agencies.run(CITY, "inbox", "--json")) == [{CHANNEL: 3}]


async def test_read_receipts_name_who_read_a_note(agencies: Agencies) -> None:
    posted = json_lines(await agencies.run(POLICE, *POST, "--json", "--text", "bitte lesen"))[0]
    await agencies.run(CITY, "watch", CHANNEL, "--ack", "--count", "1")
    result = await agencies.run(POLICE, "read-receipts", CHANNEL, posted["message_id"])
    assert result.exit_code == 0, result.output
    assert f"read by:     {CITY}\n" in result.stdout
    assert f"not yet by:  {POLICE}, {PROSECUTOR}\n" in result.stdout
    as_json = json_lines(
        await agencies.run(PROSECUTOR, "read-receipts", CHANNEL, posted["message_id"], "--json")
    )[0]
    assert as_json["read_by"] == [CITY] and as_json["stream_id"] == posted["stream_id"]
    bad = await agencies.run(POLICE, "read-receipts", CHANNEL, "nicht-hex")
    assert bad.exit_code == 2 and "hex message id" in bad.output


async def test_channels_lists_roles_members_and_fingerprints(agencies: Agencies) -> None:
    result = await agencies.run(PROSECUTOR, "channels")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{CHANNEL}: your roles read; ceiling VS-NfD, kept 30 days"
    police_line = next(line for line in lines if line.strip().startswith(POLICE))
    assert "post,read" in police_line and identity(POLICE).key_id.fingerprint() in police_line
    [listing] = json_lines(await agencies.run(CITY, "channels", "--json"))
    assert listing[0]["roles"] == ["post", "read"]
    assert sorted(listing[0]["members"]) == [POLICE, PROSECUTOR, CITY]


# -- refusals: one line, an exit status ------------------------------------------------------


async def test_a_hub_refusal_is_one_line_and_exit_status_4(
    agencies: Agencies, redis_db: redis.Redis
) -> None:
    result = await agencies.run(PROSECUTOR, *POST, "--text", "darf ich nicht")
    assert_refused(result, 4, PROSECUTOR, "post")
    assert "darf ich nicht" not in result.output
    geheim = await agencies.run(POLICE, "post", CHANNEL, "--classification", "GEHEIM",
                                "--handling", "H1", "--text", "zu hoch")  # fmt: skip
    assert_refused(geheim, 4, "ceiling")
    missing = await agencies.run(POLICE, "read-receipts", "kein-kanal", "00" * 16)
    assert_refused(missing, 4)
    assert redis_db.xlen(NOTES_KEY) == 0


async def test_an_unreachable_hub_is_exit_status_5(
    agencies: Agencies, siko: Siko, tmp_path: Path
) -> None:
    key = str(agencies.key(POLICE))
    args = ("inbox", "--key", key, "--passphrase-env", "SIKO_TEST_PASS")
    result = await asyncio.to_thread(siko, *args, "--hub", "http://127.0.0.1:9", env=ENV)
    assert_refused(result, 5, "no answer from http://127.0.0.1:9")


async def test_usage_errors_and_key_file_problems(agencies: Agencies, siko: Siko) -> None:
    key = str(agencies.key(POLICE))
    no_hub = await asyncio.to_thread(siko, "inbox", "--key", key, env={"SIKO_HUB": ""})
    assert no_hub.exit_code == 2 and "--hub" in no_hub.output
    bad_hub = await asyncio.to_thread(siko, "inbox", "--key", key, "--hub", "hub.example")
    assert bad_hub.exit_code == 2 and "expected the hub's address" in bad_hub.output
    args = ("inbox", "--key", key, "--hub", agencies.hub.base_url, "--passphrase-env", "P")
    wrong = await asyncio.to_thread(siko, *args, env={"P": "not the passphrase"})
    assert_refused(wrong, 3, "passphrase")


async def test_watch_survives_a_hub_restart(
    siko: Siko, tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    settings = hub_settings(tmp_path, redis_url)
    running = await start_hub(settings)
    await make_world(running)
    agencies = Agencies(siko, running, tmp_path)
    agencies.key(PROSECUTOR)
    watching = asyncio.ensure_future(
        agencies.run(PROSECUTOR, "watch", CHANNEL, "--json", "--count", "2", "--until-idle", "20")
    )
    try:
        await asyncio.sleep(0.5)
        await (await running.client(POLICE)).post(CHANNEL, Note("vor dem Neustart"), MARKS)
        await asyncio.sleep(0.3)
        await running.stop()
        running = await start_hub(settings)  # same port, same Redis
        await (await running.client(POLICE)).post(CHANNEL, Note("nach dem Neustart"), MARKS)
        result = await asyncio.wait_for(watching, 40)
    finally:
        await running.stop()
    texts = [note["text"] for note in json_lines(result)]
    assert texts == ["vor dem Neustart", "nach dem Neustart"]


async def test_a_post_whose_answer_was_lost_is_repeated_at_most_once(
    agencies: Agencies, siko: Siko, redis_db: redis.Redis
) -> None:
    key = str(agencies.key(POLICE))
    args = ("post", CHANNEL, "--key", key, "--passphrase-env", "SIKO_TEST_PASS",
            "--classification", "VS-NfD", "--handling", "H1", "--text", "einmal")  # fmt: skip
    down = await asyncio.to_thread(siko, *args, "--hub", "http://127.0.0.1:9", env=ENV)
    line = assert_refused(down, 5, "may or may not be stored", "--message-id ")
    mid = line.split("--message-id ")[1].split()[0]
    first = await agencies.run(POLICE, *POST, "--text", "einmal", "--message-id", mid, "--json")
    assert json_lines(first)[0]["message_id"] == mid
    again = await agencies.run(POLICE, *POST, "--text", "einmal", "--message-id", mid)
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith(f"the hub already holds note {mid} in {CHANNEL} (stream id ")
    assert redis_db.xlen(NOTES_KEY) == 1
    bad = await agencies.run(POLICE, *POST, "--text", "x", "--message-id", "zz")
    assert bad.exit_code == 2 and "--message-id" in bad.output
