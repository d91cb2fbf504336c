"""Refusals that name nobody are counted, and logged as one summary per interval.

Anyone can send unsigned, badly signed or replayed requests at the hub's refusal rate; if
each cost a leaf, a stranger could grow the audit log (kept in Redis, replayed by every
auditor forever) without limit. So only a refusal its agency provably sent (signature
verified, nonce fresh) is its own ``request-refused`` leaf; the others are counted in
memory by problem and status (:class:`hub.auditlog.RefusalTally`) and logged as one
``refusals-summarized`` leaf per ``refusal_summary_s``, and when the hub stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis

from clients import errors as sdk
from hub import keyspace
from hub.auditlog import TALLY_ROWS, AuditLog, RefusalTally
from hub.config import ConfigError, Settings
from hub.embedded import EmbeddedRedis
from hub.errors import HubError
from hub.logstore import LogStore
from hub.state import AUDIT
from keys import Identity, Suite
from keys.leaf import EventKind, EventRecord, RefusalSummary
from keys.logkey import LogKey
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    POLICE,
    RunningHub,
    hub_settings,
    make_world,
    start_hub,
)
from tests.hub.test_auditlog import ORIGIN, new_entries, settled_size
from tests.hub.test_cli import clean_environment, siko_hub, started
from tests.hub.test_metrics import refusals as metric_refusals
from tests.hub.test_metrics import scrape
from tests.hub.test_refusals import (
    Answer,
    http_session,
    nothing_written,
    pending_refusals,
    send,
    sign,
)

_http = pytest.fixture(http_session, name="http")
__all__ = ["clean_environment", "started"]  # fixtures used here, defined in test_cli

AGENCIES = "/v1/agencies"


async def in_batches(requests: Sequence[Awaitable[Answer]], size: int = 50) -> list[Answer]:
    """Send ``requests`` a batch at a time (a few hundred, on loopback: a second or two)."""
    answers: list[Answer] = []
    for low in range(0, len(requests), size):
        answers += await asyncio.gather(*requests[low : low + size])
    return answers


def summaries_in(client: redis.Redis) -> list[EventRecord]:
    """Every ``refusals-summarized`` record of the log (read straight from Redis)."""
    raw = client.hvals(keyspace.log_records())
    records = [EventRecord.parse(r) for r in raw if isinstance(r, bytes)]
    return [r for r in records if r.kind is EventKind.REFUSALS_SUMMARIZED]


# -- hostile traffic -------------------------------------------------------------------


async def test_hostile_traffic_adds_no_leaf_and_then_exactly_one_summary(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    url = world.base_url + AGENCIES
    used = sign(world, "GET", AGENCIES)
    assert (await send(http, url, "GET", used, b"")).status == 200
    stranger = Identity.generate("lka-fremd", suite=Suite.X25519)
    hostile = (
        [send(http, url, "GET", {}, b"") for _ in range(150)]
        + [
            send(http, url, "GET", sign(world, "GET", AGENCIES, signer=stranger), b"")
            for _ in range(60)
        ]
        + [
            send(http, url, "GET", sign(world, "GET", "/v1/channels"), b"")  # another path
            for _ in range(40)
        ]
        + [send(http, url, "GET", used, b"") for _ in range(100)]  # replays
        + [
            send(
                http, url, "GET", sign(world, "GET", AGENCIES, created=int(time.time()) - 3600), b""
            )
            for _ in range(30)
        ]
        + [send(http, f"{world.base_url}/v1/nirgendwo/{n}", "DELETE", {}, b"") for n in range(20)]
        + [send(http, world.base_url + "/healthz", "POST", {}, b"") for _ in range(10)]
    )
    size = await settled_size(world)
    with nothing_written(redis_db, nonces=0, refusals=len(hostile), logged=0, hub=world):
        answers = await in_batches(hostile)
        assert await settled_size(world) == size  # not one leaf for 410 refusals
    assert sorted({a.status for a in answers}) == [400, 401]
    expected: list[list[str | int]] = [
        ["bad-request", 400, 10],
        ["replayed-request", 401, 100],
        ["stale-request", 401, 30],
        ["unauthenticated", 401, 270],
    ]
    by_problem = {str(p): n for p, _, n in expected if isinstance(n, int)}
    assert await world.app[AUDIT].summarize_refusals()
    assert not await world.app[AUDIT].summarize_refusals()  # nothing new: nothing written
    [(stored, record)] = await new_entries(world, size)
    assert record.kind is EventKind.REFUSALS_SUMMARIZED
    assert record.fields["counts"] == expected
    assert RefusalSummary.from_fields(record.fields).end == record.at
    assert stored.record is not None
    for chosen in (b"nirgendwo", b"/v1/", b"DELETE", b"lka-fremd"):
        assert chosen not in stored.record  # nothing the senders chose
    # Prometheus counts every refusal as it happens, summary or not.
    counted = metric_refusals(await scrape(world, http))
    assert {p: counted[p] for p in by_problem} == by_problem


async def test_refusals_a_verified_agency_made_are_each_logged_by_name(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    city = await world.client(CITY)
    await admin.set_status(CITY, "suspended")
    size = await settled_size(world)
    with nothing_written(redis_db, nonces=1, refusals=1, logged=1, hub=world):
        with pytest.raises(sdk.AgencySuspended):
            await city.page_notes(CHANNEL)
    [(_, record)] = await new_entries(world, size)
    assert record.kind is EventKind.REQUEST_REFUSED
    assert record.fields == {
        "agency": CITY,  # refused by authentication, after the nonce: the agency is named
        "method": "GET",
        "path": f"/v1/channels/{CHANNEL}/notes",
        "problem": "agency-suspended",
        "status": 403,
    }


async def test_a_replaced_key_is_logged_in_its_agencys_name(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    await police.add_card(POLICE, Identity.generate(POLICE, suite=Suite.X25519).card)
    size = await settled_size(world)
    with nothing_written(redis_db, nonces=1, refusals=1, logged=1, hub=world):
        with pytest.raises(sdk.Unauthenticated):
            await police.roster(CHANNEL)
    [(_, record)] = await new_entries(world, size)
    assert (record.fields["agency"], record.fields["problem"]) == (POLICE, "unauthenticated")


# -- the interval and shutdown ---------------------------------------------------------


async def wait_for(predicate: Callable[[], object], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


async def test_each_interval_logs_one_summary_and_a_quiet_one_none(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, http: aiohttp.ClientSession
) -> None:
    running = await start_hub(hub_settings(tmp_path, redis_url, refusal_summary_s=1))
    try:
        await make_world(running)
        size = await settled_size(running)
        await asyncio.sleep(2.5)  # two intervals with nothing refused
        assert await settled_size(running) == size
        assert summaries_in(redis_db) == []
        for _ in range(5):
            await send(http, running.base_url + AGENCIES, "GET", {}, b"")
        await wait_for(lambda: summaries_in(redis_db), 5.0)
        await asyncio.sleep(2.2)  # more quiet intervals: still the one summary
        [summary] = summaries_in(redis_db)
        assert summary.fields["counts"] == [["unauthenticated", 401, 5]]
        assert 0 <= summary.fields["to"] - summary.fields["from"] <= 3000
        assert pending_refusals(running) == 0
    finally:
        await running.stop()


async def test_stopping_the_hub_logs_what_it_counted(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, http: aiohttp.ClientSession
) -> None:
    running = await start_hub(hub_settings(tmp_path, redis_url))  # every 60 s, by default
    assert running.settings.refusal_summary_s == 60
    await make_world(running)
    used = sign(running, "GET", AGENCIES)
    await send(http, running.base_url + AGENCIES, "GET", used, b"")
    for headers in [{}, {}, {}, used, used]:
        await send(http, running.base_url + AGENCIES, "GET", headers, b"")
    assert summaries_in(redis_db) == []
    await running.stop()
    [summary] = summaries_in(redis_db)
    assert summary.fields["counts"] == [["replayed-request", 401, 2], ["unauthenticated", 401, 3]]
    assert redis_db.xlen(keyspace.log_inbox()) == 0  # sequenced, not left waiting


async def test_counts_outlive_a_storage_failure_into_the_next_summary(
    own_redis: EmbeddedRedis,
) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    audit = AuditLog(LogStore(client), LogKey.generate(ORIGIN), checkpoint_interval_s=1.0)
    started_at = audit.refusals.start
    try:
        for _ in range(3):
            audit.count_refusal("unauthenticated", 401)
        await own_redis.stop()
        with pytest.raises(HubError):
            await audit.summarize_refusals()
        assert audit.refusals.pending() == {("unauthenticated", 401): 3}  # nothing lost
        await own_redis.start()  # same port and password
        audit.count_refusal("replayed-request", 401)
        for _ in range(20):  # the client reconnects on its own; a few tries at most
            try:
                assert await audit.summarize_refusals()
                break
            except HubError:
                await asyncio.sleep(0.1)
        await audit.drain_all()
        [stored] = await audit.leaves(0, 1)
        assert stored.record is not None
        record = EventRecord.parse(stored.record)
        assert record.fields["from"] == started_at  # the interval that failed, too
        assert record.fields["counts"] == [
            ["replayed-request", 401, 1],
            ["unauthenticated", 401, 3],
        ]
    finally:
        await client.aclose()


# -- the tally ---------------------------------------------------------------------------


def test_the_tally_stays_bounded_whatever_it_is_given() -> None:
    tally = RefusalTally(1000)
    for n in range(TALLY_ROWS + 100):
        tally.count(f"problem-{n}", 400 + n % 3)
    tally.count("odd-status", 200)  # not an error status: counted as 500
    pending = tally.pending()
    assert len(pending) == TALLY_ROWS + 4  # the rows it keeps, and one "other" per status
    assert sum(pending.values()) == TALLY_ROWS + 101
    assert pending[("other", 400)] + pending[("other", 401)] + pending[("other", 402)] == 100
    assert pending[("other", 500)] == 1
    summary = tally.take(2000)  # a valid record: the constructor checked it
    assert summary is not None and (summary.start, summary.end) == (1000, 2000)
    assert tally.take(3000) is None and tally.start == 3000  # quiet: nothing, next interval
    tally.count("x", 401)
    late = tally.take(2500)  # a clock step back never makes to < from
    assert late is not None and late.start == late.end == 3000


# -- the setting -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "3601", "-5", "1.5", "eine Minute", ""])
def test_a_bad_refusal_summary_interval_is_refused_at_start(
    value: str, started: list[Settings]
) -> None:
    result = siko_hub("serve", f"--refusal-summary={value}")
    assert result.exit_code == 2, result.output
    assert "--refusal-summary" in result.stderr and "an integer 1-3600" in result.stderr
    assert "Traceback" not in result.output
    assert started == []


def test_the_refusal_summary_interval_from_each_source(tmp_path: Path) -> None:
    assert Settings().refusal_summary_s == 60
    config = tmp_path / "hub.toml"
    config.write_text("refusal_summary_s = 3600\n", encoding="utf-8")
    loaded = Settings.load(flags={}, env={"SIKO_CONFIG": str(config)}, config_file=None)
    assert loaded.refusal_summary_s == 3600
    assert Settings.load(flags={}, env={"SIKO_REFUSAL_SUMMARY_S": "1"}, config_file=None)
    for bad in (
        "refusal_summary_s = 0\n",
        "refusal_summary_s = 2.5\n",
        'refusal_summary_s = "60"\n',
    ):
        config.write_text(bad, encoding="utf-8")
        with pytest.raises(ConfigError) as refused:
            Settings.load(flags={}, env={}, config_file=config)
        assert "refusal_summary_s" in str(refused.value) and "1-3600" in str(refused.value)
    with pytest.raises(ConfigError, match="refusal_summary_s"):
        Settings(refusal_summary_s=True)
