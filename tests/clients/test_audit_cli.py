"""``siko audit`` against a real hub on a real Redis: clean logs pass, tampering is named.

Each test builds a small log through the hub's public API (registrations, a channel,
notes, an acknowledgement, a refused post), has the hub sign a checkpoint, then runs
the command as an auditor would: in a thread, since the command runs its own event
loop while the hub serves on the test's.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgpack
import pytest
import redis
from click.testing import Result

from clients.audit_source import Bundle
from clients.audit_state import save_state
from clients.cli_audit import EXIT_ANOMALIES
from clients.errors import NotMember
from hub import keyspace
from hub.state import AUDIT
from keys import KdfParams, Note, save_identity
from keys.checkpoint import Checkpoint
from keys.merkle import HASH_SIZE
from tests.clients.conftest import Siko
from tests.hub.conftest import (
    ADMIN,
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

AUDITOR = "ldi-nrw"
PASSPHRASE = "auditor passphrase"
ENV = {"SIKO_AUDIT_PASS": PASSPHRASE}
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1)


@dataclass
class Audited:
    """A hub with a small log, and what the auditor holds."""

    hub: RunningHub
    tmp: Path
    log_key: str
    key_file: Path
    state: Path
    message_id: str
    note_index: int

    def hub_args(self) -> list[str]:
        return ["--hub", self.hub.base_url, "--key", str(self.key_file)]

    def auth(self) -> list[str]:
        return [*self.hub_args(), "--passphrase-env", "SIKO_AUDIT_PASS", "--log-key", self.log_key]

    async def siko(self, siko: Siko, *args: str) -> Result:
        return await asyncio.to_thread(siko, *args, env=ENV)

    async def verify(self, siko: Siko, *extra: str) -> Result:
        return await self.siko(
            siko, "audit", "verify", *self.auth(), "--state", str(self.state), *extra
        )

    async def checkpoint(self) -> bytes:
        audit = self.hub.app[AUDIT]
        await audit.drain_all()
        await audit.sign_checkpoint()
        return await audit.latest_checkpoint()


@pytest.fixture
async def audited(tmp_path: Path, redis_url: str, redis_db: redis.Redis) -> Audited:
    running = await start_hub(hub_settings(tmp_path, redis_url, checkpoint_interval_s=60))
    try:
        await make_world(running)
        admin = await running.client(ADMIN)
        await admin.register_agency(identity(AUDITOR).card, kind="auditor")
        police, city = await running.client(POLICE), await running.client(CITY)
        prosecutor = await running.client(PROSECUTOR)
        posted = await police.post_note(CHANNEL, Note("Lagebild"), MARKS)
        await city.post_note(CHANNEL, Note("Gewerbeprüfung"), MARKS)
        await prosecutor.ack(CHANNEL, posted.stream_id)
        with pytest.raises(NotMember):
            await prosecutor.post_note(CHANNEL, Note("darf nicht"), MARKS)
        async with aiohttp.ClientSession() as anonymous:  # refusals that name nobody
            for _ in range(3):
                async with anonymous.get(f"{running.base_url}/v1/agencies") as answer:
                    assert answer.status == 401
        assert await running.app[AUDIT].summarize_refusals()
        key_file = tmp_path / "auditor.identity"
        save_identity(key_file, identity(AUDITOR), PASSPHRASE, kdf=FAST_KDF)
        result = Audited(
            running,
            tmp_path,
            running.app[AUDIT].key.verifier_key,
            key_file,
            tmp_path / "state.json",
            posted.message_id,
            posted.index,
        )
        await result.checkpoint()
        yield result  # type: ignore[misc]
    finally:
        await running.stop()


def anomalies(result: Result) -> list[str]:
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("ANOMALIES:"))
    return [line.strip() for line in lines[at + 1 :]]


def assert_clean(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert "Result: no anomaly found." in result.output


def assert_anomaly(result: Result, needle: str) -> list[str]:
    assert result.exit_code == EXIT_ANOMALIES, result.output
    found = anomalies(result)
    assert any(needle in line for line in found), found
    return found


async def test_a_clean_log_verifies_and_is_remembered(audited: Audited, siko: Siko) -> None:
    result = await audited.verify(siko)
    assert_clean(result)
    size = Checkpoint.parse((await audited.checkpoint()).split(b"\n\n")[0] + b"\n").size
    assert f"{size} entries verified" in result.output
    assert "note-accepted" in result.output and "request-refused" in result.output
    for agency in (POLICE, CITY, PROSECUTOR):
        assert agency in result.output
    assert CHANNEL in result.output
    assert "Refused requests: 1 logged one by one, 3 counted in 1 summaries" in result.output
    assert "refusals-summarized" in result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert ["not-member", "403", "1", "0"] in rows and ["unauthenticated", "401", "0", "3"] in rows
    assert json.loads(audited.state.read_text())["size"] == size
    again = await audited.verify(siko)  # the log extends the remembered checkpoint
    assert_clean(again)
    assert "remembered checkpoint" in again.output


async def test_a_changed_leaf_is_named(
    audited: Audited,
    siko: Siko,
    redis_db: redis.Redis,
) -> None:
    index = str(audited.note_index)
    leaf = bytearray(redis_db.hget(keyspace.log_leaves(), index))  # type: ignore[arg-type]
    leaf[8] ^= 1  # inside the commitment
    redis_db.hset(keyspace.log_leaves(), index, bytes(leaf))
    found = assert_anomaly(await audited.verify(siko), f"leaf {index}: record-mismatch")
    assert f"leaf {index}: divergent-leaf" in "\n".join(found)
    assert any("root-mismatch" in line for line in found)
    assert not audited.state.exists()  # an anomalous run is not remembered


async def test_a_changed_record_is_named(
    audited: Audited,
    siko: Siko,
    redis_db: redis.Redis,
) -> None:
    index = str(audited.note_index)
    record = redis_db.hget(keyspace.log_records(), index)
    assert record is not None
    redis_db.hset(keyspace.log_records(), index, record.replace(POLICE.encode(), b"pp-dortmund"))
    found = assert_anomaly(await audited.verify(siko), f"leaf {index}: record-mismatch")
    assert not any("root-mismatch" in line for line in found)


async def test_a_deleted_leaf_is_named(
    audited: Audited,
    siko: Siko,
    redis_db: redis.Redis,
) -> None:
    redis_db.hdel(keyspace.log_leaves(), "4")
    assert_anomaly(await audited.verify(siko), "leaf 4: missing-leaf")


async def test_two_swapped_leaves_are_named(
    audited: Audited,
    siko: Siko,
    redis_db: redis.Redis,
) -> None:
    for name in (keyspace.log_leaves(), keyspace.log_records(), keyspace.log_salts()):
        first, second = redis_db.hmget(name, ["2", "5"])
        redis_db.hset(name, mapping={"2": second, "5": first})  # type: ignore[dict-item]
    found = assert_anomaly(await audited.verify(siko), "leaf 2: divergent-leaf")
    assert not any("record-mismatch" in line for line in found)  # each record fits its leaf


async def test_a_rolled_back_log_is_detected(
    audited: Audited,
    siko: Siko,
    redis_db: redis.Redis,
) -> None:
    old_note = await audited.checkpoint()
    old_size = int(redis_db.get(keyspace.log_size()) or 0)
    police = await audited.hub.client(POLICE)
    await police.post_note(CHANNEL, Note("noch eine"), MARKS)
    await audited.checkpoint()
    assert_clean(await audited.verify(siko))  # remembers the larger checkpoint
    redis_db.set(keyspace.log_size(), old_size)
    redis_db.set(keyspace.log_latest_checkpoint(), old_note)
    found = assert_anomaly(await audited.verify(siko), "rollback")
    assert found[0].startswith("log: rollback")


async def test_a_split_view_in_the_state_file_is_a_fork(audited: Audited, siko: Siko) -> None:
    note = await audited.checkpoint()
    size = Checkpoint.parse(note.split(b"\n\n")[0] + b"\n").size
    other = audited.hub.app[AUDIT].key.sign_checkpoint(size, b"\x07" * HASH_SIZE)
    save_state(audited.state, Checkpoint.parse(other.split(b"\n\n")[0] + b"\n"), other)
    found = assert_anomaly(await audited.verify(siko), "fork")
    assert any("two signed checkpoints of" in line for line in found)


async def test_a_state_file_that_was_edited_is_refused(audited: Audited, siko: Siko) -> None:
    audited.state.write_text(json.dumps({"checkpoint": "siko/log\n1\nAAAA\n\n— x y\n"}))
    result = await audited.verify(siko)
    assert result.exit_code == 1
    assert "not an audit state signed by this log's key" in result.output


async def test_another_log_key_refuses_every_checkpoint(audited: Audited, siko: Siko) -> None:
    from keys.logkey import LogKey

    other = LogKey.generate(audited.hub.app[AUDIT].key.origin).verifier_key
    args = [*audited.hub_args(), "--passphrase-env", "SIKO_AUDIT_PASS", "--log-key", other]
    result = await audited.siko(siko, "audit", "verify", *args, "--no-state")
    assert_anomaly(result, "log: bad-checkpoint")


async def test_a_deleted_record_is_reported_by_its_tombstone(audited: Audited, siko: Siko) -> None:
    audit = audited.hub.app[AUDIT]
    tombstone = await audit.delete_record(audited.note_index, "erasure: Antrag 17/2025", 1)
    await audited.checkpoint()
    result = await audited.verify(siko)
    assert_clean(result)
    assert f"leaf {audited.note_index}: deleted" in result.output
    assert f"tombstone leaf {tombstone}: erasure: Antrag 17/2025" in result.output


async def test_a_record_withheld_without_tombstone_is_named(
    audited: Audited,
    siko: Siko,
    redis_db: redis.Redis,
) -> None:
    redis_db.hdel(keyspace.log_records(), str(audited.note_index))
    assert_anomaly(await audited.verify(siko), f"leaf {audited.note_index}: record-withheld")


async def test_a_range_is_anchored_and_verified(audited: Audited, siko: Siko) -> None:
    result = await audited.verify(siko, "--from", "3", "--to", "7", "--no-state")
    assert_clean(result)
    assert "leaves 3..6" in result.output
    assert "4 entries verified" in result.output


async def test_an_exported_bundle_verifies_offline(
    audited: Audited,
    siko: Siko,
    redis_db: redis.Redis,
) -> None:
    out = audited.tmp / "log.bundle"
    exported = await audited.siko(siko, "audit", "export", *audited.auth(), "--out", str(out))
    assert exported.exit_code == 0, exported.output
    await audited.hub.stop()
    redis_db.flushall()  # the hub and its data are gone: the bundle stands alone
    offline = await audited.siko(
        siko, "audit", "verify", "--bundle", str(out), "--log-key", audited.log_key, "--no-state"
    )
    assert_clean(offline)
    bundle = Bundle.load(out)
    leaf = bytearray(bundle.leaves[3].leaf)
    leaf[8] ^= 1
    bundle.leaves[3] = type(bundle.leaves[3])(
        3, bytes(leaf), bundle.leaves[3].record, bundle.leaves[3].salt
    )
    bundle.save(out)
    tampered = await audited.siko(
        siko, "audit", "verify", "--bundle", str(out), "--log-key", audited.log_key, "--no-state"
    )
    assert_anomaly(tampered, "leaf 3: record-mismatch")  # offline: no proofs to bisect with


async def test_a_bundle_with_a_second_checkpoint_of_the_same_size_is_a_fork(
    audited: Audited, siko: Siko
) -> None:
    out = audited.tmp / "log.bundle"
    exported = await audited.siko(siko, "audit", "export", *audited.auth(), "--out", str(out))
    assert exported.exit_code == 0, exported.output
    bundle = Bundle.load(out)
    size = Checkpoint.parse(bundle.checkpoints[0].split(b"\n\n")[0] + b"\n").size
    bundle.checkpoints.append(audited.hub.app[AUDIT].key.sign_checkpoint(size, b"\x01" * 32))
    bundle.save(out)
    result = await audited.siko(
        siko, "audit", "verify", "--bundle", str(out), "--log-key", audited.log_key, "--no-state"
    )
    found = assert_anomaly(result, "log: fork")
    assert any("two signed checkpoints" in line for line in found)


async def test_the_html_report_is_self_contained(audited: Audited, siko: Siko) -> None:
    out = audited.tmp / "report.html"
    result = await audited.siko(
        siko, "audit", "report", *audited.auth(), "--state", str(audited.state), "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2
    for needed in (POLICE, CITY, CHANNEL, "not-member", "no anomaly found", "in summaries"):
        assert needed in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


async def test_evidence_for_a_note_verifies_offline(audited: Audited, siko: Siko) -> None:
    out = audited.tmp / "note.evidence"
    gathered = await audited.siko(
        siko, "audit", "evidence", audited.message_id, *audited.auth(), "--out", str(out)
    )
    assert gathered.exit_code == 0, gathered.output
    checked = await audited.siko(
        siko, "audit", "check-evidence", str(out), "--log-key", audited.log_key
    )
    assert checked.exit_code == 0, checked.output
    assert f"is leaf {audited.note_index}" in checked.output
    assert f"{PROSECUTOR} acknowledged {CHANNEL}" in checked.output
    assert "The evidence verifies." in checked.output
    value = msgpack.unpackb(out.read_bytes())
    value["note"]["record"] = value["note"]["record"].replace(b"VS-NfD", b"OFFEN!")
    out.write_bytes(msgpack.packb(value))
    refused = await audited.siko(
        siko, "audit", "check-evidence", str(out), "--log-key", audited.log_key
    )
    assert refused.exit_code == 4, refused.output
    assert f"leaf {audited.note_index} is not proven" in refused.output
