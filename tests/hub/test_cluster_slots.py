"""The same code runs on Redis Cluster: every operation's keys share one hash slot.

A redis-server in cluster mode that holds every slot itself answers like a single Redis,
except that it refuses (``CROSSSLOT``) any command, transaction, pipeline transaction
or script whose keys hash to different slots. The hub runs here against such a node
through everything it does: the directory, channels and rosters, posts and retries,
pages, live subscriptions and acks, read receipts, key rotation, suspension,
refusals logged one by one and summarized, checkpoints, proofs, an erasure, and the
auditor's replay of the whole log, which must come out clean. A key name that lost its
hash tag, or a script that reaches into another slot, fails here first.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgpack
import pytest
import redis

from clients.audit_run import verify_log
from clients.audit_source import HubSource
from clients.errors import NotMember
from hub.embedded import find_redis_server, free_loopback_port
from hub.state import AUDIT
from keys import Identity, Note, Suite
from keys.checkpoint import NoteVerifier
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    MARKS,
    POLICE,
    PROSECUTOR,
    hub_settings,
    identity,
    make_world,
    start_hub,
)

AUDITOR = "ldi-nrw"
STEP_S = 10.0
BUS_OFFSET = 10_000


def cluster_ports() -> int:
    """A free loopback port whose cluster bus port (10,000 higher) is free too.

    Redis 6.2 puts a cluster node's bus on its port + 10,000 (no ``cluster-port`` yet), so
    a port above 55,535 cannot serve, and the bus port must be free as well.
    """
    for _ in range(100):
        port = free_loopback_port()
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports for a cluster node")


@pytest.fixture
async def cluster_node(tmp_path: Path) -> AsyncIterator[str]:
    """A one-node Redis Cluster of this test alone (every slot assigned); its URL."""
    folder = tmp_path / "cluster"
    folder.mkdir()
    port = cluster_ports()
    log = folder / "redis.log"
    server = await asyncio.create_subprocess_exec(
        str(find_redis_server()),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)),
        *("--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf")),
        *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
        *("--logfile", str(log)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        async with asyncio.timeout(STEP_S):
            while True:
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        break
                if server.returncode is not None:
                    pytest.fail(f"the cluster node exited: {log.read_text()[-2000:]}")
                await asyncio.sleep(0.05)
            command = client.execute_command  # (redis-py's is untyped)
            command("CLUSTER", "ADDSLOTS", *range(16384))  # type: ignore[no-untyped-call]
            while b"cluster_state:ok" not in command("CLUSTER", "INFO"):  # type: ignore[no-untyped-call]
                await asyncio.sleep(0.05)
        with pytest.raises(redis.ResponseError, match="same slot"):  # the node is strict
            client.mset({"{a}:x": 1, "{b}:x": 2})
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()


async def test_everything_the_hub_does_stays_within_one_slot_per_operation(
    tmp_path: Path, cluster_node: str
) -> None:
    hub = await start_hub(hub_settings(tmp_path, cluster_node, checkpoint_interval_s=60))
    try:
        await make_world(hub)
        admin = await hub.client(ADMIN)
        await admin.register_agency(identity(AUDITOR).card, kind="auditor")
        police, prosecutor = await hub.client(POLICE), await hub.client(PROSECUTOR)

        # posts, a retry, pages; a live subscription with an ack over the socket
        subscription = prosecutor.subscribe({CHANNEL: "0-0"})
        posted = await police.post_note(CHANNEL, Note("Lagebild Altendorf"), MARKS)
        again = await police.post_envelope(
            CHANNEL, (await police.page_notes(CHANNEL)).notes[0].envelope
        )
        assert again.duplicate and again.stream_id == posted.stream_id
        delivery = await asyncio.wait_for(anext(subscription), STEP_S)
        assert (await prosecutor.open(delivery)).note.text == "Lagebild Altendorf"
        await subscription.ack(delivery)
        async with asyncio.timeout(STEP_S):
            while (await police.receipts(CHANNEL, posted.message_id))["read_by"] != [PROSECUTOR]:
                await asyncio.sleep(0.02)
        await subscription.close()

        # roster and directory changes, then a post sealed for the new roster
        await admin.set_member(CHANNEL, PROSECUTOR, {"read", "post"})
        rotated = Identity.generate(CITY, suite=Suite.MLKEM768_X25519)
        await admin.add_card(CITY, rotated.card)
        await admin.set_status(CITY, "suspended")
        await admin.set_status(CITY, "active")
        later = await prosecutor.post_note(CHANNEL, Note("Antwort der StA"), MARKS)
        await prosecutor.ack(CHANNEL, later.stream_id)

        # refusals: one that names its agency, and some that name nobody
        await admin.set_member(CHANNEL, PROSECUTOR, {"read"})
        with pytest.raises(NotMember):
            await prosecutor.post_note(CHANNEL, Note("darf nicht mehr"), MARKS)
        async with aiohttp.ClientSession() as anonymous:
            for _ in range(3):
                async with anonymous.get(f"{hub.base_url}/v1/agencies") as answer:
                    assert answer.status == 401
        audit = hub.app[AUDIT]
        assert await audit.summarize_refusals()

        # the log: sequenced, checkpointed, one record erased, then replayed by an auditor
        await audit.drain_all()
        await audit.sign_checkpoint()
        body = msgpack.packb({"index": posted.index, "reason": "Löschung nach Art. 17"})
        erased = await admin.transport.request(
            "POST", "/v1/audit/erasures", body=body, content_type="application/msgpack"
        )
        assert erased.status == 201
        await audit.drain_all()
        await audit.sign_checkpoint()
        verifier = NoteVerifier.parse(audit.key.verifier_key)
        async with HubSource(hub.base_url, identity(AUDITOR)) as source:
            outcome = await verify_log(source, verifier)
        report = outcome.report
        assert report.clean, report.anomalies
        assert report.tally.by_kind["note-accepted"] == 1  # and the erased one's tombstone
        assert report.tally.by_kind["tombstone"] == 1
        assert report.tally.summarized == {("unauthenticated", 401): 3}
        assert [e.index for e in report.tally.erasures] == [posted.index]
    finally:
        await hub.stop()
