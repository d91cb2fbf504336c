"""/metrics, /healthz and /readyz: refusals counted by problem type, readiness follows Redis."""

from __future__ import annotations

import json
from collections import Counter

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients import errors as sdk
from keys import Note
from tests.hub.conftest import (
    CHANNEL,
    MARKS,
    POLICE,
    PROSECUTOR,
    RunningHub,
)
from tests.hub.test_problems import hub_without_redis
from tests.hub.test_refusals import http_session, send, signed

_http = pytest.fixture(http_session, name="http")
_down_hub = pytest.fixture(hub_without_redis, name="down_hub")


async def scrape(hub: RunningHub, http: aiohttp.ClientSession) -> str:
    answer = await send(http, hub.base_url + "/metrics", "GET", {}, b"")
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    return answer.body.decode()


def samples(text: str, name: str) -> Counter[tuple[tuple[str, str], ...]]:
    """The values of the samples called ``name``, by their sorted labels."""
    found: Counter[tuple[tuple[str, str], ...]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] += int(sample.value)
    return found


def refusals(text: str) -> Counter[str]:
    return Counter(
        {
            dict(labels)["problem"]: value
            for labels, value in samples(text, "siko_refusals_total").items()
        }
    )


async def test_refusals_are_counted_by_problem_type(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:
    before = refusals(await scrape(world, http))
    for _ in range(2):
        await send(http, world.base_url + "/v1/agencies", "GET", {}, b"")  # unsigned
    await signed(http, world, "GET", "/v1/nirgendwo")
    await signed(http, world, "GET", f"/v1/channels/{CHANNEL}/notes?limit=0")
    prosecutor = await world.client(PROSECUTOR)
    for _ in range(3):
        with pytest.raises(sdk.NotMember):
            await prosecutor.post_note(CHANNEL, Note("nur lesen"), MARKS)
    await (await world.client(POLICE)).page_notes(CHANNEL)  # accepted: no refusal
    after = refusals(await scrape(world, http))
    assert after - before == Counter(
        {"unauthenticated": 2, "not-found": 1, "bad-request": 1, "not-member": 3}
    )


async def test_requests_are_counted_by_route_template_and_status(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:

    await signed(http, world, "GET", "/v1/nirgendwo")
    prosecutor = await world.client(PROSECUTOR)
    with pytest.raises(sdk.NotMember):
        await prosecutor.post_note(CHANNEL, Note("nur lesen"), MARKS)
    text = await scrape(world, http)
    requests = samples(text, "siko_requests_total")
    assert requests[(("route", "/v1/channels/{channel}/notes"), ("status", "403"))] == 1
    assert requests[(("route", "/v1/channels/{channel}"), ("status", "200"))] >= 1
    assert requests[(("route", "unmatched"), ("status", "404"))] == 1
    assert (
        samples(text, "siko_request_seconds_count")[(("route", "/v1/channels/{channel}/notes"),)]
        == 1
    )


async def test_no_label_names_an_agency_a_channel_or_a_path_sent(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:
    await signed(http, world, "GET", "/v1/geheimer-pfad")
    await (await world.client(POLICE)).page_notes(CHANNEL)
    text = await scrape(world, http)
    for needle in (POLICE, PROSECUTOR, CHANNEL, "geheimer-pfad"):
        assert needle not in text


async def test_healthz_and_readyz_answer_without_a_signature(
    hub: RunningHub, http: aiohttp.ClientSession
) -> None:
    health = await send(http, hub.base_url + "/healthz", "GET", {}, b"")
    ready = await send(http, hub.base_url + "/readyz", "GET", {}, b"")
    assert (health.status, json.loads(health.body)) == (200, {"status": "ok"})
    assert (ready.status, json.loads(ready.body)) == (200, {"status": "ready"})


async def test_readyz_is_503_while_redis_is_unreachable_and_healthz_stays_200(
    down_hub: RunningHub,
    http: aiohttp.ClientSession,
) -> None:
    health = await send(http, down_hub.base_url + "/healthz", "GET", {}, b"")
    ready = await send(http, down_hub.base_url + "/readyz", "GET", {}, b"")
    assert (health.status, json.loads(health.body)) == (200, {"status": "ok"})
    assert (ready.status, json.loads(ready.body)) == (503, {"status": "storage unreachable"})
    answer = await signed(http, down_hub, "GET", "/v1/agencies")
    assert answer.status == 503
    assert refusals(await scrape(down_hub, http))["unavailable"] == 1
